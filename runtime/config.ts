import { z } from 'zod';
import path from 'node:path';

const channelList = z
  .string()
  .transform((s) => s.split(',').map((c) => c.trim()).filter(Boolean))
  .pipe(z.array(z.enum(['email', 'inapp', 'push', 'sms'])).min(1));

const envSchema = z.object({
  NATS_URL: z.string().default('nats://127.0.0.1:4222'),
  REDIS_URL: z.string().default('redis://127.0.0.1:6379'),
  CLICKHOUSE_URL: z.string().url().default('http://127.0.0.1:8123'),
  CLICKHOUSE_DATABASE: z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/).default('herald'),
  /** smtp://user:pass@host:port; when unset Herald starts its local SMTP catcher. */
  SMTP_URL: z.string().url().optional(),
  SMTP_FROM: z.string().default('Herald <herald@localhost>'),
  HERALD_SMTP_CATCHER_PORT: z.coerce.number().int().min(0).max(65535).default(2525),
  /** Prefix for every stream, subject, KV bucket and Redis key, so several Herald installs share servers. */
  HERALD_NAMESPACE: z.string().regex(/^[a-z0-9_]*$/, 'lowercase letters, digits and _ only').default(''),
  HERALD_DATA_DIR: z.string().default('.herald'),
  HERALD_TEMPLATES_DIR: z.string().default('templates'),
  /** Channels used when a request names none. */
  HERALD_DEFAULT_CHANNELS: channelList.default(['inapp', 'email', 'push']),
  /** Bytes all Herald streams may reserve (must fit the server's max_file_store); split across streams by share. */
  HERALD_STORAGE_BUDGET_MB: z.coerce.number().int().min(64).default(16_384),
  /** `chained`: validate, resolve and filter run as one step; `split`: each has its own consumer. */
  HERALD_WIRING: z.enum(['chained', 'split']).default('chained'),
  HERALD_HTTP_PORT: z.coerce.number().int().min(0).max(65535).default(9464),
  LOG_LEVEL: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']).default('info'),
});

export type Channel = 'email' | 'inapp' | 'push' | 'sms';

/** Herald's whole configuration, parsed once from the environment and frozen. */
export interface Config {
  natsUrl: string;
  redisUrl: string;
  clickhouseUrl: string;
  clickhouseDatabase: string;
  smtpUrl?: string;
  smtpFrom: string;
  smtpCatcherPort: number;
  namespace: string;
  dataDir: string;
  templatesDir: string;
  defaultChannels: Channel[];
  httpPort: number;
  storageBudgetBytes: number;
  wiring: 'chained' | 'split';
  logLevel: string;
}

export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`invalid configuration:\n  - ${problems.join('\n  - ')}`);
    this.name = 'ConfigError';
  }
}

/** Parses the environment (or the given record) once; reports every problem together. */
export function loadConfig(env: Record<string, string | undefined> = process.env): Config {
  const parsed = envSchema.safeParse(env);
  if (!parsed.success) {
    throw new ConfigError(parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`));
  }
  const e = parsed.data;
  return Object.freeze({
    natsUrl: e.NATS_URL,
    redisUrl: e.REDIS_URL,
    clickhouseUrl: e.CLICKHOUSE_URL,
    clickhouseDatabase: e.CLICKHOUSE_DATABASE,
    smtpUrl: e.SMTP_URL,
    smtpFrom: e.SMTP_FROM,
    smtpCatcherPort: e.HERALD_SMTP_CATCHER_PORT,
    namespace: e.HERALD_NAMESPACE,
    dataDir: path.resolve(e.HERALD_DATA_DIR),
    templatesDir: path.resolve(e.HERALD_TEMPLATES_DIR),
    defaultChannels: e.HERALD_DEFAULT_CHANNELS,
    httpPort: e.HERALD_HTTP_PORT,
    storageBudgetBytes: e.HERALD_STORAGE_BUDGET_MB * 1024 * 1024,
    wiring: e.HERALD_WIRING,
    logLevel: e.LOG_LEVEL,
  });
}
