// `npm run bench`: Herald's throughput, latency and memory beside a raw JetStream baseline and the
// BullMQ pipeline a team would otherwise build (bench/bullmq-peer.ts), both measured in the same run
// on the same servers started for the run. Prints figures; never fails on a time.
import { publishRequest } from '../runtime/producer.js';
import type { DirectoryRecord } from '../schemas/index.js';
import { connectBench, DeliveredWatch, quiesce, startHerald, stopHerald } from './herald-child.js';
import { benchServers, cpuMs, fmt, maxPeakRssMb, maxRssMb, percentile, printTable, redisCommands, redisPerUnit, runChild, serversIdle, treeCpuMs } from './servers.js';

const SINGLE = Number(process.env.BENCH_SINGLE ?? 30_000);
const FANOUT = Number(process.env.BENCH_FANOUT ?? 100_000);
const RATE = Number(process.env.BENCH_RATE ?? 500);
const RATE_SECONDS = Number(process.env.BENCH_RATE_SECONDS ?? 10);
/** `herald run --workers N` for each N, one after the other (the latency phase on the first). */
const WORKERS = (process.env.BENCH_WORKERS ?? '1,2').split(',').map(Number);
/** Set to skip the BullMQ peer while iterating on Herald alone (its ratios are then not printed). */
const SKIP_PEER = process.env.BENCH_SKIP_PEER === '1';
const log = (s: string) => process.stderr.write(`${s}\n`);

