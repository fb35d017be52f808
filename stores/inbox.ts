import type { KeySpace } from './keys.js';
import type { Redis } from 'ioredis';
import { execOrThrow } from './directory.js';
import { RedisScript } from './scripts.js';
import { IN_APP_VIEW } from './inbox-view.js';

/**
 * A feed merges the broadcasts of at most this many of the user's topics (the first in name order):
 * memberships are the tenant's to add, without limit, and each topic is a read inside one script.
 */
export const MAX_FEED_TOPICS = 1_000;

/** The topics a feed merges: the first MAX_FEED_TOPICS in byte order, the order the script sorts them in. */
function firstFeedTopics(topics: string[]): string[] {
  if (topics.length <= MAX_FEED_TOPICS) return topics;
  return [...topics].sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b))).slice(0, MAX_FEED_TOPICS);
}

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

/** A page of a feed, with the counts of the same snapshot. */
export interface FeedPage {
  items: InboxItem[];
  counts: InboxCounts;
  /** Where the next page starts; null on the last. */
  next_cursor: string | null;
}

/**
 * An item as the API shows it (the feed, live updates, changes of state). SNAPSHOT writes the same
 * shape for feed pages: the two change together.
 */
export function itemJson(item: InboxItem) {
  return {
    id: item.id, request_id: item.id, category: item.category, title: item.title, body: item.body,
    action_url: item.action_url, data: item.data, created_at: new Date(item.created_at).toISOString(),
    seen: item.seen, read: item.read, archived: item.archived,
    snoozed_until: item.snoozed_until === null ? null : new Date(item.snoozed_until).toISOString(),
  };
}

/**
 * Content as it is stored: JSON whose keys come in this order, so SNAPSHOT can take the part from
 * `category` to `data` as it is into a feed answer (the keys before it are strings and a number,
 * whose text cannot hold `,"category":`). `v` marks the form; content stored before it has none.
 */
function storedContent(c: InboxContent): string {
  return JSON.stringify({
    v: 2, id: c.id, tier: c.tier ?? '', created_at: c.created_at,
    category: c.category, title: c.title, body: c.body, action_url: c.action_url ?? null, data: c.data ?? null,
  });
}

/** What the feed counts: items in it (not archived, not snoozed), of which unseen and unread. */
export interface InboxCounts {
  unseen: number;
  unread: number;
  total: number;
}

/** Which broadcast categories a user may see, in a form Redis applies while reading the feed (see `inappVisibility`). */
export interface InboxVisibility {
  /** Nothing is shown (no such user, or a hard stop). */
  none: boolean;
  /** Whether a category without its own rule is shown. */
  shown: boolean;
  /** Categories with their own rule: shown or not. */
  categories: Record<string, boolean>;
}

/** Which topic broadcasts a user's inbox merges at read time, in which locale, and which it may show. */
export interface InboxView {
  topics: string[];
  locale: string;
  /** Which broadcast categories the user may see (opted out of in-app, or a hard stop, hides them). */
  visibility: InboxVisibility;
  /** The same decision for one category, for live updates. */
  visible: (category: string) => boolean;
}

/**
 * Where a feed read finds the user's view itself, in its one Redis call (topics, locale, in-app
 * preferences: the same decision as `inappVisibility`): the directory's keys of the user.
 */
export interface DirectoryView {
  profileKey: string;
  topicsKey: string;
  /** Categories that ignore opt-outs. */
  criticalCategories: string[];
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
  /**
   * The connection `feed` reads pages on (default: the store's own). The API gives one without
   * auto-pipelining: a page's script runs ~100 µs, and Redis answers a pipelined batch only after
   * running all of it, so batched pages left the API idle (bench:inbox feed ÷ trivial route, four
   * interleaved runs: 0.154 → 0.183).
   */
  feedRedis?: Redis;
}

const DAY = 86_400_000;

/** The inbox's retention and size, from the configuration. */
export function inboxOptions(config: { inboxRetentionMs: number; inboxMaxItems: number }): InboxOptions {
  return { retentionMs: config.inboxRetentionMs, maxItems: config.inboxMaxItems };
}

/** References one ADD call writes at most (see write). */
const MAX_ENTRIES_PER_WRITE = 250;

/**
 * Stores content and adds one reference per inbox, in one call. KEYS: the content hashes (c of
 * them), then per user (index, locales). ARGV: c, the content TTL, per content hash (locale, JSON);
 * per user (score, request id, locale); then the oldest score kept and the most items kept. Returns,
 * per user, 0 if the reference was there, 1 if it is new, 3 if it is new and the inbox now holds
 * more than it keeps (TRIM then makes room). Two keys per user, not the seven trimming touches: a
 * fan-out's users rarely need it, and key names were most of what a write sent.
 */
