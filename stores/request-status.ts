import type { Redis } from 'ioredis';
import { RECEIPT_ID_LENGTH, receiptId, sha256 } from '../runtime/ids.js';
import { LAST_CHUNK_REASON, type StoredReceipt } from '../schemas/index.js';
import { execOrThrow } from './directory.js';
import type { KeySpace } from './keys.js';
import { RedisScript } from './scripts.js';

/** Where a notification stands, as `GET /v1/notifications/{id}` tells it. */
export const notificationStates = ['queued', 'scheduled', 'processing', 'completed', 'partially_failed', 'failed', 'cancelled', 'expired'] as const;
export type NotificationState = (typeof notificationStates)[number];

/** A notification's status: its state, and how many recipients reached each outcome per channel. */
export interface NotificationStatus {
  id: string;
  status: NotificationState;
  tier: string;
  category: string;
  send_at: string | null;
  /** ISO time validate accepted it (null while queued). */
  accepted_at: string | null;
  /** ISO time of the latest step. */
  updated_at: string;
  /** Recipients resolved so far. */
  recipients: number;
  /** Per channel, per outcome (delivered, failed, suppressed, deferred, …): how many. */
  counts: Record<string, Record<string, number>>;
  /** Why it was rejected or expired, when it was. */
  reason?: string;
}

/** Outcomes that end a recipient's delivery on a channel (deferred and dispatched do not). */
const TERMINAL = new Set(['delivered', 'failed', 'suppressed', 'cancelled', 'expired', 'dead_lettered']);

/** How a status field takes a new value: always, or only when lower or higher than the one kept. */
type MetaMode = 'set' | 'min' | 'max';

/** Between the fields of RECORD's two arguments; never inside one (text from a receipt is cleaned of it). */
const FIELD_SEPARATOR = '\x1f';
/** Longest name (channel, tier, category, channel list) a receipt writes into a status hash. */
const MAX_NAME_LENGTH = 200;
/** A receipt's text as a status field takes it: without the separator, and bounded (receipts are anyone's who may publish them). */
const clean = (text: string, max = MAX_NAME_LENGTH) => (text.includes(FIELD_SEPARATOR) ? text.replaceAll(FIELD_SEPARATOR, '') : text).slice(0, max);

/** Users of one receipt per bulk unit. */
const IDS_PER_UNIT = 1_000;

/**
 * Keys and arguments (a bulk unit's ids each count as one) per script call. Redis runs nothing else
 * while a script runs: at 30,000 a fan-out's calls held it for up to 120 ms, and every password reset
 * waited behind them (Redis SLOWLOG during npm run bench:blast); at 2,000 the longest was 30 ms, on a
 * machine whose two cores the blast kept busy.
 */
const MAX_ARGS_PER_CALL = 2_000;

/** Receipt ids are remembered as long as the status (a replay or redrive days later counts nothing twice). */
const SEEN_TTL_S = 7 * 86_400;
/** A status is kept as long as the receipts stream keeps receipts. */
const STATUS_TTL_S = 7 * 86_400;

/**
 * The script that records a batch of receipt units. KEYS are triples per request (status hash,
 * seen-ids set, push-done set). ARGV[1]: the units' fields, ARGV[2]: per meta field `k mode field
 * value` (mode `set`, `min` or `max`), each joined by FIELD_SEPARATOR. A unit is `k id field count
 * terminalField pushUser`, or for a list of users `k * field terminalField ids` with their receipt
 * ids (22 characters each) in one field: added to the seen set a thousand at a time, counting those
 * that were new — a fan-out's receipt is a few fields instead of six per recipient. Units and meta
 * travel as two arguments because ioredis copies and flattens each argument: with the units as one
 * each, the process running the tracker and the loader took 341 µs per request at 1,000/s, packed
 * 312 (npm run bench:cost with those stages in a process of their own, two interleaved pairs).
 */
