import cluster, { type Worker } from 'node:cluster';
import os from 'node:os';
import Fastify from 'fastify';
import type { Logger } from 'pino';
import client from 'prom-client';
import { listenOn, readiness, type Dependencies } from '../http/server.js';
import { version } from '../runtime/version.js';

const READY_ASK = 'herald:ready?';
const READY_ANSWER = 'herald:ready';
const DEMO = 'herald:demo';

/** How `herald run --workers N` runs its workers. */
export interface WorkerGroupOptions {
  /** Worker processes, each a whole `herald run` on the same durable consumers. */
  count: number;
  /** Where the group's health, readiness and metrics are served (port 0: nowhere). */
  httpHost: string;
  httpPort: number;
  log: Logger;
  /** Run `herald run --demo` in the first worker once every worker is ready. */
  demo?: boolean;
}

/** What one worker says when the primary asks whether it is ready. */
interface WorkerReport {
  type: typeof READY_ANSWER;
  ask: number;
  ready: boolean;
  checks?: unknown;
}

/** Cores a machine can give to Herald's workers: all of them less one when the servers run here too. */
export function defaultWorkerCount(serversOnThisMachine: boolean): number {
  return Math.max(1, os.availableParallelism() - (serversOnThisMachine ? 1 : 0));
}

/** Quick deaths in a row after which the primary stops replacing workers (a bad deployment, not a crash). */
const CRASH_LOOP = 5;
const QUICK_DEATH_MS = 10_000;

/**
 * The primary of `herald run --workers N`. It runs no stage itself: it forks the workers (they share
 * the durable consumers, so JetStream spreads the work, and the API port, which cluster shares), replaces
 * one that dies (its unacked work is redelivered to the others meanwhile), answers `/readyz` only
 * when every worker is ready, serves `/metrics` summed over the workers, and on SIGTERM lets every
 * worker drain before it exits. A second signal kills them at once.
 */