const ADD = new RedisScript(`
local c = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
for j = 1, c do
  redis.call('HSET', KEYS[j], ARGV[1 + 2 * j], ARGV[2 + 2 * j])
  redis.call('EXPIRE', KEYS[j], ttl)
end
local a = 2 + 2 * c
local n = (#KEYS - c) / 2
local cutoff = tonumber(ARGV[a + 3 * n + 1])
local older = '(' .. ARGV[a + 3 * n + 1]
local keep = tonumber(ARGV[a + 3 * n + 2])
local out = {}
-- Arguments go to redis.call as strings and no reply holds a score: Redis formats each number
-- crossing into or out of a script with snprintf, which cost a fifth of a fan-out's writes.
for i = 1, n do
  local k = c + (i - 1) * 2
  local score = ARGV[a + 3 * i - 2]
  out[i] = redis.call('ZADD', KEYS[k + 1], 'NX', score, ARGV[a + 3 * i - 1])
  if out[i] == 1 then
    -- The locale it was rendered in for this user (only when not English, the common case).
    if ARGV[a + 3 * i] ~= 'en' then redis.call('HSET', KEYS[k + 2], ARGV[a + 3 * i - 1], ARGV[a + 3 * i]) end
    local size = redis.call('ZCARD', KEYS[k + 1])
    if size > keep then out[i] = 3
    -- An inbox this reference created holds nothing older than it.
    elseif size == 1 then if tonumber(score) < cutoff then out[i] = 3 end
    elseif #redis.call('ZRANGEBYSCORE', KEYS[k + 1], '-inf', older, 'LIMIT', '0', '1') > 0 then out[i] = 3 end
  end
end
return out`, 'ADD');

/**
 * Trims inboxes to their retention and size. KEYS per user (index, seen, read, archived, snoozed,
 * clicked, locales); ARGV the oldest score kept and the most items kept. What is trimmed leaves the
 * state sets too, so they hold nothing the index does not. Returns, per user, 1 if anything went.
 */
const TRIM = new RedisScript(`
local cutoff = tonumber(ARGV[1])
local keep = tonumber(ARGV[2])
local out = {}
for i = 1, #KEYS / 7 do
  local k = (i - 1) * 7
  local gone = redis.call('ZRANGEBYSCORE', KEYS[k + 1], '-inf', '(' .. cutoff)
  local over = redis.call('ZCARD', KEYS[k + 1]) - #gone - keep
  if over > 0 then
    local oldest = redis.call('ZRANGE', KEYS[k + 1], #gone, #gone + over - 1)
    for _, id in ipairs(oldest) do gone[#gone + 1] = id end
  end
  -- In slices: unpack() has a limit on what it spreads. The index goes last: a script that fails
  -- midway (Redis keeps what it did) leaves state of items still listed, never a listed item lost.
  for from = 1, #gone, 1000 do
    local slice = { unpack(gone, from, math.min(#gone, from + 999)) }
    for s = 2, 6 do redis.call(s == 5 and 'ZREM' or 'SREM', KEYS[k + s], unpack(slice)) end
    redis.call('HDEL', KEYS[k + 7], unpack(slice))
    redis.call('ZREM', KEYS[k + 1], unpack(slice))
  end
  out[i] = #gone > 0 and 1 or 0
end
return out`, 'TRIM');

/** Lua: `keyPart(id)`, as stores/keys.ts keyPart: % and : escaped. */
const KEY_PART = `
local function keyPart(id)
  -- Two plain searches cost less than one pattern with a class.
  if string.find(id, '%', 1, true) or string.find(id, ':', 1, true) then return (string.gsub(string.gsub(id, '%%', '%%25'), ':', '%%3A')) end
  return id
end
`;

/**
 * Lua: which stored content entries show, given `contentPrefix`, `localesKey` ('' for none) and
 * `userLocale`: `contentsOf(ids, topics)` gives, per entry, its content's JSON ('' when gone). The
 * one place the locale rule lives. One HMGET reads every own entry's locale: inside a script, each
 * call costs about a microsecond whatever it does.
 */
const CONTENT_OF = `
-- An own entry in the locale it was rendered in for this user, a broadcast in the user's locale;
-- then that locale's language, the fallback, any locale there is.
local function contentsOf(ids, topics)
  local wanted, own, names = {}, {}, {}
  for i = 1, #ids do
    if topics[i] == 0 and localesKey ~= '' then own[#own + 1] = i; names[#names + 1] = ids[i] else wanted[i] = userLocale end
  end
  if #names > 0 then
    local got = redis.call('HMGET', localesKey, unpack(names))
    for j, i in ipairs(own) do wanted[i] = got[j] or 'en' end
  end
  local out = {}
  for i = 1, #ids do
    local key = contentPrefix .. keyPart(ids[i])
    local v = redis.call('HGET', key, wanted[i])
    if not v then
      local language = string.match(wanted[i], '^[^-_]*')
      if language ~= wanted[i] then v = redis.call('HGET', key, language) end
    end
    if not v then v = redis.call('HGET', key, '*') end
    if not v then v = redis.call('HVALS', key)[1] end
    out[i] = v or ''
  end
  return out
end
`;

/** Content for entries outside a snapshot. ARGV: content prefix, locales key, user locale, then per entry (id, topic: 0 own). */
const CONTENT = new RedisScript(`
local contentPrefix, localesKey, userLocale = ARGV[1], ARGV[2], ARGV[3]
${KEY_PART}
${CONTENT_OF}
local ids, topics = {}, {}
for i = 4, #ARGV, 2 do ids[#ids + 1] = ARGV[i]; topics[#topics + 1] = tonumber(ARGV[i + 1]) end
return contentsOf(ids, topics)`, 'CONTENT');

