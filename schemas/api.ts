import { z } from 'zod';
import { tierSchema } from './common.js';
import { deviceRecordSchema, preferenceRecordSchema, quietHoursRecordSchema, topicMemberRecordSchema, userRecordSchema } from './directory.js';
import { receiptSchema } from './receipt.js';
import { requestSchema } from './request.js';

/*
 * The bodies, answers and parameters of the HTTP API (`/v1`). http/openapi.ts turns these into the
 * OpenAPI document, and client/openapi.d.ts is generated from that document, so the wire contract,
 * the document and the client's types come from here. Where a body is a message of the pipeline,
 * it is derived from that message's schema, never typed out again.
 */

const isoTime = z.iso.datetime({ offset: true });

// ---- parameters --------------------------------------------------------------------------------

/** A notification id in a path (the request's `id`, or the one derived from its idempotency key). */
export const notificationIdSchema = z.string().min(1).max(128);
export const userIdSchema = userRecordSchema.shape.id;
export const topicSchema = topicMemberRecordSchema.shape.topic;
export const deviceTokenSchema = deviceRecordSchema.shape.token;
/** Same bounds as the body's `idempotency_key`. */
export const idempotencyKeyHeaderSchema = requestSchema.shape.idempotency_key;

/** `GET /v1/notifications/{id}/deliveries?user_id=&cursor=&limit=`. */
export const deliveriesQuerySchema = z.strictObject({
  user_id: userIdSchema.optional().meta({ description: 'Only this recipient\'s steps.' }),
  cursor: z.string().min(1).max(1_024).optional().meta({ description: 'The `next_cursor` of the page before (opaque).' }),
  limit: z.number().int().min(1).max(500).default(100).meta({ description: 'Steps per page.' }),
});
export type DeliveriesQuery = z.input<typeof deliveriesQuerySchema>;

// ---- notifications -----------------------------------------------------------------------------

const { tenant: _tenant, ...requestFields } = requestSchema.shape;
/** The request's own refinements; they read only what the body shares with it (content, template). */
const requestChecks = (requestSchema.def.checks ?? []) as unknown as z.core.$ZodCheck<{ content?: unknown; template?: unknown }>[];

/**
 * `POST /v1/notifications`: the wire contract (schemas/request.ts) without `tenant` — the key
 * decides it — and with `idempotency_key` optional, since the `Idempotency-Key` header may carry it.
 * zod refuses `.omit()` on a refined object, so the fields are taken from its shape and the
 * request's own refinements (exactly one of content or template) are carried over as they are.
 */
export const notificationBodySchema = z
  .strictObject({ ...requestFields, idempotency_key: requestFields.idempotency_key.optional() })
  .check(...requestChecks)
  .meta({
    description: 'Give exactly one of `content` or `template`, in `recipients` exactly one of `user_ids` or `topic`, '
      + 'and the idempotency key as the `Idempotency-Key` header or as `idempotency_key` (the same value if both).',
  });
export type NotificationBody = z.input<typeof notificationBodySchema>;

export const notificationAcceptedSchema = z.strictObject({
  id: z.string(),
  /** Where its status is read. */
  status_url: z.string(),
});
export type NotificationAccepted = z.infer<typeof notificationAcceptedSchema>;

export const notificationStatuses = [
  'queued', 'scheduled', 'processing', 'completed', 'partially_failed', 'failed', 'cancelled', 'expired',
] as const;

/** `GET /v1/notifications/{id}`: where a notification stands. */
export const notificationStatusSchema = z.strictObject({
  id: z.string(),
  status: z.enum(notificationStatuses),
  tier: tierSchema,
  category: z.string(),
  send_at: isoTime.nullable(),
  accepted_at: isoTime.nullable(),
  updated_at: isoTime,
  recipients: z.number().int().min(0).meta({ description: 'Recipients resolved so far.' }),
  counts: z.record(z.string(), z.record(z.string(), z.number().int().min(0)))
    .meta({ description: 'Per channel, per outcome: `{"email": {"delivered": 2, "suppressed": 1}}`.' }),
  reason: z.string().optional().meta({ description: 'Why it was rejected or expired, when it was.' }),
  deliveries_url: z.string().meta({ description: 'Where its steps are listed.' }),
});
export type NotificationStatus = z.infer<typeof notificationStatusSchema>;

/** One step of one recipient on one channel: a receipt as the API shows it. */
export const deliveryStepSchema = receiptSchema
  .pick({ stage: true, status: true, channel: true, provider: true, user_id: true, reason: true, attempt: true })
  .extend({ at: isoTime });
export type DeliveryStep = z.infer<typeof deliveryStepSchema>;

export const deliveriesPageSchema = z.strictObject({
  data: z.array(deliveryStepSchema),
  next_cursor: z.string().nullable().meta({ description: 'Pass as `cursor` for the next page; null on the last.' }),
});
export type DeliveriesPage = z.infer<typeof deliveriesPageSchema>;

export const cancelBodySchema = z.strictObject({
  reason: z.string().max(500).optional(),
});
export type CancelBody = z.input<typeof cancelBodySchema>;

