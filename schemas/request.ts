import { z } from 'zod';
import { channelSchema, tenantSchema, tierSchema } from './common.js';
import { jsonShapeProblems } from './bounds.js';

const isoTime = z.iso.datetime({ offset: true, message: 'must be an ISO 8601 date-time, e.g. 2026-01-31T09:00:00Z' });
const text = (max: number) => z.string().min(1).max(max);

/** Inline content; `{{var}}` placeholders are filled from `data`. */
export const inlineContentSchema = z.strictObject({
  title: text(256),
  body: text(4_000),
  html: z.string().max(100_000).optional(),
  /** Where an app goes when the notification is clicked (the in-app inbox shows it). */
  action_url: z.url({ protocol: /^https?$/, message: 'action_url: an http(s) URL' }).max(2_000).optional(),
});

export const templateRefSchema = z.strictObject({
  id: z.string().regex(/^[A-Za-z0-9_.-]{1,128}$/, 'template id: letters, digits, _ . - only'),
  locale: z.string().regex(/^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*$/, 'locale like "en" or "pt-BR"').optional(),
});

export const recipientsSchema = z
  .strictObject({
    user_ids: z.array(text(128)).min(1, 'must name at least one user').max(10_000).optional(),
    topic: text(256).optional(),
  })
  .refine((r) => (r.user_ids === undefined) !== (r.topic === undefined), {
    message: 'give exactly one of user_ids or topic',
  });

/** A notification request as producers publish it to `notify.request.<tier>` (the wire contract). */
export const requestSchema = z
  .strictObject({
    id: text(128).optional(),
    tenant: tenantSchema,
    idempotency_key: text(256),
    tier: tierSchema,
    category: z.string().regex(/^[A-Za-z0-9_.:-]{1,64}$/, 'category: 1-64 of letters, digits, _ . : -'),
    content: inlineContentSchema.optional(),
    template: templateRefSchema.optional(),
    data: z.record(z.string(), z.unknown()).superRefine((data, ctx) => {
      for (const problem of jsonShapeProblems(data)) ctx.addIssue({ code: 'custom', message: `data ${problem}` });
    }).optional(),
    recipients: recipientsSchema,
    channels: z.array(channelSchema).min(1).max(4).refine((c) => new Set(c).size === c.length, 'channels repeat').optional(),
    send_at: isoTime.optional(),
    expires_at: isoTime.optional(),
  })
  .refine((r) => (r.content === undefined) !== (r.template === undefined), {
    message: 'give exactly one of content or template',
    path: ['content'],
  });
export type NotificationRequest = z.infer<typeof requestSchema>;

/**
 * A request after validation: id and channels filled in, the REQUESTS sequence and publish time
 * recorded, so every later stage carries what receipts and dedup need.
 */
export const acceptedRequestSchema = z.strictObject({
  id: z.string(),
  tenant: z.string(),
  idempotency_key: z.string(),
  tier: tierSchema,
  category: z.string(),
  content: inlineContentSchema.optional(),
  template: templateRefSchema.optional(),
  data: z.record(z.string(), z.unknown()).optional(),
  channels: z.array(channelSchema),
  send_at: z.string().optional(),
  expires_at: z.string().optional(),
  /** When JetStream stored the request (ms since epoch): the start of every latency. */
  accepted_at: z.number(),
  /** Set when an operator replays the request: its batches are new messages, not repeats of the first run's. */
  replay: z.string().optional(),
});
export type AcceptedRequest = z.infer<typeof acceptedRequestSchema>;
