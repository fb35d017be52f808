import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { childPids, freePort } from '../servers/local-servers.js';
import { HeraldProcess, envFor } from './child.js';
import { eventually, Harness } from './harness.js';

interface Ready { ready: boolean; workers: { id: number; pid: number; ready: boolean }[] }

const alive = (pid: number) => { try { process.kill(pid, 0); return true; } catch { return false; } };

describe('herald run --workers 2', () => {
  let h: Harness;
  let herald: HeraldProcess;
  const users = Array.from({ length: 50 }, (_, i) => `w${i}`);
  beforeAll(async () => {
    h = await Harness.create('workers');
    await h.load(users.map((id) => ({ type: 'user' as const, tenant: 'acme', id })));
    herald = new HeraldProcess(envFor(h.config), ['run', '--workers', '2', '--no-api']);
  }, 120_000);
  afterAll(async () => {
    await herald?.stop('SIGKILL');
    await h?.close();
  });

  const readyz = async () => (await (await fetch(`http://127.0.0.1:${herald.port}/readyz`)).json()) as Ready;
  const delivered = async () => (await h.receipts("status = 'delivered' AND tenant = 'acme'")).length;
  const publish = (from: number, n: number) => Promise.all(Array.from({ length: n }, (_, i) => h.publish({
    tenant: 'acme', idempotency_key: `k${from + i}`, tier: 'transactional', category: 'otp',
    content: { title: 'Code', body: `${from + i}` }, recipients: { user_ids: [users[(from + i) % users.length]] }, channels: ['inapp'],
  })));

  it('is ready once both workers are, delivers every request once, replaces a killed worker, and drains both on SIGTERM', async () => {
    await herald.start();
    const first = await readyz();
    expect(first.ready).toBe(true);
    expect(first.workers).toHaveLength(2);
    const pids = first.workers.map((w) => w.pid);
    expect(new Set(pids).size).toBe(2);
    expect(pids).not.toContain(herald.child!.pid);

    await publish(0, 200);
    await eventually(async () => (await delivered()) === 200, '200 deliveries', 60_000, 250);
    // The group's metrics are the workers' summed: every request validated once, whichever worker took it.
    const metrics = await (await fetch(`http://127.0.0.1:${herald.port}/metrics`)).text();
    const validated = Number(/herald_stage_messages_total\{stage="validate",outcome="ok"\} (\d+)/.exec(metrics)?.[1]);
    expect(validated).toBe(200);

    process.kill(pids[0], 'SIGKILL');
    await eventually(async () => {
      const r = await readyz().catch(() => undefined);
      return !!r && r.ready && r.workers.length === 2 && !r.workers.some((w) => w.pid === pids[0]);
    }, 'a new worker in place of the killed one', 60_000, 250);
    await publish(200, 100);
    await eventually(async () => (await delivered()) === 300, '300 deliveries', 60_000, 250);
    let inboxes = 0;
    for (const u of users) inboxes += (await h.inbox.list('acme', u)).length;
    expect(inboxes).toBe(300);

    const survivors = (await readyz()).workers.map((w) => w.pid);
    expect(await herald.stop('SIGTERM')).toBe(0);
    expect(survivors.filter(alive)).toEqual([]);
  }, 180_000);
});

describe('herald api --workers 2', () => {
  let h: Harness;
  let child: ChildProcess | undefined;
  beforeAll(async () => {
    h = await Harness.create('api-workers');
  }, 120_000);
  afterAll(async () => {
    child?.kill('SIGKILL');
    await h?.close();
  });

  it('serves the API from two processes on one port, replaces a killed one while the other answers, and drains both on SIGTERM', async () => {
    const port = await freePort();
    const started = spawn(path.join(import.meta.dirname, '..', 'bin', 'herald.js'), ['api', '--workers', '2'], {
      env: { ...process.env, ...envFor(h.config, { HERALD_API_PORT: String(port), HERALD_API_HOST: '127.0.0.1', LOG_LEVEL: 'info' }) }, stdio: ['ignore', 'pipe', 'inherit'],
    });
    child = started;
    // The primary says when every worker is serving: a worker that exists may still be loading.
    let logged = '';
    started.stdout!.on('data', (d: Buffer) => { logged += d.toString(); });
    const exited = new Promise<number | null>((resolve) => started.once('exit', (code) => resolve(code)));
    // With a timeout, as any client has: a connection the primary was handing to the worker as it died hangs.
    const docs = () => fetch(`http://127.0.0.1:${port}/v1/openapi.json`, { signal: AbortSignal.timeout(3_000) }).then((r) => r.status, () => 0);
    await eventually(async () => logged.includes('2 workers running') && (await docs()) === 200 && childPids(started.pid!).length === 2, 'two workers answering', 60_000, 200);
    const workers = childPids(started.pid!);
    expect(new Set(workers).size).toBe(2);

    process.kill(workers[0], 'SIGKILL');
    // The other worker keeps answering meanwhile (a new connection each time: the primary hands them out).
    const during = await Promise.all(Array.from({ length: 20 }, () => docs()));
    expect(during.filter((s) => s === 200).length).toBeGreaterThan(0);
    await eventually(() => {
      const now = childPids(started.pid!);
      return now.length === 2 && !now.includes(workers[0]);
    }, 'a new worker in place of the killed one', 60_000, 200);
    await eventually(async () => (await docs()) === 200, 'answers after the replacement', 30_000, 200);

    const survivors = childPids(started.pid!);
    started.kill('SIGTERM');
    expect(await exited).toBe(0);
    expect(survivors.filter(alive)).toEqual([]);
  }, 180_000);
});
