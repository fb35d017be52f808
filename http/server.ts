import { createHash } from 'node:crypto';
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import type { NatsConnection } from '@nats-io/transport-node';
import type { Redis } from 'ioredis';
import type { ClickHouseClient } from '@clickhouse/client';
import type { Logger } from 'pino';
import { defaults } from '../runtime/defaults.js';
import { version } from '../runtime/version.js';
import type { Metrics } from '../pipeline/metrics.js';

/** The servers a Herald process depends on; readiness checks each. */
export interface Dependencies {
  nats: NatsConnection;
  redis: Redis;
  clickhouse: ClickHouseClient;
}

/** One dependency's answer to a readiness check. */
export interface CheckResult {
  ok: boolean;
  ms: number;
  error?: string;
}

/** Runs a check with a deadline; a check that hangs counts as failed. */
async function timed(check: () => Promise<unknown>, timeoutMs: number): Promise<CheckResult> {
  const started = performance.now();
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      check(),
      new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs); }),
    ]);
    return { ok: true, ms: Math.round(performance.now() - started) };
  } catch (err) {
    return { ok: false, ms: Math.round(performance.now() - started), error: (err as Error).message };
  } finally {
    clearTimeout(timer);
  }
}

/**
 * The Content-Security-Policy of a page served whole by Herald: only its one inline script and
 * style (by hash), requests to this server only, nothing framed, posted or loaded from elsewhere.
 */
export function selfContainedPagePolicy(script: string, style: string): string {
  const hash = (text: string) => `'sha256-${createHash('sha256').update(text).digest('base64')}'`;
  return `default-src 'none'; script-src ${hash(script)}; style-src ${hash(style)}; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'`;
}

/** Starts a Fastify app on host:port; resolves with the port it got (useful when `port` is 0). */
export async function listenOn(app: FastifyInstance, host: string, port: number): Promise<number> {
  await app.listen({ host, port });
  const address = app.server.address();
  return typeof address === 'object' && address ? address.port : port;
}

/** Asks NATS, Redis and ClickHouse at once, each within `timeoutMs`. */
export async function readiness(deps: Dependencies, timeoutMs: number = defaults.readinessTimeoutMs) {
  const [nats, redis, clickhouse] = await Promise.all([
    timed(async () => {
      if (deps.nats.isClosed()) throw new Error('connection closed');
      await deps.nats.flush();
    }, timeoutMs),
    timed(async () => {
      if (deps.redis.status === 'end') throw new Error('connection closed');
      await deps.redis.ping();
    }, timeoutMs),
    timed(async () => {
      const r = await deps.clickhouse.ping();
      if (!r.success) throw r.error;
    }, timeoutMs),
  ]);
  return { ready: nats.ok && redis.ok && clickhouse.ok, version, checks: { nats, redis, clickhouse } };
}

/**
 * Health (`/healthz`: the process answers), readiness (`/readyz`: NATS, Redis and ClickHouse each
 * answered in time, reported one by one, with the version) and Prometheus metrics (`/metrics`) on
 * their own port. The API of the next issues gets its own plugins beside these.
 */
export class HealthServer {
  readonly app: FastifyInstance;

  constructor(metrics: Metrics, deps: Dependencies, log: Logger, timeoutMs: number = defaults.readinessTimeoutMs) {
    // Probes and scrapes every few seconds: no log line per request.
    this.app = Fastify({ loggerInstance: log.child({ component: 'http' }) as FastifyBaseLogger, logController: new LogController({ disableRequestLogging: true }) });
    this.app.get('/healthz', async () => ({ ok: true, version }));
    this.app.get('/readyz', async (_req, reply) => {
      const report = await readiness(deps, timeoutMs);
      return reply.code(report.ready ? 200 : 503).send(report);
    });
    this.app.get('/metrics', async (_req, reply) => {
      reply.header('content-type', metrics.registry.contentType);
      return metrics.registry.metrics();
    });
  }

  /** Listens; resolves with the port (useful when `port` is 0). */
  listen(host: string, port: number): Promise<number> {
    return listenOn(this.app, host, port);
  }

  async close(): Promise<void> {
    await this.app.close();
  }
}