export const cancelAcceptedSchema = z.strictObject({
  id: z.string(),
  status: z.literal('cancelled'),
});
export type CancelAccepted = z.infer<typeof cancelAcceptedSchema>;

// ---- the directory -----------------------------------------------------------------------------

const platformSchema = deviceRecordSchema.shape.platform;

/** `GET /v1/users/{user_id}`: what the directory holds about a user (stores/directory.ts `UserView`). */
export const userViewSchema = z.strictObject({
  id: userIdSchema,
  exists: z.boolean(),
  email: z.string().optional(),
  phone: z.string().optional(),
  locale: z.string(),
  timezone: z.string(),
  quiet_hours: z.string().optional().meta({ description: 'As stored, in the user\'s time zone: `22:00-07:00`.' }),
  hard_stop: z.boolean(),
  preferences: z.record(z.string(), z.boolean())
    .meta({ description: 'By key: `channel:email`, `category:promo`, `email:promo`, `all` (everything).' }),
  devices: z.array(z.strictObject({
    token: deviceTokenSchema,
    platform: platformSchema,
    active: z.boolean(),
    last_seen_at: isoTime.optional().meta({ description: 'Its latest registration (absent for devices loaded before that was recorded).' }),
    deactivated_reason: z.string().optional().meta({ description: 'Why it was deactivated, when the stale-device sweep or a provider did.' }),
  })),
  topics: z.array(z.string()),
});
export type UserView = z.infer<typeof userViewSchema>;

/** `PUT /v1/users/{user_id}`: fields not given keep their value (a new user: locale en, time zone UTC). */
export const userBodySchema = z.strictObject({
  email: userRecordSchema.shape.email,
  phone: userRecordSchema.shape.phone,
  locale: userRecordSchema.shape.locale.unwrap().optional(),
  timezone: userRecordSchema.shape.timezone.unwrap().optional(),
});
export type UserBody = z.input<typeof userBodySchema>;

export const userUpsertedSchema = z.strictObject({
  id: userIdSchema,
  created: z.boolean(),
});
export type UserUpserted = z.infer<typeof userUpsertedSchema>;

export const erasureAcceptedSchema = z.strictObject({
  erasure_id: z.string(),
  user_id: userIdSchema,
  receipts: z.literal('anonymising').meta({ description: 'The anonymisation of the user\'s receipts in ClickHouse is submitted; it runs in the background.' }),
});
export type ErasureAccepted = z.infer<typeof erasureAcceptedSchema>;

/** `POST /v1/users/{user_id}/devices`: registering the same token again is harmless. */
export const deviceBodySchema = deviceRecordSchema.pick({ platform: true, token: true });
export type DeviceBody = z.input<typeof deviceBodySchema>;

export const deviceRegisteredSchema = z.strictObject({
  user_id: userIdSchema,
  platform: platformSchema,
  active: z.boolean(),
});
export type DeviceRegistered = z.infer<typeof deviceRegisteredSchema>;

/** `PUT /v1/users/{user_id}/preferences`: what is not given keeps its value. */
export const preferencesBodySchema = z.strictObject({
  preferences: z.array(preferenceRecordSchema.pick({ channel: true, category: true, enabled: true })).max(200).optional()
    .meta({ description: 'A preference may name a channel, a category, both, or neither (everything); the most specific wins.' }),
  quiet_hours: z.strictObject({
    start: quietHoursRecordSchema.shape.start.unwrap(),
    end: quietHoursRecordSchema.shape.end.unwrap(),
  }).nullable().optional().meta({ description: 'In the user\'s time zone; null clears them.' }),
  hard_stop: z.boolean().optional().meta({ description: 'Do-not-contact: nothing is delivered while set, critical or not.' }),
});
export type PreferencesBody = z.input<typeof preferencesBodySchema>;

export const preferencesViewSchema = z.strictObject({
  preferences: userViewSchema.shape.preferences,
  quiet_hours: z.string().nullable(),
  hard_stop: z.boolean(),
});
export type PreferencesView = z.infer<typeof preferencesViewSchema>;

/** `POST /v1/topics/{topic}/members`: thousands of members at a time. */
export const topicMembersBodySchema = z.strictObject({
  add: z.array(userIdSchema).max(10_000).optional(),
  remove: z.array(userIdSchema).max(10_000).optional(),
});
export type TopicMembersBody = z.input<typeof topicMembersBodySchema>;

export const topicMembersChangedSchema = z.strictObject({
  added: z.number().int().min(0),
  removed: z.number().int().min(0),
});
export type TopicMembersChanged = z.infer<typeof topicMembersChangedSchema>;

// ---- the in-app inbox --------------------------------------------------------------------------

/** `POST /v1/users/{user_id}/token`: a user token for an app (JWT), valid `ttl_seconds`. */
export const userTokenBodySchema = z.strictObject({
  ttl_seconds: z.number().int().min(60).max(7 * 86_400).default(3_600).meta({ description: 'How long the token is valid (at most 7 days).' }),
});
export type UserTokenBody = z.input<typeof userTokenBodySchema>;