export async function superviseWorkers(opts: WorkerGroupOptions): Promise<void> {
  const { log } = opts;
  let stopping = false;
  let quickDeaths = 0;
  const started = new Map<number, number>();
  const fork = (): Worker => {
    // The workers' own health ports would collide with the group's: the primary answers for them.
    const worker = cluster.fork({ HERALD_HTTP_PORT: '0' });
    started.set(worker.id, Date.now());
    return worker;
  };
  cluster.on('exit', (worker, code, signal) => {
    const lived = Date.now() - (started.get(worker.id) ?? 0);
    started.delete(worker.id);
    if (stopping) return;
    quickDeaths = lived < QUICK_DEATH_MS ? quickDeaths + 1 : 0;
    if (quickDeaths >= CRASH_LOOP) {
      log.fatal({ worker: worker.id, code, signal, quickDeaths }, 'workers keep dying at start: giving up');
      stop('crash loop', 1);
      return;
    }
    log.error({ worker: worker.id, pid: worker.process.pid, code, signal }, 'worker died: starting another (its unacked work is redelivered)');
    fork();
  });
  // prom-client's aggregator collects each worker's registry over the cluster channel.
  const aggregator = new client.AggregatorRegistry();
  let asks = 0;
  const ask = async (timeoutMs: number): Promise<{ id: number; pid?: number; ready: boolean; checks?: unknown }[]> => {
    const id = ++asks;
    const workers = Object.values(cluster.workers ?? {}).filter((w): w is Worker => !!w && w.isConnected());
    return Promise.all(workers.map((w) => new Promise<{ id: number; pid?: number; ready: boolean; checks?: unknown }>((resolve) => {
      const timer = setTimeout(() => { w.off('message', onMessage); resolve({ id: w.id, pid: w.process.pid, ready: false, checks: 'no answer in time' }); }, timeoutMs);
      const onMessage = (m: WorkerReport) => {
        if (m?.type !== READY_ANSWER || m.ask !== id) return;
        clearTimeout(timer);
        w.off('message', onMessage);
        resolve({ id: w.id, pid: w.process.pid, ready: m.ready, checks: m.checks });
      };
      w.on('message', onMessage);
      w.send({ type: READY_ASK, ask: id });
    })));
  };
  const ready = async () => {
    const workers = await ask(2_000);
    return { ready: workers.length === opts.count && workers.every((w) => w.ready), version, workers };
  };

  const app = Fastify({ logger: false });
  app.get('/healthz', async () => ({ ok: true, version, workers: Object.keys(cluster.workers ?? {}).length }));
  app.get('/readyz', async (_req, reply) => {
    const report = await ready();
    return reply.code(report.ready ? 200 : 503).send(report);
  });
  app.get('/metrics', async (_req, reply) => {
    reply.header('content-type', aggregator.contentType);
    return aggregator.clusterMetrics();
  });

  function stop(why: string, code = 0): void {
    if (stopping) {
      log.warn({ why }, 'second signal: killing the workers now');
      for (const w of Object.values(cluster.workers ?? {})) w?.process.kill('SIGKILL');
      process.exit(130);
    }
    stopping = true;
    log.info({ why }, 'stopping: each worker finishes its in-flight work');
    const workers = Object.values(cluster.workers ?? {}).filter((w): w is Worker => !!w);
    const exited = workers.map((w) => new Promise((r) => { if (w.isDead()) r(undefined); else w.once('exit', r); }));
    for (const w of workers) w.process.kill('SIGTERM');
    void Promise.all(exited).then(() => app.close()).finally(() => process.exit(code));
  }
  process.on('SIGTERM', () => stop('SIGTERM'));
  // Ctrl-C reaches the workers too (one process group): they drain on their own, the primary waits.
  process.on('SIGINT', () => stop('SIGINT'));

  for (let i = 0; i < opts.count; i++) fork();
  if (opts.httpPort) await listenOn(app, opts.httpHost, opts.httpPort).catch((err) => log.warn({ err }, 'health/metrics endpoint not started'));
  // Say once when the whole group is up (and start the demo then, in one worker).
  for (;;) {
    const r = await ready();
    if (stopping) return;
    if (r.ready) {
      log.info({ workers: r.workers.map((w) => w.pid) }, `${opts.count} workers running`);
      const first = Object.values(cluster.workers ?? {})[0];
      if (opts.demo && first) first.send({ type: DEMO });
      return;
    }
    await new Promise((r) => setTimeout(r, 250));
  }
}

/**
 * A worker's side of the group: answers the primary's readiness question with this process's own
 * checks (NATS, Redis, ClickHouse), runs the demo when told, and shuts down when the primary is gone.
 */
export function answerPrimary(parts: { deps: () => Dependencies | undefined; demo: () => void; stop: (why: string) => void }): void {
  process.on('message', (m: { type?: string; ask?: number }) => {
    if (m?.type === DEMO) parts.demo();
    if (m?.type !== READY_ASK) return;
    const answer = (ready: boolean, checks: unknown) => process.send?.({ type: READY_ANSWER, ask: m.ask!, ready, checks } satisfies WorkerReport);
    const deps = parts.deps();
    if (!deps) answer(false, 'starting');
    else void readiness(deps).then((r) => answer(r.ready, r.checks));
  });
  process.on('disconnect', () => parts.stop('primary gone'));
}

/** A worker hands its metrics to the primary's aggregator (prom-client's cluster support). */
export function shareMetrics(registry: client.Registry): void {
  client.AggregatorRegistry.setRegistries([registry]);
  // Constructing one installs the worker's answer to the aggregator's requests.
  new client.AggregatorRegistry();
}

/** Whether NATS, Redis and ClickHouse are all on this machine (loopback addresses). */
export function serversOnThisMachine(config: { natsUrl: string; redisUrl: string; clickhouseUrl: string }): boolean {
  const hosts = [...config.natsUrl.split(','), config.redisUrl, config.clickhouseUrl]
    .map((u) => { try { return new URL(u.includes('://') ? u.trim() : `nats://${u.trim()}`).hostname; } catch { return ''; } });
  return hosts.every((h) => h === 'localhost' || h === '::1' || h === '[::1]' || h.startsWith('127.'));
}

/** True in a worker of `herald run --workers N`. */
export const isWorker = (): boolean => cluster.isWorker;
