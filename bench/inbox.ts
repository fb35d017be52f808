// `npm run bench:inbox`: the in-app inbox as apps use it, on real servers. Prints figures (and the
// issue's targets as met / missed); never fails on them.
//
// 1. Feed reads/s. 1,000 users × 100 own in-app items, written straight into Redis the way the
//    inbox sink writes them (InboxStore.write, one request's 1,000 references a call). autocannon,
//    keep-alive, C connections, no pipelining, GET the first page (limit 20) with each user's own
//    user token (what apps send: the JWT is verified and the per-user rate limit, 50/s by default,
//    takes its Redis round trip on every read), the users in turn so none nears its limit.
//    Beside it, in the same run and the same `herald api` process, the cheapest answer it has: a 404
//    for a path outside /v1 (no auth, no Redis; Fastify's not-found handler), as the ceiling this
//    machine, Node and autocannon allow.
// 2. N concurrent SSE streams (`…/notifications/stream?token=`), one per member of an N-member
//    topic, held by one fresh `herald api` process and opened by SSE client child processes
//    (bench/inbox-sse-client.ts: bare sockets, so the client costs little). RSS of `herald api`
//    (VmRSS) idle before and once every stream got its first `counts` event: per stream
//    = (after − before) / N. Then, with `herald run --no-api` running the pipeline, one
//    notification to the topic (published to NATS; at N ≥ HERALD_INAPP_BROADCAST_THRESHOLD it is
//    one fan-out-on-read broadcast, and the threshold is set to N so small runs take that path too),
//    timed on CLOCK_MONOTONIC from just before publishing to each stream's `notification` event,
//    and from the broadcast's signal on NATS (the delivery: the record is in Redis) to each event.
//    Done twice: the first broadcast after the streams opened, and a second one once `herald api`
//    is idle again.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import autocannon from 'autocannon';
import { requestIdFor } from '../runtime/ids.js';
import { publishRequest } from '../runtime/producer.js';
import type { NotificationRequest, Receipt } from '../schemas/index.js';
import type { DirectoryRecordInput } from '../stores/directory.js';
import { InboxStore } from '../stores/inbox.js';
import { UserTokens } from '../stores/user-tokens.js';
import { freePort } from '../servers/local-servers.js';
import { connectBench, quiesce, SHEBANG_FLAGS, startHerald } from './herald-child.js';
import type { ClientCommand, ClientReply } from './inbox-sse-client.js';
import { benchServers, cpuMs, fmt, loadFeeds, percentile, printTable, redisCommands, redisPerUnit, treeCpuMs } from './servers.js';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const SECONDS = Number(process.env.BENCH_INBOX_SECONDS ?? 10);
const FEED_CONNECTIONS = Number(process.env.BENCH_INBOX_CONNECTIONS ?? 32);
/** `herald api --workers N` for each feed round, in turn. */
const FEED_WORKERS = (process.env.BENCH_INBOX_WORKERS ?? '1,2').split(',').map(Number);
const FEED_USERS = 1_000;
const ITEMS = 100;
const PAGE = 20;
const STREAMS = Number(process.env.BENCH_SSE_CONNECTIONS ?? 10_000);
const CLIENTS = Math.max(1, Number(process.env.BENCH_SSE_CLIENTS ?? 2));
/** Streams each client opens at once. */
const OPENING = 64;
const TARGET_MS = 2_000;
const ROUND_TIMEOUT_MS = 30_000;
const TOPIC = 'bench-all';
const log = (s: string) => process.stderr.write(`${s}\n`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** CLOCK_MONOTONIC in ms: the clock the SSE clients stamp arrivals with. */
const nowMs = () => Number(process.hrtime.bigint()) / 1e6;
const tally = (m: Map<string, number>, k: string) => m.set(k, (m.get(k) ?? 0) + 1);
const statusList = (m: Map<string, number>) => [...m].sort().map(([s, n]) => `${fmt(n)} × ${s}`).join(', ') || 'none';

/** A field of /proc/<pid>/status in KB (VmRSS, VmHWM). */
function procKb(pid: number, field: 'VmRSS' | 'VmHWM'): number {
  const status = readProc(pid, 'status');
  return Number(new RegExp(`${field}:\\s+(\\d+)`).exec(status)?.[1] ?? NaN);
}
/** A /proc file of a process, or '' once it is gone (a crashed `herald api` is a figure, not an error). */
function readProc(pid: number, file: string): string {
  try {
    return fs.readFileSync(`/proc/${pid}/${file}`, 'utf8');
  } catch {
    return '';
  }
}
/** CPU ms a process used so far, NaN once it is gone. */
const cpuOf = (pid: number) => (readProc(pid, 'stat') ? cpuMs(pid) : NaN);
/** The machine's idle and total CPU ticks so far (/proc/stat, all cores; idle includes iowait). */
function machineTicks(): { idle: number; total: number } {
  const ticks = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1, 9).map(Number);
  return { idle: ticks[3] + ticks[4], total: ticks.reduce((a, b) => a + b, 0) };
}
/** The soft limit on open files of a process. */
function fdLimit(pid: number): number {
  const m = /Max open files\s+(\d+|unlimited)/.exec(readProc(pid, 'limits'));
  return m?.[1] === 'unlimited' ? Infinity : Number(m?.[1] ?? NaN);
}

