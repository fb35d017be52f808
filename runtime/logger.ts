import { pino, stdSerializers, type Logger } from 'pino';
import { scrub } from './scrub.js';

/** Paths never written to logs: addresses and tokens are personal data, credentials are secrets. */
export const redactedPaths = [
  'email', '*.email', 'phone', '*.phone', 'token', '*.token', 'to', '*.to',
  'password', '*.password', 'smtpUrl', '*.smtpUrl', 'authorization', '*.authorization',
];

/** Errors are logged with their text scrubbed: provider errors quote addresses and tokens. */
function errSerializer(err: Error): Record<string, unknown> {
  const out = stdSerializers.err(err) as unknown as Record<string, unknown>;
  for (const field of ['message', 'stack', 'response']) if (typeof out[field] === 'string') out[field] = scrub(out[field] as string);
  return out;
}

export function createLogger(level = 'info', destination?: pino.DestinationStream): Logger {
  return pino({
    level, base: { app: 'herald' },
    redact: { paths: redactedPaths, censor: '[redacted]' },
    serializers: { err: errSerializer },
  }, destination);
}

export type { Logger };
