import type { KeySpace } from './keys.js';
import type { Redis } from 'ioredis';
import { execOrThrow, hgetallMany } from './directory.js';
import { RedisScript } from './scripts.js';

/** One notification in a user's in-app inbox (the short form operators and tests read). */
export interface InboxEntry {
  id: string;
  category: string;
  title: string;
  body: string;
  /** ms since epoch: when it arrived in this inbox */
  created_at: number;
  read: boolean;
}

/** Notification content shared by every recipient of a request in one locale. */
export interface InboxContent {
  id: string;
  category: string;
  title: string;
  body: string;
  created_at: number;
  /** The tier it was sent on (engagement receipts carry it). */
  tier?: string;
  /** Where the app goes when the notification is clicked. */
  action_url?: string;
  /** The request's data, for apps that render their own way. */
  data?: Record<string, unknown>;
}

/** One item of a feed, with this user's state of it. */
export interface InboxItem {
  id: string;
  category: string;
  tier: string;
  title: string;
  body: string;
  action_url: string | null;
  data: Record<string, unknown> | null;
  /** ms since epoch: when it arrived (the feed's order). */
  created_at: number;
  seen: boolean;
  read: boolean;
  archived: boolean;
  /** ms since epoch while snoozed; null otherwise. */
  snoozed_until: number | null;
  /** Where a listing resumes after this item. */
  cursor: string;
}

/** What the feed counts: items in it (not archived, not snoozed), of which unseen and unread. */
export interface InboxCounts {
  unseen: number;
  unread: number;
  total: number;
}

/** Which topic broadcasts a user's inbox merges at read time, in which locale, and which it may show. */
export interface InboxView {
  topics: string[];
  locale: string;
  /** False for a category the user may not see (opted out of in-app, or a hard stop). */
  visible: (category: string) => boolean;
}

/** Which items a listing shows. */
export interface FeedQuery {
  /** @default 20 */
  limit?: number;
  /** From `InboxItem.cursor` or `next_cursor`: items older than it. */
  cursor?: string;
  /** @default 'all' */
  status?: 'all' | 'unread' | 'unseen';
  /** true: only archived items; false (default): only items not archived. */
  archived?: boolean;
}

/** Engagement an item is about to get: what becomes true that was not (receipts count those). */
export type Engagement = ('seen' | 'read' | 'archived' | 'clicked')[];

/**
 * Said before a change is written, so its receipts are stored first: a crash in between repeats a
 * receipt (counted once by its id) rather than losing one. Throwing aborts the change.
 */
export type Announce = (items: { id: string; category: string; tier: string; firsts: Engagement }[]) => Promise<void>;

/** A state change one call made: the item and the counts as they are after it, from one snapshot. */
export interface StateChange {
  item: InboxItem;
  firsts: Engagement;
  counts: InboxCounts;
}

/** Tells open apps what changed in an inbox (live updates); the API's streams subscribe. */
export interface InboxEvents {
  /** New items in these users' inboxes; `trimmed`: some of them lost their oldest items to make room. */
  delivered(tenant: string, userIds: string[], requestId: string, at: number, trimmed?: Set<string>): void;
  /** A broadcast to a topic's members. */
  broadcast(tenant: string, topic: string, requestId: string, at: number, category: string): void;
  /** A user's item states changed (counts may have). */
  changed(tenant: string, userId: string): void;
}

/** Inbox settings. */
export interface InboxOptions {
  /** Items older than this leave the inbox. @default 90 days */
  retentionMs?: number;
  /** At most this many own items per user; the oldest go. @default 1000 */
  maxItems?: number;
  events?: InboxEvents;
  now?: () => number;
}

const DAY = 86_400_000;

/**
 * Stores content and adds one reference per inbox, trimming each inbox to its retention, in one
 * call. KEYS: the content hashes (c of them), then per user (index, seen, read, archived, snoozed,
 * clicked, locales). ARGV: c, the content TTL, per content hash (locale, JSON); per user (score,
 * request id, locale); then the oldest score kept and the most items kept. What is trimmed leaves
 * the state sets too, so they hold nothing the index does not. Returns, per user, 1 if the
 * reference is new (2: new, and the oldest made room).
 */
