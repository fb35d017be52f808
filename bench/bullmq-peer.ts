// The peer of `npm run bench`: the pipeline a team would otherwise build — Novu's shape on BullMQ,
// minimal (no database, no templates, a counter for receipts). A trigger job per request; its worker
// resolves the recipients from Redis and adds one "send in-app" job per subscriber; that job's worker
// writes the inbox entry (ZADD into a per-user sorted set) and counts a receipt.
//
// Two processes, as Herald's bench has: this one loads the directory, adds the triggers and times
// them (as bench/run.ts publishes Herald's requests); `bullmq-peer.ts workers` runs every worker in
// one Node process (as `herald run` runs every stage), whose peak RSS is the peer's figure.
// Prints one JSON line. Every key it writes is under PREFIX, and deleted at the end.
import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { Queue, Worker, type DefaultJobOptions } from 'bullmq';
import { Redis, type ChainableCommander } from 'ioredis';
import { peakRssMb } from './servers.js';

const REDIS_URL = process.env.REDIS_URL!;
const SINGLE = Number(process.env.BENCH_SINGLE ?? 30_000);
const FANOUT = Number(process.env.BENCH_FANOUT ?? 100_000);
/** Jobs each worker (trigger, send) runs at once. */
const CONCURRENCY = Number(process.env.BENCH_PEER_CONCURRENCY ?? 100);
const USERS = 20_000;
/** Members a fan-out trigger reads, resolves and adds (one addBulk) at a time. */
const CHUNK = 500;
const PREFIX = 'herald-bench-peer';
const key = {
  user: (tenant: string, id: string) => `${PREFIX}:app:user:${tenant}:${id}`,
  topic: (tenant: string, topic: string) => `${PREFIX}:app:topic:${tenant}:${topic}`,
  inbox: (tenant: string, id: string) => `${PREFIX}:app:inbox:${tenant}:${id}`,
  receipts: (tenant: string) => `${PREFIX}:app:receipts:${tenant}`,
};
const connection = { url: REDIS_URL, maxRetriesPerRequest: null };
// What a production setup would set: retries with backoff, finished jobs not kept.
const jobOptions: DefaultJobOptions = { attempts: 3, backoff: { type: 'exponential', delay: 1_000 }, removeOnComplete: true, removeOnFail: 1_000 };
const now = () => performance.timeOrigin + performance.now();
const log = (s: string) => process.stderr.write(`${s}\n`);

interface TriggerJob { id: string; tenant: string; category: string; title: string; body: string; to: { userId: string } | { topic: string } }
interface SendJob { id: string; tenant: string; category: string; title: string; body: string; userId: string; locale: string; createdAt: number }
type ToParent = { ready: true } | { tenant: string; delivered: number; lastWriteAt: number } | { failed: string };
type ToWorkers = { expect: string; n: number } | { stop: true };

async function exec(pipeline: ChainableCommander): Promise<unknown[]> {
  const results = (await pipeline.exec())!;
  const failed = results.find(([err]) => err);
  if (failed) throw failed[0];
  return results.map(([, r]) => r);
}

