// `npm run bench:api`: what the HTTP edge costs beside publishing to NATS directly, in the same run
// on the same servers. Prints figures (and the issue's targets as met / missed); never fails on them.
//
// 1. Accepted throughput. "Accepted" is the same thing on both paths: the request is stored in
//    JetStream (the API answers 202 only after the PubAck; a NATS producer has its PubAck). HTTP:
//    autocannon, keep-alive, C connections, no pipelining, a fresh Idempotency-Key each request.
//    NATS: `publishRequest` with the same C requests in flight (C closed loops, like C connections).
//    Only intake runs: `herald api` alone, no pipeline consuming. Afterwards `herald run` delivers
//    the whole backlog, which shows what was accepted is deliverable (and warms the pipeline up).
// 2. Request → delivered at a fixed rate with the whole pipeline running (`herald api` beside
//    `herald run --no-api`), HTTP then NATS. Timed in this process from just before the request is
//    sent to the `delivered` receipt for its id, so the edge's share is inside the figure (the
//    receipt's own latency_ms starts when the request was stored, after the edge). Paced here, one
//    request every 1/RATE s, over node:http keep-alive: autocannon's rate limit sends each second's
//    quota in a burst, which would measure queueing behind the burst instead.
// 3. CPU per request of each process over each phase.
import { spawn, type ChildProcess } from 'node:child_process';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import autocannon from 'autocannon';
import { requestIdFor } from '../runtime/ids.js';
import { publishRequest } from '../runtime/producer.js';
import type { Nats } from '../runtime/connections.js';
import type { NotificationRequest, Receipt } from '../schemas/index.js';
import { ApiKeys } from '../stores/api-keys.js';
import type { DirectoryRecordInput } from '../stores/directory.js';
import type { Topology } from '../streams/topology.js';
import { freePort } from '../servers/local-servers.js';
import { connectBench, quiesce, startHerald } from './herald-child.js';
import { benchServers, cpuMs, fmt, percentile, printTable } from './servers.js';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const CONNECTIONS = Number(process.env.BENCH_API_CONNECTIONS ?? 32);
// autocannon shares `amount` out over its connections: a multiple of them keeps the two paths equal.
const REQUESTS = Math.ceil(Number(process.env.BENCH_API_REQUESTS ?? 20_000) / CONNECTIONS) * CONNECTIONS;
const WARMUP = Math.ceil(Math.min(2_000, REQUESTS / 4) / CONNECTIONS) * CONNECTIONS;
const RATE = Number(process.env.BENCH_API_RATE ?? 500);
const SECONDS = Number(process.env.BENCH_API_SECONDS ?? 10);
const USERS = 5_000;
const TENANTS = ['warm', 'tput_http', 'tput_nats', 'lat_http', 'lat_nats'] as const;
const log = (s: string) => process.stderr.write(`${s}\n`);

/** The same single-recipient transactional request on both paths (HTTP leaves out tenant and key). */
const content = (i: number) => ({
  tier: 'transactional' as const, category: 'otp', content: { title: 'Your code', body: 'Code {{code}}' },
  data: { code: String(i) }, recipients: { user_ids: [`u${i % USERS}`] }, channels: ['inapp' as const],
});
const natsRequest = (tenant: string, key: string, i: number): NotificationRequest => ({ tenant, idempotency_key: key, ...content(i) });

/** Counts `delivered` receipts per tenant; for requests sent with a time, how long each took. */
class Deliveries {
  readonly count = new Map<string, number>();
  /** request id → performance.now() just before it was sent. */
  readonly sentAt = new Map<string, number>();
  readonly sentToDelivered = new Map<string, number[]>();
  readonly storedToDelivered = new Map<string, number[]>();
  private readonly sub: ReturnType<Nats['nc']['subscribe']>;

  constructor(nats: Nats, topology: Topology) {
    const sub = nats.nc.subscribe(topology.receipt('delivered'));
    this.sub = sub;
    void (async () => {
      for await (const m of sub) {
        const now = performance.now();
        for (const r of (m.json() as { receipts: Receipt[] }).receipts) {
          this.count.set(r.tenant, (this.count.get(r.tenant) ?? 0) + (r.user_ids?.length ?? r.count ?? 1));
          const sent = this.sentAt.get(r.request_id);
          if (sent === undefined) continue;
          this.sentAt.delete(r.request_id);
          push(this.sentToDelivered, r.tenant, now - sent);
          push(this.storedToDelivered, r.tenant, r.latency_ms ?? 0);
        }
      }
    })();
  }

