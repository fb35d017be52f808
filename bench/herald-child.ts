import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadConfig } from '../runtime/config.js';
import { createLogger } from '../runtime/logger.js';
import { connectClickHouse, connectNats, connectRedis, type Nats } from '../runtime/connections.js';
import { Directory } from '../stores/directory.js';
import { applyAll } from '../streams/apply.js';
import { topologyOf } from '../pipeline/graph.js';
import type { Receipt } from '../schemas/index.js';
import type { Topology } from '../streams/topology.js';
import { freePort } from '../servers/local-servers.js';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');

/** The node flags bin/herald.js runs with (its heap cap), from its shebang: a child started with BENCH_NODE_FLAGS keeps them. */
export const SHEBANG_FLAGS = fs.readFileSync(path.join(root, 'bin/herald.js'), 'utf8').split('\n')[0].split(' ').filter((a) => a.startsWith('--'));

/** `herald run` as its own process (as an operator runs it), once /readyz answers. */
export async function startHerald(env: Record<string, string>, args: string[] = ['run', '--workers', '1']): Promise<ChildProcess> {
  const httpPort = await freePort();
  const flags = process.env.BENCH_NODE_FLAGS?.split(' ').filter(Boolean);
  const herald = flags
    ? spawn(process.execPath, [...SHEBANG_FLAGS, ...flags, 'bin/herald.js', ...args], { cwd: root, env: { ...process.env, ...env, HERALD_HTTP_PORT: String(httpPort) }, stdio: ['ignore', 'ignore', 'inherit'] })
    : spawn('bin/herald.js', args, { cwd: root, env: { ...process.env, ...env, HERALD_HTTP_PORT: String(httpPort) }, stdio: ['ignore', 'ignore', 'inherit'] });
  for (let i = 0; ; i++) {
    if (await fetch(`http://127.0.0.1:${httpPort}/readyz`).then((r) => r.ok, () => false)) return herald;
    if (i > 300 || herald.exitCode !== null || herald.signalCode !== null) {
      // The caller never gets this child to stop: do not leave it running.
      herald.kill('SIGKILL');
      throw new Error(`herald ${args.join(' ')} did not become ready${herald.exitCode !== null ? ` (exited ${herald.exitCode})` : ''}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Counts delivered receipts per tenant as they are published, with each delivery's latency. */
export class DeliveredWatch {
  readonly delivered = new Map<string, number>();
  readonly latencies = new Map<string, number[]>();
  readonly lastSeen = new Map<string, number>();
  private readonly sub: ReturnType<Nats['nc']['subscribe']>;

  constructor(nats: Nats, topology: Topology) {
    const sub = nats.nc.subscribe(topology.receipt('delivered'));
    this.sub = sub;
    void (async () => {
      for await (const m of sub) {
        const now = performance.now();
        for (const r of (m.json() as { receipts: Receipt[] }).receipts) {
          const n = r.user_ids?.length ?? r.count ?? 1;
          this.delivered.set(r.tenant, (this.delivered.get(r.tenant) ?? 0) + n);
          this.lastSeen.set(r.tenant, now);
          let l = this.latencies.get(r.tenant);
          if (!l) this.latencies.set(r.tenant, (l = []));
          for (let i = 0; i < n; i++) l.push(r.latency_ms ?? 0);
        }
      }
    })();
  }

  async waitFor(tenant: string, n: number, timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while ((this.delivered.get(tenant) ?? 0) < n) {
      if (Date.now() > deadline) throw new Error(`${tenant}: ${this.delivered.get(tenant) ?? 0} of ${n} delivered in time`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  close(): void { this.sub.unsubscribe(); }
}

/** Waits until no consumer has anything pending, so a phase starts with nothing left from the last. */
export async function quiesce(nats: Nats, topology: Topology): Promise<void> {
  for (;;) {
    let busy = 0;
    for (const { stream, config: c } of topology.consumers()) {
      const ci = await nats.jsm.consumers.info(stream, c.durable_name!);
      busy += ci.num_pending + ci.num_ack_pending;
    }
    if (busy === 0) return;
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** SIGTERM, and wait for the exit (the drain is part of what a run costs). */
export async function stopHerald(herald: ChildProcess): Promise<void> {
  const exited = new Promise((r) => herald.once('exit', r));
  herald.kill('SIGTERM');
  await exited;
}

/** Clients for a benchmark's namespace, with its topology applied. */
export async function connectBench(env: Record<string, string>) {
  const config = loadConfig(env);
  const topology = topologyOf(config);
  const nats = await connectNats(config, 'bench');
  const ch = connectClickHouse(config);
  await applyAll(nats, topology, ch, config.clickhouseDatabase);
  const redis = connectRedis(config, createLogger(config.logLevel));
  return {
    config, topology, nats, ch, redis,
    directory: new Directory(redis, topology.keys),
    async close(): Promise<void> {
      await nats.nc.drain();
      redis.disconnect();
      await ch.close();
    },
  };
}