const ADD_AND_TRIM = new RedisScript(`
local c = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
for j = 1, c do
  redis.call('HSET', KEYS[j], ARGV[1 + 2 * j], ARGV[2 + 2 * j])
  redis.call('EXPIRE', KEYS[j], ttl)
end
local a = 2 + 2 * c
local n = (#KEYS - c) / 7
local cutoff = tonumber(ARGV[a + 3 * n + 1])
local keep = tonumber(ARGV[a + 3 * n + 2])
local out = {}
for i = 1, n do
  local k = c + (i - 1) * 7
  out[i] = redis.call('ZADD', KEYS[k + 1], 'NX', ARGV[a + 3 * i - 2], ARGV[a + 3 * i - 1])
  if out[i] == 1 then
    -- The locale it was rendered in for this user (only when not English, the common case).
    if ARGV[a + 3 * i] ~= 'en' then redis.call('HSET', KEYS[k + 7], ARGV[a + 3 * i - 1], ARGV[a + 3 * i]) end
    local gone = redis.call('ZRANGEBYSCORE', KEYS[k + 1], '-inf', '(' .. cutoff)
    local over = redis.call('ZCARD', KEYS[k + 1]) - #gone - keep
    if over > 0 then
      local oldest = redis.call('ZRANGE', KEYS[k + 1], #gone, #gone + over - 1)
      for _, id in ipairs(oldest) do gone[#gone + 1] = id end
    end
    -- In slices: unpack() has a limit on what it spreads.
    for from = 1, #gone, 1000 do
      local slice = { unpack(gone, from, math.min(#gone, from + 999)) }
      redis.call('ZREM', KEYS[k + 1], unpack(slice))
      for s = 2, 6 do redis.call(s == 5 and 'ZREM' or 'SREM', KEYS[k + s], unpack(slice)) end
      redis.call('HDEL', KEYS[k + 7], unpack(slice))
    end
    -- 2: added, and the oldest made room (a live count cannot simply add one).
    if #gone > 0 then out[i] = 2 end
  end
end
return out`);

/**
 * A user's whole feed state in one atomic read: KEYS index, seen, read, archived, snoozed, then per
 * topic its broadcasts and their categories; ARGV the most broadcasts read per topic.
 */
const READ_FEED = new RedisScript(`
local out = {
  redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES'),
  redis.call('SMEMBERS', KEYS[2]), redis.call('SMEMBERS', KEYS[3]), redis.call('SMEMBERS', KEYS[4]),
  redis.call('ZRANGE', KEYS[5], 0, -1, 'WITHSCORES'),
}
for i = 6, #KEYS, 2 do
  out[#out + 1] = redis.call('ZREVRANGE', KEYS[i], 0, tonumber(ARGV[1]) - 1, 'WITHSCORES')
  out[#out + 1] = redis.call('HGETALL', KEYS[i + 1])
end
return out`);

/** Broadcast member lists are capped at what a feed could ever show. */
const BROADCASTS_READ = 1_000;

function encodeCursor(score: number, id: string): string {
  return Buffer.from(`${score}:${id}`).toString('base64url');
}

/** A cursor back to (score, id), or null when it is not one this store gave out. */
export function decodeInboxCursor(cursor: string): { score: number; id: string } | null {
  const text = Buffer.from(cursor, 'base64url').toString();
  const m = /^(\d{1,16}):([\s\S]{1,128})$/.exec(text);
  return m && Buffer.from(text).toString('base64url') === cursor ? { score: Number(m[1]), id: m[2] } : null;
}

/** One feed entry before its content is read. */
interface Ref {
  id: string;
  score: number;
  /** The topic it came from, for a broadcast. */
  topic?: string;
  seen: boolean;
  read: boolean;
  archived: boolean;
  snoozedUntil: number | null;
}

/**
 * The in-app inbox in Redis, per tenant and user, newest first. Content is stored once per request
 * and locale; each inbox holds only the request id, scored by arrival, so a fan-out writes one small
 * entry per recipient and the same notification written twice changes nothing (the sink needs no
 * dedup key). Topic broadcasts are one record each, merged into members' feeds when read. Per-user
 * state (seen, read, archived, snoozed, clicked) lives in sets beside the index. Counts are never
 * kept as numbers: they are a recount of one consistent snapshot of the feed, so no race — two
 * devices marking read at once, a delivery racing a mark-all, a redelivered batch — can make them
 * drift or go negative.
 */