// Every process this run starts is stopped on the way out, error or not (and on Ctrl-C / SIGTERM).
const children = new Set<ChildProcess>();
async function stopChild(child: ChildProcess): Promise<void> {
  children.delete(child);
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  const timer = setTimeout(() => {
    log(`  pid ${child.pid} did not exit within 15 s of SIGTERM: killing it`);
    child.kill('SIGKILL');
  }, 15_000);
  await exited;
  clearTimeout(timer);
}
async function stopAll(): Promise<void> {
  await Promise.all([...children].map(stopChild));
}
process.on('exit', () => { for (const c of children) c.kill('SIGKILL'); });

/**
 * Runs a command with the open-files limit raised (10,000 streams are 10,000 sockets), `exec`ed so
 * the child's pid is the command's own. BENCH_NODE_FLAGS (say --cpu-prof) reach node children.
 */
function spawnRaised(args: string[], env: Record<string, string>, ipc: boolean): ChildProcess {
  const raise = 'ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"; exec "$@"';
  const child = spawn('bash', ['-c', raise, 'bash', ...args], {
    cwd: root, env: { ...process.env, ...env }, stdio: ipc ? ['ignore', 'inherit', 'inherit', 'ipc'] : ['ignore', 'ignore', 'inherit'],
  });
  children.add(child);
  return child;
}

/** `herald api` as its own process, once it answers on its port. */
async function startApi(env: Record<string, string>, port: number, workers = 1): Promise<ChildProcess> {
  const flags = process.env.BENCH_NODE_FLAGS?.split(' ').filter(Boolean);
  const args = ['api', '--workers', String(workers)];
  // With flags, node runs the script itself: keep the flags of its shebang (the heap cap) too.
  const command = flags ? [process.execPath, ...SHEBANG_FLAGS, ...flags, 'bin/herald.js', ...args] : ['bin/herald.js', ...args];
  const child = spawnRaised(command, { ...env, HERALD_API_HOST: '127.0.0.1', HERALD_API_PORT: String(port) }, false);
  for (let i = 0; ; i++) {
    if (await fetch(`http://127.0.0.1:${port}/v1/openapi.json`).then((r) => r.ok, () => false)) return child;
    if (i > 600 || child.exitCode !== null) throw new Error(`\`herald api\` did not start${child.exitCode !== null ? ` (exited ${child.exitCode})` : ''}`);
    await sleep(100);
  }
}


/** Sends a command to an SSE client and waits for its answer of `type`. */
function ask<T extends ClientReply['type']>(child: ChildProcess, cmd: ClientCommand, type: T): Promise<Extract<ClientReply, { type: T }>> {
  return new Promise((resolve, reject) => {
    const onMessage = (m: ClientReply) => {
      if (m.type !== type) return;
      child.off('message', onMessage);
      child.off('exit', onExit);
      resolve(m as Extract<ClientReply, { type: T }>);
    };
    const onExit = (code: number | null) => {
      child.off('message', onMessage);
      reject(new Error(`an SSE client exited (${code}) before answering "${cmd.type}"`));
    };
    child.on('message', onMessage);
    child.once('exit', onExit);
    child.send(cmd);
  });
}

