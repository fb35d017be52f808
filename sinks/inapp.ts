import type { Redis } from 'ioredis';
import { execOrThrow } from '../runtime/directory.js';
import type { DeliveryItem, Outcome, Sink } from './sink.js';

/** One notification in a user's in-app inbox. */
export interface InboxEntry {
  id: string;
  category: string;
  title: string;
  body: string;
  /** ms since epoch */
  created_at: number;
  read: boolean;
}

/**
 * The in-app inbox in Redis, per tenant and user, newest first. Keyed by request id, so writing the
 * same notification twice changes nothing: the sink is idempotent and needs no dedup key.
 */
export class InboxStore {
  constructor(private readonly redis: Redis, private readonly prefix: string) {}

  private keys(tenant: string, userId: string) {
    const base = `${this.prefix}${tenant}:inbox:${userId}`;
    return { index: base, items: `${base}:items`, read: `${base}:read` };
  }

  /** Writes entries in one pipeline; returns for each whether it was new. */
  async write(entries: { tenant: string; userId: string; entry: Omit<InboxEntry, 'read'> }[]): Promise<boolean[]> {
    if (entries.length === 0) return [];
    const pipeline = this.redis.pipeline();
    for (const { tenant, userId, entry } of entries) {
      const k = this.keys(tenant, userId);
      pipeline.hsetnx(k.items, entry.id, JSON.stringify(entry));
      pipeline.zadd(k.index, 'NX', entry.created_at, entry.id);
    }
    const results = await execOrThrow(pipeline);
    return entries.map((_, i) => results[i * 2] === 1);
  }

  async list(tenant: string, userId: string, limit = 50): Promise<InboxEntry[]> {
    const k = this.keys(tenant, userId);
    const ids = await this.redis.zrevrange(k.index, 0, limit - 1);
    if (ids.length === 0) return [];
    const [raw, read] = await Promise.all([this.redis.hmget(k.items, ...ids), this.redis.smismember(k.read, ...ids)]);
    return ids.flatMap((id, i) => (raw[i] ? [{ ...(JSON.parse(raw[i]!) as Omit<InboxEntry, 'read'>), read: read[i] === 1 }] : []));
  }

  async markRead(tenant: string, userId: string, ids: string[]): Promise<void> {
    if (ids.length) await this.redis.sadd(this.keys(tenant, userId).read, ...ids);
  }

  async unreadCount(tenant: string, userId: string): Promise<number> {
    const k = this.keys(tenant, userId);
    const [total, read] = await Promise.all([this.redis.zcard(k.index), this.redis.scard(k.read)]);
    return Math.max(0, total - read);
  }
}

/** The in-app channel: writes to the inbox, one Redis pipeline per batch. */
export class InAppSink implements Sink {
  readonly channel = 'inapp' as const;
  readonly provider = 'inbox';
  readonly idempotent = true;
  readonly maxBatch = 1_000;

  constructor(private readonly inbox: InboxStore, private readonly now: () => number = Date.now) {}

  async send(items: DeliveryItem[]): Promise<Outcome[]> {
    try {
      const fresh = await this.inbox.write(items.map(({ request, recipient, content }) => ({
        tenant: request.tenant,
        userId: recipient.user_id,
        entry: { id: request.id, category: request.category, title: content.title, body: content.body, created_at: request.accepted_at || this.now() },
      })));
      return fresh.map((isNew) => ({ kind: 'delivered', duplicate: !isNew }));
    } catch (err) {
      return items.map(() => ({ kind: 'retry', reason: `redis: ${(err as Error).message}` }));
    }
  }

  async close(): Promise<void> {}
}
