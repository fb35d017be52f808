import type { NatsConnection } from '@nats-io/transport-node';
import type { InboxEvents } from '../stores/inbox.js';
import type { Topology } from '../streams/topology.js';

/** What travels on an inbox subject: a new item, or a change of state (counts may differ). */
export type InboxSignal =
  | { kind: 'new'; id: string; at: number; category?: string; trimmed?: boolean }
  | { kind: 'state' };

/**
 * Live inbox updates over core NATS (fire and forget: the feed in Redis is the truth, a stream that
 * missed a signal catches up with Last-Event-ID). Every API replica subscribes to the subjects of
 * the users it holds streams for, so a delivery made by any process reaches any replica.
 */
export class NatsInboxEvents implements InboxEvents {
  constructor(private readonly nc: NatsConnection, private readonly topology: Topology) {}

  private send(subject: string, signal: InboxSignal | string): void {
    try {
      this.nc.publish(subject, typeof signal === 'string' ? signal : JSON.stringify(signal));
    } catch {
      // A closed connection drops live updates only; the feed already has the item.
    }
  }

  delivered(tenant: string, userIds: string[], requestId: string, at: number, trimmed?: Set<string>): void {
    // A fan-out tells a thousand users the same thing: encoded once.
    const plain = JSON.stringify({ kind: 'new', id: requestId, at } satisfies InboxSignal);
    const madeRoom = trimmed?.size ? JSON.stringify({ kind: 'new', id: requestId, at, trimmed: true } satisfies InboxSignal) : plain;
    for (const userId of userIds) this.send(this.topology.inboxUser(tenant, userId), trimmed?.has(userId) ? madeRoom : plain);
  }

  broadcast(tenant: string, topic: string, requestId: string, at: number, category: string): void {
    this.send(this.topology.inboxTopic(tenant, topic), { kind: 'new', id: requestId, at, category });
  }

  changed(tenant: string, userId: string): void {
    this.send(this.topology.inboxUser(tenant, userId), { kind: 'state' });
  }
}
