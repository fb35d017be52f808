// `npm run bench:blast`: a 1,000,000-member marketing fan-out while 1,000 transactional requests/s
// are published. Prints the marketing delivery rate, and transactional request→delivery latency
// during the blast against the same load without it (measured in the same run), and peak RSS.
import type { DirectoryRecordInput } from '../stores/directory.js';
import { publishRequest } from '../runtime/producer.js';
import { RedisScript } from '../stores/scripts.js';
// The stores' scripts, registered by name for the slow-call report.
import '../stores/inbox.js';
import '../stores/rate-limits.js';
import '../stores/request-status.js';
import { benchServers, fmt, peakRssMb, percentile, printTable, runChild, serversIdle } from './servers.js';
import { connectBench, DeliveredWatch, quiesce, startHerald, stopHerald } from './herald-child.js';

const MEMBERS = Number(process.env.BENCH_MEMBERS ?? 1_000_000);
const TX_RATE = Number(process.env.BENCH_TX_RATE ?? 1_000);
const TX_ALONE_SECONDS = Number(process.env.BENCH_TX_SECONDS ?? 10);
/** The peer's fan-out size: its rate per member is flat, and a million BullMQ jobs take minutes to load. */
const PEER_FANOUT = Number(process.env.BENCH_PEER_FANOUT ?? 100_000);
const log = (s: string) => process.stderr.write(`${s}\n`);
const f = fmt;

