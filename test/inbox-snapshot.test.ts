import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { Redis } from 'ioredis';
import { InboxStore, itemJson, MAX_FEED_TOPICS, type FeedQuery, type InboxItem, type InboxView } from '../stores/inbox.js';
import { KeySpace } from '../stores/keys.js';
import { inboxViewOf } from '../stores/inbox-view.js';
import { Directory, type DirectoryRecordInput } from '../stores/directory.js';
import { uniqueNamespace } from './harness.js';

/** A small seeded PRNG (mulberry32): a failing case can be run again from its seed. */
function random(seed: number) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
  return { next, int: (n: number) => Math.floor(next() * n), pick: <T>(xs: T[]) => xs[Math.floor(next() * xs.length)], chance: (p: number) => next() < p };
}

const HOUR = 3_600_000;
/** Ids that sort differently by bytes than by chance (case, punctuation, a multi-byte letter), need key escapes, or JSON escapes. */
const ID_PARTS = ['a', 'B', 'z', '0', '~', '-', ':', '%', 'é', 'ab', 'Z9', '"', '\\', '\t', '/'];

interface ModelEntry { id: string; score: number; topic: number }

/**
 * A user's feed as the store's contract describes it, computed in plain TypeScript from what Redis
 * holds: own entries within the retention, the newest `maxItems`; merged with the visible
 * broadcasts of their topics (own entries win a shared id, earlier topics later ones); newest first
 * by score, then id in byte order descending; at most `maxItems`.
 */
async function modelFeed(redis: Redis, keys: KeySpace, tenant: string, user: string, view: InboxView, now: number, retentionMs: number, maxItems: number) {
  const cutoff = now - retentionMs;
  const order = (x: { id: string; score: number }, y: { id: string; score: number }) => (x.score !== y.score ? y.score - x.score : Buffer.compare(Buffer.from(y.id), Buffer.from(x.id)));
  const scored = async (key: string) => {
    const flat = await redis.zrange(key, 0, -1, 'WITHSCORES');
    const out: { id: string; score: number }[] = [];
    for (let i = 0; i < flat.length; i += 2) out.push({ id: flat[i], score: Number(flat[i + 1]) });
    return out.filter((e) => e.score >= cutoff);
  };
  const own = (await scored(keys.tenant(tenant, 'inbox', user))).map((e) => ({ ...e, topic: 0 })).sort(order).slice(0, maxItems);
  const have = new Set(own.map((e) => e.id));
  const all: ModelEntry[] = [...own];
  for (const [t, topic] of view.topics.entries()) {
    const list = (await scored(keys.tenant(tenant, 'bcast', topic))).sort(order).slice(0, 1_000);
    const categories = await redis.hgetall(keys.tenant(tenant, 'bcast-cat', topic));
    for (const e of list) {
      if (have.has(e.id) || !view.visible(categories[e.id] ?? '')) continue;
      have.add(e.id);
      all.push({ ...e, topic: t + 1 });
    }
  }
  const feed = all.sort(order).slice(0, maxItems);
  const set = async (kind: string) => new Set(await redis.smembers(keys.tenant(tenant, kind, user)));
  const [seen, read, archived] = [await set('inbox-seen'), await set('inbox-read'), await set('inbox-arch')];
  for (const id of read) seen.add(id);
  const snoozeFlat = await redis.zrange(keys.tenant(tenant, 'inbox-snooze', user), 0, -1, 'WITHSCORES');
  const snoozed = new Map<string, number>();
  for (let i = 0; i < snoozeFlat.length; i += 2) snoozed.set(snoozeFlat[i], Number(snoozeFlat[i + 1]));
  const hidden = (id: string) => (snoozed.get(id) ?? -Infinity) > now;
  const inFeed = feed.filter((e) => !archived.has(e.id) && !hidden(e.id));
  return {
    feed, seen, read, archived, hidden,
    counts: { unseen: inFeed.filter((e) => !seen.has(e.id)).length, unread: inFeed.filter((e) => !read.has(e.id)).length, total: inFeed.length },
    /** Whether x comes strictly after the point (score, id) in feed order. */
    after: (x: ModelEntry, score: number, id: string) => x.score < score || (x.score === score && Buffer.compare(Buffer.from(x.id), Buffer.from(id)) < 0),
  };
}

