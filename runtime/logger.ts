import { pino, type Logger } from 'pino';

/** Paths never written to logs: addresses and tokens are personal data, credentials are secrets. */
export const redactedPaths = [
  'email', '*.email', 'phone', '*.phone', 'token', '*.token', 'to', '*.to',
  'password', '*.password', 'smtpUrl', '*.smtpUrl', 'authorization', '*.authorization',
];

export function createLogger(level = 'info', destination?: pino.DestinationStream): Logger {
  return pino({ level, base: { app: 'herald' }, redact: { paths: redactedPaths, censor: '[redacted]' } }, destination);
}

export type { Logger };
