// `npm run bench:redis-scripts`: the machine instructions Redis runs for Herald's two hottest
// scripts, counted by valgrind's callgrind on a redis-server it starts: per feed page (GET
// …/notifications, first page of 20, as the API asks for it) and per single-recipient in-app
// request's receipts in the status tracker (its four receipts in one record call, as they mostly
// come). CPU time on these shared cores swings ±20 % between identical runs; an instruction count
// does not, so a change to either script can be judged from one run before and one after (a git
// worktree of the old commit: `git worktree add /tmp/before REV`, then this script in each).
// Needs valgrind (`apt-get install -y valgrind`). Prints figures; never fails on them.
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Redis } from 'ioredis';
import { freePort } from '../servers/local-servers.js';
import { Directory } from '../stores/directory.js';
import { InboxStore } from '../stores/inbox.js';
import { KeySpace } from '../stores/keys.js';
import { RequestStatuses } from '../stores/request-status.js';
import { receiptSchema } from '../schemas/index.js';
import { fmt, loadFeeds } from './servers.js';

const USERS = 100;
const ITEMS = 100;
const PAGES = Number(process.env.BENCH_FEED_PAGES ?? 500);
const REQUESTS = Number(process.env.BENCH_STATUS_REQUESTS ?? 2_000);
const FAN_MEMBERS = Number(process.env.BENCH_FAN_MEMBERS ?? 10_000);
/** Members per chunk, as resolve pages a topic and dispatch writes it. */
const FAN_CHUNK = 500;
const log = (s: string) => process.stderr.write(`${s}\n`);

try {
  execFileSync('valgrind', ['--version'], { stdio: 'ignore' });
} catch {
  log('bench:redis-scripts needs valgrind: apt-get install -y valgrind');
  process.exit(1);
}
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'herald-redis-scripts-'));
const port = await freePort();
const profile = path.join(dir, 'callgrind.out');
const server = spawn('valgrind', ['--tool=callgrind', `--callgrind-out-file=${profile}`, 'redis-server', '--port', String(port), '--bind', '127.0.0.1',
  '--save', '', '--appendonly', 'no', '--dir', dir], { stdio: 'ignore' });
