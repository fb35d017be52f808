import type { NatsConnection } from '@nats-io/transport-node';
import type { InboxEvents } from '../stores/inbox.js';
import type { Topology } from '../streams/topology.js';

/** What travels on an inbox subject: a new item, or a change of state (counts may differ). */
export type InboxSignal =
  | { kind: 'new'; id: string; at: number; category?: string; trimmed?: boolean }
  | { kind: 'state' };

/** One delivery to many users of a tenant, said once on `Topology.inboxBatches` (see NatsInboxEvents.delivered). */
export interface InboxBatchSignal {
  tenant: string;
  id: string;
  at: number;
  users: string[];
  /** Those of `users` whose inbox made room for it (their counts are recounted). */
  trimmed?: string[];
}

/**
 * From this many users, a delivery's live update is one message per `BATCH_USERS` on the batch
 * subject, which every replica reads, instead of one per user: a 100,000-member fan-out was
 * 100,000 NATS messages (5.6 % of the pipeline's CPU in `npm run bench`'s fan-out, and the server's).
 */
export const INBOX_BATCH_FROM = 8;
/** Users per batch message: well under NATS's default 1 MB payload with ids of 128 characters. */
const BATCH_USERS = 500;

/**
 * Live inbox updates over core NATS (fire and forget: the feed in Redis is the truth, a stream that
 * missed a signal catches up with Last-Event-ID). Every API replica subscribes to the subjects of
 * the users it holds streams for, and to the batch subject, so a delivery made by any
 * process reaches any replica.
 */
export class NatsInboxEvents implements InboxEvents {
  private held: [subject: string, data: string][] = [];
  private timer?: NodeJS.Timeout;

  /**
   * @param lingerMs how long a delivery's live update may wait for others to share its write to
   * NATS (0: sent at once). A single-recipient request's update was a write of its own, waking
   * nats-server each time.
   */
  constructor(private readonly nc: NatsConnection, private readonly topology: Topology, private readonly lingerMs = 0) {}

  private send(subject: string, signal: InboxSignal | string): void {
    try {
      this.nc.publish(subject, typeof signal === 'string' ? signal : JSON.stringify(signal));
    } catch {
      // A closed connection drops live updates only; the feed already has the item.
    }
  }

  private sendSoon(subject: string, data: string): void {
    if (this.lingerMs <= 0) return this.send(subject, data);
    this.held.push([subject, data]);
    this.timer ??= setTimeout(() => this.flush(), this.lingerMs);
  }

  /** Sends the live updates held back by the linger. */
  flush(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    const held = this.held;
    this.held = [];
    for (const [subject, data] of held) this.send(subject, data);
  }

  delivered(tenant: string, userIds: string[], requestId: string, at: number, trimmed?: Set<string>): void {
    if (userIds.length >= INBOX_BATCH_FROM) {
      for (let i = 0; i < userIds.length; i += BATCH_USERS) {
        const users = userIds.slice(i, i + BATCH_USERS);
        const madeRoom = trimmed?.size ? users.filter((u) => trimmed.has(u)) : [];
        const signal: InboxBatchSignal = { tenant, id: requestId, at, users, ...(madeRoom.length ? { trimmed: madeRoom } : {}) };
        this.send(this.topology.inboxBatches, JSON.stringify(signal));
      }
      return;
    }
    // A fan-out tells a thousand users the same thing: encoded once.
    const plain = JSON.stringify({ kind: 'new', id: requestId, at } satisfies InboxSignal);
    const madeRoom = trimmed?.size ? JSON.stringify({ kind: 'new', id: requestId, at, trimmed: true } satisfies InboxSignal) : plain;
    for (const userId of userIds) this.sendSoon(this.topology.inboxUser(tenant, userId), trimmed?.has(userId) ? madeRoom : plain);
  }

  broadcast(tenant: string, topic: string, requestId: string, at: number, category: string): void {
    this.send(this.topology.inboxTopic(tenant, topic), { kind: 'new', id: requestId, at, category });
  }

  changed(tenant: string, userId: string): void {
    this.send(this.topology.inboxUser(tenant, userId), { kind: 'state' });
  }
}