const RECORD = new RedisScript(`
local function fields(packed)
  local out, at = {}, 1
  if packed == '' then return out end
  while true do
    local e = string.find(packed, '${FIELD_SEPARATOR}', at, true)
    if not e then out[#out + 1] = string.sub(packed, at); return out end
    out[#out + 1] = string.sub(packed, at, e - 1)
    at = e + 1
  end
end
local A, M, i = fields(ARGV[1]), fields(ARGV[2]), 1
-- Counts are summed per status hash and field, then written once each: a fan-out's thousand units
-- are a thousand SADDs and a few HINCRBYs, not three thousand commands.
local sums = {}
-- Push-done sets written to: only those need their expiry renewed.
local pushed = {}
local function add(k, field, n)
  local byField = sums[k]
  if not byField then byField = {}; sums[k] = byField end
  byField[field] = (byField[field] or 0) + n
end
-- Numbers go to redis.call as text, the common count of one without formatting: Redis formats
-- every number argument with snprintf, a twentieth of this script's cost when each count and
-- expiry was one.
local function text(n)
  return n == 1 and '1' or string.format('%d', n)
end
while i <= #A do
  local k = tonumber(A[i]) * 3
  if A[i + 1] == '*' then
    local ids, fresh, slice = A[i + 4], 0, {}
    for at = 1, #ids, ${RECEIPT_ID_LENGTH} do
      slice[#slice + 1] = string.sub(ids, at, at + ${RECEIPT_ID_LENGTH - 1})
      if #slice == 1000 then fresh = fresh + redis.call('SADD', KEYS[k - 1], unpack(slice)); slice = {} end
    end
    if #slice > 0 then fresh = fresh + redis.call('SADD', KEYS[k - 1], unpack(slice)) end
    if fresh > 0 then
      add(k - 2, A[i + 2], fresh)
      if A[i + 3] ~= '' then add(k - 2, A[i + 3], fresh) end
    end
    i = i + 5
  else
    if redis.call('SADD', KEYS[k - 1], A[i + 1]) == 1 then
      local n = tonumber(A[i + 3])
      add(k - 2, A[i + 2], n)
      if A[i + 4] ~= '' then add(k - 2, A[i + 4], n) end
      if A[i + 5] ~= '' then redis.call('SADD', KEYS[k], A[i + 5]); pushed[k] = true end
    end
    i = i + 6
  end
end
for k, byField in pairs(sums) do
  for field, n in pairs(byField) do redis.call('HINCRBY', KEYS[k], field, text(n)) end
end
i = 1
-- Fields written (outright, or a min or max that moved) go in one HSET per status hash.
local sets = {}
while i <= #M do
  local k = tonumber(M[i]) * 3
  local mode, field, value = M[i + 1], M[i + 2], M[i + 3]
  local write = mode == 'set'
  if not write then
    local old = redis.call('HGET', KEYS[k - 2], field)
    write = old == false or (mode == 'min' and tonumber(value) < tonumber(old)) or (mode == 'max' and tonumber(value) > tonumber(old))
  end
  if write then
    local pairs_ = sets[k - 2]
    if not pairs_ then pairs_ = {}; sets[k - 2] = pairs_ end
    pairs_[#pairs_ + 1] = field; pairs_[#pairs_ + 1] = value
  end
  i = i + 4
end
for k, fields in pairs(sets) do redis.call('HSET', KEYS[k], unpack(fields)) end
for k = 1, #KEYS, 3 do
  redis.call('EXPIRE', KEYS[k], '${STATUS_TTL_S}')
  redis.call('EXPIRE', KEYS[k + 1], '${SEEN_TTL_S}')
  if pushed[k + 2] then redis.call('EXPIRE', KEYS[k + 2], '${STATUS_TTL_S}') end
end
return 1`, 'RECORD');

/** KEYS idempotency key, status hash; ARGV id, window s, tier, category, now, send_at, status ttl s. */
const ADMIT = new RedisScript(`
if not redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2], 'NX') then return redis.call('GET', KEYS[1]) or ARGV[1] end
redis.call('HSETNX', KEYS[2], 'tier', ARGV[3])
redis.call('HSETNX', KEYS[2], 'category', ARGV[4])
redis.call('HSETNX', KEYS[2], 'updated', ARGV[5])
redis.call('HSETNX', KEYS[2], 'send_at', ARGV[6])
redis.call('EXPIRE', KEYS[2], ARGV[7])
return false`, 'ADMIT');

/** A user named without their id (the push-done sets must hold nothing erasure would have to find). */
const userHash = (user: string) => sha256(user).slice(0, 16);

/** The arguments of one RECORD call being built: keys in triples per request, units, meta. */
class RecordCall {
  readonly keys: string[] = [];
  /** The units' fields, in order. */
  readonly units: (string | number)[] = [];
  /** Keys and fields so far, a bulk unit's ids each counting one: what bounds the call. */
  size = 0;
  private readonly slots = new Map<string, number>();
  private lastReceipt?: StoredReceipt;
  private lastSlot = 0;
  /** Per request slot and field: one mode and value, however many receipts set it (the script reads and writes each once). */
  private readonly metas = new Map<string, { k: number; mode: MetaMode; field: string; value: string | number }>();

  constructor(private readonly keysOf: (r: StoredReceipt) => [string, string, string]) {}

  unit(...fields: (string | number)[]): void {
    for (const f of fields) this.units.push(f);
    this.size += fields.length;
  }