const cursorOf = (score: number, id: string) => Buffer.from(`${score}:${id}`).toString('base64url');
const brief = (items: InboxItem[]) => items.map((i) => `${i.id}@${i.created_at}${i.seen ? 's' : ''}${i.read ? 'r' : ''}${i.archived ? 'a' : ''}`);

describe('the feed snapshot agrees with a plain recount of what Redis holds', () => {
  let redis: Redis;
  const keys = new KeySpace(uniqueNamespace('snapshot'));
  beforeAll(() => { redis = new Redis(inject('redisUrl')); });
  afterAll(async () => { await redis?.quit(); });

  it('pages, resumes, counts and marks exactly as the model says, over random feeds with tied scores, broadcasts, preferences, state, retention and the size cap', async () => {
    for (let seed = 1; seed <= 60; seed++) {
      const r = random(seed);
      const tenant = `t${seed}`;
      const user = 'u';
      let now = 1_800_000_000_000;
      const retentionMs = 10 * HOUR;
      const maxItems = r.pick([6, 12, 40]);
      // Written with room to spare, read with the cap: the read must apply it.
      const writer = new InboxStore(redis, keys, { retentionMs, maxItems: 1_000, now: () => now });
      const store = new InboxStore(redis, keys, { retentionMs, maxItems, now: () => now });
      const ids = new Set<string>();
      const newId = () => {
        let id = '';
        do id = Array.from({ length: 1 + r.int(3) }, () => r.pick(ID_PARTS)).join(''); while (ids.has(id));
        ids.add(id);
        return id;
      };
      // Some with an action URL and data (from the id, so the random draws stay as they were).
      const content = (id: string, category: string) => ({
        id, category, tier: 'social', title: `T ${id}`, body: 'b', created_at: now,
        ...(id.length % 2 ? { action_url: `https://app.test/${encodeURIComponent(id)}` } : {}), ...(id.length % 3 ? {} : { data: { id, list: [] } }),
      });
      // Scores from a few distinct times: many ties. Some fall out of the retention once the clock moves.
      const times = Array.from({ length: 6 }, (_, i) => now - (i + 1) * HOUR);
      const own = Array.from({ length: 5 + r.int(30) }, () => newId());
      for (const id of own) {
        const at = r.pick(times) + r.int(2);
        await writer.write(tenant, [{ locale: 'en', content: content(id, r.pick(['social', 'promo'])) }], [{ userId: user, locale: 'en', requestId: id, createdAt: at }]);
      }
      const topics = r.chance(0.6) ? ['alpha', 'beta:2'].slice(0, 1 + r.int(2)) : [];
      for (const topic of topics) {
        for (let k = r.int(8); k > 0; k--) {
          // Some broadcasts share an id with an own entry or the other topic's.
          const id = r.chance(0.25) ? r.pick([...ids]) : newId();
          await writer.writeBroadcast(tenant, topic, id, [{ locale: 'en', content: content(id, r.pick(['social', 'promo', 'news'])) }], r.pick(times) + r.int(2));
        }
      }
      // The user in the directory: maybe no record at all, maybe a hard stop, random in-app preferences.
      const directory = new Directory(redis, keys);
      const records: DirectoryRecordInput[] = topics.map((topic) => ({ type: 'topic_member', tenant, topic, user_id: user }));
      if (r.chance(0.85)) records.push({ type: 'user', tenant, id: user, locale: r.pick(['en', 'de', 'pt-BR']) });
      if (r.chance(0.1)) records.push({ type: 'hard_stop', tenant, user_id: user, enabled: true });
      const rules: ['inapp' | undefined, string | undefined][] = [['inapp', undefined], [undefined, undefined], ...['promo', 'social', 'news'].flatMap((c): ['inapp' | undefined, string][] => [[undefined, c], ['inapp', c]])];
      for (const [channel, category] of rules) {
        if (r.chance(0.5)) records.push({ type: 'preference', tenant, user_id: user, ...(channel ? { channel } : {}), ...(category ? { category } : {}), enabled: r.chance(0.5) });
      }
      await directory.upsert(records);
      const critical = r.chance(0.3) ? ['news'] : [];
      // The view two ways: computed here (as live updates do) and read by the script from the directory (as the feed does).
      const view: InboxView = await inboxViewOf(directory, tenant, user, critical);
      const fromDirectory = directory.inboxView(tenant, user, critical);
      // State on random entries of the feed (as the API sets it).
      const initial = await modelFeed(redis, keys, tenant, user, view, now, retentionMs, maxItems);
      for (const e of initial.feed) {
        const roll = r.int(6);
        if (roll === 1) await store.update(tenant, user, view, e.id, { seen: true });
        if (roll === 2) await store.update(tenant, user, view, e.id, { read: true });
        if (roll === 3) await store.update(tenant, user, view, e.id, { archived: true });
        if (roll === 4) await store.update(tenant, user, view, e.id, { snoozed_until: now + (r.chance(0.5) ? HOUR : 60_000) });
      }
      // Time passes: some entries leave the retention, some snoozes end.
      now += r.pick([0, 2 * 60_000, 5 * HOUR]);
      const m = await modelFeed(redis, keys, tenant, user, view, now, retentionMs, maxItems);
      const where = `seed ${seed}`;

      expect(await store.counts(tenant, user, view), where).toEqual(m.counts);
      expect((await store.feedState(tenant, user, view)).size, where).toBe(m.feed.length);

      // Every filter, page by page at a random size: exactly the model's list, in its order.
      for (const [how, feedView] of [['view given', view], ['view from the directory', fromDirectory]] as const) for (const archived of [false, true]) {
        for (const status of ['all', 'unread', 'unseen'] as const) {
          const expected = m.feed.filter((e) => m.archived.has(e.id) === archived && !m.hidden(e.id)
            && (status !== 'unread' || !m.read.has(e.id)) && (status !== 'unseen' || !m.seen.has(e.id)));
          const limit = 1 + r.int(7);
          const got: InboxItem[] = [];
          let cursor: string | undefined;
          for (let pages = 0; pages < 100; pages++) {
            const query: FeedQuery = { limit, archived, status, ...(cursor ? { cursor } : {}) };
            const page = await store.feed(tenant, user, feedView, query);
            expect(page.counts, where).toEqual(m.counts);
            // The answer the API sends, made in Redis: the same page in itemJson's shape.
            expect(JSON.parse(await store.feedJson(tenant, user, feedView, query)), `${where} answer`)
              .toEqual({ data: page.items.map(itemJson), counts: page.counts, next_cursor: page.next_cursor });
            got.push(...page.items);
            if (!page.next_cursor) break;
            cursor = page.next_cursor;
          }
          const flags = (id: string) => `${m.seen.has(id) ? 's' : ''}${m.read.has(id) ? 'r' : ''}${m.archived.has(id) ? 'a' : ''}`;
          expect(brief(got), `${where} ${how} archived=${archived} status=${status} limit=${limit}`).toEqual(expected.map((e) => `${e.id}@${e.score}${flags(e.id)}`));
        }
      }

      // A cursor anywhere — on an entry, between tied ones, on an id that is not there, before the retention.
      const points = [
        ...m.feed.map((e) => ({ score: e.score, id: e.id })),
        ...times.map((t) => ({ score: t, id: r.pick(ID_PARTS) })),
        { score: now - retentionMs - HOUR, id: 'a' }, { score: now + HOUR, id: 'a' },
      ];
      for (const p of points) {
        const cursor = cursorOf(p.score, p.id);
        const visible = (e: ModelEntry) => !m.archived.has(e.id) && !m.hidden(e.id);
        const older = m.feed.filter((e) => visible(e) && m.after(e, p.score, p.id));
        const page = await store.feed(tenant, user, r.chance(0.5) ? view : fromDirectory, { limit: 5, cursor });
        expect(page.items.map((i) => i.id), `${where} page after ${p.score}:${p.id}`).toEqual(older.slice(0, 5).map((e) => e.id));
        expect(page.next_cursor !== null, `${where} more after ${p.score}:${p.id}`).toBe(older.length > 5);
        const newer = m.feed.filter((e) => visible(e) && !m.after(e, p.score, p.id) && !(e.score === p.score && e.id === p.id)).reverse();
        const since = await store.since(tenant, user, view, cursor, 4);
        expect(since.map((i) => i.id), `${where} since ${p.score}:${p.id}`).toEqual(newer.slice(0, 4).map((e) => e.id));
      }

      // Mark-all read up to a time: exactly the entries at or before it not read yet (and not hidden, not archived).
      const upTo = r.chance(0.3) ? undefined : r.pick(times) + r.int(2);
      const pending = m.feed.filter((e) => (upTo === undefined || e.score <= upTo) && !m.hidden(e.id) && !m.archived.has(e.id) && !m.read.has(e.id));
      expect(await store.markAll(tenant, user, view, 'read', upTo), `${where} mark-all up to ${upTo}`).toBe(pending.length);
      const after = await modelFeed(redis, keys, tenant, user, view, now, retentionMs, maxItems);
      expect(await store.counts(tenant, user, view), where).toEqual(after.counts);
      for (const e of pending) expect(after.read.has(e.id), `${where} ${e.id} read`).toBe(true);
    }
  });
  /** Feeds `topics` (in byte order) one broadcast each; both view kinds must merge exactly the first MAX_FEED_TOPICS. */
  async function expectFirstTopics(tenant: string, topics: string[]) {
    const store = new InboxStore(redis, keys, { maxItems: 5_000 });
    const directory = new Directory(redis, keys);
    await directory.upsert([{ type: 'user', tenant, id: 'u' }, ...topics.map((topic) => ({ type: 'topic_member' as const, tenant, topic, user_id: 'u' }))]);
    const at = Date.now() - 60_000;
    for (const [i, topic] of topics.entries()) {
      await store.writeBroadcast(tenant, topic, `b-${topic}`, [{ locale: 'en', content: { id: `b-${topic}`, category: 'c', title: 't', body: 'b', created_at: at } }], at + i);
    }
    const view = await inboxViewOf(directory, tenant, 'u');
    for (const feedView of [view, directory.inboxView(tenant, 'u')]) {
      const ids: string[] = [];
      let cursor: string | undefined;
      do {
        const page = await store.feed(tenant, 'u', feedView, { limit: 100, ...(cursor ? { cursor } : {}) });
        expect(page.counts.total).toBe(MAX_FEED_TOPICS);
        ids.push(...page.items.map((i) => i.id));
        cursor = page.next_cursor ?? undefined;
      } while (cursor);
      expect(new Set(ids)).toEqual(new Set(topics.slice(0, MAX_FEED_TOPICS).map((t) => `b-${t}`)));
    }
  }
  it('makes the API\'s answer in Redis exactly as JavaScript would: any text, any data, any time, content of the older form', async () => {
    const tenant = 'answer';
    // A clock and retention that keep every time from 1970 to 9999 in the feed.
    const store = new InboxStore(redis, keys, { retentionMs: 300_000 * 365 * 86_400_000, maxItems: 1_000, now: () => 253_402_300_800_000 });
    const times = [
      0, 1, 999, 86_399_999, 951_782_400_000 /* 2000-02-29 */, 951_868_799_999, 4_107_542_400_000 /* 2100-03-01 */, 1_709_210_096_789,
      253_402_300_799_999 /* 9999-12-31T23:59:59.999Z */, 1_700_000_000_000.5, ...Array.from({ length: 40 }, (_, i) => Math.floor((i * 7_919 + 13) ** 3.1) % 253_402_300_800_000),
    ];
    const tricky = ['"', '\\', '\n', '\u0000', '\u001f', '</script>', 'é', '\u{1F600}', '\u2028', ',"category":"x"', '/'];
    for (const [i, at] of times.entries()) {
      const id = `n${i}${tricky[i % tricky.length]}`;
      const text = tricky.slice(0, 1 + (i % tricky.length)).join(' ');
      await store.write(tenant, [{ locale: 'en', content: {
        id, category: `cat ${text}`, tier: 'social', title: `Title ${text}`, body: `Body ${text}`, created_at: at,
        ...(i % 2 ? { action_url: `https://app.test/${i}?q=${encodeURIComponent(text)}` } : {}),
        ...(i % 3 ? { data: { text, empty: [], nested: { list: [1, 2.5, -3e-7, 12345678901234567890, null, true], o: {} }, '10': 'numeric key', ',"category":': 1 } } : {}),
      } }], [{ userId: 'u', locale: 'en', requestId: id, createdAt: at }]);
    }
    // Content in the form stored before `v` (plain JSON.stringify, keys in another order), and one whose content is gone.
    const legacyAt = 1_600_000_000_000;
    await store.write(tenant, [], [{ userId: 'u', locale: 'en', requestId: 'legacy', createdAt: legacyAt }, { userId: 'u', locale: 'en', requestId: 'gone', createdAt: legacyAt + 1 }]);
    await redis.hset(keys.tenant(tenant, 'notif', 'legacy'), 'en', JSON.stringify({ id: 'legacy', category: 'c', title: 'Old', body: 'form', created_at: legacyAt, tier: 'social', data: { empty: [] } }));
    await store.markAll(tenant, 'u', undefined, 'read', times[20]);

    // Which form the script answered in: the body itself ('A…'), or the refs JavaScript builds it from.
    const scriptForm = async (query: FeedQuery) =>
      ((await (store as unknown as { runPage(...a: unknown[]): Promise<string> }).runPage(tenant, 'u', undefined, query, true)).startsWith('A') ? 'script' : 'rebuilt');
    const compare = async (query: FeedQuery) => {
      const page = await store.feed(tenant, 'u', undefined, query);
      const answer = await store.feedJson(tenant, 'u', undefined, query);
      expect(JSON.parse(answer), JSON.stringify(query)).toEqual({ data: page.items.map(itemJson), counts: page.counts, next_cursor: page.next_cursor });
      return { page, form: await scriptForm(query) };
    };
    let cursor: string | undefined;
    let pages = 0, items = 0;
    const forms: string[] = [];
    do {
      const { page, form } = await compare({ limit: 7, ...(cursor ? { cursor } : {}) });
      items += page.items.length;
      // Only the page holding the older form's content is rebuilt in JavaScript.
      forms.push(page.items.some((i) => i.id === 'legacy') ? `${form} (legacy)` : form);
      cursor = page.next_cursor ?? undefined;
      pages++;
    } while (cursor);
    // Every item but the gone one, over pages that mixed both forms.
    expect(items).toBe(times.length + 1);
    expect(pages).toBe(Math.ceil((times.length + 2) / 7));
    expect(forms.filter((f) => f.endsWith('(legacy)'))).toEqual(['rebuilt (legacy)']);
    expect(forms.filter((f) => !f.endsWith('(legacy)')).every((f) => f === 'script')).toBe(true);
    expect((await store.feed(tenant, 'u', undefined, { limit: 100 })).items.find((i) => i.id === 'legacy')?.data).toEqual({ empty: [] });
    await compare({ limit: 100, status: 'unread' });
    await compare({ limit: 100, archived: true });
  });
  it(`merges the broadcasts of at most ${MAX_FEED_TOPICS} of a user's topics, the first by name, whichever way the view comes`, async () => {
    await expectFirstTopics('many-topics', Array.from({ length: MAX_FEED_TOPICS + 5 }, (_, i) => `t${String(i).padStart(5, '0')}`));
  });
  it('picks the first topics in byte order on both view kinds, where UTF-16 order differs', async () => {
    // U+FF01 is EF BC 81 in UTF-8 and U+1F600 is F0 9F 98 80: bytes put U+FF01 first, UTF-16 the emoji.
    const ascii = Array.from({ length: MAX_FEED_TOPICS - 1 }, (_, i) => `t${String(i).padStart(5, '0')}`);
    await expectFirstTopics('byte-order-topics', [...ascii, '\uFF01', '\u{1F600}']);
  });
});
