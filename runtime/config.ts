import { z } from 'zod';
import fs from 'node:fs';
import path from 'node:path';
import { channelSchema, type Channel } from '../schemas/common.js';
import { defaults } from './defaults.js';

/** The items of a comma-separated setting, trimmed, empty ones dropped. */
const commaItems = (s: string): string[] => s.split(',').map((item) => item.trim()).filter(Boolean);

const channelList = z.string().transform(commaItems).pipe(z.array(channelSchema).min(1));

/** `name=number,name=number` (caps per category, rates per provider), every bad item reported. */
const numbersByName = (name: RegExp, number: RegExp, what: string) => (s: string, ctx: z.RefinementCtx): Record<string, number> => {
  const out: Record<string, number> = {};
  for (const item of commaItems(s)) {
    const [key, value, ...rest] = item.split('=');
    if (rest.length || !name.test(key ?? '') || !number.test(value ?? '')) ctx.addIssue({ code: 'custom', message: `"${item}" is not ${what}` });
    else out[key] = Number(value);
  }
  return out;
};

const envSchema = z.object({
  NATS_URL: z.string().default(defaults.natsUrl),
  /** Other ways to authenticate to NATS than user:pass@ in NATS_URL (files are read by the client). */
  NATS_TOKEN: z.string().optional(),
  NATS_CREDS_FILE: z.string().optional(),
  NATS_NKEY_SEED_FILE: z.string().optional(),
  /** TLS to NATS (a tls:// URL turns it on too): a CA to trust, and a client certificate and key for mutual TLS. */
  NATS_TLS_CA_FILE: z.string().optional(),
  NATS_TLS_CERT_FILE: z.string().optional(),
  NATS_TLS_KEY_FILE: z.string().optional(),
  REDIS_URL: z.string().default(defaults.redisUrl),
  CLICKHOUSE_URL: z.string().url().default(defaults.clickhouseUrl),
  CLICKHOUSE_DATABASE: z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/).default(defaults.clickhouseDatabase),
  /** smtp://user:pass@host:port, several comma-separated for failover in that order; unset: the sandbox catcher. */
  SMTP_URL: z.string().optional().transform((s) => (s === undefined ? undefined : commaItems(s)))
    .pipe(z.array(z.url({ protocol: /^smtps?$/, message: 'each SMTP_URL must be smtp://… or smtps://…' })).optional()),
  /** APNs token auth (.p8 key) or certificate auth; the topic is the app's bundle id. */
  APNS_KEY_FILE: z.string().optional(),
  APNS_KEY_ID: z.string().optional(),
  APNS_TEAM_ID: z.string().optional(),
  APNS_CERT_FILE: z.string().optional(),
  APNS_CERT_KEY_FILE: z.string().optional(),
  APNS_CERT_PASSPHRASE: z.string().optional(),
  APNS_TOPIC: z.string().optional(),
  APNS_PRODUCTION: z.enum(['true', 'false']).default('false'),
  /** FCM: a service-account JSON file (GOOGLE_APPLICATION_CREDENTIALS works too). */
  FCM_SERVICE_ACCOUNT_FILE: z.string().optional(),
  GOOGLE_APPLICATION_CREDENTIALS: z.string().optional(),
  FCM_PROJECT_ID: z.string().optional(),
  /** Twilio, and an optional second account used when the first fails. */
  TWILIO_ACCOUNT_SID: z.string().optional(),
  TWILIO_AUTH_TOKEN: z.string().optional(),
  TWILIO_AUTH_TOKEN_FILE: z.string().optional(),
  TWILIO_FROM: z.string().optional(),
  TWILIO_FALLBACK_ACCOUNT_SID: z.string().optional(),
  TWILIO_FALLBACK_AUTH_TOKEN: z.string().optional(),
  TWILIO_FALLBACK_AUTH_TOKEN_FILE: z.string().optional(),
  TWILIO_FALLBACK_FROM: z.string().optional(),
  /** auto: channels without credentials use local fakes of their providers; off: they are disabled. */
  HERALD_SANDBOX: z.enum(['auto', 'off']).optional(),
  /** production: never a sandbox (a channel without credentials is disabled, loudly). */
  NODE_ENV: z.string().optional(),
  SMTP_FROM: z.string().default(defaults.smtpFrom),
  HERALD_SMTP_CATCHER_PORT: z.coerce.number().int().min(0).max(65535).default(defaults.smtpCatcherPort),
  /** Prefix for every stream, subject, KV bucket and Redis key, so several Herald installs share servers. */
  HERALD_NAMESPACE: z.string().regex(/^[a-z0-9_]*$/, 'lowercase letters, digits and _ only').default(''),
  HERALD_DATA_DIR: z.string().default(defaults.dataDir),
  HERALD_TEMPLATES_DIR: z.string().default(defaults.templatesDir),
  /** Channels used when a request names none. */
  HERALD_DEFAULT_CHANNELS: channelList.default([...defaults.defaultChannels]),
  /** Bytes all Herald streams may reserve (must fit the server's max_file_store); split across streams by share. */
  HERALD_STORAGE_BUDGET_MB: z.coerce.number().int().min(64).default(defaults.storageBudgetMb),
  /** How long a message may go unacknowledged before JetStream gives it to another process. */
  HERALD_ACK_WAIT_MS: z.coerce.number().int().min(1_000).default(defaults.ackWaitMs),
  /** Copies of every stream and bucket: 3 on a three-node NATS cluster. */
  HERALD_REPLICAS: z.coerce.number().int().min(1).max(5).default(defaults.replicas),
  /** `chained`: validate, resolve and filter run as one step; `split`: each has its own consumer. */
  HERALD_WIRING: z.enum(['chained', 'split']).default(defaults.wiring),
  /** Circuit breakers and rate limits on provider calls (off only to measure what they cost). */
  HERALD_GUARDS: z.enum(['on', 'off']).default('on'),
  /** Categories that ignore opt-outs (never the hard stop): security notices, one-time codes. */
  HERALD_CRITICAL_CATEGORIES: z.string().default(defaults.criticalCategories).transform(commaItems),
  /** Most messages a user gets per category per day (their day): `promo=3,digest=1`. */
  HERALD_FREQUENCY_CAPS: z.string().default('').transform(numbersByName(/^[A-Za-z0-9_.:-]+$/, /^\d+$/, 'category=count')),
  /** Topic size from which in-app goes out as one broadcast record each inbox merges at read time (0: never). */
  HERALD_INAPP_BROADCAST_THRESHOLD: z.coerce.number().int().min(0).default(defaults.inappBroadcastThreshold),
  /** Channels quiet hours hold back for non-transactional work. */
  HERALD_QUIET_HOURS_CHANNELS: channelList.default([...defaults.quietHoursChannels]),
  /** Longest a deferred delivery waits before the clock is read again (quiet hours). */
  HERALD_DEFER_RECHECK_MS: z.coerce.number().int().min(10).default(defaults.deferRecheckMs),
  /** How often handled requests are trimmed from the intake streams and the receipts backlog is measured. */
  HERALD_HOUSEKEEPING_MS: z.coerce.number().int().min(100).default(defaults.housekeepingMs),
  HERALD_DEVICE_STALE_DAYS: z.coerce.number().positive().default(defaults.deviceStaleDays),
  HERALD_DEVICE_SWEEP_MS: z.coerce.number().int().min(0).default(defaults.deviceSweepMs),
  HERALD_INBOX_RETENTION_DAYS: z.coerce.number().positive().default(defaults.inboxRetentionDays),
  HERALD_INBOX_MAX_ITEMS: z.coerce.number().int().min(1).max(5_000).default(defaults.inboxMaxItems),
  HERALD_SSE_HEARTBEAT_MS: z.coerce.number().int().min(100).default(defaults.sseHeartbeatMs),
  /** Dedup keys before provider calls (off only to measure what they cost). */
  HERALD_DEDUP: z.enum(['on', 'off']).default('on'),
  /** Deliveries per second per provider: `apns=5000,fcm=5000,twilio=100,smtp=500`. */
  HERALD_RATE_LIMITS: z.string().default(defaults.rateLimits)
    .transform(numbersByName(/^[a-z0-9_-]+$/, /^(?!0+(?:\.0+)?$)\d+(?:\.\d+)?$/, 'provider=rate')),
  /** Deliveries per second one tenant may send through one provider (unset: no tenant limit). */
  HERALD_TENANT_RATE_LIMIT: z.coerce.number().positive().optional(),
  HERALD_BREAKER_FAILURES: z.coerce.number().int().min(1).default(defaults.breakerFailures),
  HERALD_BREAKER_COOLDOWN_MS: z.coerce.number().int().min(100).default(defaults.breakerCoolDownMs),
  /** Delivery attempts before a delivery is dead-lettered, and the backoff between them. */
  HERALD_MAX_ATTEMPTS: z.coerce.number().int().min(1).default(defaults.maxAttempts),
  HERALD_BACKOFF_BASE_MS: z.coerce.number().int().min(1).default(defaults.backoffBaseMs),
  HERALD_BACKOFF_CAP_MS: z.coerce.number().int().min(1).default(defaults.backoffCapMs),
  /** Health, readiness and metrics: bind to 0.0.0.0 so Prometheus in another container can scrape. */
  HERALD_HTTP_HOST: z.string().min(1).default(defaults.httpHost),
  HERALD_HTTP_PORT: z.coerce.number().int().min(0).max(65535).default(defaults.httpPort),
  /** The HTTP API (`herald api`, and `herald run` unless --no-api). */
  HERALD_API_HOST: z.string().min(1).default(defaults.apiHost),
  HERALD_API_PORT: z.coerce.number().int().min(0).max(65535).default(defaults.apiPort),
  LOG_LEVEL: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']).default(defaults.logLevel),
});