/** CPU ms of each named process now; `since` turns a snapshot into ms spent since. */
const cpuSnapshot = (pids: Record<string, number>) => Object.fromEntries(Object.entries(pids).map(([k, pid]) => [k, cpuOf(pid)]));
const cpuSince = (before: Record<string, number>, pids: Record<string, number>) =>
  Object.fromEntries(Object.entries(pids).map(([k, pid]) => [k, cpuOf(pid) - before[k]]));

/** Waits until a process has used under 10% of a core for a second (at most `capMs`); how long that took. */
async function untilIdle(pid: number, capMs: number): Promise<number> {
  const t0 = nowMs();
  let quiet = 0;
  let last = cpuOf(pid);
  while (nowMs() - t0 < capMs && !Number.isNaN(last)) {
    await sleep(250);
    const now = cpuOf(pid);
    quiet = now - last <= 25 ? quiet + 1 : 0;
    last = now;
    if (quiet >= 4) return nowMs() - t0 - 1_000;
  }
  return nowMs() - t0;
}

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
  const env = { ...servers.env, HERALD_NAMESPACE: 'inbox' };
  bench = await connectBench(env);
  const { topology, nats, directory, redis } = bench;
  const userTokens = new UserTokens(redis, topology.keys);

  // ── Phase 1: feed reads ────────────────────────────────────────────────────────────────────
  log(`loading ${fmt(FEED_USERS)} users × ${fmt(ITEMS)} in-app items …`);
  const loadT0 = performance.now();
  const feedUsers = await loadFeeds(directory, new InboxStore(redis, topology.keys), FEED_USERS, ITEMS);
  const loadSeconds = (performance.now() - loadT0) / 1000;
  const feedTokens = await Promise.all(feedUsers.map(async (u) => (await userTokens.mint('feed', u, 3_600)).token));

  const feedPort = await freePort();
  const feedBase = `http://127.0.0.1:${feedPort}`;
  let firstPage = '';
  /** One `herald api` (with `workers` processes) read for SECONDS on the feed and on the trivial route. */
  async function feedRound(workers: number) {
    log(`starting \`herald api --workers ${workers}\` …`);
    const feedApi = await startApi(env, feedPort, workers);
    const first = await fetch(`${feedBase}/v1/users/f0/notifications?limit=${PAGE}`, { headers: { authorization: `Bearer ${feedTokens[0]}` } });
    const firstBody = await first.json() as { data?: unknown[]; counts?: { unseen: number; unread: number; total: number } };
    if (first.status !== 200) throw new Error(`the feed answered ${first.status}: ${JSON.stringify(firstBody)}`);
    firstPage = `${firstBody.data?.length} items, counts ${JSON.stringify(firstBody.counts)}`;
    // The API's CPU is its whole process tree (the primary and its workers).
    const feedCpu: Record<string, () => number> = {
      '`herald api` (all its processes)': () => treeCpuMs(feedApi.pid!), 'redis-server': () => cpuOf(servers.pids.redis), 'bench (autocannon)': () => cpuOf(process.pid),
    };
    const snapshot = () => Object.fromEntries(Object.entries(feedCpu).map(([k, read]) => [k, read()]));

    /** GETs for `seconds` over FEED_CONNECTIONS keep-alive connections, users in turn. */
    async function hammer(seconds: number, pathOf: (i: number) => string, tokenOf?: (i: number) => string) {
      const statuses = new Map<string, number>();
      let next = 0;
      const cpu0 = snapshot();
      const ticks0 = machineTicks();
      const commands0 = await redisCommands(redis);
      const t0 = performance.now();
      const result = await autocannon({
        url: feedBase, connections: FEED_CONNECTIONS, pipelining: 1, duration: seconds, timeout: 30,
        requests: [{
          method: 'GET',
          setupRequest: (req) => {
            const i = next++ % FEED_USERS;
            return { ...req, path: pathOf(i), headers: tokenOf ? { authorization: `Bearer ${tokenOf(i)}` } : {} };
          },
          onResponse: (status) => { tally(statuses, String(status)); },
        }],
      });
      const elapsed = (performance.now() - t0) / 1000;
      if (result.errors || result.timeouts) tally(statuses, `connection error/timeout (${result.errors + result.timeouts})`);
      const answers = [...statuses.values()].reduce((a, b) => a + b, 0);
      const cpu1 = snapshot();
      const ticks1 = machineTicks();
      const commands = redisPerUnit(commands0, await redisCommands(redis), Math.max(1, answers));
      return {
        commands,
        // A process waiting on another shows as idle cores: what found the feed stalled on batched scripts.
        idlePercent: (100 * (ticks1.idle - ticks0.idle)) / Math.max(1, ticks1.total - ticks0.total),
        statuses, answers, perSecond: (n: number) => n / elapsed, p50: result.latency.p50, p99: result.latency.p99,
        cpuUs: Object.fromEntries(Object.keys(feedCpu).map((k) => [k, ((cpu1[k] - cpu0[k]) * 1000) / Math.max(1, answers)])),
      };
    }
    const feedPath = (i: number) => `/v1/users/f${i}/notifications?limit=${PAGE}`;
    const trivialPath = () => '/bench-no-such-page';
    log('warming up: 2 s of each …');
    await hammer(2, feedPath, (i) => feedTokens[i]);
    await hammer(2, trivialPath);
    log(`trivial route (404 outside /v1) for ${SECONDS} s, ${FEED_CONNECTIONS} connections …`);
    const trivial = await hammer(SECONDS, trivialPath);
    log(`feed first page (limit ${PAGE}, user tokens) for ${SECONDS} s, ${FEED_CONNECTIONS} connections …`);
    const feed = await hammer(SECONDS, feedPath, (i) => feedTokens[i]);
    await stopChild(feedApi);
    const feedOk = [...feed.statuses].filter(([st]) => st.startsWith('2')).reduce((a, [, n]) => a + n, 0);
    const trivialOk = trivial.statuses.get('404') ?? 0;
    return { workers, feed, trivial, feedOk, feedRate: feed.perSecond(feedOk), trivialRate: trivial.perSecond(trivialOk), cpuNames: Object.keys(feedCpu) };
  }
  const feedRounds: Awaited<ReturnType<typeof feedRound>>[] = [];
  for (const workers of FEED_WORKERS) feedRounds.push(await feedRound(workers));

  // ── Phase 2: N streams on one `herald api`, then a broadcast to all of them ───────────────────
  log(`directory: ${fmt(STREAMS)} users in topic "${TOPIC}", minting their tokens …`);
  const sseUsers = Array.from({ length: STREAMS }, (_, i) => `s${i}`);
  const records: DirectoryRecordInput[] = [{ type: 'user', tenant: 'sse', id: 'warm' }];
  for (const id of sseUsers) records.push({ type: 'user', tenant: 'sse', id }, { type: 'topic_member', tenant: 'sse', topic: TOPIC, user_id: id });
  await directory.upsert(records, 5_000);
  const sseTokens = await Promise.all(sseUsers.map(async (u) => (await userTokens.mint('sse', u, 3_600)).token));

  log('starting `herald run --no-api` and delivering a warm-up notification …');
  const threshold = Math.min(STREAMS, 10_000);
  const herald = await startHerald({ ...env, HERALD_INAPP_BROADCAST_THRESHOLD: String(threshold) }, ['run', '--workers', '1', '--no-api']);
  children.add(herald);
  const receiptAt = new Map<string, number>();
  const receipts = nats.nc.subscribe(topology.receipt('delivered'), {
    callback: (err, m) => {
      if (err) return;
      const at = nowMs();
      for (const r of (m.json() as { receipts: Receipt[] }).receipts) if (!receiptAt.has(r.request_id)) receiptAt.set(r.request_id, at);
    },
  });
  let signalAt = NaN;
  const signals = nats.nc.subscribe(topology.inboxTopic('sse', TOPIC), {
    callback: () => { if (Number.isNaN(signalAt)) signalAt = nowMs(); },
  });
  const request = (key: string, recipients: NotificationRequest['recipients']): NotificationRequest => ({
    tenant: 'sse', idempotency_key: key, tier: 'social', category: 'bench', content: { title: 'News', body: `Something new (${key})` },
    recipients, channels: ['inapp'],
  });
  const waitReceipt = async (key: string, timeoutMs: number) => {
    const id = requestIdFor('sse', key);
    const deadline = Date.now() + timeoutMs;
    while (!receiptAt.has(id) && Date.now() < deadline) await sleep(20);
    return receiptAt.get(id) ?? NaN;
  };
  await publishRequest(nats.js, topology, request('warm-up', { user_ids: ['warm'] }));
  if (Number.isNaN(await waitReceipt('warm-up', 60_000))) log('  the warm-up notification was not delivered within 60 s');
  await quiesce(nats, topology);

  const ssePort = await freePort();
  log('starting a fresh `herald api` for the streams …');
  const sseApi = await startApi(env, ssePort);
  let sseApiExit: string | undefined;
  let stopping = false;
  sseApi.once('exit', (code, signal) => {
    if (stopping) return;
    sseApiExit = signal ? `killed by ${signal}` : `exited with code ${code}`;
    log(`  the streams' \`herald api\` ${sseApiExit}`);
  });
  const apiFdLimit = fdLimit(sseApi.pid!);
  if (apiFdLimit < STREAMS + 200) log(`  \`herald api\` may open only ${apiFdLimit} files: fewer than ${fmt(STREAMS)} streams will fit`);
  await sleep(2_000);
  const rssBefore = procKb(sseApi.pid!, 'VmRSS');

  const clientPath = path.join(root, 'bench', 'inbox-sse-client.ts');
  const clients = Array.from({ length: CLIENTS }, () => spawnRaised([process.execPath, '--import', 'tsx', clientPath], {}, true));
  log(`opening ${fmt(STREAMS)} streams from ${CLIENTS} client process${CLIENTS === 1 ? '' : 'es'} …`);
  const openCpu0 = cpuOf(sseApi.pid!);
  const openT0 = nowMs();
  const opened = await Promise.all(clients.map((c, k) => ask(c, {
    type: 'open', host: '127.0.0.1', port: ssePort, inFlight: OPENING,
    streams: sseUsers.map((user, i) => ({ user, token: sseTokens[i] })).filter((_, i) => i % CLIENTS === k),
  }, 'opened')));
  const openSeconds = (nowMs() - openT0) / 1000;
  const openCpuUs = ((cpuOf(sseApi.pid!) - openCpu0) * 1000) / Math.max(1, STREAMS);
  const connected = opened.reduce((a, o) => a + o.connected, 0);
  const failed = opened.reduce((a, o) => a + o.failed, 0);
  const firstError = opened.find((o) => o.firstError)?.firstError;
  if (failed) log(`  ${fmt(failed)} streams did not open (first: ${firstError})`);
  await untilIdle(sseApi.pid!, 10_000);
  await sleep(2_000);
  const rssAfter = procKb(sseApi.pid!, 'VmRSS');
  const hwmAfter = procKb(sseApi.pid!, 'VmHWM');
  const perStreamKb = (rssAfter - rssBefore) / Math.max(1, connected);

  const roundPids: Record<string, number> = {
    '`herald api`': sseApi.pid!, '`herald run --no-api`': herald.pid!, 'redis-server': servers.pids.redis, 'nats-server': servers.pids.nats,
    ...Object.fromEntries(clients.map((c, k) => [`SSE client ${k + 1}`, c.pid!])),
  };
  /** One broadcast to the topic: when each stream's event came, beside the publish and the delivery. */
  async function broadcast(k: number) {
    await Promise.all(clients.map((c) => ask(c, { type: 'arm' }, 'armed')));
    const key = `broadcast-${k}`;
    signalAt = NaN;
    const cpu0 = cpuSnapshot(roundPids);
    const t0 = nowMs();
    await publishRequest(nats.js, topology, request(key, { topic: TOPIC }));
    const pubAckAt = nowMs();
    let arrived = 0;
    let live = 0;
    while (nowMs() - t0 < ROUND_TIMEOUT_MS) {
      const status = await Promise.all(clients.map((c) => ask(c, { type: 'status' }, 'status')));
      arrived = status.reduce((a, s) => a + s.arrived, 0);
      live = status.reduce((a, s) => a + s.connected, 0);
      if (arrived >= live) break;
      await sleep(50);
    }
    const cpuEvents = cpuSince(cpu0, roundPids);
    const collected = await Promise.all(clients.map((c) => ask(c, { type: 'collect' }, 'collected')));
    const arrivals = collected.flatMap((c) => c.arrivals);
    const dropped = collected.reduce((a, c) => a + c.dropped, 0);
    const fromPublish = arrivals.filter((a) => a >= 0).map((a) => a - t0).sort((a, b) => a - b);
    const delivered = await waitReceipt(key, 5_000);
    // The recount of every stream's counts that follows the events, until `herald api` is idle again.
    const busyMs = (nowMs() - t0) + await untilIdle(sseApi.pid!, 60_000);
    const cpu = cpuSince(cpu0, roundPids);
    return {
      live, arrived: fromPublish.length, dropped, fromPublish, pubAckMs: pubAckAt - t0, signalMs: signalAt - t0, receiptMs: delivered - t0,
      fromSignal: fromPublish.map((a) => a - (signalAt - t0)), busyMs, cpu, cpuEvents, apiAlive: sseApiExit === undefined,
    };
  }
  log('broadcast 1 …');
  const round1 = await broadcast(1);
  // A second broadcast only to a `herald api` still holding the streams.
  if (!sseApiExit) log('broadcast 2 …');
  const round2 = sseApiExit ? undefined : await broadcast(2);
  const rssEnd = procKb(sseApi.pid!, 'VmRSS');
  signals.unsubscribe();
  receipts.unsubscribe();
  stopping = true;
  await stopAll();

  // ── The report ─────────────────────────────────────────────────────────────────────────────
  const f = fmt;
  const ms = (n: number) => (Number.isFinite(n) ? `${f(n, 1)} ms` : 'n/a');
  const us = (n: number | undefined) => (n === undefined ? '' : f(n));
  const best = feedRounds.reduce((a, b) => (b.feedRate > a.feedRate ? b : a));
  console.log(`\nFeed reads: ${f(FEED_USERS)} users × ${f(ITEMS)} own in-app items (loaded with InboxStore.write in ${f(loadSeconds, 1)} s), \`herald api\``);
  console.log(`with ${FEED_WORKERS.join(', then ')} worker process(es) (BENCH_INBOX_WORKERS), autocannon in this process: ${FEED_CONNECTIONS} keep-alive connections, no pipelining,`);
  console.log(`${SECONDS} s each after 2 s of warm-up. Feed: GET /v1/users/{user}/notifications?limit=${PAGE} with that user's token (JWT verified,`);
  console.log(`per-user rate limit taken in Redis), the users in turn; first page seen: ${firstPage}. Trivial route: GET of`);
  console.log('a path outside /v1 (404 from Fastify\'s not-found handler: no auth, no Redis), the same way in the same process.\n');
  printTable(['figure', ...feedRounds.flatMap((r) => [`feed, ${r.workers} worker${r.workers === 1 ? '' : 's'}`, `trivial, ${r.workers}`])], [
    ['answers/s (2xx for the feed, 404 for the trivial route)', ...feedRounds.flatMap((r) => [`${f(r.feedRate)}/s`, `${f(r.trivialRate)}/s`])],
    ['feed vs trivial (same workers)', ...feedRounds.flatMap((r) => [`× ${f(r.feedRate / r.trivialRate, 2)}`, ''])],
    ['feed vs feed with 1 worker', ...feedRounds.flatMap((r) => [`× ${f(r.feedRate / feedRounds[0].feedRate, 2)}`, ''])],
    ['latency p50', ...feedRounds.flatMap((r) => [ms(r.feed.p50), ms(r.trivial.p50)])],
    ['latency p99', ...feedRounds.flatMap((r) => [ms(r.feed.p99), ms(r.trivial.p99)])],
    ['answers by status', ...feedRounds.flatMap((r) => [statusList(r.feed.statuses), statusList(r.trivial.statuses)])],
    ['non-2xx (feed)', ...feedRounds.flatMap((r) => [f(r.feed.answers - r.feedOk), ''])],
    ...feedRounds[0].cpuNames.map((name) => [`CPU µs per answer: ${name}`, ...feedRounds.flatMap((r) => [us(r.feed.cpuUs[name]), us(r.trivial.cpuUs[name])])]),
    ['machine idle during the phase (all cores, /proc/stat)', ...feedRounds.flatMap((r) => [`${f(r.feed.idlePercent)} %`, `${f(r.trivial.idlePercent)} %`])],
    ['Redis commands per answer (scripts\' inner ones included)', ...feedRounds.flatMap((r) => [f(r.feed.commands.commands, 1), f(r.trivial.commands.commands, 1)])],
    ['Redis bytes in / out per answer', ...feedRounds.flatMap((r) => [`${f(r.feed.commands.bytesIn)} / ${f(r.feed.commands.bytesOut)}`, ''])],
  ]);
  for (const r of feedRounds) console.log(`Redis per feed answer, ${r.workers} worker(s): ${r.feed.commands.topTimed}`);

  const rounds = [round1, round2];
  const per = (pick: (r: typeof round1) => string) => rounds.map((r) => (r ? pick(r) : 'not sent (`herald api` gone)'));
  const pct = (l: number[], q: number) => ms(percentile(l, q));
  const within = (r: typeof round1) => r.fromPublish.filter((t) => t <= TARGET_MS).length;
  const withinSignal = (r: typeof round1) => r.fromSignal.filter((t) => t <= TARGET_MS).length;
  console.log(`\nSSE: ${f(STREAMS)} streams (GET …/notifications/stream?token=<user token>), each for a different member of the`);
  console.log(`${f(STREAMS)}-member topic "${TOPIC}", held by one fresh \`herald api\` process, opened by ${CLIENTS} client process${CLIENTS === 1 ? '' : 'es'} (bare sockets),`);
  console.log(`at most ${OPENING} opening at once each. Connected = the stream's first \`counts\` event came. Heartbeat every`);
  console.log(`${process.env.HERALD_SSE_HEARTBEAT_MS ?? '15000'} ms (HERALD_SSE_HEARTBEAT_MS). RSS = VmRSS of \`herald api\`, before: idle 2 s after start; after:`);
  console.log('once it was idle again with every stream open, plus 2 s.\n');
  printTable(['figure', 'value'], [
    ...(sseApiExit ? [['`herald api` holding the streams', `${sseApiExit} during the run`]] : []),
    ['streams connected', `${f(connected)} of ${f(STREAMS)}${failed ? ` (${f(failed)} failed: ${firstError})` : ''}`],
    ['opening them took', `${f(openSeconds, 1)} s (${f(connected / openSeconds)} streams/s)`],
    ['`herald api` CPU per stream opened', `${f(openCpuUs)} µs`],
    ['`herald api` open-files limit', f(apiFdLimit)],
    ['`herald api` node flags', [...SHEBANG_FLAGS, ...(process.env.BENCH_NODE_FLAGS?.split(' ').filter(Boolean) ?? [])].join(' ') || 'none'],
    ['`herald api` RSS idle, before the streams', `${f(rssBefore / 1024, 1)} MB`],
    ['`herald api` RSS with every stream open (idle)', `${f(rssAfter / 1024, 1)} MB (peak so far ${f(hwmAfter / 1024, 1)} MB)`],
    ['RSS per idle stream', `${f(perStreamKb, 1)} KB`],
    ['`herald api` RSS after the two broadcasts', `${f(rssEnd / 1024, 1)} MB`],
  ]);

  console.log(`\nA notification to the topic (published to NATS, tier social, in-app only; one fan-out-on-read broadcast:`);
  console.log(`HERALD_INAPP_BROADCAST_THRESHOLD=${f(threshold)}). Times from just before the publish (CLOCK_MONOTONIC, shared by every`);
  console.log('process); "delivery" is the broadcast\'s signal on NATS (the record is in Redis), as this process received it.');
  console.log('Broadcast 1 is the first after the streams opened; broadcast 2 came once `herald api` was idle again.\n');
  printTable(['figure', 'broadcast 1', 'broadcast 2'], [
    ['publish → PubAck', ...per((r) => ms(r.pubAckMs))],
    ['publish → delivery (broadcast signal)', ...per((r) => ms(r.signalMs))],
    ['publish → delivered receipt', ...per((r) => ms(r.receiptMs))],
    ['events arrived (of streams still open)', ...per((r) => `${f(r.arrived)} of ${f(r.live)}${r.dropped ? `, ${f(r.dropped)} streams dropped` : ''}`)],
    [`events within ${TARGET_MS / 1000} s of the publish`, ...per((r) => f(within(r)))],
    [`events within ${TARGET_MS / 1000} s of the delivery`, ...per((r) => f(withinSignal(r)))],
    ['publish → first event', ...per((r) => ms(r.fromPublish[0] ?? NaN))],
    ['publish → event p50', ...per((r) => pct(r.fromPublish, 50))],
    ['publish → event p99', ...per((r) => pct(r.fromPublish, 99))],
    ['publish → event max', ...per((r) => ms(r.fromPublish[r.fromPublish.length - 1] ?? NaN))],
    ['delivery → first event', ...per((r) => ms(r.fromSignal[0] ?? NaN))],
    ['delivery → event p50', ...per((r) => pct(r.fromSignal, 50))],
    ['delivery → event p99', ...per((r) => pct(r.fromSignal, 99))],
    ['delivery → event max', ...per((r) => ms(r.fromSignal[r.fromSignal.length - 1] ?? NaN))],
    ['`herald api` busy after the publish (events, then every stream\'s counts)', ...per((r) => (r.apiAlive ? ms(r.busyMs) : `died after ${ms(r.busyMs)}`))],
    ...Object.keys(roundPids).map((name) => [`CPU ms until the last event: ${name}`, ...per((r) => f(r.cpuEvents[name]))]),
    ['CPU ms in the whole round: `herald api`', ...per((r) => (r.apiAlive ? f(r.cpu['`herald api`']) : 'n/a (died)'))],
  ]);

  const allIn = (r: typeof round1 | undefined, n: number) => r !== undefined && r.arrived === STREAMS && n === STREAMS;
  console.log('\nThe issue\'s targets (figures from this run; printed, never an exit code)');
  printTable(['target', 'figure', ''], [
    ['feed reads/s ≥ 5,000', `${f(best.feedRate)}/s with ${best.workers} worker(s) (trivial route: ${f(best.trivialRate)}/s)`, best.feedRate >= 5_000 ? 'met' : 'missed'],
    ['RSS per idle SSE stream ≤ 20 KB', `${f(perStreamKb, 1)} KB over ${f(connected)} streams`, perStreamKb <= 20 && connected === STREAMS ? 'met' : 'missed'],
    ...rounds.flatMap((r, i) => [
      [`broadcast ${i + 1}: all ${f(STREAMS)} events within 2 s of the publish`, r ? `${f(within(r))} (max ${ms(r.fromPublish[r.fromPublish.length - 1] ?? NaN)})` : 'not sent', allIn(r, r ? within(r) : 0) ? 'met' : 'missed'],
      [`broadcast ${i + 1}: all ${f(STREAMS)} events within 2 s of the delivery`, r ? f(withinSignal(r)) : 'not sent', allIn(r, r ? withinSignal(r) : 0) ? 'met' : 'missed'],
    ]),
    ['(not a target) `herald api` kept the streams to the end', sseApiExit ?? 'yes', sseApiExit ? 'no' : 'yes'],
  ]);
} finally {
  await cleanUp();
}
process.exit(0);