/**
 * One consistent snapshot of a user's feed, computed where the data is, so a read moves only the
 * page it shows: own entries and (merged) the visible broadcasts of their topics, newest first
 * (score, then id, descending), at most the feed's size; the counts over all of it; and a selection
 * of its entries. KEYS: index, seen, read, archived, snoozed, then per topic its broadcasts and their
 * categories. ARGV: now, the oldest score kept, the most items, the most broadcasts read per topic,
 * the visibility (none, shown, n, n × (category, shown); only broadcasts need it), the content
 * wanted (prefix, locales key, user locale; an empty prefix: none), then the selection. Or, to take
 * the view from the directory in the same call: KEYS then go on with the user's profile and topic
 * set, and the visibility is `directory`, where broadcasts and their categories live (key
 * prefixes), the number of critical categories and them (the locale given is then the profile's).
 * The selections:
 *   page  after-score after-id archived status limit answer — the feed's next page (after a
 *         cursor); answer 1: in the API's form when it can be (see feedJson)
 *   since after-score after-id limit — what arrived after a cursor, oldest first
 *   item  id — one entry
 *   mark  before what — entries a mark-all changes
 *   list  limit — the first entries, whatever their state
 *   none — counts only
 * Returns a JSON array: unseen, unread, total, size, more (1: the page has a next one), then per
 * selected entry: id, score, flags (1 seen, 2 read, 4 archived), snoozed until (-1: not), topic (0:
 * own, else its place among the topics), and its content when wanted (null when gone). A page in
 * the API's form is 'A', the next page's start (score, a space, the id as JSON; empty when none),
 * a newline, then the answer's body up to its `next_cursor` value, times as 0x01 score 0x01.
 *
 * Without broadcasts to merge (most feeds), the index is read without its scores: Redis formats each
 * score as text for a script, which cost more than all the rest of a page read. The feed is then
 * the index's top ranks, a cursor's place is found with ZCOUNT, and only the selected entries' scores
 * are read, in one range.
 */