export const userTokenSchema = z.strictObject({
  token: z.string(),
  user_id: userIdSchema,
  expires_at: isoTime,
});
export type UserToken = z.infer<typeof userTokenSchema>;

/** Query strings are text: numbers and booleans are read from it. */
const queryInt = (min: number, max: number, fallback: number) =>
  z.coerce.number().int().min(min).max(max).default(fallback);
const queryBool = z.enum(['true', 'false']).transform((v) => v === 'true');

/** `GET /v1/users/{user_id}/notifications`. */
export const feedQuerySchema = z.strictObject({
  limit: queryInt(1, 100, 20).meta({ description: 'Items per page.' }),
  cursor: z.string().min(1).max(400).optional().meta({ description: 'The `next_cursor` of the page before (opaque).' }),
  status: z.enum(['all', 'unread', 'unseen']).default('all'),
  archived: queryBool.default(false).meta({ description: 'true: the archived items only.' }),
  token: z.string().max(4_096).optional().meta({ description: 'A user token, where a header cannot be sent (EventSource).' }),
});
export type FeedQuery = z.input<typeof feedQuerySchema>;

/** `GET /v1/users/{user_id}/notifications/stream`. */
export const streamQuerySchema = z.strictObject({
  token: z.string().max(4_096).optional().meta({ description: 'A user token (EventSource cannot send headers).' }),
  last_event_id: z.string().max(400).optional().meta({ description: 'Resume after this event (as the Last-Event-ID header).' }),
});

export const inboxCountsSchema = z.strictObject({
  unseen: z.number().int().min(0),
  unread: z.number().int().min(0),
  total: z.number().int().min(0).meta({ description: 'Items in the feed: not archived, not snoozed.' }),
});
export type InboxCountsView = z.infer<typeof inboxCountsSchema>;

export const inboxItemSchema = z.strictObject({
  id: z.string().meta({ description: 'The notification (request) id; the same for every recipient.' }),
  request_id: z.string(),
  category: z.string(),
  title: z.string(),
  body: z.string(),
  action_url: z.string().nullable(),
  data: z.record(z.string(), z.unknown()).nullable(),
  created_at: isoTime.meta({ description: 'When it arrived in this inbox (the feed\'s order).' }),
  seen: z.boolean(),
  read: z.boolean(),
  archived: z.boolean(),
  snoozed_until: isoTime.nullable(),
});
export type InboxItemView = z.infer<typeof inboxItemSchema>;

export const feedPageSchema = z.strictObject({
  data: z.array(inboxItemSchema),
  counts: inboxCountsSchema,
  next_cursor: z.string().nullable(),
});
export type FeedPage = z.infer<typeof feedPageSchema>;

/** `PATCH /v1/users/{user_id}/notifications/{id}`: read implies seen; a snooze hides it until then (back unseen). */
export const itemPatchSchema = z.strictObject({
  seen: z.boolean().optional(),
  read: z.boolean().optional(),
  archived: z.boolean().optional(),
  snoozed_until: isoTime.nullable().optional().meta({ description: 'null wakes a snoozed item now.' }),
});
export type ItemPatch = z.input<typeof itemPatchSchema>;

export const itemChangedSchema = z.strictObject({
  item: inboxItemSchema,
  counts: inboxCountsSchema,
});
export type ItemChanged = z.infer<typeof itemChangedSchema>;

/** `POST /v1/users/{user_id}/notifications/mark-all`: exactly one of seen, read, archived. */
export const markAllSchema = z.strictObject({
  seen: z.literal(true).optional(),
  read: z.literal(true).optional(),
  archived: z.literal(true).optional(),
  before: z.string().min(1).max(400).optional().meta({ description: 'Only items at or before this: a cursor, or an ISO date-time.' }),
}).refine((b) => [b.seen, b.read, b.archived].filter(Boolean).length === 1, { message: 'give exactly one of seen, read, archived (true)' });
export type MarkAll = z.input<typeof markAllSchema>;

export const markedAllSchema = z.strictObject({
  updated: z.number().int().min(0).meta({ description: 'Items that changed.' }),
  counts: inboxCountsSchema,
});
export type MarkedAll = z.infer<typeof markedAllSchema>;

// ---- errors ------------------------------------------------------------------------------------

/** Every error (RFC 9457, `application/problem+json`), naming every bad field in `errors`. */
export const problemSchema = z.object({
  type: z.string(),
  title: z.string(),
  status: z.number().int().min(400).max(599),
  detail: z.string(),
  errors: z.array(z.string()).optional().meta({ description: 'Each problem with where it is: `recipients.user_ids[3]: …`.' }),
});
export type Problem = z.infer<typeof problemSchema>;

/** 409: the idempotency key was used in the last 24 hours; names the notification it made. */
export const conflictProblemSchema = problemSchema.extend({
  id: z.string(),
  status_url: z.string(),
});
export type ConflictProblem = z.infer<typeof conflictProblemSchema>;
