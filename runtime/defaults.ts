/**
 * Every default of Herald's settings, in one place. The config schema fills the environment's
 * defaults from here; the pipeline graph and stages receive parsed values and keep no fallbacks.
 */
export const defaults = {
  natsUrl: 'nats://127.0.0.1:4222',
  redisUrl: 'redis://127.0.0.1:6379',
  clickhouseUrl: 'http://127.0.0.1:8123',
  clickhouseDatabase: 'herald',
  smtpFrom: 'Herald <herald@localhost>',
  smtpCatcherPort: 2525,
  dataDir: '.herald',
  templatesDir: 'templates',
  defaultChannels: ['inapp', 'email', 'push'] as const,
  storageBudgetMb: 16_384,
  /** How long a message may go unacknowledged before JetStream gives it to another process. */
  ackWaitMs: 30_000,
  replicas: 1,
  wiring: 'chained' as const,
  criticalCategories: 'security,otp',
  inappBroadcastThreshold: 10_000,
  quietHoursChannels: ['push', 'sms', 'email'] as const,
  deferRecheckMs: 60_000,
  housekeepingMs: 5_000,
  /** A device not registered again for this long is deactivated by the sweep. */
  deviceStaleDays: 60,
  /** How often each process sweeps stale devices. */
  deviceSweepMs: 3_600_000,
  /** In-app items older than this leave the inbox. */
  inboxRetentionDays: 90,
  /** At most this many in-app items per user. */
  inboxMaxItems: 1_000,
  /** A comment line on every open inbox stream this often, so proxies keep it open. */
  sseHeartbeatMs: 15_000,
  rateLimits: 'apns=5000,fcm=5000,twilio=100,smtp=500',
  breakerFailures: 5,
  breakerCoolDownMs: 5_000,
  /** Attempts of every stage before it gives up (the loader waits out ClickHouse instead). */
  maxAttempts: 12,
  backoffBaseMs: 500,
  backoffCapMs: 300_000,
  /**
   * A redelivered message started this many times without ever being settled (the process died
   * under it each time) is dead-lettered before it is handled again: one poison pill must not keep
   * every tier down. The first delivery is not counted, so it has killed the process 4 times; a
   * redelivery whose work is moving (outputs stored, provider calls recorded) starts from 0 again.
   */
  poisonStarts: 3,
  httpHost: '127.0.0.1',
  httpPort: 9464,
  apiHost: '127.0.0.1',
  apiPort: 8080,
  /** Readiness waits this long for each of NATS, Redis and ClickHouse. */
  readinessTimeoutMs: 2_000,
  logLevel: 'info' as const,
} as const;