const SNAPSHOT = new RedisScript(`
-- Globals as locals: a local is a register, a global a table lookup at every use (1.3 % of a page's instructions).
local string, table, math, redis, cjson, tonumber, tostring, ipairs, pairs, unpack = string, table, math, redis, cjson, tonumber, tostring, ipairs, pairs, unpack
local now, cutoff, maxItems, perTopic = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
-- Ids in byte order, as Redis orders equal scores: Lua's own < follows the server's locale.
local function before(x, y)
  for p = 1, math.min(#x, #y) do
    local bx, by = string.byte(x, p), string.byte(y, p)
    if bx ~= by then return bx < by end
  end
  return #x < #y
end
${KEY_PART}
${IN_APP_VIEW}
-- The view: which topics' broadcasts merge in (their keys), which of them are visible, and the locale.
local none, shown, rules, topicKeys, profileLocale = false, true, {}, {}, nil
local a
if ARGV[5] == 'directory' then
  local critical = {}
  for i = 1, tonumber(ARGV[8]) do critical[i] = ARGV[8 + i] end
  local topics
  none, shown, rules, topics, profileLocale = inAppView(KEYS[6], KEYS[7], critical)
  table.sort(topics, before)
  for i = #topics, ${MAX_FEED_TOPICS} + 1, -1 do topics[i] = nil end
  for _, topic in ipairs(topics) do topicKeys[#topicKeys + 1] = { ARGV[6] .. keyPart(topic), ARGV[7] .. keyPart(topic) } end
  a = 9 + #critical
else
  none, shown = ARGV[5] == '1', ARGV[6] == '1'
  local nrules = tonumber(ARGV[7])
  for i = 1, nrules do rules[ARGV[6 + 2 * i]] = ARGV[7 + 2 * i] == '1' end
  for t = 6, #KEYS, 2 do topicKeys[#topicKeys + 1] = { KEYS[t], KEYS[t + 1] } end
  a = 8 + 2 * nrules
end
local function members(key)
  local t = {}
  for _, m in ipairs(redis.call('SMEMBERS', key)) do t[m] = true end
  return t
end
local seen, read, archived = members(KEYS[2]), members(KEYS[3]), members(KEYS[4])
-- Read implies seen.
for id in pairs(read) do seen[id] = true end
local snoozed = {}
local z = redis.call('ZRANGE', KEYS[5], 0, -1, 'WITHSCORES')
local snoozeTexts = {}
for i = 1, #z, 2 do snoozed[z[i]] = tonumber(z[i + 1]); snoozeTexts[z[i]] = z[i + 1] end

-- The visible broadcasts of the user's topics, earlier topics first.
local candidates = {}
for t = 1, none and 0 or #topicKeys do
  local list = redis.call('ZREVRANGEBYSCORE', topicKeys[t][1], '+inf', cutoff, 'WITHSCORES', 'LIMIT', 0, perTopic)
  if #list > 0 then
    local names = {}
    for i = 1, #list, 2 do names[#names + 1] = list[i] end
    local categories = redis.call('HMGET', topicKeys[t][2], unpack(names))
    for i = 1, #names do
      local rule = rules[categories[i] or '']
      if rule == nil then rule = shown end
      if rule then candidates[#candidates + 1] = { names[i], tonumber(list[2 * i]), t, list[2 * i] } end
    end
  end
end

-- The feed in order: ids[k], and (once known) scores[k] and topics[k]; n entries.
local n = math.min(redis.call('ZCOUNT', KEYS[1], cutoff, '+inf'), maxItems)
local ids, scores, topics, scoreTexts = {}, nil, nil, nil
if #candidates == 0 then
  if n > 0 then ids = redis.call('ZREVRANGE', KEYS[1], 0, n - 1) end
else
  -- Merging needs every score. Own entries win over a broadcast of the same id, as do earlier topics over later.
  local all, have, merged = {}, {}, false
  if n > 0 then
    local own = redis.call('ZREVRANGE', KEYS[1], 0, n - 1, 'WITHSCORES')
    for i = 1, #own, 2 do all[#all + 1] = { own[i], tonumber(own[i + 1]), 0, own[i + 1] }; have[own[i]] = true end
  end
  for _, c in ipairs(candidates) do
    if not have[c[1]] then all[#all + 1] = c; have[c[1]] = true; merged = true end
  end
  if merged then
    table.sort(all, function(x, y)
      if x[2] ~= y[2] then return x[2] > y[2] end
      return before(y[1], x[1])
    end)
  end
  n = math.min(#all, maxItems)
  scores, topics, scoreTexts = {}, {}, {}
  for k = 1, n do ids[k] = all[k][1]; scores[k] = all[k][2]; topics[k] = all[k][3]; scoreTexts[k] = all[k][4] end
end

-- How many entries come before the point (score s, id) in feed order: newer ones, and those plus
-- the entry itself (an id given) or those at s (none given).
local function place(s, sText, id)
  local newer, upto = 0, 0
  if scores then
    for k = 1, n do
      if scores[k] > s or (id and scores[k] == s and before(id, ids[k])) then newer = newer + 1; upto = upto + 1
      elseif scores[k] == s and (not id or ids[k] == id) then upto = upto + 1 end
    end
    return newer, upto
  end
  newer = redis.call('ZCOUNT', KEYS[1], '(' .. sText, '+inf')
  upto = newer
  for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], sText, sText)) do
    if id and before(id, m) then newer = newer + 1; upto = upto + 1 elseif not id or m == id then upto = upto + 1 end
  end
  -- Past the feed's size (or before the retention) is all the feed.
  return math.min(newer, n), math.min(upto, n)
end

-- Snoozed until later, as a set: the loops over the feed look each entry up once, without a call.
local hiddenNow = {}
for id, until_ in pairs(snoozed) do
  if until_ > now then hiddenNow[id] = true end
end
local unseen, unread, total = 0, 0, 0
for k = 1, n do
  local id = ids[k]
  if not archived[id] and not hiddenNow[id] then
    total = total + 1
    if not seen[id] then unseen = unseen + 1 end
    if not read[id] then unread = unread + 1 end
  end
end

local contentPrefix, localesKey, userLocale = ARGV[a], ARGV[a + 1], profileLocale or ARGV[a + 2]
a = a + 3
${CONTENT_OF}
local picked = {}
local more = 0
local mode = ARGV[a]
if mode == 'page' then
  local first = 1
  if ARGV[a + 1] ~= '' then
    local _, upto = place(tonumber(ARGV[a + 1]), ARGV[a + 1], ARGV[a + 2])
    first = upto + 1
  end
  local wantArchived, status, limit = ARGV[a + 3] == '1', ARGV[a + 4], tonumber(ARGV[a + 5])
  for k = first, n do
    local id = ids[k]
    local ok = ((archived[id] or false) == wantArchived) and not hiddenNow[id]
    if ok and status == 'unread' then ok = not read[id] end
    if ok and status == 'unseen' then ok = not seen[id] end
    if ok then
      if #picked == limit then more = 1; break end
      picked[#picked + 1] = k
    end
  end
elseif mode == 'since' then
  local newer = place(tonumber(ARGV[a + 1]), ARGV[a + 1], ARGV[a + 2])
  local limit = tonumber(ARGV[a + 3])
  for k = newer, 1, -1 do
    local id = ids[k]
    if not archived[id] and not hiddenNow[id] then
      if #picked == limit then break end
      picked[#picked + 1] = k
    end
  end
elseif mode == 'item' then
  for k = 1, n do
    if ids[k] == ARGV[a + 1] then picked[1] = k; break end
  end
elseif mode == 'mark' then
  local first = 1
  if ARGV[a + 1] ~= '' then
    -- At or before the time: everything after what is newer than it.
    first = place(tonumber(ARGV[a + 1]), ARGV[a + 1], nil) + 1
  end
  local what = ARGV[a + 2]
  -- Marking read marks seen too, and read implies seen: pending is just "not yet <what>".
  local done = what == 'read' and read or what == 'seen' and seen or archived
  for k = first, n do
    local id = ids[k]
    if not hiddenNow[id] and (what == 'archived' or not archived[id]) and not done[id] then picked[#picked + 1] = k end
  end
elseif mode == 'list' then
  for k = 1, math.min(n, tonumber(ARGV[a + 1])) do picked[k] = k end
end

-- The selected entries' scores, when the feed was read without them: one range of ranks. Kept as
-- the text Redis gave: a script turning numbers into text pays for a sprintf each.
local scoreOf = {}
if #picked > 0 then
  if scoreTexts then
    for _, k in ipairs(picked) do scoreOf[k] = scoreTexts[k] end
  else
    local lo, hi = picked[1], picked[1]
    for _, k in ipairs(picked) do lo = math.min(lo, k); hi = math.max(hi, k) end
    local ranged = redis.call('ZREVRANGE', KEYS[1], lo - 1, hi - 1, 'WITHSCORES')
    for _, k in ipairs(picked) do scoreOf[k] = ranged[2 * (k - lo) + 2] end
  end
end
local contents
if contentPrefix ~= '' and #picked > 0 then
  local pickedIds, pickedTopics = {}, {}
  for j, k in ipairs(picked) do pickedIds[j] = ids[k]; pickedTopics[j] = topics and topics[k] or 0 end
  contents = contentsOf(pickedIds, pickedTopics)
end
local function flagsOf(id)
  local flags = 0
  if seen[id] then flags = flags + 1 end
  if read[id] then flags = flags + 2 end
  if archived[id] then flags = flags + 4 end
  return flags
end
-- An id as JSON: cjson, whatever the id holds, costs less than the pattern that found ids needing
-- no escapes (it writes / as \\/, which JSON allows).
local jsonId = cjson.encode
-- The tail of an item in the API's form, by its flags (1 seen, 2 read, 4 archived), made when
-- first needed. A page never shows a snoozed item.
local states = {}
local function stateOf(f)
  if not states[f] then
    states[f] = '\\001","seen":' .. tostring(f % 2 == 1) .. ',"read":' .. tostring(math.floor(f / 2) % 2 == 1)
      .. ',"archived":' .. tostring(f >= 4) .. ',"snoozed_until":null}'
  end
  return states[f]
end
-- A page asked for in the API's form: the answer's body, ready to send but for its times, when
-- every item's content is stored in the current form (see storedContent). Each time is its score
-- between two \\001 bytes (which JSON text never holds raw) for JavaScript to write as ISO text:
-- formatting twenty dates here cost Redis more than the parsing it saved the API.
if mode == 'page' and ARGV[a + 6] == '1' then
  local body = { '{"data":[' }
  local fits, b = true, 1
  for j, k in ipairs(picked) do
    local c = contents and contents[j] or ''
    if c ~= '' then
      local p = string.sub(c, 1, 7) == '{"v":2,' and string.find(c, ',"category":', 8, true)
      if not p then fits = false; break end
      local idJson = jsonId(ids[k])
      body[b + 1] = b == 1 and '{"id":' or ',{"id":'
      body[b + 2] = idJson; body[b + 3] = ',"request_id":'; body[b + 4] = idJson; body[b + 5] = ','
      body[b + 6] = string.sub(c, p + 1, -2)
      body[b + 7] = ',"created_at":"\\001'; body[b + 8] = scoreOf[k]; body[b + 9] = stateOf(flagsOf(ids[k]))
      b = b + 9
    end
  end
  if fits then
    body[b + 1] = '],"counts":{"unseen":' .. unseen .. ',"unread":' .. unread .. ',"total":' .. total .. '},"next_cursor":'
    -- First line: where the next page starts (score and id of the page's last entry), when there is one.
    local last = picked[#picked]
    local head = (more == 1 and last) and (scoreOf[last] .. ' ' .. jsonId(ids[last])) or ''
    -- The head goes in the first piece: every string a script makes is hashed whole (Redis's Lua
    -- hashes each byte), so joining the body to it afterwards hashed and copied the page twice.
    body[1] = 'A' .. head .. '\\n{"data":['
    return table.concat(body)
  end
end
-- One JSON text (a flat array) rather than a reply of many elements, which the API's client takes
-- far longer to parse than the one string; the stored content is JSON already and goes in as it is.
local digits = { [0] = '0', '1', '2', '3', '4', '5', '6', '7' }
local out = { '[', tostring(unseen), ',', tostring(unread), ',', tostring(total), ',', tostring(n), ',', digits[more] }
local m = #out
for j, k in ipairs(picked) do
  local id = ids[k]
  out[m + 1] = ','; out[m + 2] = jsonId(id); out[m + 3] = ','
  out[m + 4] = scoreOf[k]; out[m + 5] = ','; out[m + 6] = digits[flagsOf(id)]; out[m + 7] = ','; out[m + 8] = snoozeTexts[id] or '-1'
  out[m + 9] = ','; out[m + 10] = topics and tostring(topics[k]) or '0'
  m = m + 10
  if contents then out[m + 1] = ','; out[m + 2] = contents[j] ~= '' and contents[j] or 'null'; m = m + 2 end
end
out[m + 1] = ']'
return table.concat(out)`, 'SNAPSHOT');