const servers = await benchServers();
try {
  log('baseline: raw JetStream consume + ack …');
  const baseline = JSON.parse(await runChild(['--import', 'tsx', 'bench/jetstream-baseline.ts'], servers.env)) as
    { consumeAckPerSec: number; p50Ms: number; p99Ms: number; peakRssMb: number };

  // Per-member in-app fan-out is measured (as in earlier runs), not the fan-out-on-read shortcut.
  const env = { ...servers.env, HERALD_NAMESPACE: 'bench', HERALD_INAPP_BROADCAST_THRESHOLD: '0' };
  const bench = await connectBench(env);
  const { topology, nats, directory } = bench;
  log('loading the directory (20,000 users, a 100,000-member topic) …');
  const users: DirectoryRecord[] = [];
  for (let i = 0; i < 20_000; i++) {
    for (const tenant of ['single1', 'single2', 'lat1']) users.push({ type: 'user', tenant, id: `u${i}`, locale: 'en', timezone: 'UTC' });
  }
  for (const tenant of ['fan1', 'fan2']) {
    for (let i = 0; i < FANOUT; i++) {
      users.push({ type: 'user', tenant, id: `m${i}`, locale: 'en', timezone: 'UTC' });
      users.push({ type: 'topic_member', tenant, topic: 'celebrity', user_id: `m${i}` });
    }
    await directory.upsert(users, 5_000);
    users.length = 0;
  }

  const watch = new DeliveredWatch(nats, topology);
  const { latencies, lastSeen } = watch;
  const serverPids = servers.pids;

  /** One `herald run --workers N`: the throughput phases (and, on the first run, the latency phase). */
  const measure = async (workers: number, withLatency: boolean) => {
    log(`starting \`herald run --workers ${workers}\` …`);
    const herald = await startHerald(env, ['run', '--workers', String(workers)]);
    // Peak RSS per phase (the largest worker), sampled, to see which load the memory goes to.
    let phasePeak = 0;
    const rssSampler = setInterval(() => { phasePeak = Math.max(phasePeak, maxRssMb(herald.pid!)); }, 50);
    // CPU seconds per process over a phase: on two shared cores, who takes the time matters.
    const snapshot = () => ({ herald: treeCpuMs(herald.pid!) / 1000, bench: cpuMs(process.pid) / 1000, ...Object.fromEntries(Object.entries(serverPids).map(([k, pid]) => [k, cpuMs(pid) / 1000])) });
    let cpuStart = snapshot();
    let wallStart = performance.now();
    let heraldCpuPerDelivery = 0;
    let redisStart = new Map<string, number>();
    const endPhase = async (name: string, deliveries: number) => {
      const now = snapshot();
      const redis = redisPerUnit(redisStart, await redisCommands(bench.redis), deliveries);
      const wall = (performance.now() - wallStart) / 1000;
      const cpu = Object.entries(now).map(([k, v]) => `${k} ${((v - cpuStart[k as keyof typeof cpuStart]) / wall * 100).toFixed(0)}%`).join(', ');
      heraldCpuPerDelivery = ((now.herald - cpuStart.herald) * 1e6) / deliveries;
      log(`  ${name} (${workers} worker${workers > 1 ? 's' : ''}): largest herald process RSS ${phasePeak.toFixed(0)} MB; herald CPU ${fmt(heraldCpuPerDelivery)} µs/delivery; CPU of one core: ${cpu}`);
      log(`    Redis per delivery: ${fmt(redis.commands, 1)} commands (${redis.top}), ${fmt(redis.bytesIn)} bytes in; its time: ${redis.topByTime}`);
      phasePeak = 0;
      cpuStart = now;
      wallStart = performance.now();
    };
    // Each phase starts with nothing left over from the last (receipts loading, batches in flight).
    const startPhase = async () => {
      await quiesce(nats, topology);
      redisStart = await redisCommands(bench.redis);
      cpuStart = snapshot();
      wallStart = performance.now();
    };
    const tenant = (base: string) => `${base}${workers}`;

    await startPhase();
    log(`single-recipient transactional requests: ${SINGLE} …`);
    const inFlight = new Set<Promise<unknown>>();
    const t0 = performance.now();
    for (let i = 0; i < SINGLE; i++) {
      const p = publishRequest(nats.js, topology, {
        tenant: tenant('single'), idempotency_key: `s${i}`, tier: 'transactional', category: 'otp',
        content: { title: 'Your code', body: 'Code {{code}}' }, data: { code: String(i) },
        recipients: { user_ids: [`u${i % 20_000}`] }, channels: ['inapp'],
      });
      inFlight.add(p);
      p.finally(() => inFlight.delete(p));
      if (inFlight.size >= 2_000) await Promise.race(inFlight);
    }
    await watch.waitFor(tenant('single'), SINGLE, 600_000);
    const singlePerSec = SINGLE / ((lastSeen.get(tenant('single'))! - t0) / 1000);
    await endPhase('single-recipient', SINGLE);
    const singleCpu = heraldCpuPerDelivery;

    await startPhase();
    log(`fan-out to a ${FANOUT}-member topic …`);
    // BENCH_TRACE=1: where the work waits, each second (consumers with messages pending or in hand).
    const trace = process.env.BENCH_TRACE === '1' ? setInterval(() => {
      void Promise.all(topology.consumers().map(async ({ stream, config: c }) => {
        const ci = await nats.jsm.consumers.info(stream, c.durable_name!);
        return ci.num_pending + ci.num_ack_pending ? `${c.durable_name} ${ci.num_pending}+${ci.num_ack_pending}` : '';
      })).then((l) => log(`    ${l.filter(Boolean).join(', ')}`));
    }, 1_000) : undefined;
    const t1 = performance.now();
    await publishRequest(nats.js, topology, {
      tenant: tenant('fan'), idempotency_key: 'post-1', tier: 'social', category: 'social',
      content: { title: 'New post', body: 'Look' }, recipients: { topic: 'celebrity' }, channels: ['inapp'],
    });
    await watch.waitFor(tenant('fan'), FANOUT, 600_000);
    clearInterval(trace);
    const fanPerSec = FANOUT / ((lastSeen.get(tenant('fan'))! - t1) / 1000);
    await endPhase('fan-out', FANOUT);
    const fanCpu = heraldCpuPerDelivery;

    let lat: number[] = [];
    if (withLatency) {
      await startPhase();
      log(`latency at ${RATE} requests/s for ${RATE_SECONDS} s …`);
      const total = RATE * RATE_SECONDS;
      const t2 = performance.now();
      for (let i = 0; i < total; i++) {
        const wait = t2 + (i * 1000) / RATE - performance.now();
        if (wait > 0) await new Promise((r) => setTimeout(r, wait));
        void publishRequest(nats.js, topology, {
          tenant: tenant('lat'), idempotency_key: `l${i}`, tier: 'transactional', category: 'otp',
          content: { title: 'Your code', body: 'x' }, recipients: { user_ids: [`u${i % 20_000}`] }, channels: ['inapp'],
        });
      }
      await watch.waitFor(tenant('lat'), total, 120_000);
      lat = latencies.get(tenant('lat'))!.sort((a, b) => a - b);
      await endPhase('latency', total);
    }
    const rss = maxPeakRssMb(herald.pid!);
    clearInterval(rssSampler);
    await stopHerald(herald);
    return { singlePerSec, fanPerSec, singleCpu, fanCpu, lat, rss };
  };
  const runs = [];
  for (const [i, workers] of WORKERS.entries()) {
    if (i) await serversIdle(serverPids);
    runs.push({ workers, ...(await measure(workers, i === 0)) });
  }
  const lat = runs[0].lat;
  const rss = Math.max(...runs.map((r) => r.rss));
  watch.close();
  await bench.close();

  // The peer runs after Herald, so Herald's figures are measured exactly as before; it gets a quiet
  // machine as each Herald phase does (Herald stopped, the servers idle).
  await serversIdle(serverPids);
  log(SKIP_PEER ? 'peer: skipped (BENCH_SKIP_PEER=1)' : 'peer: the BullMQ pipeline (trigger job → one send job per subscriber → inbox) …');
  const peer = SKIP_PEER
    ? { singlePerSec: NaN, fanPerSec: NaN, peakRssMb: NaN, concurrency: 0 }
    : JSON.parse(await runChild(['--import', 'tsx', 'bench/bullmq-peer.ts'], { ...servers.env, BENCH_SINGLE: String(SINGLE), BENCH_FANOUT: String(FANOUT) })) as
      { singlePerSec: number; fanPerSec: number; peakRssMb: number; concurrency: number };

  const f = fmt;
  const toPeer = (v: number, peerValue: number) => f(v / peerValue, 2);
  const rows: [string, string, string, string, string][] = [
    ['raw JetStream consume+ack (baseline)', `${f(baseline.consumeAckPerSec)} msg/s`, '1.00', '', ''],
    [`BullMQ peer, 1-recipient (concurrency ${peer.concurrency})`, `${f(peer.singlePerSec)} deliveries/s`, f(peer.singlePerSec / baseline.consumeAckPerSec, 3), '1.00', ''],
    [`BullMQ peer, ${f(FANOUT)}-member fan-out`, `${f(peer.fanPerSec)} deliveries/s`, f(peer.fanPerSec / baseline.consumeAckPerSec, 3), '1.00', ''],
    ...runs.flatMap((h) => [
      [`Herald, 1-recipient transactional, ${h.workers} worker${h.workers > 1 ? 's' : ''}`, `${f(h.singlePerSec)} deliveries/s`, f(h.singlePerSec / baseline.consumeAckPerSec, 3), toPeer(h.singlePerSec, peer.singlePerSec), '≥ 2.00 × peer'],
      [`  its herald CPU per request`, `${f(h.singleCpu)} µs`, '', '', ''],
      [`Herald, ${f(FANOUT)}-member fan-out, ${h.workers} worker${h.workers > 1 ? 's' : ''}`, `${f(h.fanPerSec)} deliveries/s`, f(h.fanPerSec / baseline.consumeAckPerSec, 3), toPeer(h.fanPerSec, peer.fanPerSec), '≥ 10.00 × peer'],
      [`  its herald CPU per delivery`, `${f(h.fanCpu, 1)} µs`, '', '', ''],
    ] as [string, string, string, string, string][]),
    [`raw JetStream p50 / p99 at ${RATE}/s (baseline)`, `${f(baseline.p50Ms, 1)} / ${f(baseline.p99Ms, 1)} ms`, '1.00', '', ''],
    [`Herald request→delivery p50 at ${RATE}/s`, `${f(percentile(lat, 50), 1)} ms`, f(percentile(lat, 50) / baseline.p50Ms, 1), '', ''],
    [`Herald request→delivery p99 at ${RATE}/s`, `${f(percentile(lat, 99), 1)} ms`, f(percentile(lat, 99) / baseline.p99Ms, 1), '', '< 50 ms'],
    ['baseline process peak RSS', `${f(baseline.peakRssMb)} MB`, '1.00', '', ''],
    ['BullMQ peer worker process peak RSS', `${f(peer.peakRssMb)} MB`, f(peer.peakRssMb / baseline.peakRssMb, 2), '1.00', ''],
    ['largest Herald process peak RSS', `${f(rss)} MB`, f(rss / baseline.peakRssMb, 2), toPeer(rss, peer.peakRssMb), '< 300 MB'],
  ];
  printTable(['figure', 'value', 'ratio to baseline', 'ratio to BullMQ peer', 'target'], rows);
} finally {
  await servers.stop();
}
process.exit(0);