export class InboxStore {
  private readonly retentionMs: number;
  /** The most items a feed holds. */
  readonly maxItems: number;
  private readonly now: () => number;

  constructor(private readonly redis: Redis, private readonly keySpace: KeySpace, private readonly opts: InboxOptions = {}) {
    this.retentionMs = opts.retentionMs ?? 90 * DAY;
    this.maxItems = opts.maxItems ?? 1_000;
    this.now = opts.now ?? Date.now;
  }

  private keys(tenant: string, userId: string) {
    const k = (kind: string) => this.keySpace.tenant(tenant, kind, userId);
    return {
      index: k('inbox'), seen: k('inbox-seen'), read: k('inbox-read'), archived: k('inbox-arch'),
      snoozed: k('inbox-snooze'), clicked: k('inbox-click'), locales: k('inbox-locale'),
    };
  }

  /** Every key holding something of one user (erasure deletes them all). */
  userKeys(tenant: string, userId: string): string[] {
    return Object.values(this.keys(tenant, userId));
  }

  private contentKey(tenant: string, requestId: string): string {
    return this.keySpace.tenant(tenant, 'notif', requestId);
  }

  private broadcastKey(tenant: string, topic: string): string {
    return this.keySpace.tenant(tenant, 'bcast', topic);
  }

  private broadcastCategories(tenant: string, topic: string): string {
    return this.keySpace.tenant(tenant, 'bcast-cat', topic);
  }

  /** Content outlives the entries pointing at it by a day, so no counted item lacks its content. */
  private get contentTtlSeconds(): number {
    return Math.ceil(this.retentionMs / 1000) + 86_400;
  }

  /** Stores content once per (request, locale) and adds a reference to each inbox, in one pipeline. Returns, per entry, whether it was new. */
  async write(
    tenant: string,
    contents: { locale: string; content: InboxContent }[],
    entries: { userId: string; locale: string; requestId: string; createdAt: number }[],
  ): Promise<boolean[]> {
    if (entries.length === 0) return [];
    // One script call stores the content, adds every reference and trims each inbox: far less
    // client work than commands per recipient (a password reset is one command).
    const keys: string[] = [];
    const args: (string | number)[] = [contents.length, this.contentTtlSeconds];
    for (const { locale, content } of contents) {
      keys.push(this.contentKey(tenant, content.id));
      args.push(locale, JSON.stringify(content));
    }
    for (const e of entries) {
      keys.push(...Object.values(this.keys(tenant, e.userId)));
      args.push(e.createdAt, e.requestId, e.locale);
    }
    args.push(this.now() - this.retentionMs, this.maxItems);
    const answers = (await ADD_AND_TRIM.run(this.redis, keys, args)) as number[];
    const added = answers.map((n) => n >= 1);
    if (this.opts.events) {
      const byRequest = new Map<string, { users: string[]; at: number; trimmed: Set<string> }>();
      entries.forEach((e, i) => {
        if (!added[i]) return;
        const group = byRequest.get(e.requestId) ?? { users: [], at: e.createdAt, trimmed: new Set<string>() };
        group.users.push(e.userId);
        if (answers[i] === 2) group.trimmed.add(e.userId);
        byRequest.set(e.requestId, group);
      });
      for (const [requestId, { users, at, trimmed }] of byRequest) this.opts.events.delivered(tenant, users, requestId, at, trimmed);
    }
    return added;
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
    const category = contents[0]?.content.category ?? '';
    pipeline.zadd(index, 'NX', createdAt, requestId);
    pipeline.hset(this.broadcastCategories(tenant, topic), requestId, category);
    // Records older than the retention point at nothing: drop them as new ones arrive.
    pipeline.zremrangebyscore(index, '-inf', `(${createdAt - this.retentionMs}`);
    const results = await execOrThrow(pipeline);
    const fresh = results[contents.length + 1] === 1;
    if (fresh) this.opts.events?.broadcast(tenant, topic, requestId, createdAt, category);
    return fresh;
  }

  /** How many broadcast records a topic holds (for tests and operators). */
  async broadcastCount(tenant: string, topic: string): Promise<number> {
    return this.redis.zcard(this.broadcastKey(tenant, topic));
  }

