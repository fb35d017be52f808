import type { Redis } from 'ioredis';
import type { Directory } from '../stores/directory.js';
import type { InboxStore } from '../stores/inbox.js';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { childPids, freePort, startServer, stopAttached, type RunningServer } from '../servers/local-servers.js';

/** Servers started for one benchmark run; `natsMonitor` is NATS's monitoring URL (varz, connz). */
export interface BenchServers {
  env: Record<string, string>;
  pids: Record<string, number>;
  natsMonitor: string;
  stop: () => Promise<void>;
}

/** Starts NATS, Redis and ClickHouse on free ports in a temp dir for one benchmark run. */
export async function benchServers(): Promise<BenchServers> {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'herald-bench-'));
  const [np, nm, rp, cp, ct] = await Promise.all([freePort(), freePort(), freePort(), freePort(), freePort()]);
  const servers: RunningServer[] = await Promise.all([
    startServer({ name: 'nats', port: np, sidePort: nm, dataDir: path.join(root, 'nats') }, false),
    startServer({ name: 'redis', port: rp, sidePort: 0, dataDir: path.join(root, 'redis') }, false),
    startServer({ name: 'clickhouse', port: cp, sidePort: ct, dataDir: path.join(root, 'clickhouse') }, false),
  ]);
  return {
    env: {
      NATS_URL: servers[0].url, REDIS_URL: servers[1].url, CLICKHOUSE_URL: servers[2].url,
      HERALD_DATA_DIR: path.join(root, 'herald'), HERALD_HTTP_PORT: '0', HERALD_SMTP_CATCHER_PORT: '0', LOG_LEVEL: 'warn',
    },
    pids: Object.fromEntries(servers.map((s) => [s.name, s.pid])),
    natsMonitor: `http://127.0.0.1:${nm}`,
    stop: async () => {
      await Promise.all(servers.map(stopAttached));
      fs.rmSync(root, { recursive: true, force: true });
    },
  };
}

/** Peak resident set of a process (VmHWM), in MB. */
export function peakRssMb(pid: number): number {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = Number(/VmHWM:\s+(\d+)/.exec(status)?.[1] ?? 0);
  return kb / 1024;
}

export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

/** Numbers the way the reports print them: grouped thousands, `d` decimals. */
export const fmt = (n: number, d = 0): string => n.toLocaleString('en-US', { maximumFractionDigits: d, minimumFractionDigits: d });

/** Prints a report table: the first column left-aligned, the others right-aligned. */
export function printTable(head: string[], rows: string[][]): void {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (r: string[]) => r.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ');
  console.log(line(head));
  for (const r of rows) console.log(line(r));
}

