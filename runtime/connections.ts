import fs from 'node:fs';
import { connect, credsAuthenticator, nkeyAuthenticator, type NatsConnection } from '@nats-io/transport-node';
import { jetstream, jetstreamManager, type JetStreamClient, type JetStreamManager } from '@nats-io/jetstream';
import { Redis } from 'ioredis';
import { createClient, ClickHouseLogLevel, type ClickHouseClient } from '@clickhouse/client';
import type { Logger } from 'pino';
import type { Config } from './config.js';

export interface Nats {
  nc: NatsConnection;
  js: JetStreamClient;
  jsm: JetStreamManager;
}

/** NATS_URL may list several servers (a cluster), comma-separated; credentials come from the first. */
export async function connectNats(config: Config, name = 'herald'): Promise<Nats> {
  const urls = config.natsUrl.split(',').map((u) => new URL(u.includes('://') ? u.trim() : `nats://${u.trim()}`));
  const url = urls[0];
  const nc = await connect({
    servers: urls.map((u) => `${u.hostname}:${u.port || 4222}`),
    user: url.username ? decodeURIComponent(url.username) : undefined,
    pass: url.password ? decodeURIComponent(url.password) : undefined,
    token: config.natsAuth.token,
    authenticator: config.natsAuth.credsFile
      ? credsAuthenticator(fs.readFileSync(config.natsAuth.credsFile))
      : config.natsAuth.nkeySeedFile ? nkeyAuthenticator(new TextEncoder().encode(fs.readFileSync(config.natsAuth.nkeySeedFile, 'utf8').trim())) : undefined,
    tls: config.natsAuth.tls ? { ...config.natsAuth.tls } : undefined,
    name,
    maxReconnectAttempts: -1,
    // Async stack traces allocate an Error per publish: a fifth of the CPU on the hot path.
    noAsyncTraces: true,
  });
  const jsm = await jetstreamManager(nc);
  return { nc, js: jetstream(nc, { timeout: 10_000 }), jsm };
}

/** A long-lived Redis connection whose errors are logged to `log` (see logRedisErrors). */
export function connectRedis(config: Config, log: Logger): Redis {
  const redis = new Redis(config.redisUrl, { maxRetriesPerRequest: null, enableAutoPipelining: true, lazyConnect: false });
  return logRedisErrors(redis, log);
}

/** How often an outage's connection errors are logged, at most. */
const REDIS_ERROR_EVERY_MS = 10_000;

/**
 * Logs a connection's errors through `log`: the first of an outage at once, then at most one line
 * per 10 s saying how many came meanwhile, and a line when it is connected again. Without a
 * listener ioredis prints every failed retry (several a second) to stderr, outside the logs.
 * A duplicate() does not inherit listeners: give it its own.
 */
export function logRedisErrors(redis: Redis, log: Logger): Redis {
  let lastLogged = 0;
  let unlogged = 0;
  let failing = false;
  redis.on('error', (err: Error) => {
    failing = true;
    const now = Date.now();
    if (now - lastLogged < REDIS_ERROR_EVERY_MS) {
      unlogged++;
      return;
    }
    log.warn({ err: err.message, ...(unlogged ? { errors_since_last_line: unlogged } : {}) }, 'redis: connection failing; retrying');
    lastLogged = now;
    unlogged = 0;
  });
  // At the outage's level, so whoever sees it start sees it end.
  redis.on('ready', () => {
    if (!failing) return;
    failing = false;
    lastLogged = 0;
    unlogged = 0;
    log.warn('redis: connected again');
  });
  return redis;
}

export function connectClickHouse(config: Config): ClickHouseClient {
  // Failed inserts are retried and logged by the runner; the client's own console logging is noise.
  return createClient({ url: config.clickhouseUrl, request_timeout: 30_000, log: { level: ClickHouseLogLevel.OFF } });
}

/**
 * A Redis connection for one operator command: it fails within `timeoutMs` with the reason when
 * Redis cannot be reached, instead of queueing commands and reconnecting forever.
 */
export async function connectRedisOrFail(config: Config, timeoutMs = 5_000): Promise<Redis> {
  const redis = new Redis(config.redisUrl, {
    lazyConnect: true, enableOfflineQueue: false, maxRetriesPerRequest: 1, connectTimeout: timeoutMs, retryStrategy: () => null,
  });
  let lastError: Error | undefined;
  redis.on('error', (err: Error) => { lastError = err; });
  try {
    await redis.connect();
    return redis;
  } catch (err) {
    redis.disconnect();
    const where = new URL(config.redisUrl);
    throw new Error(`cannot reach Redis at ${where.hostname}:${where.port || 6379}: ${(lastError ?? (err as Error)).message}`);
  }
}