  /**
   * Every entry of a user's inbox with its state, read in one MULTI (so counts and pages agree):
   * own entries, and (with a view) the visible broadcasts of their topics, newest first, at most
   * `maxItems` of them.
   */
  private async refs(tenant: string, userId: string, view?: InboxView): Promise<Ref[]> {
    const k = this.keys(tenant, userId);
    const topics = view?.topics ?? [];
    const keys = [k.index, k.seen, k.read, k.archived, k.snoozed];
    for (const topic of topics) keys.push(this.broadcastKey(tenant, topic), this.broadcastCategories(tenant, topic));
    // One script call: an atomic snapshot (counts and pages agree) for one command's client work.
    const results = (await READ_FEED.run(this.redis, keys, [BROADCASTS_READ])) as string[][];
    const value = (i: number) => results[i];
    const [own, seen, read, archived, snoozed] = [0, 1, 2, 3, 4].map(value) as [string[], string[], string[], string[], string[]];
    const seenSet = new Set(seen);
    const readSet = new Set(read);
    const archivedSet = new Set(archived);
    const snoozedAt = new Map<string, number>();
    for (let i = 0; i < snoozed.length; i += 2) snoozedAt.set(snoozed[i], Number(snoozed[i + 1]));
    const byId = new Map<string, Ref>();
    const add = (id: string, score: number, topic?: string) => {
      if (byId.has(id)) return;
      byId.set(id, {
        id, score, topic, seen: seenSet.has(id) || readSet.has(id), read: readSet.has(id), archived: archivedSet.has(id),
        snoozedUntil: snoozedAt.get(id) ?? null,
      });
    };
    const cutoff = this.now() - this.retentionMs;
    // Past the retention is gone even before a new delivery trims it (an idle inbox's badge must not count it).
    for (let i = 0; i < own.length; i += 2) if (Number(own[i + 1]) >= cutoff) add(own[i], Number(own[i + 1]));
    topics.forEach((topic, t) => {
      const members = value(5 + t * 2) as string[];
      const flat = value(6 + t * 2);
      const categories: Record<string, string> = {};
      for (let i = 0; i < flat.length; i += 2) categories[flat[i]] = flat[i + 1];
      for (let i = 0; i < members.length; i += 2) {
        const score = Number(members[i + 1]);
        if (score < cutoff) continue;
        if (view && !view.visible(categories[members[i]] ?? '')) continue;
        add(members[i], score, topic);
      }
    });
    return [...byId.values()].sort((a, b) => b.score - a.score || (a.id < b.id ? 1 : a.id > b.id ? -1 : 0)).slice(0, this.maxItems);
  }

  /** Counts of a snapshot: what is in the feed (not archived, not snoozed now). */
  private countsOf(refs: Ref[], now: number): InboxCounts {
    const counts = { unseen: 0, unread: 0, total: 0 };
    for (const r of refs) {
      if (r.archived || (r.snoozedUntil !== null && r.snoozedUntil > now)) continue;
      counts.total++;
      if (!r.seen) counts.unseen++;
      if (!r.read) counts.unread++;
    }
    return counts;
  }

  /**
   * Reads content for refs: an own entry in the locale it was rendered in for this user, a broadcast
   * in the user's locale (then its language, then the fallback); any locale there is rather than none.
   */
  private async items(tenant: string, userId: string | undefined, refs: Ref[], locale: string): Promise<InboxItem[]> {
    if (refs.length === 0) return [];
    const own = userId === undefined ? [] : refs.filter((r) => r.topic === undefined);
    const [contents, locales] = await Promise.all([
      hgetallMany(this.redis, refs.map((r) => this.contentKey(tenant, r.id))),
      own.length ? this.redis.hmget(this.keys(tenant, userId!).locales, ...own.map((r) => r.id)) : Promise.resolve([]),
    ]);
    const rendered = new Map<string, string>();
    locales.forEach((l, i) => rendered.set(own[i].id, l ?? 'en'));
    const out: InboxItem[] = [];
    refs.forEach((r, i) => {
      const byLocale = contents[i];
      const wanted = rendered.get(r.id) ?? locale;
      const raw = byLocale[wanted] ?? byLocale[wanted.split(/[-_]/)[0]] ?? byLocale['*'] ?? Object.values(byLocale)[0];
      if (!raw) return;
      const c = JSON.parse(raw) as InboxContent;
      out.push({
        id: r.id, category: c.category, tier: c.tier ?? '', title: c.title, body: c.body,
        action_url: c.action_url ?? null, data: c.data ?? null, created_at: r.score,
        seen: r.seen, read: r.read, archived: r.archived, snoozed_until: r.snoozedUntil !== null && r.snoozedUntil > this.now() ? r.snoozedUntil : null,
        cursor: encodeCursor(r.score, r.id),
      });
    });
    return out;
  }