/** What a snapshot picks out of the feed (see SNAPSHOT). */
type Selection =
  | { mode: 'page'; after: { score: number; id: string } | null; archived: boolean; status: 'all' | 'unread' | 'unseen'; limit: number; answer?: boolean }
  | { mode: 'since'; after: { score: number; id: string }; limit: number }
  | { mode: 'item'; id: string }
  | { mode: 'mark'; beforeMs?: number; what: 'seen' | 'read' | 'archived' }
  | { mode: 'list'; limit: number }
  | { mode: 'none' };

/** Content read with the selection, in the user's locale (see SNAPSHOT's contentOf). */
interface ContentWanted {
  locale: string;
  /** Own entries are read in the locale they were rendered in for this user. */
  ownLocales: boolean;
}

/** A snapshot's counts, how many entries the feed holds, and the entries selected. */
interface Snapshot {
  counts: InboxCounts;
  size: number;
  /** A page has a next one. */
  more: boolean;
  refs: Ref[];
  /** Per ref, its content (null when gone), when content was asked for. */
  contents: (InboxContent | null)[];
}

/** Broadcast member lists are capped at what a feed could ever show. */
const BROADCASTS_READ = 1_000;

const PAD2 = Array.from({ length: 60 }, (_, i) => String(i).padStart(2, '0'));
const PAD3 = Array.from({ length: 1_000 }, (_, i) => String(i).padStart(3, '0'));
/** 'YYYY-MM-DDT' by day since the epoch: a page's items share a few days. */
const dayPrefixes = new Map<number, string>();