  meta(k: number, mode: MetaMode, field: string, value: string | number): void {
    const id = `${k} ${field}`;
    const had = this.metas.get(id);
    if (had && ((mode === 'max' && Number(value) <= Number(had.value)) || (mode === 'min' && Number(value) >= Number(had.value)))) return;
    if (!had) this.size += 4;
    this.metas.set(id, { k, mode, field, value });
  }

  metaArgument(): string {
    let packed = '';
    for (const m of this.metas.values()) packed += `${packed ? FIELD_SEPARATOR : ''}${m.k}${FIELD_SEPARATOR}${m.mode}${FIELD_SEPARATOR}${m.field}${FIELD_SEPARATOR}${m.value}`;
    return packed;
  }

  /** The request's slot in this call (its keys are added the first time). */
  slot(r: StoredReceipt): number {
    // Asked several times per receipt in a row: the last answer is kept.
    if (r === this.lastReceipt) return this.lastSlot;
    const id = `${r.tenant}\u0000${r.request_id}`;
    let slot = this.slots.get(id);
    if (slot === undefined) {
      slot = this.slots.size + 1;
      this.slots.set(id, slot);
      for (const key of this.keysOf(r)) this.keys.push(key);
      this.size += 3;
    }
    this.lastReceipt = r;
    this.lastSlot = slot;
    return slot;
  }
}

/**
 * Per-request status in Redis, fed from the receipts (the tracker node) so it is fresh within a
 * second of each step, long before ClickHouse has loaded them. Each receipt id is counted once, so a
 * receipt emitted again after a crash changes nothing; push counts a recipient done once whatever
 * number of devices they have.
 */
export class RequestStatuses {
  constructor(private readonly redis: Redis, private readonly keys: KeySpace) {}

  private keysOf(tenant: string, requestId: string): [string, string, string] {
    return [
      this.keys.tenant(tenant, 'status', requestId),
      this.keys.tenant(tenant, 'status-seen', requestId),
      this.keys.tenant(tenant, 'status-push', requestId),
    ];
  }

  /**
   * Takes a request over HTTP: remembers its idempotency key (`idempotencyKey`, for `windowS`) and,
   * when the key is new, notes the request as `queued` so its status reads before validate has seen
   * it. One script call (the hot path of `POST /v1/notifications`). Returns null when the key is new,
   * or the id the key was first used for.
   */
  async admit(idempotencyKey: string, windowS: number, tenant: string, requestId: string, meta: { tier: string; category: string; send_at?: string }, now: number): Promise<string | null> {
    const [status] = this.keysOf(tenant, requestId);
    const original = await ADMIT.run(this.redis, [idempotencyKey, status], [requestId, windowS, meta.tier, meta.category, now, meta.send_at ?? '', STATUS_TTL_S]);
    return original === null ? null : String(original);
  }

  /** Forgets an idempotency key whose request could not be stored (the producer's retry is no repeat). */
  async forget(idempotencyKey: string): Promise<void> {
    await this.redis.del(idempotencyKey);
  }

  /**
   * Records a batch of receipts: one script call per few thousand recipient steps, so that no call
   * holds Redis for long (MAX_ARGS_PER_CALL).
   */
  async record(receipts: StoredReceipt[]): Promise<void> {
    let call = new RecordCall((r) => this.keysOf(r.tenant, r.request_id));
    const flush = async () => {
      if (call.keys.length) await RECORD.run(this.redis, call.keys, [call.units.join(FIELD_SEPARATOR), call.metaArgument()]);
      call = new RecordCall((r) => this.keysOf(r.tenant, r.request_id));
    };
    for (const r of receipts) {
      if (!r.request_id || !r.tenant) continue;
      const channel = clean(r.channel);
      const field = channel ? `c:${channel}:${r.status}` : `s:${r.status}`;
      const terminal = channel && TERMINAL.has(r.status) ? `t:${channel}` : '';
      // Room for this receipt's meta and keys too.
      if (call.size + 40 >= MAX_ARGS_PER_CALL) await flush();
      if (r.user_ids && r.channel !== 'push') {
        // Each user counts once per step, whichever receipt (or how many) named them. Their ids weigh
        // on a call as arguments would: a call's script time stays bounded.
        for (let i = 0; i < r.user_ids.length; i += IDS_PER_UNIT) {
          const users = r.user_ids.slice(i, i + IDS_PER_UNIT);
          if (call.size + users.length + 40 >= MAX_ARGS_PER_CALL) await flush();
          let ids = '';
          for (const user of users) ids += receiptId(r, user);
          call.unit(call.slot(r), '*', field, terminal, ids);
          call.size += users.length;
        }
      } else {
        // One unit, or a push list: push is done per recipient, not per device, so each needs its done-set entry.
        const one = (unit: string, user: string, count: number) => {
          const pushUser = terminal && r.channel === 'push' && user ? userHash(user) : '';
          call.unit(call.slot(r), receiptId(r, unit), field, count, pushUser ? '' : terminal, pushUser);
        };
        if (!r.user_ids) one(r.unit ?? r.user_id, r.user_id, r.count);
        else {
          for (const user of r.user_ids) {
            if (call.size + 46 >= MAX_ARGS_PER_CALL) await flush();
            one(user, user, 1);
          }
        }
      }
      const k = call.slot(r);
      if (r.stage === 'resolve' && r.status === 'resolved') {
        call.unit(k, receiptId(r, `recipients:${r.unit ?? ''}`), 'recipients', r.count, '', '');
        // A list of users resolves at once; a topic says so with its last page.
        if (!r.unit || r.unit === 'end' || r.reason === LAST_CHUNK_REASON) call.meta(k, 'set', 'resolved_all', '1');
      }
      if (r.stage === 'resolve' && r.status === 'cancelled') call.meta(k, 'set', 'resolved_all', '1');
      if (r.stage === 'validate') {
        call.meta(k, 'set', 'tier', clean(r.tier));
        call.meta(k, 'set', 'category', clean(r.category));
        if (r.status === 'accepted') {
          call.meta(k, 'min', 'accepted', r.ts);
          if (r.channels) call.meta(k, 'set', 'channels', clean(r.channels.join(',')));
        }
        if (r.status === 'deferred' && r.reason.startsWith('send_at ')) call.meta(k, 'set', 'send_at', clean(r.reason.slice('send_at '.length)));
        if (r.status === 'rejected' || r.status === 'expired') call.meta(k, 'set', 'reason', clean(r.reason, 500));
      }
      call.meta(k, 'max', 'updated', r.ts);
    }
    await flush();
  }