/** Credentials for each provider; a channel with none is sandboxed or disabled. */
export interface ProviderConfig {
  smtpUrls: string[];
  apns?: { auth: { kind: 'token'; keyFile: string; keyId: string; teamId: string } | { kind: 'certificate'; certFile: string; keyFile: string; passphrase?: string }; topic: string; production: boolean };
  fcm?: { serviceAccountFile: string; projectId?: string };
  twilio: { accountSid: string; authToken: string; from: string }[];
  sandbox: 'auto' | 'off';
}

/** Herald's whole configuration, parsed once from the environment and frozen. */
/** How to reach NATS beyond its URL. */
export interface NatsAuth {
  token?: string;
  credsFile?: string;
  nkeySeedFile?: string;
  tls?: { caFile?: string; certFile?: string; keyFile?: string };
}

export interface Config {
  natsUrl: string;
  natsAuth: NatsAuth;
  redisUrl: string;
  clickhouseUrl: string;
  clickhouseDatabase: string;
  providers: ProviderConfig;
  smtpFrom: string;
  smtpCatcherPort: number;
  namespace: string;
  dataDir: string;
  templatesDir: string;
  defaultChannels: Channel[];
  httpHost: string;
  httpPort: number;
  /** Where the HTTP API listens. */
  apiHost: string;
  apiPort: number;
  storageBudgetBytes: number;
  wiring: 'chained' | 'split';
  replicas: number;
  ackWaitMs: number;
  dedup: boolean;
  criticalCategories: string[];
  frequencyCaps: Record<string, number>;
  inappBroadcastThreshold: number;
  quietChannels: Channel[];
  deferRecheckMs: number;
  /** How often handled requests are trimmed from the intake streams and the receipts backlog is measured (ms). */
  housekeepingMs: number;
  /** A device not seen (registered again) for this long is deactivated. */
  deviceStaleMs: number;
  /** How often stale devices are swept; 0: never. */
  deviceSweepMs: number;
  /** In-app items older than this leave the inbox. */
  inboxRetentionMs: number;
  /** In-app items kept per user. */
  inboxMaxItems: number;
  /** Heartbeat interval of inbox streams. */
  sseHeartbeatMs: number;
  guards: {
    enabled: boolean;
    rateLimits: Record<string, number>;
    tenantRateLimit?: number;
    breakerFailures: number;
    breakerCoolDownMs: number;
  };
  retry: { maxAttempts: number; backoffBaseMs: number; backoffCapMs: number };
  logLevel: string;
}

