import { z } from 'zod';

export const receiptStatuses = [
  'accepted', 'rejected', 'resolved', 'suppressed', 'deferred', 'dispatched', 'delivered',
  'deduplicated', 'failed', 'dead_lettered', 'expired', 'cancelled',
  // Engagement (the in-app inbox): the funnel goes on past delivered. Each counts a user's first time.
  'seen', 'read', 'clicked', 'archived',
] as const;
/** The reason on a topic's last chunk `resolved` receipt: the fan-out is whole. */
export const LAST_CHUNK_REASON = 'last chunk';

export const receiptStatusSchema = z.enum(receiptStatuses);

/** Bounds on a receipt's lists and its unit (the schema's and its fast decoder's). */
export const receiptLimits = { unitLength: 200, channels: 16 } as const;
export type ReceiptStatus = z.infer<typeof receiptStatusSchema>;

/**
 * One step in the life of a notification; the row analysts count in ClickHouse. Its id is derived
 * (runtime/ids.ts `receiptId`), never sent: the same step always gets the same id.
 */
export const receiptSchema = z.strictObject({
  /** ms since epoch */
  ts: z.number(),
  stage: z.string(),
  status: receiptStatusSchema,
  request_id: z.string(),
  tenant: z.string(),
  tier: z.string(),
  category: z.string(),
  channel: z.string().default(''),
  provider: z.string().default(''),
  user_id: z.string().default(''),
  reason: z.string().default(''),
  attempt: z.number().int().default(1),
  /** ms from the request's acceptance to this step */
  latency_ms: z.number().int().min(0).default(0),
  /** How many recipients this row stands for (a chunk-level `resolved` row counts its users). */
  count: z.number().int().min(0).default(1),
  /**
   * Shorthand on the wire for many recipients with the same outcome: the loader writes one row per
   * listed user (count 1 each) and ignores `user_id`. Keeps a 500-recipient batch one receipt.
   */
  user_ids: z.array(z.string()).optional(),
  /**
   * What this row counts when it is not simply its user: a device (`user#tokenhash`), a chunk
   * (`chunk:3`), a delivery group. With tenant, request, stage, status and channel it makes the
   * receipt's id, so a receipt emitted again after a crash is counted once.
   */
  unit: z.string().max(receiptLimits.unitLength).optional(),
  /**
   * On validate's `accepted`: the channels the request goes out on, so the status tracker knows
   * when every recipient is done. Not a ClickHouse column.
   */
  channels: z.array(z.string()).max(receiptLimits.channels).optional(),
});
export type Receipt = z.input<typeof receiptSchema>;
export type StoredReceipt = z.output<typeof receiptSchema>;

/** notify.receipt.<status>: receipts travel in batches, never one message each on hot paths. */
export const receiptBatchSchema = z.strictObject({ receipts: z.array(receiptSchema).min(1) });
export type ReceiptBatch = z.infer<typeof receiptBatchSchema>;

/** The keys the fast decoder reads: a key the schema gains is left to the schema until it reads it too. */
export const decodedReceiptKeys = ['ts', 'stage', 'status', 'request_id', 'tenant', 'tier', 'category', 'channel', 'provider',
  'user_id', 'reason', 'attempt', 'latency_ms', 'count', 'user_ids', 'unit', 'channels'] as const;
const knownKeys = new Set<string>(decodedReceiptKeys);
const statuses = new Set<string>(receiptStatuses);
// The schema's own defaults, so that they are written once.
const defaults = receiptSchema.parse({ ts: 0, stage: '', status: 'accepted', request_id: '', tenant: '', tier: '', category: '' });
const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const isString = (v: unknown): v is string => typeof v === 'string';
const isInt = (v: unknown): v is number => Number.isSafeInteger(v);
const isCount = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 0;
const isStrings = (v: unknown): v is string[] => Array.isArray(v) && v.every(isString);

/** A defaulted field: absent takes the default, present must pass `ok`; undefined when it fails. */
function orDefault<T>(v: unknown, fallback: T, ok: (v: unknown) => v is T): T | undefined {
  return v === undefined ? fallback : ok(v) ? v : undefined;
}

function decodeReceipt(raw: unknown): StoredReceipt | undefined {
  if (!isObject(raw)) return undefined;
  for (const key in raw) if (!knownKeys.has(key)) return undefined;
  const { ts, stage, status, request_id, tenant, tier, category } = raw;
  if (typeof ts !== 'number' || !Number.isFinite(ts) || !isString(stage) || !isString(status) || !statuses.has(status)
    || !isString(request_id) || !isString(tenant) || !isString(tier) || !isString(category)) return undefined;
  const channel = orDefault(raw.channel, defaults.channel, isString);
  const provider = orDefault(raw.provider, defaults.provider, isString);
  const user_id = orDefault(raw.user_id, defaults.user_id, isString);
  const reason = orDefault(raw.reason, defaults.reason, isString);
  const attempt = orDefault(raw.attempt, defaults.attempt, isInt);
  const latency_ms = orDefault(raw.latency_ms, defaults.latency_ms, isCount);
  const count = orDefault(raw.count, defaults.count, isCount);
  if (channel === undefined || provider === undefined || user_id === undefined || reason === undefined
    || attempt === undefined || latency_ms === undefined || count === undefined) return undefined;
  const out: StoredReceipt = {
    ts, stage, status: status as ReceiptStatus, request_id, tenant, tier, category, channel, provider, user_id, reason, attempt, latency_ms, count,
  };
  // An optional key present as undefined is left to the schema (JSON never makes one).
  const { user_ids, unit, channels } = raw;
  if ('user_ids' in raw) { if (!isStrings(user_ids)) return undefined; out.user_ids = user_ids; }
  if ('unit' in raw) { if (!isString(unit) || unit.length > receiptLimits.unitLength) return undefined; out.unit = unit; }
  if ('channels' in raw) { if (!isStrings(channels) || channels.length > receiptLimits.channels) return undefined; out.channels = channels; }
  return out;
}

/**
 * What `receiptBatchSchema` parses `raw` into, built without zod when the batch is plainly valid
 * (Herald's own, which the loader and tracker read by the thousand a second); undefined otherwise,
 * for the schema to decide and say what is wrong. It never accepts what the schema rejects; its
 * result shares raw's arrays (a freshly parsed message's, on the hot path).
 */
export function decodeReceiptBatch(raw: unknown): ReceiptBatch | undefined {
  if (!isObject(raw)) return undefined;
  const keys = Object.keys(raw);
  const list = raw.receipts;
  if (keys.length !== 1 || keys[0] !== 'receipts' || !Array.isArray(list) || list.length === 0) return undefined;
  const receipts: StoredReceipt[] = new Array(list.length);
  for (let i = 0; i < list.length; i++) {
    const r = decodeReceipt(list[i]);
    if (!r) return undefined;
    receipts[i] = r;
  }
  return { receipts };
}
