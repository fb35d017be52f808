import type { Outcome } from './sink.js';

/** What each provider accepts, checked on the rendered content before a call is made. */
export const providerLimits = {
  /** APNs: the JSON payload of one notification. */
  apnsPayloadBytes: 4_096,
  /** FCM: the notification and data of one message. */
  fcmMessageBytes: 4_096,
  /** Twilio: characters of one message body (10 segments). */
  smsChars: 1_600,
  /** Email: a subject is one header line (RFC 5322). */
  emailSubjectChars: 998,
} as const;

/**
 * A delivery whose rendered content is too large for its provider: failed for good, with the sizes
 * in the reason. Never an invalid address: a size error must not touch a token.
 */
export function tooLarge(what: string, size: number, max: number, unit: string): Outcome {
  return { kind: 'permanent', reason: `${what} is ${size} ${unit}; the provider takes at most ${max}`, code: 'too_large' };
}
