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

const ZADD_NX_MANY = `local out = {}
for i, key in ipairs(KEYS) do out[i] = redis.call('ZADD', key, 'NX', ARGV[2 * i - 1], ARGV[2 * i]) end
return out`;

/** Notification content shared by every recipient of a request in one locale. */
export interface InboxContent {
  id: string;
  category: string;
  title: string;
  body: string;
  created_at: number;
}

/**
 * The in-app inbox in Redis, per tenant and user, newest first. The content of a notification is
 * stored once per request and locale; each inbox holds only a reference (`<locale>:<request id>`),
 * so a fan-out writes one small entry per recipient and the same notification written twice changes
 * nothing: the sink is idempotent and needs no dedup key.
 */
export class InboxStore {
  constructor(private readonly redis: Redis, private readonly prefix: string, private readonly contentTtlSeconds = 90 * 86_400) {}

  private keys(tenant: string, userId: string) {
    const base = `${this.prefix}${tenant}:inbox:${userId}`;
    return { index: base, read: `${base}:read` };
  }

  private contentKey(tenant: string, requestId: string): string {
    return `${this.prefix}${tenant}:notif:${requestId}`;
  }

  /** Stores content once per (request, locale) and adds a reference to each inbox, in one pipeline. Returns, per entry, whether it was new. */
  async write(
    tenant: string,
    contents: { locale: string; content: InboxContent }[],
    entries: { userId: string; locale: string; requestId: string; createdAt: number }[],
  ): Promise<boolean[]> {
    if (entries.length === 0) return [];
    const pipeline = this.redis.pipeline();
    for (const { locale, content } of contents) {
      const key = this.contentKey(tenant, content.id);
      pipeline.hset(key, locale, JSON.stringify(content));
      pipeline.expire(key, this.contentTtlSeconds);
    }
    // One script call adds every reference: far less client work than a command per recipient.
    const args: (string | number)[] = [];
    for (const e of entries) args.push(e.createdAt, `${e.locale}:${e.requestId}`);
    pipeline.eval(ZADD_NX_MANY, entries.length, ...entries.map((e) => this.keys(tenant, e.userId).index), ...args);
    const results = await execOrThrow(pipeline);
    const added = results[contents.length * 2] as number[];
    return entries.map((_, i) => added[i] === 1);
  }

  async list(tenant: string, userId: string, limit = 50): Promise<InboxEntry[]> {
    const k = this.keys(tenant, userId);
    const refs = await this.redis.zrevrange(k.index, 0, limit - 1);
    if (refs.length === 0) return [];
    const pipeline = this.redis.pipeline();
    for (const ref of refs) {
      const cut = ref.indexOf(':');
      pipeline.hget(this.contentKey(tenant, ref.slice(cut + 1)), ref.slice(0, cut));
    }
    const [raw, read] = await Promise.all([execOrThrow(pipeline), this.redis.smismember(k.read, ...refs)]);
    return refs.flatMap((_, i) => (raw[i] ? [{ ...(JSON.parse(raw[i] as string) as InboxContent), read: read[i] === 1 }] : []));
  }

  /** Marks notifications read by request id. */
  async markRead(tenant: string, userId: string, requestIds: string[]): Promise<void> {
    const k = this.keys(tenant, userId);
    const refs = (await this.redis.zrange(k.index, 0, -1)).filter((r) => requestIds.includes(r.slice(r.indexOf(':') + 1)));
    if (refs.length) await this.redis.sadd(k.read, ...refs);
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
    const outcomes: Outcome[] = new Array(items.length);
    // One pipeline per tenant (a batch may span requests of several tenants).
    const byTenant = new Map<string, number[]>();
    items.forEach((item, i) => {
      const list = byTenant.get(item.request.tenant);
      if (list) list.push(i);
      else byTenant.set(item.request.tenant, [i]);
    });
    await Promise.all([...byTenant].map(async ([tenant, indexes]) => {
      const contents = new Map<string, { locale: string; content: InboxContent }>();
      for (const i of indexes) {
        const { request, recipient, content } = items[i];
        const key = `${recipient.locale}\u0000${request.id}`;
        if (!contents.has(key)) {
          contents.set(key, { locale: recipient.locale, content: {
            id: request.id, category: request.category, title: content.title, body: content.body, created_at: request.accepted_at || this.now(),
          } });
        }
      }
      try {
        const fresh = await this.inbox.write(tenant, [...contents.values()], indexes.map((i) => ({
          userId: items[i].recipient.user_id, locale: items[i].recipient.locale, requestId: items[i].request.id,
          createdAt: items[i].request.accepted_at || this.now(),
        })));
        indexes.forEach((itemIndex, j) => { outcomes[itemIndex] = { kind: 'delivered', duplicate: !fresh[j] }; });
      } catch (err) {
        for (const i of indexes) outcomes[i] = { kind: 'retry', reason: `redis: ${(err as Error).message}` };
      }
    }));
    return outcomes;
  }

  async close(): Promise<void> {}
}