  /** Waits until `n` of a tenant's deliveries arrived, or the time is up; returns how many did. */
  async waitFor(tenant: string, n: number, timeoutMs: number): Promise<number> {
    const deadline = Date.now() + timeoutMs;
    while ((this.count.get(tenant) ?? 0) < n && Date.now() < deadline) await sleep(20);
    if ((this.count.get(tenant) ?? 0) < n) log(`  ${tenant}: only ${this.count.get(tenant) ?? 0} of ${n} delivered in ${timeoutMs / 1000} s`);
    return this.count.get(tenant) ?? 0;
  }

  close(): void { this.sub.unsubscribe(); }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const push = (m: Map<string, number[]>, k: string, v: number) => {
  const l = m.get(k);
  if (l) l.push(v);
  else m.set(k, [v]);
};
const sorted = (l: number[] | undefined) => [...(l ?? [])].sort((a, b) => a - b);
const tally = (m: Map<string, number>, k: string) => m.set(k, (m.get(k) ?? 0) + 1);
const others = (statuses: Map<string, number>, ok: string) =>
  [...statuses].filter(([s]) => s !== ok).map(([s, n]) => `${fmt(n)} × ${s}`).join(', ') || 'none';

// Every process this run starts is stopped on the way out, error or not (and on Ctrl-C / SIGTERM).
const children = new Set<ChildProcess>();
async function stopChild(child: ChildProcess): Promise<void> {
  children.delete(child);
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
  await exited;
  clearTimeout(timer);
}
async function stopAll(): Promise<void> {
  await Promise.all([...children].map(stopChild));
}
process.on('exit', () => { for (const c of children) c.kill('SIGKILL'); });

/** `herald api` as its own process, once it answers on its port. */
async function startApi(env: Record<string, string>, port: number): Promise<ChildProcess> {
  // BENCH_NODE_FLAGS (say --cpu-prof) reach this process too, as they reach startHerald's.
  const flags = process.env.BENCH_NODE_FLAGS?.split(' ').filter(Boolean);
  const child = spawn(flags ? process.execPath : 'bin/herald.js', flags ? [...flags, 'bin/herald.js', 'api'] : ['api'], {
    cwd: root, env: { ...process.env, ...env, HERALD_API_HOST: '127.0.0.1', HERALD_API_PORT: String(port) }, stdio: ['ignore', 'ignore', 'inherit'],
  });
  children.add(child);
  for (let i = 0; ; i++) {
    if (await fetch(`http://127.0.0.1:${port}/v1/openapi.json`).then((r) => r.ok, () => false)) return child;
    if (i > 600 || child.exitCode !== null) throw new Error(`\`herald api\` did not start${child.exitCode !== null ? ` (exited ${child.exitCode})` : ''}`);
    await sleep(100);
  }
}

/** CPU ms of each named process now; `since` turns two snapshots into µs per request. */
const cpuSnapshot = (pids: Record<string, number>) => Object.fromEntries(Object.entries(pids).map(([k, pid]) => [k, cpuMs(pid)]));
const cpuPerRequest = (before: Record<string, number>, pids: Record<string, number>, requests: number) =>
  Object.fromEntries(Object.entries(pids).map(([k, pid]) => [k, ((cpuMs(pid) - before[k]) * 1000) / requests]));

const servers = await benchServers();
let bench: Awaited<ReturnType<typeof connectBench>> | undefined;
/** Stops the children, closes this process's connections, then stops the servers. */
const cleanUp = async () => {
  await stopAll();
  await bench?.close().catch(() => undefined);
  bench = undefined;
  await servers.stop();
};
let interrupted = false;
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    if (interrupted) process.exit(130);
    interrupted = true;
    log(`${signal}: stopping what this run started …`);
    void cleanUp().finally(() => process.exit(130));
  });
}