/** `new Date(ms).toISOString()`, at half its cost per feed page (the date part is remembered per day). */
function isoTime(ms: number): string {
  if (!Number.isInteger(ms) || ms < 0 || ms > 253_402_300_799_999) return new Date(ms).toISOString();
  const day = Math.floor(ms / DAY);
  let prefix = dayPrefixes.get(day);
  if (prefix === undefined) {
    if (dayPrefixes.size >= 4_096) dayPrefixes.clear();
    prefix = new Date(day * DAY).toISOString().slice(0, 11);
    dayPrefixes.set(day, prefix);
  }
  let t = ms - day * DAY;
  const milli = t % 1_000;
  t = (t - milli) / 1_000;
  const second = t % 60;
  t = (t - second) / 60;
  const minute = t % 60;
  return `${prefix}${PAD2[(t - minute) / 60]}:${PAD2[minute]}:${PAD2[second]}.${PAD3[milli]}Z`;
}

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
  /** A topic's broadcast (read in the user's locale), not an own entry. */
  broadcast: boolean;
  seen: boolean;
  read: boolean;
  archived: boolean;
  snoozedUntil: number | null;
}

/** A snapshot from SNAPSHOT's flat JSON array (`content`: each entry carries its content). */
function parseSnapshot(raw: string, content: boolean): Snapshot {
  const out = JSON.parse(raw) as (string | number | InboxContent | null)[];
  const refs: Ref[] = [];
  const contents: (InboxContent | null)[] = [];
  const stride = content ? 6 : 5;
  for (let i = 5; i < out.length; i += stride) {
    if (content) contents.push(out[i + 5] as InboxContent | null);
    const flags = out[i + 2] as number;
    const snoozedUntil = out[i + 3] as number;
    const topic = out[i + 4] as number;
    refs.push({
      id: out[i] as string, score: out[i + 1] as number, broadcast: topic !== 0,
      seen: (flags & 1) !== 0, read: (flags & 2) !== 0, archived: (flags & 4) !== 0, snoozedUntil: snoozedUntil === -1 ? null : snoozedUntil,
    });
  }
  return {
    counts: { unseen: out[0] as number, unread: out[1] as number, total: out[2] as number }, size: out[3] as number, more: out[4] === 1, refs, contents,
  };
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
    // One script call stores the content and adds every reference (a password reset is one command);
    // only inboxes that went over their size or retention are trimmed, by a second. A fan-out's batch
    // is written by several calls one after another: Redis runs nothing else during a script, and a
    // password reset's write must not wait behind a thousand references.
    const cutoff = this.now() - this.retentionMs;
    const stored = contents.map(({ locale, content }) => ({ requestId: content.id, key: this.contentKey(tenant, content.id), locale, value: storedContent(content) }));
    const answers: number[] = [];
    for (let from = 0; from < entries.length; from += MAX_ENTRIES_PER_WRITE) {
      const part = entries.length <= MAX_ENTRIES_PER_WRITE ? entries : entries.slice(from, from + MAX_ENTRIES_PER_WRITE);
      // Each call stores the content its references point at: a call is whole on its own.
      const requests = part === entries ? undefined : new Set(part.map((e) => e.requestId));
      const used = requests ? stored.filter((c) => requests.has(c.requestId)) : stored;
      const keys: string[] = [];
      const args: (string | number)[] = [used.length, this.contentTtlSeconds];
      for (const c of used) {
        keys.push(c.key);
        args.push(c.locale, c.value);
      }
      for (const e of part) {
        const k = this.keys(tenant, e.userId);
        keys.push(k.index, k.locales);
        args.push(e.createdAt, e.requestId, e.locale);
      }
      args.push(cutoff, this.maxItems);
      answers.push(...((await ADD.run(this.redis, keys, args)) as number[]));
    }
    const added = answers.map((n) => n >= 1);
    const full = entries.filter((_, i) => answers[i] === 3);
    const madeRoom = new Set<string>();
    if (full.length) {
      const users = [...new Set(full.map((e) => e.userId))];
      // The references are stored: a failed trim must not fail the write (a retry would find them
      // there and take them for repeats). The inbox's next delivery flags it again, and reads cap it meanwhile.
      const gone = (await TRIM.run(this.redis, users.flatMap((u) => Object.values(this.keys(tenant, u))), [cutoff, this.maxItems])
        .catch(() => users.map(() => 1))) as number[];
      users.forEach((u, i) => { if (gone[i] === 1) madeRoom.add(u); });
    }
    if (this.opts.events) {
      const byRequest = new Map<string, { users: string[]; at: number; trimmed: Set<string> }>();
      entries.forEach((e, i) => {
        if (!added[i]) return;
        const group = byRequest.get(e.requestId) ?? { users: [], at: e.createdAt, trimmed: new Set<string>() };
        group.users.push(e.userId);
        if (madeRoom.has(e.userId)) group.trimmed.add(e.userId);
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
    for (const { locale, content } of contents) pipeline.hset(key, locale, storedContent(content));
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
   * One atomic snapshot of a user's feed (so counts and pages agree), computed in Redis: own entries
   * and (with a view) the visible broadcasts of their topics, newest first, at most `maxItems` of
   * them; its counts; and the entries `selection` picks. Past the retention is gone even before a
   * new delivery trims it (an idle inbox's badge must not count it).
   */
  private async snapshot(tenant: string, userId: string, view: InboxView | DirectoryView | undefined, selection: Selection, content?: ContentWanted): Promise<Snapshot> {
    return parseSnapshot(await this.runSnapshot(tenant, userId, view, selection, content, this.redis), content !== undefined);
  }

  /** SNAPSHOT's answer, as it comes. */
  private async runSnapshot(tenant: string, userId: string, view: InboxView | DirectoryView | undefined, selection: Selection, content: ContentWanted | undefined, redis: Redis): Promise<string> {
    const k = this.keys(tenant, userId);
    const keys = [k.index, k.seen, k.read, k.archived, k.snoozed];
    const now = this.now();
    const args: (string | number)[] = [now, now - this.retentionMs, this.maxItems, BROADCASTS_READ];
    if (view && 'profileKey' in view) {
      keys.push(view.profileKey, view.topicsKey);
      args.push('directory', `${this.keySpace.tenant(tenant, 'bcast')}:`, `${this.keySpace.tenant(tenant, 'bcast-cat')}:`, view.criticalCategories.length, ...view.criticalCategories);
    } else {
      const topics = firstFeedTopics(view?.topics ?? []);
      for (const topic of topics) keys.push(this.broadcastKey(tenant, topic), this.broadcastCategories(tenant, topic));
      // Visibility applies to broadcasts alone: a user in no topic sends none of their preference rules.
      const visibility = topics.length && view ? view.visibility : { none: false, shown: true, categories: {} };
      const rules = Object.entries(visibility.categories);
      args.push(visibility.none ? 1 : 0, visibility.shown ? 1 : 0, rules.length);
      for (const [category, shown] of rules) args.push(category, shown ? 1 : 0);
    }
    if (content) args.push(...this.contentArgs(tenant, content.ownLocales ? userId : undefined, content.locale));
    else args.push('', '', '');
    switch (selection.mode) {
      case 'page':
        args.push('page', selection.after?.score ?? '', selection.after?.id ?? '', selection.archived ? 1 : 0, selection.status, selection.limit, selection.answer ? 1 : 0);
        break;
      case 'since': args.push('since', selection.after.score, selection.after.id, selection.limit); break;
      case 'item': args.push('item', selection.id); break;
      case 'mark': args.push('mark', selection.beforeMs ?? '', selection.what); break;
      case 'list': args.push('list', selection.limit); break;
      case 'none': args.push('none'); break;
    }
    return (await SNAPSHOT.run(redis, keys, args)) as string;
  }

  /** Reads content for refs, by the locale rule of CONTENT_OF (own entries only when the user is known). */
  private async items(tenant: string, userId: string | undefined, refs: Ref[], locale: string): Promise<InboxItem[]> {
    if (refs.length === 0) return [];
    const args: (string | number)[] = [...this.contentArgs(tenant, userId, locale)];
    for (const r of refs) args.push(r.id, r.broadcast ? 1 : 0);
    const contents = (await CONTENT.run(this.redis, [], args)) as string[];
    return this.itemsOf({ refs, contents: contents.map((raw) => (raw ? JSON.parse(raw) as InboxContent : null)) });
  }

  /** Where content lives and in which locale it is read (CONTENT_OF's first arguments). */
  private contentArgs(tenant: string, userId: string | undefined, locale: string): [string, string, string] {
    return [`${this.keySpace.tenant(tenant, 'notif')}:`, userId === undefined ? '' : this.keys(tenant, userId).locales, locale];
  }

  /** A snapshot's refs with the content read beside them (a ref whose content is gone is left out). */
  private itemsOf(snap: Pick<Snapshot, 'refs' | 'contents'>): InboxItem[] {
    const out: InboxItem[] = [];
    snap.refs.forEach((r, i) => {
      if (snap.contents[i]) out.push(this.toItem(r, snap.contents[i]));
    });
    return out;
  }

  private toItem(r: Ref, c: InboxContent): InboxItem {
    return {
      id: r.id, category: c.category, tier: c.tier ?? '', title: c.title, body: c.body,
      action_url: c.action_url ?? null, data: c.data ?? null, created_at: r.score,
      seen: r.seen, read: r.read, archived: r.archived, snoozed_until: r.snoozedUntil !== null && r.snoozedUntil > this.now() ? r.snoozedUntil : null,
      // Made when asked: only streams' event ids and the page's last item need one (base64 of every
      // item was 3% of a feed read).
      get cursor() { return encodeCursor(r.score, r.id); },
    };
  }

  /**
   * A page of the feed, newest first, with counts from the same snapshot. A cursor resumes after
   * the item it names; items that arrive meanwhile are newer, so they never shift later pages.
   */
  async feed(tenant: string, userId: string, view: InboxView | DirectoryView | undefined, query: FeedQuery = {}): Promise<FeedPage> {
    return this.pageOf(parseSnapshot(await this.runPage(tenant, userId, view, query, false), true));
  }

  /**
   * The same page as the API's answer body (`{data: itemJson[], counts, next_cursor}`), made by the
   * script in Redis where it can be: parsing each item's content and serializing it again was a
   * quarter of the API's CPU per feed read. Content stored before storedContent's form is made here.
   */
  async feedJson(tenant: string, userId: string, view: InboxView | DirectoryView | undefined, query: FeedQuery = {}): Promise<string> {
    const raw = await this.runPage(tenant, userId, view, query, true);
    if (!raw.startsWith('A')) {
      const page = this.pageOf(parseSnapshot(raw, true));
      return JSON.stringify({ data: page.items.map(itemJson), counts: page.counts, next_cursor: page.next_cursor });
    }
    const lineEnd = raw.indexOf('\n');
    const space = raw.indexOf(' ');
    const cursor = lineEnd === 1 ? 'null' : `"${encodeCursor(Number(raw.slice(1, space)), JSON.parse(raw.slice(space + 1, lineEnd)) as string)}"`;
    const parts = raw.slice(lineEnd + 1).split('\u0001');
    for (let i = 1; i < parts.length; i += 2) parts[i] = isoTime(Number(parts[i]));
    parts.push(cursor, '}');
    return parts.join('');
  }

  private runPage(tenant: string, userId: string, view: InboxView | DirectoryView | undefined, query: FeedQuery, answer: boolean): Promise<string> {
    const after = query.cursor ? decodeInboxCursor(query.cursor) : null;
    return this.runSnapshot(tenant, userId, view, {
      mode: 'page', after, archived: query.archived ?? false, status: query.status ?? 'all', limit: query.limit ?? 20, answer,
    }, { locale: (view && 'locale' in view ? view.locale : undefined) ?? 'en', ownLocales: true }, this.opts.feedRedis ?? this.redis);
  }

  private pageOf(snap: Snapshot): FeedPage {
    const last = snap.refs[snap.refs.length - 1];
    return { items: this.itemsOf(snap), counts: snap.counts, next_cursor: snap.more && last ? encodeCursor(last.score, last.id) : null };
  }

  /** The feed's counts alone. */
  async counts(tenant: string, userId: string, view?: InboxView): Promise<InboxCounts> {
    return (await this.feedState(tenant, userId, view)).counts;
  }

  /** The counts, and how many entries the feed holds in all (archived and snoozed too, as its cap counts them). */
  async feedState(tenant: string, userId: string, view?: InboxView): Promise<{ counts: InboxCounts; size: number }> {
    const { counts, size } = await this.snapshot(tenant, userId, view, { mode: 'none' });
    return { counts, size };
  }

  /** Items that arrived after a cursor (oldest first): what a reconnecting stream missed. */
  async since(tenant: string, userId: string, view: InboxView | undefined, cursor: string, limit = 100): Promise<InboxItem[]> {
    const after = decodeInboxCursor(cursor);
    if (!after) return [];
    return this.itemsOf(await this.snapshot(tenant, userId, view, { mode: 'since', after, limit }, { locale: view?.locale ?? 'en', ownLocales: true }));
  }

  /**
   * A newly arrived item as a live update shows it (new: unseen, unread), without reading the feed:
   * the user's own entry when `userId` is given, else a broadcast in `locale`.
   */
  async contentItem(tenant: string, id: string, at: number, locale: string, userId?: string): Promise<InboxItem | null> {
    const ref: Ref = { id, score: at, seen: false, read: false, archived: false, snoozedUntil: null, broadcast: userId === undefined };
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
    const [ref] = (await this.snapshot(tenant, userId, view, { mode: 'item', id })).refs;
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
    const after = await this.snapshot(tenant, userId, view, { mode: 'item', id });
    const [item] = after.refs.length ? await this.items(tenant, userId, after.refs, view?.locale ?? 'en') : [];
    return item ? { item, firsts, counts: after.counts } : null;
  }

  /**
   * Marks every item of the feed (optionally only those at or before `beforeMs`) seen, read or
   * archived. Returns, per item, what became true for the first time.
   */
  async markAll(
    tenant: string, userId: string, view: InboxView | undefined, what: 'seen' | 'read' | 'archived', beforeMs?: number, announce?: Announce,
  ): Promise<number> {
    const names: ('seen' | 'read' | 'archived')[] = what === 'read' ? ['seen', 'read'] : [what];
    const { refs } = await this.snapshot(tenant, userId, view, { mode: 'mark', beforeMs, what });
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
    const { refs } = await this.snapshot(tenant, userId, view, { mode: 'list', limit });
    return (await this.items(tenant, userId, refs, view?.locale ?? 'en')).map((i) => ({
      id: i.id, category: i.category, title: i.title, body: i.body, created_at: i.created_at, read: i.read,
    }));
  }
}
