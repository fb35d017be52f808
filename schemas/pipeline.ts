import { z } from 'zod';
import { acceptedRequestSchema, recipientsSchema } from './request.js';
import { channelSchema, tierSchema } from './common.js';

/** notify.validated.<tier>: a request that passed validation, still naming its recipients. */
export const validatedSchema = z.strictObject({
  request: acceptedRequestSchema,
  recipients: recipientsSchema,
});
export type Validated = z.infer<typeof validatedSchema>;

/** notify.resolved.<tier>: one chunk (≤ 500) of a request's recipients. */
export const resolvedChunkSchema = z.strictObject({
  request: acceptedRequestSchema,
  /** Deterministic position of this chunk within the request: part of the dedup key. */
  chunk: z.number().int().min(0),
  user_ids: z.array(z.string()).min(1).max(500),
  /** Held by quiet hours after the frequency cap had counted these users: not counted again on release. */
  cap_counted: z.literal(true).optional(),
});
export type ResolvedChunk = z.infer<typeof resolvedChunkSchema>;

/** One user on one channel, with the addresses the sink needs (email, phone, or device tokens). */
export const recipientSchema = z.strictObject({
  user_id: z.string(),
  locale: z.string(),
  to: z.array(z.string()),
  /** Device platforms, parallel to `to`, for push. */
  platforms: z.array(z.string()).optional(),
});
export type Recipient = z.infer<typeof recipientSchema>;

export const channelRecipientsSchema = z.strictObject({
  channel: channelSchema,
  recipients: z.array(recipientSchema).min(1),
});

/** notify.filtered.<tier>: the deliveries left of a chunk after preferences, per channel. */
export const filteredChunkSchema = z.strictObject({
  request: acceptedRequestSchema,
  chunk: z.number().int().min(0),
  deliveries: z.array(channelRecipientsSchema).min(1),
});
export type FilteredChunk = z.infer<typeof filteredChunkSchema>;

/** Recipients of one request chunk inside a delivery batch. */
export const deliveryGroupSchema = z.strictObject({
  request: acceptedRequestSchema,
  chunk: z.number().int().min(0),
  /** Deterministic slice of the chunk's recipients on this channel; with chunk, the dedup key. */
  part: z.number().int().min(0),
  recipients: z.array(recipientSchema).min(1),
});
export type DeliveryGroup = z.infer<typeof deliveryGroupSchema>;

/** notify.deliver.<channel>.<tier>: a provider-sized batch, possibly spanning several requests. */
export const deliveryBatchSchema = z.strictObject({
  channel: channelSchema,
  tier: tierSchema,
  groups: z.array(deliveryGroupSchema).min(1),
});
export type DeliveryBatch = z.infer<typeof deliveryBatchSchema>;

/** notify.scheduled.<tier>: a validated request held until its `send_at` (`until`, ms since epoch), then resolved. */
export const scheduledRequestSchema = z.strictObject({
  until: z.number().int(),
  work: validatedSchema,
});
export type ScheduledRequest = z.infer<typeof scheduledRequestSchema>;

/** notify.deferred.<tier>: recipients held back (quiet hours) until `until` (ms since epoch), then filtered again. */
export const deferredWorkSchema = z.strictObject({
  until: z.number().int(),
  work: resolvedChunkSchema,
});
export type DeferredWork = z.infer<typeof deferredWorkSchema>;