  /**
   * A page of the feed, newest first, with counts from the same snapshot. A cursor resumes after
   * the item it names; items that arrive meanwhile are newer, so they never shift later pages.
   */
  async feed(tenant: string, userId: string, view: InboxView | undefined, query: FeedQuery = {}): Promise<{ items: InboxItem[]; counts: InboxCounts; next_cursor: string | null }> {
    const limit = query.limit ?? 20;
    const now = this.now();
    const refs = await this.refs(tenant, userId, view);
    const after = query.cursor ? decodeInboxCursor(query.cursor) : null;
    const status = query.status ?? 'all';
    const wanted = refs.filter((r) => {
      if (after && (r.score > after.score || (r.score === after.score && r.id >= after.id))) return false;
      if (r.archived !== (query.archived ?? false)) return false;
      if (r.snoozedUntil !== null && r.snoozedUntil > now) return false;
      if (status === 'unread' && r.read) return false;
      if (status === 'unseen' && r.seen) return false;
      return true;
    });
    const page = wanted.slice(0, limit);
    const items = await this.items(tenant, userId, page, view?.locale ?? 'en');
    const last = page[page.length - 1];
    return { items, counts: this.countsOf(refs, now), next_cursor: wanted.length > limit && last ? encodeCursor(last.score, last.id) : null };
  }

  /** The feed's counts alone. */
  async counts(tenant: string, userId: string, view?: InboxView): Promise<InboxCounts> {
    return (await this.feedState(tenant, userId, view)).counts;
  }

  /** The counts, and how many entries the feed holds in all (archived and snoozed too, as its cap counts them). */
  async feedState(tenant: string, userId: string, view?: InboxView): Promise<{ counts: InboxCounts; size: number }> {
    const refs = await this.refs(tenant, userId, view);
    return { counts: this.countsOf(refs, this.now()), size: refs.length };
  }

  /** Items that arrived after a cursor (oldest first): what a reconnecting stream missed. */
  async since(tenant: string, userId: string, view: InboxView | undefined, cursor: string, limit = 100): Promise<InboxItem[]> {
    const after = decodeInboxCursor(cursor);
    if (!after) return [];
    const now = this.now();
    const refs = (await this.refs(tenant, userId, view))
      .filter((r) => (r.score > after.score || (r.score === after.score && r.id > after.id)) && !r.archived && !(r.snoozedUntil !== null && r.snoozedUntil > now))
      .reverse()
      .slice(0, limit);
    return this.items(tenant, userId, refs, view?.locale ?? 'en');
  }

  /**
   * A newly arrived item as a live update shows it (new: unseen, unread), without reading the feed:
   * the user's own entry when `userId` is given, else a broadcast in `locale`.
   */
  async contentItem(tenant: string, id: string, at: number, locale: string, userId?: string): Promise<InboxItem | null> {
    const ref: Ref = { id, score: at, seen: false, read: false, archived: false, snoozedUntil: null, ...(userId === undefined ? { topic: '' } : {}) };
    return (await this.items(tenant, userId, [ref], locale))[0] ?? null;
  }

