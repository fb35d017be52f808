import { z } from 'zod';

/** notify.dlq.<stage>: what failed, why, and the original message so it can be redriven. */
export const deadLetterSchema = z.strictObject({
  stage: z.string(),
  reason: z.string(),
  problems: z.array(z.string()),
  attempts: z.number().int(),
  first_error: z.string().optional(),
  last_error: z.string(),
  failed_at: z.number(),
  /** Where the original came from, to send it back there on redrive. */
  subject: z.string(),
  stream: z.string(),
  stream_seq: z.number().int(),
  tenant: z.string().optional(),
  request_id: z.string().optional(),
  /** The original payload, base64 (it may not be valid UTF-8 or JSON). Every dead letter Herald writes now has it. */
  original_b64: z.string().optional(),
  /** Written by earlier versions instead of a copy of a large request: where REQUESTS kept it. Still read for redrives. */
  original_ref: z.strictObject({ stream: z.string(), seq: z.number().int() }).optional(),
});
export type DeadLetter = z.infer<typeof deadLetterSchema>;