/** The worker process: the trigger and send-in-app workers, both in this one process. */
async function runWorkers(): Promise<void> {
  const send = (m: ToParent) => process.send!(m);
  const redis = new Redis(REDIS_URL);
  const sends = new Queue<SendJob>('send-inapp', { connection, prefix: PREFIX, defaultJobOptions: jobOptions });
  const sendJob = (t: TriggerJob, userId: string, locale: string) => ({
    name: 'send-inapp',
    data: { id: t.id, tenant: t.tenant, category: t.category, title: t.title, body: t.body, userId, locale, createdAt: Date.now() },
    opts: { jobId: `${t.tenant}.${t.id}.${userId}.inapp` },
  });

  const triggers = new Worker<TriggerJob>('trigger', async (job) => {
    const t = job.data;
    if ('userId' in t.to) {
      const locale = await redis.hget(key.user(t.tenant, t.to.userId), 'locale');
      if (locale === null) return;
      const s = sendJob(t, t.to.userId, locale);
      await sends.add(s.name, s.data, s.opts);
      return;
    }
    for (let start = 0; ; start += CHUNK) {
      const ids = await redis.zrange(key.topic(t.tenant, t.to.topic), start, start + CHUNK - 1);
      if (ids.length === 0) break;
      const pipeline = redis.pipeline();
      for (const id of ids) pipeline.hget(key.user(t.tenant, id), 'locale');
      const locales = (await exec(pipeline)) as (string | null)[];
      await sends.addBulk(ids.flatMap((id, i) => (locales[i] === null ? [] : [sendJob(t, id, locales[i]!)])));
      if (ids.length < CHUNK) break;
    }
  }, { connection, prefix: PREFIX, concurrency: CONCURRENCY });

  // Deliveries per tenant, and when the last inbox write of each was stored.
  const delivered = new Map<string, number>();
  const lastWriteAt = new Map<string, number>();
  const expected = new Map<string, number>();
  const report = (tenant: string) => {
    if (expected.has(tenant) && (delivered.get(tenant) ?? 0) >= expected.get(tenant)!) {
      expected.delete(tenant);
      send({ tenant, delivered: delivered.get(tenant)!, lastWriteAt: lastWriteAt.get(tenant)! });
    }
  };
  const inapp = new Worker<SendJob>('send-inapp', async (job) => {
    const s = job.data;
    const entry = JSON.stringify({ id: s.id, category: s.category, title: s.title, body: s.body, locale: s.locale });
    await exec(redis.pipeline().zadd(key.inbox(s.tenant, s.userId), 'NX', s.createdAt, entry).incr(key.receipts(s.tenant)));
    delivered.set(s.tenant, (delivered.get(s.tenant) ?? 0) + 1);
    lastWriteAt.set(s.tenant, now());
    report(s.tenant);
  }, { connection, prefix: PREFIX, concurrency: CONCURRENCY });

  for (const w of [triggers, inapp]) w.on('failed', (job, err) => send({ failed: `${w.name} ${job?.id}: ${err.message}` }));

  let closing: Promise<void> | undefined;
  const close = () => (closing ??= (async () => {
    // Every step runs even if one throws.
    const steps = await Promise.allSettled([triggers.close(), inapp.close(), sends.close()]);
    await redis.quit().catch(() => redis.disconnect());
    for (const s of steps) if (s.status === 'rejected') log(`bullmq peer: close: ${String(s.reason)}`);
    process.exit(0);
  })());
  process.on('message', (m: ToWorkers) => {
    if ('stop' in m) void close();
    else { expected.set(m.expect, m.n); report(m.expect); }
  });
  process.on('disconnect', () => void close());
  await Promise.all([triggers.waitUntilReady(), inapp.waitUntilReady(), sends.waitUntilReady()]);
  send({ ready: true });
}

/** Resolves with the first message from the worker process that `pick` accepts. */
function nextMessage<T>(workers: ChildProcess, pick: (m: ToParent) => T | undefined, timeoutMs: number, what: string): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => done(new Error(`bullmq peer: ${what} not done within ${timeoutMs} ms`)), timeoutMs);
    const onMessage = (m: ToParent) => {
      const v = pick(m);
      if (v !== undefined) done(undefined, v);
    };
    const onExit = (code: number | null) => done(new Error(`bullmq peer: the worker process exited (${code}) before ${what}`));
    const done = (err?: Error, v?: T) => {
      clearTimeout(timer);
      workers.off('message', onMessage).off('exit', onExit);
      if (err) reject(err); else resolve(v!);
    };
    workers.on('message', onMessage).on('exit', onExit);
  });
}

async function deleteKeys(redis: Redis): Promise<void> {
  let cursor = '0';
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', `${PREFIX}:*`, 'COUNT', 1_000);
    if (keys.length > 0) await redis.unlink(...keys);
    cursor = next;
  } while (cursor !== '0');
}

async function stopWorkers(workers: ChildProcess): Promise<void> {
  if (workers.exitCode !== null || workers.signalCode !== null) return;
  const exited = new Promise((r) => workers.once('exit', r));
  if (workers.connected) workers.send({ stop: true } satisfies ToWorkers);
  const timer = setTimeout(() => workers.kill('SIGKILL'), 10_000);
  await exited;
  clearTimeout(timer);
}