export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`invalid configuration:\n  - ${problems.join('\n  - ')}`);
    this.name = 'ConfigError';
  }
}

/** Where the sandbox fakes of APNs, FCM and Twilio record what they received (`herald sandbox` reads it). */
export const sandboxDir = (config: Config): string => path.join(config.dataDir, 'sandbox');

/** Parses the environment (or the given record) once; reports every problem together. */
export function loadConfig(env: Record<string, string | undefined> = process.env): Config {
  const parsed = envSchema.safeParse(env);
  if (!parsed.success) {
    throw new ConfigError(parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`));
  }
  const e = parsed.data;
  const problems: string[] = [];
  if (e.NODE_ENV === 'production' && e.HERALD_SANDBOX === 'auto') {
    problems.push('HERALD_SANDBOX: "auto" sends to local fakes and counts them delivered; it is not allowed with NODE_ENV=production');
  }
  const providers = providerConfig(e, problems);
  for (const [name, file] of [['NATS_CREDS_FILE', e.NATS_CREDS_FILE], ['NATS_NKEY_SEED_FILE', e.NATS_NKEY_SEED_FILE], ['NATS_TLS_CA_FILE', e.NATS_TLS_CA_FILE],
    ['NATS_TLS_CERT_FILE', e.NATS_TLS_CERT_FILE], ['NATS_TLS_KEY_FILE', e.NATS_TLS_KEY_FILE]] as const) fileMustExist(file, name, problems);
  if (!e.NATS_TLS_CERT_FILE !== !e.NATS_TLS_KEY_FILE) problems.push('NATS_TLS_CERT_FILE and NATS_TLS_KEY_FILE go together');
  if (problems.length) throw new ConfigError(problems);
  const tlsWanted = e.NATS_TLS_CA_FILE || e.NATS_TLS_CERT_FILE || /(^|,)\s*tls:\/\//.test(e.NATS_URL);
  return Object.freeze({
    natsUrl: e.NATS_URL,
    natsAuth: {
      token: e.NATS_TOKEN,
      credsFile: e.NATS_CREDS_FILE,
      nkeySeedFile: e.NATS_NKEY_SEED_FILE,
      tls: tlsWanted ? { caFile: e.NATS_TLS_CA_FILE, certFile: e.NATS_TLS_CERT_FILE, keyFile: e.NATS_TLS_KEY_FILE } : undefined,
    },
    redisUrl: e.REDIS_URL,
    clickhouseUrl: e.CLICKHOUSE_URL,
    clickhouseDatabase: e.CLICKHOUSE_DATABASE,
    providers,
    smtpFrom: e.SMTP_FROM,
    smtpCatcherPort: e.HERALD_SMTP_CATCHER_PORT,
    namespace: e.HERALD_NAMESPACE,
    dataDir: path.resolve(e.HERALD_DATA_DIR),
    templatesDir: path.resolve(e.HERALD_TEMPLATES_DIR),
    defaultChannels: e.HERALD_DEFAULT_CHANNELS,
    httpHost: e.HERALD_HTTP_HOST,
    httpPort: e.HERALD_HTTP_PORT,
    apiHost: e.HERALD_API_HOST,
    apiPort: e.HERALD_API_PORT,
    storageBudgetBytes: e.HERALD_STORAGE_BUDGET_MB * 1024 * 1024,
    wiring: e.HERALD_WIRING,
    replicas: e.HERALD_REPLICAS,
    ackWaitMs: e.HERALD_ACK_WAIT_MS,
    dedup: e.HERALD_DEDUP === 'on',
    criticalCategories: e.HERALD_CRITICAL_CATEGORIES,
    frequencyCaps: e.HERALD_FREQUENCY_CAPS,
    inappBroadcastThreshold: e.HERALD_INAPP_BROADCAST_THRESHOLD,
    quietChannels: e.HERALD_QUIET_HOURS_CHANNELS,
    deferRecheckMs: e.HERALD_DEFER_RECHECK_MS,
    housekeepingMs: e.HERALD_HOUSEKEEPING_MS,
    deviceStaleMs: Math.round(e.HERALD_DEVICE_STALE_DAYS * 86_400_000),
    deviceSweepMs: e.HERALD_DEVICE_SWEEP_MS,
    inboxRetentionMs: Math.round(e.HERALD_INBOX_RETENTION_DAYS * 86_400_000),
    inboxMaxItems: e.HERALD_INBOX_MAX_ITEMS,
    sseHeartbeatMs: e.HERALD_SSE_HEARTBEAT_MS,
    guards: {
      enabled: e.HERALD_GUARDS === 'on',
      rateLimits: e.HERALD_RATE_LIMITS,
      tenantRateLimit: e.HERALD_TENANT_RATE_LIMIT,
      breakerFailures: e.HERALD_BREAKER_FAILURES,
      breakerCoolDownMs: e.HERALD_BREAKER_COOLDOWN_MS,
    },
    retry: { maxAttempts: e.HERALD_MAX_ATTEMPTS, backoffBaseMs: e.HERALD_BACKOFF_BASE_MS, backoffCapMs: e.HERALD_BACKOFF_CAP_MS },
    logLevel: e.LOG_LEVEL,
  });
}

type Env = z.infer<typeof envSchema>;

function readSecret(value: string | undefined, file: string | undefined, name: string, problems: string[]): string | undefined {
  if (value) return value;
  if (!file) return undefined;
  try {
    return fs.readFileSync(file, 'utf8').trim();
  } catch (err) {
    problems.push(`${name}_FILE: cannot read ${file}: ${(err as Error).message}`);
    return undefined;
  }
}

function fileMustExist(file: string | undefined, name: string, problems: string[]): void {
  if (file && !fs.existsSync(file)) problems.push(`${name}: no such file ${file}`);
}

/** Provider credentials from the environment (values or files named by it); partial sets are errors. */
function providerConfig(e: Env, problems: string[]): ProviderConfig {
  let apns: ProviderConfig['apns'];
  const production = e.APNS_PRODUCTION === 'true';
  if (e.APNS_KEY_FILE || e.APNS_KEY_ID || e.APNS_TEAM_ID) {
    if (!e.APNS_KEY_FILE || !e.APNS_KEY_ID || !e.APNS_TEAM_ID || !e.APNS_TOPIC) {
      problems.push('APNs token auth needs APNS_KEY_FILE, APNS_KEY_ID, APNS_TEAM_ID and APNS_TOPIC together');
    } else {
      fileMustExist(e.APNS_KEY_FILE, 'APNS_KEY_FILE', problems);
      apns = { auth: { kind: 'token', keyFile: e.APNS_KEY_FILE, keyId: e.APNS_KEY_ID, teamId: e.APNS_TEAM_ID }, topic: e.APNS_TOPIC, production };
    }
  } else if (e.APNS_CERT_FILE || e.APNS_CERT_KEY_FILE) {
    if (!e.APNS_CERT_FILE || !e.APNS_CERT_KEY_FILE || !e.APNS_TOPIC) {
      problems.push('APNs certificate auth needs APNS_CERT_FILE, APNS_CERT_KEY_FILE and APNS_TOPIC together');
    } else {
      fileMustExist(e.APNS_CERT_FILE, 'APNS_CERT_FILE', problems);
      fileMustExist(e.APNS_CERT_KEY_FILE, 'APNS_CERT_KEY_FILE', problems);
      apns = { auth: { kind: 'certificate', certFile: e.APNS_CERT_FILE, keyFile: e.APNS_CERT_KEY_FILE, passphrase: e.APNS_CERT_PASSPHRASE }, topic: e.APNS_TOPIC, production };
    }
  }
  const fcmFile = e.FCM_SERVICE_ACCOUNT_FILE ?? e.GOOGLE_APPLICATION_CREDENTIALS;
  fileMustExist(fcmFile, 'FCM_SERVICE_ACCOUNT_FILE', problems);
  const twilio: ProviderConfig['twilio'] = [];
  for (const prefix of ['TWILIO', 'TWILIO_FALLBACK'] as const) {
    const sid = e[`${prefix}_ACCOUNT_SID`];
    const token = readSecret(e[`${prefix}_AUTH_TOKEN`], e[`${prefix}_AUTH_TOKEN_FILE`], `${prefix}_AUTH_TOKEN`, problems);
    const from = e[`${prefix}_FROM`];
    if (!sid && !token && !from) continue;
    if (!sid || !token || !from) problems.push(`${prefix}: needs ${prefix}_ACCOUNT_SID, ${prefix}_AUTH_TOKEN (or _FILE) and ${prefix}_FROM together`);
    else twilio.push({ accountSid: sid, authToken: token, from });
  }
  return {
    smtpUrls: e.SMTP_URL ?? [],
    apns,
    fcm: fcmFile ? { serviceAccountFile: fcmFile, projectId: e.FCM_PROJECT_ID } : undefined,
    twilio,
    sandbox: e.HERALD_SANDBOX ?? (e.NODE_ENV === 'production' ? 'off' : 'auto'),
  };
}
