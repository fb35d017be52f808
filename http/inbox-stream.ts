import type { ServerResponse } from 'node:http';
import type { NatsConnection, Subscription } from '@nats-io/transport-node';
import type { Logger } from 'pino';
import { itemJson, type InboxCounts, type InboxItem, type InboxStore, type InboxView } from '../stores/inbox.js';
import type { Topology } from '../streams/topology.js';
import type { InboxBatchSignal, InboxSignal } from '../pipeline/inbox-bus.js';

/** One open stream: a user on one device. */
interface Connection {
  tenant: string;
  userId: string;
  res: ServerResponse;
  view: InboxView;
  topicKeys: string[];
  /** The counts last sent (null before the first recount). */
  counts: InboxCounts | null;
  /** Entries in the feed at that count (archived and snoozed too). */
  size: number;
  /** Bumped by every change applied without a recount: a recount begun before it is stale. */
  version: number;
  countsTimer?: NodeJS.Timeout;
}

/** A NATS subscription shared by every stream of this replica that listens to one subject. */
interface Shared {
  sub: Subscription;
  connections: Set<Connection>;
}

/** What a stream needs from the rest of the API. */
export interface InboxStreamsParts {
  nc: NatsConnection;
  topology: Topology;
  inbox: InboxStore;
  /** The user's view of the moment: topics, locale, which categories they may see. */
  viewOf: (tenant: string, userId: string) => Promise<InboxView>;
  log: Logger;
  /** @default 15000 */
  heartbeatMs?: number;
  /** How long a counts update waits for companions (a mark-all, a burst of deliveries). @default 50 */
  countsDebounceMs?: number;
  /** Recounts running at once on this replica (each reads Redis): a burst cannot flood the heap. @default 16 */
  recountConcurrency?: number;
}

/**
 * Server-Sent Events for open inboxes: a `notification` event per new item (its id is the item's
 * cursor, so `Last-Event-ID` resumes after it), a `counts` event whenever counts change, and a
 * heartbeat comment. Deliveries reach this replica over NATS (one subscription per user or topic,
 * shared by all of its streams here, and one for deliveries to many users at once), never through
 * another process's memory, so any replica can serve any user. One heartbeat timer serves every stream.
 */
export class InboxStreams {
  private readonly users = new Map<string, Shared>();
  private readonly topics = new Map<string, Shared>();
  private readonly open = new Set<Connection>();
  private readonly heartbeat: NodeJS.Timeout;
  /** Deliveries to many users at once, for every tenant (see NatsInboxEvents.delivered). */
  private readonly batches: Subscription;
  private closed = false;
  /** Connections waiting for a recount, and how many recounts run now. */
  private readonly recountQueue = new Set<Connection>();
  private recounting = 0;

  constructor(private readonly parts: InboxStreamsParts) {
    this.heartbeat = setInterval(() => {
      for (const c of this.open) c.res.write(': heartbeat\n\n');
    }, parts.heartbeatMs ?? 15_000);
    this.heartbeat.unref();
    this.batches = parts.nc.subscribe(parts.topology.inboxBatches, {
      callback: (err, m) => {
        // A replica holding no streams has no one to tell.
        if (err || this.users.size === 0) return;
        try {
          this.onBatch(m.json<InboxBatchSignal>());
        } catch (e) {
          this.parts.log.warn({ err: e }, 'inbox stream: a batch signal could not be read');
        }
      },
    });
  }

  /** Streams open on this replica. */
  get size(): number {
    return this.open.size;
  }