/** CPU time a process has used so far (user + system), in ms. */
export function cpuMs(pid: number): number {
  const fields = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

/**
 * How often a process's main thread (a Node process's event loop) went to sleep and was woken:
 * its voluntary context switches. On these VMs a wakeup costs tens of µs, so the count per request
 * explains much of why a request costs more at a low rate than in a burst.
 */
export function mainThreadWakeups(pid: number): number {
  const line = fs.readFileSync(`/proc/${pid}/status`, 'utf8').split('\n').find((l) => l.startsWith('voluntary_ctxt_switches:'));
  return Number(line?.split(/\s+/)[1] ?? 0);
}

/** A process and its descendants (the workers of `herald run --workers N`). */
export function processTree(pid: number): number[] {
  return [pid, ...childPids(pid).flatMap(processTree)];
}

/** CPU ms of a process and its live descendants together. */
export function treeCpuMs(pid: number): number {
  return processTree(pid).reduce((sum, p) => {
    try { return sum + cpuMs(p); } catch { return sum; }
  }, 0);
}

/** The largest of `read(pid)` over a process and its descendants (0 for one gone meanwhile). */
function maxOverTree(pid: number, read: (pid: number) => number): number {
  return Math.max(0, ...processTree(pid).map((p) => { try { return read(p); } catch { return 0; } }));
}

/** The largest current RSS (MB) among a process and its descendants: the per-process figure to hold under a cap. */
export const maxRssMb = (pid: number) =>
  maxOverTree(pid, (p) => Number(/VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${p}/status`, 'utf8'))?.[1] ?? 0) / 1024);

/** The largest peak RSS (MB) among a process and its descendants. */
export const maxPeakRssMb = (pid: number) => maxOverTree(pid, peakRssMb);

const projectRoot = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');

/** Runs a bench script in its own process (from the project root); resolves with its stdout. */
export function runChild(args: string[], env: Record<string, string>): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, args, { cwd: projectRoot, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d) => { out += d; });
    child.on('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`${args.join(' ')} exited ${code}`))));
  });
}

/** Waits (up to 15 s) until the servers together use under a tenth of a core: nothing of the last phase still running. */
export async function serversIdle(pids: Record<string, number>): Promise<void> {
  const busy = () => Object.values(pids).reduce((sum, pid) => sum + cpuMs(pid), 0);
  for (let i = 0; i < 30; i++) {
    const before = busy();
    await new Promise((r) => setTimeout(r, 500));
    if (busy() - before < 50) return;
  }
}

/** Commands Redis has run, per command (scripts' own calls included), and its network bytes, from INFO. */
export async function redisCommands(redis: Redis): Promise<Map<string, number>> {
  const info = `${await redis.info('commandstats')}\n${await redis.info('stats')}`;
  const counts = new Map([...info.matchAll(/^cmdstat_([^:]+):calls=(\d+),usec=(\d+)/gm)].flatMap((m) => [[m[1], Number(m[2])], [`usec ${m[1]}`, Number(m[3])]] as const));
  for (const m of info.matchAll(/^total_net_(input|output)_bytes:(\d+)/gm)) counts.set(`bytes ${m[1]}`, Number(m[2]));
  return counts;
}

/** What Redis did between two `redisCommands` readings, per unit of work (a request, a delivery). */
export function redisPerUnit(before: Map<string, number>, after: Map<string, number>, units: number) {
  const delta = (name: string) => ((after.get(name) ?? 0) - (before.get(name) ?? 0)) / units;
  const each = [...after.keys()].filter((name) => !name.startsWith('bytes ') && !name.startsWith('usec ')).map((name) => [name, delta(name)] as const)
    .filter(([, n]) => n >= 0.05).sort((a, b) => b[1] - a[1]);
  return {
    commands: each.reduce((n, [, c]) => n + c, 0),
    /** The commands run most, with their number per unit. */
    top: each.slice(0, 10).map(([name, n]) => `${name} ${fmt(n, 1)}`).join(', '),
    /** The same, with Redis's own µs in each per unit (a script's time includes the commands it calls, which count again on their own). */
    topTimed: each.slice(0, 10).map(([name, n]) => `${name} ${fmt(n, 1)} (${fmt(delta(`usec ${name}`), 1)} µs)`).join(', '),
    /**
     * The commands Redis spent the most time in, with their µs per unit, however rarely they ran (a
     * script called once per 1,000 recipients is under the count the lists above keep).
     */
    topByTime: [...after.keys()].filter((name) => name.startsWith('usec ')).map((name) => [name.slice(5), delta(name)] as const)
      .filter(([, us]) => us >= 0.05).sort((a, b) => b[1] - a[1]).slice(0, 8).map(([name, us]) => `${name} ${fmt(us, 1)} µs`).join(', '),
    bytesIn: delta('bytes input'), bytesOut: delta('bytes output'),
  };
}

/** NATS's message counters (every connection's, both ways) from its monitoring endpoint. */
export async function natsMessages(monitor: string): Promise<{ in: number; out: number }> {
  const varz = await (await fetch(`${monitor}/varz`)).json() as { in_msgs: number; out_msgs: number };
  return { in: varz.in_msgs, out: varz.out_msgs };
}

/**
 * The feed benchmarks' inboxes: `users` (`f0`, `f1`, …) of tenant `feed` in the directory, each
 * with `items` own in-app items a minute apart, written the way the inbox sink writes them
 * (InboxStore.write, every user's reference to one item in a call). Returns the user ids.
 */
export async function loadFeeds(directory: Directory, inbox: InboxStore, users: number, items: number): Promise<string[]> {
  const ids = Array.from({ length: users }, (_, i) => `f${i}`);
  await directory.upsert(ids.map((id) => ({ type: 'user' as const, tenant: 'feed', id })), 5_000);
  const start = Date.now() - items * 60_000;
  for (let j = 0; j < items; j++) {
    const id = `feed-item-${j}`;
    const createdAt = start + j * 60_000;
    await inbox.write('feed', [{ locale: 'en', content: { id, category: 'social', tier: 'social', title: `Item ${j}`, body: `Something happened (${j}) and you may want to look at it.`, created_at: createdAt } }],
      ids.map((userId) => ({ userId, locale: 'en', requestId: id, createdAt })));
  }
  return ids;
}
