// `npm run bench:cost`: what one single-recipient transactional request costs: CPU per request in
// Herald and in each server at a paced rate, and latency per stage from the receipts. The figures
// to improve when transactional latency under load misses its target.
import { publishRequest } from '../runtime/producer.js';
import { benchServers, cpuMs, fmt, mainThreadWakeups, natsMessages, printTable, redisCommands, redisPerUnit } from './servers.js';
import { connectBench, DeliveredWatch, quiesce, startHerald, stopHerald } from './herald-child.js';

const RATE = Number(process.env.BENCH_RATE ?? 1_000);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 5);
const SPLIT = process.env.BENCH_COST_SPLIT === '1';
const log = (s: string) => process.stderr.write(`${s}\n`);


const servers = await benchServers();
try {
  const env = { ...servers.env, HERALD_NAMESPACE: 'cost' };
  const bench = await connectBench(env);
  const { topology, nats, directory } = bench;
  const users = [];
  for (let i = 0; i < 5_000; i++) for (const tenant of ['warm', 'measure']) users.push({ type: 'user' as const, tenant, id: `u${i}` });
  await directory.upsert(users);
  const herald = await startHerald(env, SPLIT ? ['run', '--workers', '1', '--stages', 'validate,resolve,filter,batch,dispatch'] : undefined);
  const receiptProcesses = SPLIT ? { 'herald loader': await startHerald(env, ['run', '--workers', '1', '--no-api', '--stages', 'loader']), 'herald tracker': await startHerald(env, ['run', '--workers', '1', '--no-api', '--stages', 'tracker']) } : {};
  const watch = new DeliveredWatch(nats, topology);
  const pids: Record<string, number> = {
    [SPLIT ? 'herald (validate … dispatch)' : 'herald']: herald.pid!,
    ...Object.fromEntries(Object.entries(receiptProcesses).map(([name, p]) => [name, p.pid!])),
    ...servers.pids, 'bench (load generator)': process.pid,
  };
  const total = RATE * SECONDS;
  const rows: string[][] = [];
  for (const phase of ['warm', 'measure']) {
    log(`${phase}: ${fmt(RATE)} requests/s for ${SECONDS} s …`);
    const before = Object.fromEntries(Object.entries(pids).map(([k, pid]) => [k, cpuMs(pid)]));
    const wakeupsBefore = mainThreadWakeups(herald.pid!);
    const messagesBefore = await natsMessages(servers.natsMonitor);
    const commandsBefore = await redisCommands(bench.redis);
    const t0 = performance.now();
    for (let i = 0; i < total; i++) {
      const wait = t0 + (i * 1000) / RATE - performance.now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      publishRequest(nats.js, topology, {
        tenant: phase, idempotency_key: `k${i}`, tier: 'transactional', category: 'otp', content: { title: 'Code', body: 'x' },
        recipients: { user_ids: [`u${i % 5_000}`] }, channels: ['inapp'],
      }).catch((err) => log(`publish failed: ${err}`));
    }
    await watch.waitFor(phase, total, 120_000);
    await quiesce(nats, topology);
    const wall = performance.now() - t0;
    if (phase === 'measure') {
      for (const [name, pid] of Object.entries(pids)) {
        const used = cpuMs(pid) - before[name];
        rows.push([`CPU of ${name}`, `${fmt((used / total) * 1000)} µs/request`, `${fmt((used / wall) * 100)} % of a core`]);
      }
      const wakeups = (mainThreadWakeups(herald.pid!) - wakeupsBefore) / total;
      rows.push([`event-loop wakeups of ${SPLIT ? 'herald (validate … dispatch)' : 'herald'}`, `${fmt(wakeups, 2)} per request`, 'its main thread slept and woke']);
      // Includes the load generator's publishes and its watch on delivered receipts.
      const messages = await natsMessages(servers.natsMonitor);
      const commands = await redisCommands(bench.redis);
      const redis = redisPerUnit(commandsBefore, commands, total);
      rows.push(['Redis bytes in / out', `${fmt(redis.bytesIn)} / ${fmt(redis.bytesOut)} per request`, '']);
      rows.push(['Redis commands', `${fmt(redis.commands, 1)} per request`, redis.top]);
      rows.push(['NATS messages in / out', `${fmt((messages.in - messagesBefore.in) / total, 1)} / ${fmt((messages.out - messagesBefore.out) / total, 1)} per request`, '']);
    }
  }
  const stages = await (await bench.ch.query({
    query: `SELECT stage, status, quantiles(0.5, 0.99)(latency_ms) AS q FROM ${bench.config.clickhouseDatabase}.receipts
            WHERE tenant = 'measure' GROUP BY stage, status ORDER BY max(latency_ms)`,
    format: 'JSONEachRow',
  })).json<{ stage: string; status: string; q: number[] }>();
  for (const s of stages) rows.push([`${s.stage} ${s.status}: request stored → this step`, `p50 ${fmt(s.q[0])} ms`, `p99 ${fmt(s.q[1])} ms`]);
  await stopHerald(herald);
  for (const p of Object.values(receiptProcesses)) await stopHerald(p);
  watch.close();
  await bench.close();
  printTable([`single-recipient transactional at ${fmt(RATE)}/s`, 'per request', 'share / p99'], rows);
} finally {
  await servers.stop();
}
process.exit(0);
