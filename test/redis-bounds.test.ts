import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { Redis } from 'ioredis';
import { Directory } from '../stores/directory.js';
import { InboxStore } from '../stores/inbox.js';
import { KeySpace } from '../stores/keys.js';
import { RequestStatuses } from '../stores/request-status.js';
import { receiptSchema } from '../schemas/index.js';
import { RedisScript } from '../stores/scripts.js';
import { uniqueNamespace } from './harness.js';

// Redis runs nothing else while a script runs: a fan-out's work must reach it in bounded calls, or a
// password reset waits behind them. What each call carried is read off Redis's MONITOR.
describe('bulk Redis work goes in bounded script calls', () => {
  const namespace = uniqueNamespace('bounds');
  const keys = new KeySpace(namespace);
  let redis: Redis;
  let monitor: Awaited<ReturnType<Redis['monitor']>>;
  /** Script calls about this test's keys: the script's name and how many keys and arguments it got. */
  const calls: { script: string; size: number }[] = [];
  beforeAll(async () => {
    redis = new Redis(inject('redisUrl'));
    monitor = await new Redis(inject('redisUrl')).monitor();
    monitor.on('monitor', (_time: string, args: string[]) => {
      if (args[0].toLowerCase() !== 'evalsha' || !args.slice(3).some((a) => a.includes(namespace))) return;
      calls.push({ script: RedisScript.names.get(args[1]) ?? args[1], size: args.length - 3 });
    });
  });
  afterAll(async () => {
    monitor?.disconnect();
    await redis?.quit();
  });
  const callsOf = async (script: string, work: () => Promise<unknown>) => {
    calls.length = 0;
    await work();
    await new Promise((r) => setTimeout(r, 200));
    return calls.filter((c) => c.script === script);
  };
  const users = (n: number) => Array.from({ length: n }, (_, i) => `u${i}`);

  it('writes a thousand inbox references in four calls of 250, each storing the content, all of them landed', async () => {
    const inbox = new InboxStore(redis, keys);
    const content = { id: 'blast-1', category: 'launch', tier: 'marketing' as const, title: 'Launch', body: 'Here', created_at: 1 };
    const now = Date.now();
    let added: boolean[] = [];
    const adds = await callsOf('ADD', async () => {
      added = await inbox.write('acme', [{ locale: 'en', content }], users(1_000).map((u) => ({ userId: u, locale: 'en', requestId: 'blast-1', createdAt: now })));
    });
    // One content hash and two keys per user; then per content (locale, JSON), per user three arguments, and four more.
    expect(adds.map((c) => c.size)).toEqual([1 + 500 + 4 + 2 + 750, 1 + 500 + 4 + 2 + 750, 1 + 500 + 4 + 2 + 750, 1 + 500 + 4 + 2 + 750]);
    expect(added.filter(Boolean)).toHaveLength(1_000);
    expect(await redis.zscore(keys.tenant('acme', 'inbox', 'u999'), 'blast-1')).toBe(String(now));
  });

  it('reads 600 profiles in three calls of at most 250 hashes', async () => {
    const directory = new Directory(redis, keys);
    await directory.upsert(users(600).map((id) => ({ type: 'user' as const, tenant: 'acme', id, email: `${id}@acme.test` })));
    let profiles: { email?: string }[] = [];
    const reads = await callsOf('HGETALL_MANY', async () => { profiles = await directory.profiles('acme', users(600), false); });
    expect(reads.map((c) => c.size)).toEqual([250, 250, 100]);
    expect(profiles.map((p) => p.email)).toEqual(users(600).map((u) => `${u}@acme.test`));
  });

  it('records a 5,000-recipient receipt in calls of at most 2,000 ids and arguments, counting each recipient', async () => {
    const statuses = new RequestStatuses(redis, keys);
    const records = await callsOf('RECORD', () => statuses.record([receiptSchema.parse({
      ts: Date.now(), stage: 'dispatch', status: 'delivered', request_id: 'big', tenant: 'acme', tier: 'marketing', category: 'launch',
      channel: 'inapp', provider: 'inbox', user_ids: users(5_000), count: 5_000,
    })]));
    expect(records.length).toBeGreaterThanOrEqual(3);
    // A bulk unit's ids travel as one argument, so each call is small on the wire however many it counts.
    expect(records.every((c) => c.size < 100)).toBe(true);
    expect((await statuses.get('acme', 'big'))?.counts).toEqual({ inapp: { delivered: 5_000 } });
  });

  it('records many requests\' receipts in one call of their keys and two arguments, whatever text the receipts carry', async () => {
    const statuses = new RequestStatuses(redis, keys);
    const now = Date.now();
    const receipts = Array.from({ length: 50 }, (_, i) => [
      { ts: now, stage: 'validate', status: 'accepted', request_id: `r${i}`, tenant: 'acme', tier: 'transactional', category: 'otp', channels: ['inapp'] },
      { ts: now, stage: 'dispatch', status: 'delivered', request_id: `r${i}`, tenant: 'acme', tier: 'transactional', category: 'otp', channel: 'inapp', user_id: `u${i}` },
    ]).flat();
    // Text a receipt carries cannot split a call's packed fields, nor grow a status hash without bound.
    receipts.push(
      { ts: now, stage: 'validate', status: 'accepted', request_id: 'odd', tenant: 'acme', tier: 'transactional', category: 'c'.repeat(10_000), channels: ['inapp'] },
      { ts: now, stage: 'dispatch', status: 'delivered', request_id: 'odd', tenant: 'acme', tier: 'transactional', category: 'otp', channel: 'in\x1fapp', user_id: 'u1' },
      { ts: now, stage: 'dispatch', status: 'delivered', request_id: 'odd', tenant: 'acme', tier: 'transactional', category: 'otp', channel: 'x'.repeat(10_000), user_id: 'u1' },
    );
    const records = await callsOf('RECORD', () => statuses.record(receipts.map((r) => receiptSchema.parse(r))));
    expect(records.map((c) => c.size)).toEqual([51 * 3 + 2]);
    expect((await statuses.get('acme', 'r49'))?.counts).toEqual({ inapp: { delivered: 1 } });
    const odd = await redis.hgetall(keys.tenant('acme', 'status', 'odd'));
    expect(odd['c:inapp:delivered']).toBe('1');
    expect(Math.max(...Object.keys(odd).map((f) => f.length), ...Object.values(odd).map((v) => v.length))).toBeLessThanOrEqual(250);
    expect(odd.category).toBe('c'.repeat(200));
  });
});