/** This process: the directory, the triggers, the clock. */
async function runBench(): Promise<void> {
  const redis = new Redis(REDIS_URL);
  const triggers = new Queue<TriggerJob>('trigger', { connection, prefix: PREFIX, defaultJobOptions: jobOptions });
  const sends = new Queue<SendJob>('send-inapp', { connection, prefix: PREFIX });
  let workers: ChildProcess | undefined;
  try {
    await deleteKeys(redis);
    log(`  bullmq peer: loading ${USERS} users and a ${FANOUT}-member topic …`);
    let pipeline = redis.pipeline();
    const flush = async (force = false) => {
      if (force || pipeline.length >= 5_000) { await exec(pipeline); pipeline = redis.pipeline(); }
    };
    for (let i = 0; i < USERS; i++) { pipeline.hset(key.user('single', `u${i}`), 'locale', 'en', 'timezone', 'UTC'); await flush(); }
    for (let i = 0; i < FANOUT; i++) {
      pipeline.hset(key.user('fan', `m${i}`), 'locale', 'en', 'timezone', 'UTC').zadd(key.topic('fan', 'celebrity'), i, `m${i}`);
      await flush();
    }
    await flush(true);

    workers = fork(fileURLToPath(import.meta.url), ['workers'], { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
    const w = workers;
    const failures: string[] = [];
    w.on('message', (m: ToParent) => {
      if ('failed' in m && failures.push(m.failed) <= 5) log(`  bullmq peer: job failed: ${m.failed}`);
    });
    await nextMessage(w, (m) => ('ready' in m ? true : undefined), 30_000, 'the workers being ready');
    await triggers.waitUntilReady();
    const finished = (tenant: string, n: number, timeoutMs: number) => {
      const p = nextMessage(w, (m) => ('tenant' in m && m.tenant === tenant ? m : undefined), timeoutMs, `${n} ${tenant} deliveries`);
      p.catch(() => {}); // awaited below; this only keeps an early failure from being unhandled
      w.send({ expect: tenant, n } satisfies ToWorkers);
      return p;
    };
    // Between phases: nothing waiting or running in either queue.
    const idle = async () => {
      for (;;) {
        const counts = await Promise.all([triggers, sends].map((q) => q.getJobCounts('wait', 'active', 'delayed', 'prioritized')));
        if (counts.every((c) => Object.values(c).every((n) => n === 0))) return;
        await new Promise((r) => setTimeout(r, 100));
      }
    };

    log(`  bullmq peer: ${SINGLE} single-recipient triggers (worker concurrency ${CONCURRENCY}) …`);
    const single = finished('single', SINGLE, 600_000);
    const inFlight = new Set<Promise<unknown>>();
    let addFailed: unknown;
    const t0 = now();
    for (let i = 0; i < SINGLE; i++) {
      const p = triggers.add('trigger', {
        id: `s${i}`, tenant: 'single', category: 'otp', title: 'Your code', body: `Code ${i}`, to: { userId: `u${i % USERS}` },
      }, { jobId: `single.s${i}` });
      inFlight.add(p);
      p.then(() => inFlight.delete(p), (err: unknown) => { addFailed ??= err; inFlight.delete(p); });
      if (inFlight.size >= 2_000) await Promise.race(inFlight).catch(() => {});
      if (addFailed) throw addFailed;
    }
    await Promise.allSettled(inFlight);
    if (addFailed) throw addFailed;
    const singleDone = await single;
    const singlePerSec = SINGLE / ((singleDone.lastWriteAt - t0) / 1000);
    await idle();

    log(`  bullmq peer: fan-out to a ${FANOUT}-member topic …`);
    const fan = finished('fan', FANOUT, 600_000);
    const t1 = now();
    await triggers.add('trigger', { id: 'post-1', tenant: 'fan', category: 'social', title: 'New post', body: 'Look', to: { topic: 'celebrity' } }, { jobId: 'fan.post-1' });
    const fanDone = await fan;
    const fanPerSec = FANOUT / ((fanDone.lastWriteAt - t1) / 1000);
    await idle();
    const rss = peakRssMb(w.pid!);

    const [receiptsSingle, receiptsFan, inboxSample] = await Promise.all([
      redis.get(key.receipts('single')), redis.get(key.receipts('fan')), redis.zcard(key.inbox('fan', `m${FANOUT - 1}`)),
    ]);
    if (Number(receiptsSingle) !== SINGLE || Number(receiptsFan) !== FANOUT || inboxSample !== 1) {
      throw new Error(`bullmq peer: receipts ${receiptsSingle}/${SINGLE} and ${receiptsFan}/${FANOUT}, last member's inbox ${inboxSample}`);
    }
    console.log(JSON.stringify({ singlePerSec, fanPerSec, peakRssMb: rss, concurrency: CONCURRENCY, failedJobs: failures.length }));
  } finally {
    const steps = await Promise.allSettled([
      workers ? stopWorkers(workers) : Promise.resolve(),
      triggers.close(),
      sends.close(),
    ]);
    const cleanup = await Promise.allSettled([deleteKeys(redis)]);
    await redis.quit().catch(() => redis.disconnect());
    for (const s of [...steps, ...cleanup]) if (s.status === 'rejected') log(`bullmq peer: cleanup: ${String(s.reason)}`);
  }
}

if (process.argv[2] === 'workers') await runWorkers();
else { await runBench(); process.exit(0); }
