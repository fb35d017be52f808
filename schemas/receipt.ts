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
  unit: z.string().max(200).optional(),
  /**
   * On validate's `accepted`: the channels the request goes out on, so the status tracker knows
   * when every recipient is done. Not a ClickHouse column.
   */
  channels: z.array(z.string()).max(16).optional(),
});
export type Receipt = z.input<typeof receiptSchema>;
export type StoredReceipt = z.output<typeof receiptSchema>;

/** notify.receipt.<status>: receipts travel in batches, never one message each on hot paths. */
export const receiptBatchSchema = z.strictObject({ receipts: z.array(receiptSchema).min(1) });
export type ReceiptBatch = z.infer<typeof receiptBatchSchema>;

const receiptKeys = new Set(Object.keys(receiptSchema.shape));
const statuses = new Set<string>(receiptStatuses);
const isString = (v: unknown): v is string => typeof v === 'string';
const isInt = (v: unknown, min = Number.MIN_SAFE_INTEGER): v is number => Number.isSafeInteger(v) && (v as number) >= min;
const isStringArray = (v: unknown, max = Infinity): v is string[] => Array.isArray(v) && v.length <= max && v.every(isString);

/** A default's field: absent takes the default, present must pass `ok`; undefined when it fails. */
function orDefault<T>(v: unknown, fallback: T, ok: (v: unknown) => v is T): T | undefined {
  return v === undefined ? fallback : ok(v) ? v : undefined;
}

function decodeReceipt(raw: unknown): StoredReceipt | undefined {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) return undefined;
  const r = raw as Record<string, unknown>;
  for (const key of Object.keys(r)) if (!receiptKeys.has(key)) return undefined;
  const { ts, stage, status, request_id, tenant, tier, category } = r;
  if (typeof ts !== 'number' || !Number.isFinite(ts) || !isString(stage) || !isString(status) || !statuses.has(status)
    || !isString(request_id) || !isString(tenant) || !isString(tier) || !isString(category)) return undefined;
  const channel = orDefault(r.channel, '', isString);
  const provider = orDefault(r.provider, '', isString);
  const user_id = orDefault(r.user_id, '', isString);
  const reason = orDefault(r.reason, '', isString);
  const attempt = orDefault(r.attempt, 1, (v) => isInt(v));
  const latency_ms = orDefault(r.latency_ms, 0, (v) => isInt(v, 0));
  const count = orDefault(r.count, 1, (v) => isInt(v, 0));
  if (channel === undefined || provider === undefined || user_id === undefined || reason === undefined
    || attempt === undefined || latency_ms === undefined || count === undefined) return undefined;
  const out: StoredReceipt = {
    ts, stage, status: status as ReceiptStatus, request_id, tenant, tier, category, channel, provider, user_id, reason, attempt, latency_ms, count,
  };
  // An optional key present as undefined is left to the schema (JSON never makes one).
  if ('user_ids' in r) { if (!isStringArray(r.user_ids)) return undefined; out.user_ids = r.user_ids; }
  if ('unit' in r) { if (!isString(r.unit) || r.unit.length > 200) return undefined; out.unit = r.unit; }
  if ('channels' in r) { if (!isStringArray(r.channels, 16)) return undefined; out.channels = r.channels; }
  return out;
}

/**
 * What `receiptBatchSchema` parses `raw` into, built without zod when the batch is plainly valid
 * (Herald's own, which the loader and tracker read by the thousand a second); undefined otherwise,
 * for the schema to decide and say what is wrong. It never accepts what the schema rejects; its
 * result shares raw's arrays (a freshly parsed message's, on the hot path).
 */
export function decodeReceiptBatch(raw: unknown): ReceiptBatch | undefined {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) return undefined;
  const keys = Object.keys(raw);
  const list = (raw as { receipts?: unknown }).receipts;
  if (keys.length !== 1 || keys[0] !== 'receipts' || !Array.isArray(list) || list.length === 0) return undefined;
  const receipts: StoredReceipt[] = new Array(list.length);
  for (let i = 0; i < list.length; i++) {
    const r = decodeReceipt(list[i]);
    if (!r) return undefined;
    receipts[i] = r;
  }
  return { receipts };
}
