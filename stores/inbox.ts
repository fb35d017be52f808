import type { KeySpace } from './keys.js';
import type { Redis } from 'ioredis';
import { execOrThrow } from './directory.js';
import { RedisScript } from './scripts.js';


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

const ZADD_NX_MANY = new RedisScript(`local out = {}
for i, key in ipairs(KEYS) do out[i] = redis.call('ZADD', key, 'NX', ARGV[2 * i - 1], ARGV[2 * i]) end
return out`);

/** Which topic broadcasts a user's inbox merges at read time, in which locale, and which it may show. */
export interface InboxView {
  topics: string[];
  locale: string;
  /** False for a category the user may not see (opted out of in-app, or a hard stop). */
  visible: (category: string) => boolean;
}

/** Locale slot of a broadcast reference (`broadcast:<request id>`) in an inbox listing. */
const BROADCAST = 'broadcast';

function splitRef(ref: string): { locale: string; requestId: string } {
  const cut = ref.indexOf(':');
  return { locale: ref.slice(0, cut), requestId: ref.slice(cut + 1) };
}

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
  constructor(private readonly redis: Redis, private readonly keySpace: KeySpace, private readonly contentTtlSeconds = 90 * 86_400) {}

  private keys(tenant: string, userId: string) {
    return { index: this.keySpace.tenant(tenant, 'inbox', userId), read: this.keySpace.tenant(tenant, 'inbox-read', userId) };
  }

  /** Every key holding something of one user (erasure deletes them all). */
  userKeys(tenant: string, userId: string): string[] {
    return Object.values(this.keys(tenant, userId));
  }

  private contentKey(tenant: string, requestId: string): string {
    return this.keySpace.tenant(tenant, 'notif', requestId);
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
    ZADD_NX_MANY.queue(pipeline, entries.map((e) => this.keys(tenant, e.userId).index), args);
    const results = await execOrThrow(pipeline);
    const added = results[contents.length * 2] as number[];
    return entries.map((_, i) => added[i] === 1);
  }

  private broadcastKey(tenant: string, topic: string): string {
    return this.keySpace.tenant(tenant, 'bcast', topic);
  }

  /**
   * Fan-out on read: one record for a whole topic, which each member's inbox merges when read.
   * Content is stored per locale (`*` is the fallback). Returns whether the record is new.
   */
  async writeBroadcast(tenant: string, topic: string, requestId: string, contents: { locale: string; content: InboxContent }[], createdAt: number): Promise<boolean> {
    const key = this.contentKey(tenant, requestId);
    const pipeline = this.redis.pipeline();
    for (const { locale, content } of contents) pipeline.hset(key, locale, JSON.stringify(content));
    pipeline.expire(key, this.contentTtlSeconds);
    const index = this.broadcastKey(tenant, topic);
    pipeline.zadd(index, 'NX', createdAt, requestId);
    // Records older than their content's lifetime point at nothing: drop them as new ones arrive.
    pipeline.zremrangebyscore(index, '-inf', createdAt - this.contentTtlSeconds * 1_000);
    const results = await execOrThrow(pipeline);
    return results[contents.length + 1] === 1;
  }

  /** How many broadcast records a topic holds (for tests and operators). */
  async broadcastCount(tenant: string, topic: string): Promise<number> {
    return this.redis.zcard(this.broadcastKey(tenant, topic));
  }

  /**
   * A user's inbox, newest first: their own entries, merged (when `view` names their topics) with
   * the broadcasts of those topics that `view.visible` allows — preferences and the hard stop are
   * applied at read time for fan-out-on-read records.
   */
  async list(tenant: string, userId: string, limit = 50, view?: InboxView): Promise<InboxEntry[]> {
    const k = this.keys(tenant, userId);
    const own = this.redis.zrevrange(k.index, 0, limit - 1, 'WITHSCORES');
    const shared = (view?.topics ?? []).map((t) => this.redis.zrevrange(this.broadcastKey(tenant, t), 0, limit - 1, 'WITHSCORES'));
    const refs: { ref: string; score: number }[] = [];
    const pairs = (flat: string[], toRef: (m: string) => string) => {
      for (let i = 0; i < flat.length; i += 2) refs.push({ ref: toRef(flat[i]), score: Number(flat[i + 1]) });
    };
    pairs(await own, (m) => m);
    for (const p of shared) pairs(await p, (id) => `${BROADCAST}:${id}`);
    if (refs.length === 0) return [];
    const newest = [...new Map(refs.map((r) => [r.ref, r])).values()].sort((a, b) => b.score - a.score);
    const pipeline = this.redis.pipeline();
    for (const { ref } of newest) {
      const { locale, requestId } = splitRef(ref);
      if (locale === BROADCAST) {
        const wanted = view?.locale ?? 'en';
        pipeline.hmget(this.contentKey(tenant, requestId), wanted, wanted.split('-')[0], '*');
      } else pipeline.hget(this.contentKey(tenant, requestId), locale);
    }
    const [raw, read] = await Promise.all([execOrThrow(pipeline), this.redis.smismember(k.read, ...newest.map((r) => r.ref))]);
    const out: InboxEntry[] = [];
    newest.forEach(({ ref }, i) => {
      const found = Array.isArray(raw[i]) ? (raw[i] as (string | null)[]).find((x) => x) : (raw[i] as string | null);
      if (!found) return;
      const content = JSON.parse(found) as InboxContent;
      if (ref.startsWith(`${BROADCAST}:`) && view && !view.visible(content.category)) return;
      out.push({ ...content, read: read[i] === 1 });
    });
    return out.slice(0, limit);
  }

  /** Marks notifications read by request id (own entries and topic broadcasts alike). */
  async markRead(tenant: string, userId: string, requestIds: string[]): Promise<void> {
    const k = this.keys(tenant, userId);
    const refs = (await this.redis.zrange(k.index, 0, -1)).filter((r) => requestIds.includes(splitRef(r).requestId));
    refs.push(...requestIds.map((id) => `${BROADCAST}:${id}`));
    if (refs.length) await this.redis.sadd(k.read, ...refs);
  }
}

