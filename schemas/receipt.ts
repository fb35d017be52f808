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