const servers = await benchServers();
try {
  // Per-member in-app fan-out is what is measured: no fan-out-on-read shortcut.
  const env = { ...servers.env, HERALD_NAMESPACE: 'blast', HERALD_INAPP_BROADCAST_THRESHOLD: '0', HERALD_STORAGE_BUDGET_MB: '4096' };
  const bench = await connectBench(env);
  const { topology, nats, directory } = bench;
  // Redis runs one thing at a time: its slow calls are what a password reset can wait behind.
  await bench.redis.config('SET', 'slowlog-log-slower-than', '5000');
  await bench.redis.config('SET', 'slowlog-max-len', '10000');
  log(`loading the directory (${MEMBERS.toLocaleString('en-US')}-member topic, 3 × 20,000 transactional users) …`);
  for (let start = 0; start < MEMBERS; start += 50_000) {
    const records: DirectoryRecordInput[] = [];
    for (let i = start; i < Math.min(MEMBERS, start + 50_000); i++) {
      records.push({ type: 'user', tenant: 'mega', id: `m${i}` });
      records.push({ type: 'topic_member', tenant: 'mega', topic: 'everyone', user_id: `m${i}` });
    }
    await directory.upsert(records, 5_000);
  }
  const txUsers: DirectoryRecordInput[] = [];
  for (let i = 0; i < 20_000; i++) for (const tenant of ['warm', 'alone', 'blast']) txUsers.push({ type: 'user', tenant, id: `u${i}` });
  await directory.upsert(txUsers, 5_000);

  // split (default): transactional in its own process, social + marketing and the receipt loader in
  // another at a lower CPU priority; single: one `herald run` for everything.
  const deploy = process.env.BENCH_DEPLOY ?? 'split';
  log(`starting herald (${deploy}) …`);
  const heralds = deploy === 'single'
    ? [await startHerald(env)]
    : [await startHerald(env, ['run', '--workers', '1', '--tiers', 'transactional', '--stages', 'validate,resolve,filter,batch,dispatch']),
      await startHerald(env, ['run', '--workers', '1', '--tiers', 'social,marketing', '--nice', '10'])];
  const watch = new DeliveredWatch(nats, topology);

  /** Publishes transactional single-recipient requests at TX_RATE until `until()` says stop. */
  async function transactional(tenant: string, until: (sent: number) => boolean): Promise<number> {
    const t0 = performance.now();
    let i = 0;
    for (; !until(i); i++) {
      const wait = t0 + (i * 1000) / TX_RATE - performance.now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      publishRequest(nats.js, topology, {
        tenant, idempotency_key: `t${i}`, tier: 'transactional', category: 'otp',
        content: { title: 'Your code', body: 'x' }, recipients: { user_ids: [`u${i % 20_000}`] }, channels: ['inapp'],
      }).catch((err) => log(`publish failed: ${err}`));
    }
    return i;
  }

  // Warm-up (JIT, connections, first loader inserts) is not part of either measurement.
  log('warming up …');
  const warm = await transactional('warm', (i) => i >= TX_RATE * 3);
  await watch.waitFor('warm', warm, 120_000);
  await quiesce(nats, topology);

  log(`transactional alone: ${TX_RATE}/s for ${TX_ALONE_SECONDS} s …`);
  const alone = await transactional('alone', (i) => i >= TX_RATE * TX_ALONE_SECONDS);
  await watch.waitFor('alone', alone, 120_000);
  await quiesce(nats, topology);

  log(`marketing blast to ${MEMBERS.toLocaleString('en-US')} members, with transactional at ${TX_RATE}/s …`);
  const t1 = performance.now();
  await publishRequest(nats.js, topology, {
    tenant: 'mega', idempotency_key: 'blast-1', tier: 'marketing', category: 'launch',
    content: { title: 'Launch', body: 'It is here' }, recipients: { topic: 'everyone' }, channels: ['inapp'],
  });
  const blastDone = watch.waitFor('mega', MEMBERS, 1_800_000).then(() => true);
  let finished = false;
  void blastDone.then(() => { finished = true; });
  const during = await transactional('blast', () => finished);
  await blastDone;
  const blastSeconds = (watch.lastSeen.get('mega')! - t1) / 1000;
  await watch.waitFor('blast', during, 120_000);
  const rss = heralds.map((p) => peakRssMb(p.pid!));
  const slowCalls = (await bench.redis.call('SLOWLOG', 'GET', '10000')) as [number, number, number, string[]][];
  const slowByCommand = new Map<string, number[]>();
  for (const [, , micros, args] of slowCalls) {
    const name = args[0].toLowerCase() === 'evalsha' ? `script ${RedisScript.names.get(args[1]) ?? args[1].slice(0, 8)}` : args[0].toLowerCase();
    const list = slowByCommand.get(name) ?? [];
    list.push(micros / 1000);
    slowByCommand.set(name, list);
  }
  // Where a transactional request's time goes, alone and during the blast: request stored → each step
  // (once the loader has loaded every receipt).
  await quiesce(nats, topology);
  for (const p of heralds) await stopHerald(p);
  watch.close();
  const steps = await (await bench.ch.query({
    query: `SELECT tenant, stage, status, quantiles(0.5, 0.99)(latency_ms) AS q FROM ${bench.config.clickhouseDatabase}.receipts
            WHERE tenant IN ('alone', 'blast') GROUP BY tenant, stage, status ORDER BY stage, status, tenant`,
    format: 'JSONEachRow',
  })).json<{ tenant: string; stage: string; status: string; q: number[] }>();
  await bench.close();

  // The peer (bench/bullmq-peer.ts) on a quiet machine after Herald: its per-member fan-out rate
  // is the one to compare the blast's with (it has no tiers, so no latency under a blast to show).
  await serversIdle(servers.pids);
  log(`peer: the BullMQ pipeline, a ${f(PEER_FANOUT)}-member fan-out …`);
  const peer = JSON.parse(await runChild(['--import', 'tsx', 'bench/bullmq-peer.ts'], { ...servers.env, BENCH_SINGLE: '2000', BENCH_FANOUT: String(PEER_FANOUT) })) as
    { singlePerSec: number; fanPerSec: number };

  const sorted = (tenant: string) => watch.latencies.get(tenant)!.sort((a, b) => a - b);
  const a = sorted('alone');
  const b = sorted('blast');
  const rows: [string, string, string, string][] = [
    [`BullMQ peer, ${f(PEER_FANOUT)}-member fan-out (baseline)`, `${f(peer.fanPerSec)} deliveries/s`, '1.00', ''],
    [`marketing fan-out, ${f(MEMBERS)} members (in-app, per member)`, `${f(MEMBERS / blastSeconds)} deliveries/s in ${f(blastSeconds, 1)} s`, f(MEMBERS / blastSeconds / peer.fanPerSec, 2), '≥ 50,000/s, ≥ 10 × peer'],
    [`transactional p50 alone (baseline, ${f(alone)} requests)`, `${f(percentile(a, 50), 1)} ms`, '1.00', ''],
    [`transactional p50 during the blast (${f(during)} requests)`, `${f(percentile(b, 50), 1)} ms`, f(percentile(b, 50) / percentile(a, 50), 2), ''],
    ['transactional p99 alone (baseline)', `${f(percentile(a, 99), 1)} ms`, '1.00', ''],
    ['transactional p99 during the blast', `${f(percentile(b, 99), 1)} ms`, f(percentile(b, 99) / percentile(a, 99), 2), '< 100 ms, ≤ 1.5×'],
    [`Herald peak RSS per process (${deploy})`, rss.map((r) => `${f(r)} MB`).join(' / '), '', '< 300 MB'],
  ];
  printTable(['figure', 'value', 'ratio', 'target'], rows);
  console.log('');
  const stepOf = (tenant: string, stage: string, status: string) => steps.find((x) => x.tenant === tenant && x.stage === stage && x.status === status)?.q ?? [NaN, NaN];
  const stepRows = [...new Set(steps.map((x) => `${x.stage} ${x.status}`))].map((k) => {
    const [stage, status] = k.split(' ');
    const [a50, a99] = stepOf('alone', stage, status);
    const [b50, b99] = stepOf('blast', stage, status);
    return [`${k}: request stored → this step`, `${f(a50)} / ${f(a99)} ms`, `${f(b50)} / ${f(b99)} ms`];
  });
  printTable(['transactional, per step', 'p50 / p99 alone', 'p50 / p99 during the blast'], stepRows);
  console.log(`\nRedis calls over 5 ms (wall time, from loading to the end): ${[...slowByCommand].sort((x, y) => y[1].length - x[1].length)
    .map(([name, ms]) => `${name} ×${ms.length} (longest ${f(Math.max(...ms), 1)} ms)`).join(', ') || 'none'}`);
} finally {
  await servers.stop();
}
process.exit(0);