try {
  const env = { ...servers.env, HERALD_NAMESPACE: 'api' };
  bench = await connectBench(env);
  const { topology, nats, directory } = bench;
  const users: DirectoryRecordInput[] = [];
  for (let i = 0; i < USERS; i++) for (const tenant of TENANTS) users.push({ type: 'user', tenant, id: `u${i}` });
  await directory.upsert(users, 5_000);
  // Keys made the way `herald keys create` makes them, at a rate far above what is sent: the limiter runs
  // (a Redis round trip a request), as in production, but never refuses.
  const apiKeys = new ApiKeys(bench.redis, topology.keys);
  const keyOf = Object.fromEntries(await Promise.all(['warm', 'tput_http', 'lat_http'].map(async (tenant) =>
    [tenant, (await apiKeys.create({ tenant, name: 'bench', scopes: ['send'], ratePerSecond: 10_000_000 })).secret] as const)));

  const apiPort = await freePort();
  const base = `http://127.0.0.1:${apiPort}`;
  log('starting `herald api` (no pipeline yet) …');
  const api = await startApi(env, apiPort);
  const watch = new Deliveries(nats, topology);
  const stored = async () => (await nats.jsm.streams.info(topology.intakeStream('transactional'))).state.messages;

  /** N requests over HTTP with autocannon; the status of every answer. */
  async function overHttp(tenant: string, n: number) {
    const statuses = new Map<string, number>();
    let next = 0;
    const before = await stored();
    const t0 = performance.now();
    const result = await autocannon({
      url: `${base}/v1/notifications`, connections: CONNECTIONS, pipelining: 1, amount: n, timeout: 30,
      requests: [{
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${keyOf[tenant]}` },
        setupRequest: (req) => {
          const i = next++;
          return { ...req, headers: { ...req.headers, 'idempotency-key': `h${i}` }, body: JSON.stringify(content(i)) };
        },
        onResponse: (status) => { tally(statuses, String(status)); },
      }],
    });
    const seconds = (performance.now() - t0) / 1000;
    if (result.errors || result.timeouts) tally(statuses, `connection error/timeout (${result.errors + result.timeouts})`);
    return { accepted: statuses.get('202') ?? 0, seconds, statuses, stored: (await stored()) - before };
  }

  /** N requests published to NATS, CONNECTIONS in flight (each slot waits for its PubAck). */
  async function overNats(tenant: string, n: number) {
    const statuses = new Map<string, number>();
    let next = 0;
    const before = await stored();
    const t0 = performance.now();
    await Promise.all(Array.from({ length: CONNECTIONS }, async () => {
      for (let i = next++; i < n; i = next++) {
        await publishRequest(nats.js, topology, natsRequest(tenant, `n${i}`, i)).then(
          (ack) => tally(statuses, ack.duplicate ? 'duplicate' : 'PubAck'),
          (err: Error) => tally(statuses, err.message));
      }
    }));
    const seconds = (performance.now() - t0) / 1000;
    return { accepted: statuses.get('PubAck') ?? 0, seconds, statuses, stored: (await stored()) - before };
  }

  // Phase 1: intake only.
  log(`warming up: ${fmt(WARMUP)} requests each way …`);
  await overHttp('warm', WARMUP);
  await overNats('warm', WARMUP);
  const phase1Pids = { '`herald api`': api.pid!, 'nats-server': servers.pids.nats, 'redis-server': servers.pids.redis, 'bench (load generator)': process.pid };
  log(`accepted throughput over HTTP: ${fmt(REQUESTS)} requests, ${CONNECTIONS} connections …`);
  let cpu0 = cpuSnapshot(phase1Pids);
  const httpTput = await overHttp('tput_http', REQUESTS);
  const httpTputCpu = cpuPerRequest(cpu0, phase1Pids, Math.max(1, httpTput.accepted));
  log(`accepted throughput over NATS: ${fmt(REQUESTS)} requests, ${CONNECTIONS} in flight …`);
  cpu0 = cpuSnapshot(phase1Pids);
  const natsTput = await overNats('tput_nats', REQUESTS);
  const natsTputCpu = cpuPerRequest(cpu0, phase1Pids, Math.max(1, natsTput.accepted));

  log('starting `herald run --no-api` and delivering the backlog …');
  const herald = await startHerald(env, ['run', '--workers', '1', '--no-api']);
  children.add(herald);
  const backlogTimeoutMs = 120_000 + REQUESTS * 10;
  const httpDelivered = await watch.waitFor('tput_http', httpTput.accepted, backlogTimeoutMs);
  const natsDelivered = await watch.waitFor('tput_nats', natsTput.accepted, backlogTimeoutMs);
  await quiesce(nats, topology);

  // Phase 2: request → delivered at a fixed rate, the whole pipeline running.
  const agent = new http.Agent({ keepAlive: true, maxSockets: CONNECTIONS });
  const post = (key: string, idem: string, body: string) => new Promise<string>((resolve) => {
    const req = http.request(`${base}/v1/notifications`, {
      method: 'POST', agent,
      headers: { 'content-type': 'application/json', authorization: `Bearer ${key}`, 'idempotency-key': idem, 'content-length': Buffer.byteLength(body) },
    }, (res) => {
      res.resume();
      res.on('end', () => resolve(String(res.statusCode)));
      res.on('error', (err) => resolve(err.message));
    });
    req.on('error', (err) => resolve(err.message));
    req.end(body);
  });
  const phase2Pids = { ...phase1Pids, '`herald run --no-api`': herald.pid!, 'clickhouse-server': servers.pids.clickhouse };

  /** RATE requests a second for SECONDS; `send` resolves with the answer's status. */
  async function paced(tenant: string, send: (i: number, key: string) => Promise<string>, ok: string) {
    const total = RATE * SECONDS;
    const statuses = new Map<string, number>();
    const acceptMs: number[] = [];
    const answers: Promise<void>[] = [];
    const cpuBefore = cpuSnapshot(phase2Pids);
    const t0 = performance.now();
    for (let i = 0; i < total; i++) {
      const wait = t0 + (i * 1000) / RATE - performance.now();
      if (wait > 0) await sleep(wait);
      const key = `l${i}`;
      const sent = performance.now();
      watch.sentAt.set(requestIdFor(tenant, key), sent);
      answers.push(send(i, key).then((status) => {
        tally(statuses, status);
        if (status === ok) acceptMs.push(performance.now() - sent);
      }));
    }
    await Promise.all(answers);
    const delivered = await watch.waitFor(tenant, statuses.get(ok) ?? 0, 120_000);
    await quiesce(nats, topology);
    return { total, statuses, accepted: statuses.get(ok) ?? 0, delivered, acceptMs: sorted(acceptMs), cpu: cpuPerRequest(cpuBefore, phase2Pids, total) };
  }
  log(`request → delivered at ${fmt(RATE)}/s for ${SECONDS} s over HTTP …`);
  const httpLat = await paced('lat_http', (i, key) => post(keyOf.lat_http, key, JSON.stringify(content(i))), '202');
  log(`request → delivered at ${fmt(RATE)}/s for ${SECONDS} s over NATS …`);
  const natsLat = await paced('lat_nats', (i, key) => publishRequest(nats.js, topology, natsRequest('lat_nats', key, i))
    .then((ack) => (ack.duplicate ? 'duplicate' : 'PubAck'), (err: Error) => err.message), 'PubAck');
  agent.destroy();

  await stopAll();
  watch.close();

  // The report.
  const f = fmt;
  const ms = (n: number) => `${f(n, 1)} ms`;
  const p = (l: number[] | undefined, q: number) => percentile(sorted(l), q);
  const httpRate = httpTput.accepted / httpTput.seconds;
  const natsRate = natsTput.accepted / natsTput.seconds;
  const ratio = httpRate / natsRate;
  const e2e = { http: watch.sentToDelivered.get('lat_http'), nats: watch.sentToDelivered.get('lat_nats') };
  const inner = { http: watch.storedToDelivered.get('lat_http'), nats: watch.storedToDelivered.get('lat_nats') };
  const p50Diff = p(e2e.http, 50) - p(e2e.nats, 50);
  const p99Diff = p(e2e.http, 99) - p(e2e.nats, 99);
  const diff = (n: number) => `${n >= 0 ? '+' : ''}${f(n, 1)} ms`;

  console.log(`\nThroughput phase: \`herald api\` alone (its own process), nothing consuming; ${f(REQUESTS)} single-recipient`);
  console.log(`transactional requests each way, ${CONNECTIONS} in flight each way (HTTP: ${CONNECTIONS} keep-alive connections, no`);
  console.log('pipelining, autocannon; NATS: publishRequest, one PubAck awaited per slot). Accepted = stored in JetStream');
  console.log('(HTTP 202 is sent after the PubAck; NATS: the PubAck). Then `herald run --no-api` delivered the backlog.');
  console.log(`Latency phase: \`herald api\` + \`herald run --no-api\` (every stage), ${f(RATE)} requests/s for ${SECONDS} s each way,`);
  console.log('timed in the bench from just before sending to the `delivered` receipt (HTTP: node:http keep-alive).\n');
  printTable(['figure', 'HTTP', 'NATS', 'HTTP vs NATS'], [
    ['accepted requests/s', `${f(httpRate)}/s`, `${f(natsRate)}/s`, `× ${f(ratio, 2)}`],
    ['not accepted', others(httpTput.statuses, '202'), others(natsTput.statuses, 'PubAck'), ''],
    ['stored in the intake stream', f(httpTput.stored), f(natsTput.stored), ''],
    ['delivered once the pipeline ran', `${f(httpDelivered)} of ${f(httpTput.accepted)}`, `${f(natsDelivered)} of ${f(natsTput.accepted)}`, ''],
    [`accepted at ${f(RATE)}/s (of ${f(httpLat.total)})`, f(httpLat.accepted), f(natsLat.accepted), ''],
    [`not accepted at ${f(RATE)}/s`, others(httpLat.statuses, '202'), others(natsLat.statuses, 'PubAck'), ''],
    [`delivered at ${f(RATE)}/s`, f(httpLat.delivered), f(natsLat.delivered), ''],
    [`send → 202 / PubAck p50 at ${f(RATE)}/s`, ms(percentile(httpLat.acceptMs, 50)), ms(percentile(natsLat.acceptMs, 50)), diff(percentile(httpLat.acceptMs, 50) - percentile(natsLat.acceptMs, 50))],
    [`send → 202 / PubAck p99 at ${f(RATE)}/s`, ms(percentile(httpLat.acceptMs, 99)), ms(percentile(natsLat.acceptMs, 99)), diff(percentile(httpLat.acceptMs, 99) - percentile(natsLat.acceptMs, 99))],
    [`request → delivered p50 at ${f(RATE)}/s`, ms(p(e2e.http, 50)), ms(p(e2e.nats, 50)), diff(p50Diff)],
    [`request → delivered p99 at ${f(RATE)}/s`, ms(p(e2e.http, 99)), ms(p(e2e.nats, 99)), diff(p99Diff)],
    ['  of which stored → delivered p50 (receipt)', ms(p(inner.http, 50)), ms(p(inner.nats, 50)), diff(p(inner.http, 50) - p(inner.nats, 50))],
    ['  of which stored → delivered p99 (receipt)', ms(p(inner.http, 99)), ms(p(inner.nats, 99)), diff(p(inner.http, 99) - p(inner.nats, 99))],
  ]);

  console.log('\nCPU per request (µs), by process and phase');
  const cpuRow = (name: string) => [name, ...[httpTputCpu, natsTputCpu, httpLat.cpu, natsLat.cpu].map((c) => (c[name] === undefined ? '' : f(c[name])))];
  printTable(['process', 'throughput HTTP', 'throughput NATS', `${f(RATE)}/s HTTP`, `${f(RATE)}/s NATS`],
    Object.keys(phase2Pids).map(cpuRow));

  console.log('\nThe issue\'s targets (figures from this run; printed, never an exit code)');
  printTable(['target', 'figure', ''], [
    ['HTTP/NATS accepted throughput ≥ 0.75', f(ratio, 2), ratio >= 0.75 ? 'met' : 'missed'],
    [`request → delivered p99 difference (HTTP − NATS) ≤ 10 ms at ${f(RATE)}/s`, diff(p99Diff), p99Diff <= 10 ? 'met' : 'missed'],
  ]);
} finally {
  await cleanUp();
}
process.exit(0);
