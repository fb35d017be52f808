import { z } from 'zod';
import { channelSchema, tenantSchema } from './common.js';

const id = z.string().min(1).max(128);
const tenant = tenantSchema;

export const userRecordSchema = z.strictObject({
  type: z.literal('user'),
  tenant,
  id,
  email: z.email().optional(),
  phone: z.string().regex(/^\+[1-9]\d{6,14}$/, 'phone must be E.164, e.g. +15550100').optional(),
  locale: z.string().min(2).max(35).default('en'),
  timezone: z.string().refine(isTimeZone, 'unknown IANA time zone').default('UTC'),
});

export const deviceRecordSchema = z.strictObject({
  type: z.literal('device'),
  tenant,
  user_id: id,
  platform: z.enum(['ios', 'android', 'web']),
  token: z.string().min(1).max(4096),
  active: z.boolean().default(true),
});

export const preferenceRecordSchema = z.strictObject({
  type: z.literal('preference'),
  tenant,
  user_id: id,
  channel: channelSchema.optional(),
  category: z.string().min(1).max(64).optional(),
  enabled: z.boolean(),
});

export const topicMemberRecordSchema = z.strictObject({
  type: z.literal('topic_member'),
  tenant,
  topic: z.string().min(1).max(256),
  user_id: id,
});

const clock = z.string().regex(/^([01]\d|2[0-3]):[0-5]\d$/, 'a 24-hour local time, e.g. 22:00');

/**
 * Quiet hours in the user's time zone: non-transactional push, SMS and email wait for the window's end.
 * Without start and end, clears them.
 */
export const quietHoursRecordSchema = z.strictObject({
  type: z.literal('quiet_hours'),
  tenant,
  user_id: id,
  start: clock.optional(),
  end: clock.optional(),
}).refine((r) => (r.start === undefined) === (r.end === undefined), { message: 'give both start and end (or neither, to clear)', path: ['end'] })
  .refine((r) => r.start === undefined || r.start !== r.end, { message: 'start and end must differ', path: ['end'] });

/** Do-not-contact (right to be forgotten, legal hold): no delivery of any category, ever, while set. */
export const hardStopRecordSchema = z.strictObject({
  type: z.literal('hard_stop'),
  tenant,
  user_id: id,
  enabled: z.boolean().default(true),
});

/** One line of `herald directory import FILE.jsonl`. */
export const directoryRecordSchema = z.discriminatedUnion('type', [
  userRecordSchema, deviceRecordSchema, preferenceRecordSchema, topicMemberRecordSchema, hardStopRecordSchema, quietHoursRecordSchema,
]);
export type DirectoryRecord = z.infer<typeof directoryRecordSchema>;
export type UserRecord = z.infer<typeof userRecordSchema>;
export type DeviceRecord = z.infer<typeof deviceRecordSchema>;

function isTimeZone(tz: string): boolean {
  try {
    new Intl.DateTimeFormat('en', { timeZone: tz });
    return true;
  } catch {
    return false;
  }
}