  /** Takes over a response and streams the user's inbox on it until the client goes. */
  async serve(res: ServerResponse, tenant: string, userId: string, lastEventId: string | undefined): Promise<void> {
    if (this.closed) {
      res.writeHead(503, { 'content-type': 'application/problem+json', 'retry-after': '1' }).end(JSON.stringify({ type: 'about:blank', title: 'Unavailable', status: 503, detail: 'this replica is shutting down' }));
      return;
    }
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-store',
      connection: 'keep-alive',
      // Proxies (nginx) must pass events through as they come.
      'x-accel-buffering': 'no',
    });
    res.write('retry: 2000\n\n');
    // Listening for the client's leaving before any await: one that goes meanwhile leaks nothing.
    let gone = false;
    let c: Connection | undefined;
    res.on('close', () => {
      gone = true;
      if (c) this.drop(c);
    });
    let view: InboxView;
    try {
      view = await this.parts.viewOf(tenant, userId);
    } catch (err) {
      // Ended, so the client's EventSource reconnects (retry: 2000) rather than waiting on a silent stream.
      this.parts.log.warn({ err }, 'inbox stream: could not start');
      res.end();
      return;
    }
    if (gone || this.closed) {
      res.end();
      return;
    }
    c = { tenant, userId, res, view, topicKeys: [], counts: null, size: 0, version: 0 };
    this.open.add(c);
    this.join(this.users, `${tenant}\u0000${userId}`, this.parts.topology.inboxUser(tenant, userId), c, (signal) => this.onUserSignal(c, signal));
    for (const topic of view.topics) {
      const key = `${tenant}\u0000${topic}`;
      c.topicKeys.push(key);
      this.join(this.topics, key, this.parts.topology.inboxTopic(tenant, topic), c, (signal) => this.onTopicSignal(key, signal));
    }
    // Subscribed first, then caught up: nothing delivered in between is missed (a repeat is harmless).
    if (lastEventId) {
      try {
        for (const item of await this.parts.inbox.since(tenant, userId, view, lastEventId)) this.send(c, item);
      } catch (err) {
        this.parts.log.warn({ err }, 'inbox stream: catching up failed; ending it so the client reconnects');
        this.drop(c);
        res.end();
        return;
      }
    }
    this.recount(c);
  }

  private join(map: Map<string, Shared>, key: string, subject: string, c: Connection, handler: (signal: InboxSignal) => void): void {
    let shared = map.get(key);
    if (!shared) {
      const sub = this.parts.nc.subscribe(subject, {
        callback: (err, m) => {
          if (err) return;
          try {
            handler(m.json<InboxSignal>());
          } catch (e) {
            this.parts.log.warn({ err: e }, 'inbox stream: a signal could not be read');
          }
        },
      });
      shared = { sub, connections: new Set() };
      map.set(key, shared);
    }
    shared.connections.add(c);
  }

  private leave(map: Map<string, Shared>, key: string, c: Connection): void {
    const shared = map.get(key);
    if (!shared) return;
    shared.connections.delete(c);
    if (shared.connections.size === 0) {
      shared.sub.unsubscribe();
      map.delete(key);
    }
  }

  private drop(c: Connection): void {
    if (!this.open.delete(c)) return;
    clearTimeout(c.countsTimer);
    this.recountQueue.delete(c);
    this.leave(this.users, `${c.tenant}\u0000${c.userId}`, c);
    for (const key of c.topicKeys) this.leave(this.topics, key, c);
  }

  private onUserSignal(c: Connection, signal: InboxSignal): void {
    const shared = this.users.get(`${c.tenant}\u0000${c.userId}`);
    if (shared) this.tell(shared, signal);
  }

  /** The users of a batch with streams here hear it as their own signal. */
  private onBatch(batch: InboxBatchSignal): void {
    const trimmed = new Set(batch.trimmed ?? []);
    for (const user of batch.users) {
      const shared = this.users.get(`${batch.tenant}\u0000${user}`);
      if (shared) this.tell(shared, { kind: 'new', id: batch.id, at: batch.at, ...(trimmed.has(user) ? { trimmed: true } : {}) });
    }
  }

  /** A user's signal, to each of their streams here. */
  private tell(shared: Shared, signal: InboxSignal): void {
    for (const conn of shared.connections) {
      if (signal.kind === 'new') {
        void this.sendNew(conn, signal.id, signal.at);
        if (signal.trimmed) this.scheduleCounts(conn);
        else this.countNew(conn);
      } else this.scheduleCounts(conn);
    }
  }

  /**
   * A new item is unseen and unread for everyone it reaches: counts go up by one without reading
   * Redis (a 10,000-member broadcast would otherwise be 10,000 recounts at once). When the feed is
   * full (its oldest item leaves) or the counts are not known yet, it is recounted instead.
   */
  private countNew(c: Connection): void {
    if (!c.counts || c.size + 1 > this.parts.inbox.maxItems) {
      this.scheduleCounts(c);
      return;
    }
    c.version++;
    c.size++;
    c.counts = { unseen: c.counts.unseen + 1, unread: c.counts.unread + 1, total: c.counts.total + 1 };
    this.writeCounts(c);
  }

  private onTopicSignal(key: string, signal: InboxSignal): void {
    if (signal.kind !== 'new') return;
    const shared = this.topics.get(key);
    if (!shared) return;
    // One content read per locale, however many members are listening.
    const byLocale = new Map<string, Promise<InboxItem | null>>();
    for (const c of shared.connections) {
      if (signal.category !== undefined && !c.view.visible(signal.category)) continue;
      let item = byLocale.get(c.view.locale);
      if (!item) {
        item = this.parts.inbox.contentItem(c.tenant, signal.id, signal.at, c.view.locale);
        byLocale.set(c.view.locale, item);
      }
      void item.then((i) => { if (i) this.send(c, i); }, (err) => this.parts.log.warn({ err }, 'inbox stream: broadcast not read'));
      this.countNew(c);
    }
  }

  private async sendNew(c: Connection, id: string, at: number): Promise<void> {
    try {
      const item = await this.parts.inbox.contentItem(c.tenant, id, at, c.view.locale, c.userId);
      if (item) this.send(c, item);
    } catch (err) {
      this.parts.log.warn({ err }, 'inbox stream: new item not read');
    }
  }

  private send(c: Connection, item: InboxItem): void {
    if (!this.open.has(c)) return;
    c.res.write(`id: ${item.cursor}\nevent: notification\ndata: ${JSON.stringify(itemJson(item))}\n\n`);
  }

  private scheduleCounts(c: Connection): void {
    if (c.countsTimer) return;
    c.countsTimer = setTimeout(() => {
      c.countsTimer = undefined;
      this.recount(c);
    }, this.parts.countsDebounceMs ?? 50);
  }

  private writeCounts(c: Connection): void {
    if (this.open.has(c) && c.counts) c.res.write(`event: counts\ndata: ${JSON.stringify(c.counts)}\n\n`);
  }

  /** Queues a recount; at most `recountConcurrency` run at once on this replica. */
  private recount(c: Connection): void {
    this.recountQueue.add(c);
    this.pumpRecounts();
  }

  private pumpRecounts(): void {
    const limit = this.parts.recountConcurrency ?? 16;
    while (this.recounting < limit && this.recountQueue.size > 0) {
      const c: Connection = this.recountQueue.values().next().value!;
      this.recountQueue.delete(c);
      if (!this.open.has(c)) continue;
      this.recounting++;
      void this.sendCounts(c).finally(() => {
        this.recounting--;
        this.pumpRecounts();
      });
    }
  }

  /** Recounts (with the user's view of now) and sends counts when they changed. */
  private async sendCounts(c: Connection): Promise<void> {
    const version = c.version;
    try {
      c.view = await this.parts.viewOf(c.tenant, c.userId);
      const { counts, size } = await this.parts.inbox.feedState(c.tenant, c.userId, c.view);
      if (!this.open.has(c)) return;
      // A new item counted meanwhile may be missing from this read: read again.
      if (c.version !== version) {
        this.recount(c);
        return;
      }
      const changed = !c.counts || c.counts.unseen !== counts.unseen || c.counts.unread !== counts.unread || c.counts.total !== counts.total;
      c.counts = counts;
      c.size = size;
      if (changed) this.writeCounts(c);
    } catch (err) {
      this.parts.log.warn({ err }, 'inbox stream: counts not read');
    }
  }

  /** Ends every stream (clients reconnect to another replica) and every subscription. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.heartbeat);
    this.batches.unsubscribe();
    for (const c of [...this.open]) {
      this.drop(c);
      c.res.end();
    }
  }
}