  /**
   * Changes one item's state: `read` implies `seen`; un-reading is allowed; a snooze hides it until
   * its time and it comes back unseen and unread; `snoozed_until: null` wakes it now. Returns the
   * item as it is now and what became true for the first time, or null if it is not in the feed.
   */
  async update(
    tenant: string, userId: string, view: InboxView | undefined, id: string,
    change: { seen?: boolean; read?: boolean; archived?: boolean; snoozed_until?: number | null; clicked?: boolean },
    announce?: Announce,
  ): Promise<StateChange | null> {
    const ref = (await this.refs(tenant, userId, view)).find((r) => r.id === id);
    if (!ref) return null;
    const k = this.keys(tenant, userId);
    const ttl = this.contentTtlSeconds;
    const readNow = change.read ?? (change.clicked ? true : undefined);
    const seenNow = readNow === true || change.clicked ? true : change.seen;
    // What becomes true that the snapshot did not have (a click is always said: its id counts it once).
    const firsts: Engagement = [];
    if (seenNow && !ref.seen) firsts.push('seen');
    if (readNow && !ref.read) firsts.push('read');
    if (change.archived && !ref.archived) firsts.push('archived');
    if (change.clicked) firsts.push('clicked');
    if (announce && firsts.length) {
      const [content] = await this.items(tenant, userId, [ref], view?.locale ?? 'en');
      await announce([{ id, category: content?.category ?? '', tier: content?.tier ?? '', firsts }]);
    }
    const tx = this.redis.multi();
    const set = (key: string, on: boolean | undefined) => {
      if (on === undefined) return;
      if (on) tx.sadd(key, id); else tx.srem(key, id);
      tx.expire(key, ttl);
    };
    set(k.seen, seenNow);
    set(k.read, readNow);
    set(k.archived, change.archived);
    set(k.clicked, change.clicked ? true : undefined);
    if (change.snoozed_until !== undefined) {
      if (change.snoozed_until === null) tx.zrem(k.snoozed, id); else {
        // Back as new when it wakes.
        tx.zadd(k.snoozed, change.snoozed_until, id).srem(k.seen, id).srem(k.read, id).expire(k.snoozed, ttl);
      }
    }
    for (const [err] of (await tx.exec()) ?? []) if (err) throw err;
    this.opts.events?.changed(tenant, userId);
    // One read after the change gives both the item and the counts the caller answers with.
    const after = await this.refs(tenant, userId, view);
    const now = after.find((r) => r.id === id);
    const [item] = now ? await this.items(tenant, userId, [now], view?.locale ?? 'en') : [];
    return item ? { item, firsts, counts: this.countsOf(after, this.now()) } : null;
  }

  /**
   * Marks every item of the feed (optionally only those at or before `beforeMs`) seen, read or
   * archived. Returns, per item, what became true for the first time.
   */
  async markAll(
    tenant: string, userId: string, view: InboxView | undefined, what: 'seen' | 'read' | 'archived', beforeMs?: number, announce?: Announce,
  ): Promise<number> {
    const now = this.now();
    const names: ('seen' | 'read' | 'archived')[] = what === 'read' ? ['seen', 'read'] : [what];
    const refs = (await this.refs(tenant, userId, view)).filter((r) =>
      (beforeMs === undefined || r.score <= beforeMs) && !(r.snoozedUntil !== null && r.snoozedUntil > now) && (what === 'archived' || !r.archived)
      && names.some((name) => !r[name]));
    if (refs.length === 0) return 0;
    if (announce) {
      const contents = new Map((await this.items(tenant, userId, refs, view?.locale ?? 'en')).map((c) => [c.id, c]));
      await announce(refs.map((r) => ({
        id: r.id, category: contents.get(r.id)?.category ?? '', tier: contents.get(r.id)?.tier ?? '', firsts: names.filter((name) => !r[name]),
      })));
    }
    const k = this.keys(tenant, userId);
    const tx = this.redis.multi();
    for (const r of refs) for (const name of names) tx.sadd(k[name], r.id);
    for (const name of names) tx.expire(k[name], this.contentTtlSeconds);
    for (const [err] of (await tx.exec()) ?? []) if (err) throw err;
    this.opts.events?.changed(tenant, userId);
    return refs.length;
  }

  /**
   * A user's inbox, newest first: their own entries, merged (when `view` names their topics) with
   * the broadcasts of those topics that `view.visible` allows — preferences and the hard stop are
   * applied at read time for fan-out-on-read records. Archived items included.
   */
  async list(tenant: string, userId: string, limit = 50, view?: InboxView): Promise<InboxEntry[]> {
    const refs = (await this.refs(tenant, userId, view)).slice(0, limit);
    return (await this.items(tenant, userId, refs, view?.locale ?? 'en')).map((i) => ({
      id: i.id, category: i.category, title: i.title, body: i.body, created_at: i.created_at, read: i.read,
    }));
  }
}