const redis = new Redis(`redis://127.0.0.1:${port}`, { enableAutoPipelining: true, retryStrategy: () => 200 });
const feedRedis = redis.duplicate({ enableAutoPipelining: false });
try {
  for (let i = 0; ; i++) {
    try { await redis.ping(); break; } catch (err) { if (i > 100) throw err; await new Promise((r) => setTimeout(r, 300)); }
  }
  // The namespace of the earlier bench:feed-script: Redis's Lua hashes every key byte, so its length moves the count.
  const keys = new KeySpace('feed-script');
  const directory = new Directory(redis, keys);
  // The API's own setup: pages on a connection without auto-pipelining.
  const inbox = new InboxStore(redis, keys, { feedRedis });
  log(`loading ${USERS} users × ${ITEMS} in-app items into a redis-server under callgrind …`);
  const users = await loadFeeds(directory, inbox, USERS, ITEMS);
  const page = (i: number) => inbox.feedJson('feed', users[i % USERS], directory.inboxView('feed', users[i % USERS]), { limit: 20 });
  /** Instructions Redis ran during `work`, from a callgrind dump of just that span. */
  const counted = async (work: () => Promise<void>): Promise<number> => {
    const dumps = () => fs.readdirSync(dir).filter((f) => f.startsWith('callgrind.out'));
    for (const f of dumps()) fs.rmSync(path.join(dir, f));
    execFileSync('callgrind_control', ['--zero', String(server.pid)], { stdio: 'ignore' });
    await work();
    execFileSync('callgrind_control', ['--dump', String(server.pid)], { stdio: 'ignore' });
    let instructions = 0;
    for (const f of dumps()) instructions += Number(/^summary:\s+(\d+)/m.exec(fs.readFileSync(path.join(dir, f), 'utf8'))?.[1] ?? 0);
    return instructions;
  };
  // Script loaded, caches warm; then only the pages are counted.
  for (let i = 0; i < 50; i++) await page(i);
  let body = '';
  const feed = await counted(async () => { for (let i = 0; i < PAGES; i++) body = await page(i); });
  console.log(`Redis instructions per feed page (first page of 20, ${USERS} users × ${ITEMS} items, ${fmt(PAGES)} pages): ${fmt(feed / PAGES / 1000, 1)} k`);
  console.log(`(a page's body: ${fmt(body.length)} bytes)`);

  const statuses = new RequestStatuses(redis, keys);
  const t0 = Date.now();
  /** The receipts a single-recipient in-app request makes, validate to delivered (as dispatch writes them). */
  const receiptsOf = (i: number) => {
    const base = { ts: t0 + i, request_id: `r${i}`, tenant: 'status', tier: 'transactional', category: 'otp' };
    const dispatch = { ...base, stage: 'dispatch', channel: 'inapp', provider: 'inbox', user_ids: [`u${i % USERS}`], attempt: 1, latency_ms: 3 };
    return [
      { ...base, stage: 'validate', status: 'accepted', channels: ['inapp'] },
      { ...base, stage: 'resolve', status: 'resolved', count: 1 },
      { ...dispatch, status: 'dispatched' },
      { ...dispatch, status: 'delivered' },
    ].map((r) => receiptSchema.parse(r));
  };
  for (let i = 0; i < 50; i++) await statuses.record(receiptsOf(-1 - i));
  const status = await counted(async () => {
    // Calls overlap, as the tracker's flushes of different batches do.
    await Promise.all(Array.from({ length: 10 }, async (_, lane) => {
      for (let i = lane; i < REQUESTS; i += 10) await statuses.record(receiptsOf(i));
    }));
  });
  console.log(`Redis instructions per single-recipient request's receipts in the status tracker (4 receipts, one record call, ${fmt(REQUESTS)} requests): ${fmt(status / REQUESTS / 1000, 1)} k`);

  // A fan-out's chunk as dispatch writes it (one content, a reference per member), and its receipts
  // as the tracker records them: dispatched and delivered, each naming the chunk's members.
  const fanWrite = (requestId: string, members: string[], createdAt: number) => inbox.write('fan', [{ locale: 'en', content: { id: requestId, category: 'social', tier: 'social', title: 'New post', body: 'Look', created_at: createdAt } }],
    members.map((userId) => ({ userId, locale: 'en', requestId, createdAt })));
  const chunkOf = (from: number) => Array.from({ length: FAN_CHUNK }, (_, i) => `m${from + i}`);
  const fresh = await counted(async () => {
    for (let from = 0; from < FAN_MEMBERS; from += FAN_CHUNK) await fanWrite('post-1', chunkOf(from), t0);
  });
  console.log(`Redis instructions per member of a fan-out written to inboxes it creates (${fmt(FAN_MEMBERS)} members, chunks of ${FAN_CHUNK}): ${fmt(fresh / FAN_MEMBERS / 1000, 2)} k`);
  // Inboxes that already hold items, the usual case once a deployment has run for a while.
  for (let j = 2; j < 10; j++) for (let from = 0; from < FAN_MEMBERS; from += FAN_CHUNK) await fanWrite(`post-${j}`, chunkOf(from), t0 + j);
  const held = await counted(async () => {
    for (let from = 0; from < FAN_MEMBERS; from += FAN_CHUNK) await fanWrite('post-10', chunkOf(from), t0 + 10);
  });
  console.log(`Redis instructions per member of a fan-out written to inboxes holding 9 items: ${fmt(held / FAN_MEMBERS / 1000, 2)} k`);
  const fanReceipts = (from: number) => {
    const base = { ts: t0, request_id: 'post-1', tenant: 'fan', tier: 'social', category: 'social', stage: 'dispatch', channel: 'inapp', provider: 'inbox', user_ids: chunkOf(from), attempt: 1, latency_ms: 3 };
    return [{ ...base, status: 'dispatched' }, { ...base, status: 'delivered' }].map((r) => receiptSchema.parse(r));
  };
  const fanStatus = await counted(async () => {
    for (let from = 0; from < FAN_MEMBERS; from += FAN_CHUNK) await statuses.record(fanReceipts(from));
  });
  console.log(`Redis instructions per member of a fan-out in the status tracker (dispatched and delivered, chunks of ${FAN_CHUNK}): ${fmt(fanStatus / FAN_MEMBERS / 1000, 2)} k`);
} finally {
  redis.disconnect();
  feedRedis.disconnect();
  server.kill('SIGTERM');
  await new Promise((r) => server.once('exit', r));
  fs.rmSync(dir, { recursive: true, force: true });
}
process.exit(0);
