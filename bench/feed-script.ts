// `npm run bench:feed-script`: the machine instructions Redis runs per feed page (GET …/notifications,
// first page of 20, as the API asks for it), counted by valgrind's callgrind on a redis-server it
// starts. CPU time on these shared cores swings ±20 % between identical runs; an instruction count
// does not, so a change to the feed's Lua can be judged from one run before and one after (a git
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
import { fmt, loadFeeds } from './servers.js';

const USERS = 100;
const ITEMS = 100;
const PAGES = Number(process.env.BENCH_FEED_PAGES ?? 500);
const log = (s: string) => process.stderr.write(`${s}\n`);

try {
  execFileSync('valgrind', ['--version'], { stdio: 'ignore' });
} catch {
  log('bench:feed-script needs valgrind: apt-get install -y valgrind');
  process.exit(1);
}
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'herald-feed-script-'));
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
  const keys = new KeySpace('feed-script');
  const directory = new Directory(redis, keys);
  // The API's own setup: pages on a connection without auto-pipelining.
  const inbox = new InboxStore(redis, keys, { feedRedis });
  log(`loading ${USERS} users × ${ITEMS} in-app items into a redis-server under callgrind …`);
  const users = await loadFeeds(directory, inbox, USERS, ITEMS);
  const page = (i: number) => inbox.feedJson('feed', users[i % USERS], directory.inboxView('feed', users[i % USERS]), { limit: 20 });
  // Script loaded, caches warm; then only the pages are counted.
  for (let i = 0; i < 50; i++) await page(i);
  execFileSync('callgrind_control', ['--zero', String(server.pid)], { stdio: 'ignore' });
  let body = '';
  for (let i = 0; i < PAGES; i++) body = await page(i);
  execFileSync('callgrind_control', ['--dump', String(server.pid)], { stdio: 'ignore' });
  const dumps = fs.readdirSync(dir).filter((f) => f.startsWith('callgrind.out'));
  let instructions = 0;
  for (const f of dumps) instructions += Number(/^summary:\s+(\d+)/m.exec(fs.readFileSync(path.join(dir, f), 'utf8'))?.[1] ?? 0);
  console.log(`Redis instructions per feed page (first page of 20, ${USERS} users × ${ITEMS} items, ${fmt(PAGES)} pages): ${fmt(instructions / PAGES / 1000, 1)} k`);
  console.log(`(a page's body: ${fmt(body.length)} bytes)`);
} finally {
  redis.disconnect();
  feedRedis.disconnect();
  server.kill('SIGTERM');
  await new Promise((r) => server.once('exit', r));
  fs.rmSync(dir, { recursive: true, force: true });
}
process.exit(0);