  /** A request's status, or null when nothing is known of it. */
  async get(tenant: string, requestId: string): Promise<NotificationStatus | null> {
    const [statusKey, , pushKey] = this.keysOf(tenant, requestId);
    const [hash, pushDone] = await execOrThrow(this.redis.pipeline().hgetall(statusKey).scard(pushKey)) as [Record<string, string>, number];
    if (!hash || Object.keys(hash).length === 0) return null;
    return statusOf(requestId, hash, pushDone);
  }
}

/** Reads a state out of the recorded counts. Exported for unit tests. */
export function statusOf(id: string, h: Record<string, string>, pushDone: number): NotificationStatus {
  const num = (field: string) => Number(h[field] ?? 0);
  const counts: Record<string, Record<string, number>> = {};
  const total: Record<string, number> = {};
  for (const [field, value] of Object.entries(h)) {
    if (!field.startsWith('c:')) continue;
    const cut = field.indexOf(':', 2);
    const channel = field.slice(2, cut);
    const outcome = field.slice(cut + 1);
    (counts[channel] ??= {})[outcome] = Number(value);
    total[outcome] = (total[outcome] ?? 0) + Number(value);
  }
  const recipients = num('recipients');
  const channels = (h.channels ?? '').split(',').filter(Boolean);
  const done = (channel: string) => num(`t:${channel}`) + (channel === 'push' ? pushDone : 0);
  const settled = h.resolved_all === '1' && channels.length > 0 && channels.every((c) => done(c) >= recipients);
  const failed = (total.failed ?? 0) + (total.dead_lettered ?? 0) + num('s:dead_lettered');
  const delivered = total.delivered ?? 0;
  let status: NotificationState;
  if (num('s:rejected') > 0) status = 'failed';
  // Given up before any channel was reached (validate, resolve or the filter dead-lettered it).
  else if (num('s:dead_lettered') > 0 && delivered === 0 && (!h.resolved_all || !channels.some((c) => done(c) > 0))) status = 'failed';
  else if (num('s:expired') > 0) status = 'expired';
  else if (!h.accepted) status = 'queued';
  else if ((total.cancelled ?? 0) + num('s:cancelled') > 0) status = 'cancelled';
  else if (!settled) status = h.send_at && !h.resolved_all && Date.parse(h.send_at) > num('updated') ? 'scheduled' : 'processing';
  else if (failed === 0 && (total.expired ?? 0) === 0) status = 'completed';
  else if (delivered === 0) status = failed > 0 ? 'failed' : 'expired';
  else status = 'partially_failed';
  return {
    id,
    status,
    tier: h.tier ?? '',
    category: h.category ?? '',
    send_at: h.send_at || null,
    accepted_at: h.accepted ? new Date(Number(h.accepted)).toISOString() : null,
    updated_at: new Date(num('updated')).toISOString(),
    recipients,
    counts,
    ...(h.reason ? { reason: h.reason } : {}),
  };
}
