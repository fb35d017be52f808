import fs from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Kvm } from '@nats-io/kv';
import { Harness, eventually } from './harness.js';
import { envFor, HeraldProcess } from './child.js';
import { Checkpoints, type FanoutCheckpoint } from '../stores/checkpoints.js';
import { readInbox } from '../stores/inbox-view.js';
import { requestIdFor } from '../runtime/ids.js';
import { inboxSizes, loadTopic, memberId } from './topics.js';


describe('hybrid in-app fan-out (fan-out on read above the threshold)', () => {
  let h: Harness;
  const members = 100_000;
  beforeAll(async () => {
    h = await Harness.create('hybrid', { HERALD_INAPP_BROADCAST_THRESHOLD: '50000' });
    // Every 1,000th member has an email address: email still fans out per recipient.
    await loadTopic(h, 'big', 'followers', members, (i) => (i % 1_000 === 0 ? { email: `${memberId(i)}@big.test` } : {}));
    await h.load([
      { type: 'hard_stop', tenant: 'big', user_id: memberId(1) },
      { type: 'preference', tenant: 'big', user_id: memberId(2), channel: 'inapp', enabled: false },
      { type: 'user', tenant: 'big', id: 'outsider' },
    ]);
    await h.start();
  }, 180_000);
  afterAll(() => h?.close());

  it('writes one broadcast record for a 100,000-member topic; every member\'s inbox shows it', async () => {
    await h.publish({
      tenant: 'big', idempotency_key: 'star-post', tier: 'social', category: 'social',
      content: { title: 'Star posted', body: 'Look' }, recipients: { topic: 'followers' }, channels: ['inapp', 'email'],
    });
    await eventually(() => h.smtp.messages.filter((m) => m.subject === 'Star posted').length === 100, '100 emails', 60_000, 250);
    expect(await h.inbox.broadcastCount('big', 'followers')).toBe(1);
    // No per-member inbox record was written.
    expect(await inboxSizes(h, 'big', members)).toEqual({ 0: members });
    const seen: number[] = [];
    for (let i = 0; i < members; i += 997) {
      const entries = await readInbox(h.inbox, h.directory, 'big', memberId(i));
      seen.push(entries.filter((e) => e.title === 'Star posted').length);
    }
    expect(seen.length).toBeGreaterThan(100);
    expect(new Set(seen)).toEqual(new Set([1]));
    // Read-time filtering: the hard stop and the in-app opt-out hide it; a non-member never had it.
    expect(await readInbox(h.inbox, h.directory, 'big', memberId(1))).toEqual([]);
    expect(await readInbox(h.inbox, h.directory, 'big', memberId(2))).toEqual([]);
    expect(await readInbox(h.inbox, h.directory, 'big', memberId(3))).toHaveLength(1);
    expect(await readInbox(h.inbox, h.directory, 'big', 'outsider')).toEqual([]);
    // The receipts say what happened: one in-app row standing for every member, email per recipient.
    const inapp = await eventually(() => h.receipts("tenant = 'big' AND channel = 'inapp'").then((r) => r.length && r), 'in-app receipt');
    expect(inapp.map((r) => [r.status, r.provider, Number(r.count), r.reason])).toEqual([
      ['delivered', 'broadcast', members, `fan-out on read: topic "followers", ${members} members`],
    ]);
    const email = await eventually(async () => {
      const rows = await h.receipts("tenant = 'big' AND channel = 'email' AND status = 'delivered'");
      return rows.length === 100 && rows;
    }, '100 delivered email receipts', 30_000, 500);
    expect(new Set(email.map((r) => r.user_id)).size).toBe(100);
  }, 180_000);
});

describe('a 1,000,000-member topic fan-out killed midway', () => {
  let h: Harness;
  let herald: HeraldProcess;
  const members = 1_000_000;
  const env = { HERALD_INAPP_BROADCAST_THRESHOLD: '0', HERALD_ACK_WAIT_MS: '5000' };
  beforeAll(async () => {
    h = await Harness.create('million', { ...env, HERALD_STORAGE_BUDGET_MB: '2048' });
    await loadTopic(h, 'mega', 'everyone', members);
    herald = new HeraldProcess(envFor(h.config, env));
  }, 600_000);
  afterAll(async () => {
    await herald?.stop('SIGKILL');
    await h?.close();
  });

  it('resumes from its checkpoint after kill -9: every member gets exactly one in-app delivery', async () => {
    const checkpoints = new Checkpoints(await new Kvm(h.nats.js).open(h.topology.kvBucket('checkpoints')));
    const id = requestIdFor('mega', 'launch');
    const key = checkpoints.key('mega', id);
    await herald.start();
    const started = Date.now();
    await h.publish({
      tenant: 'mega', idempotency_key: 'launch', tier: 'marketing', category: 'launch',
      content: { title: 'Launch', body: 'It is here' }, recipients: { topic: 'everyone' }, channels: ['inapp'],
    });
    const atKill = await eventually(async () => {
      const cp = await checkpoints.read(key);
      return cp && cp.chunk >= 400 && cp;
    }, 'the fan-out a fifth of the way through', 120_000, 50);
    const peakBefore = peakRssMb(herald);
    expect(await herald.stop('SIGKILL')).toBeNull();
    await herald.start();
    const done: FanoutCheckpoint = await eventually(async () => {
      const cp = await checkpoints.read(key);
      return cp?.done && cp;
    }, 'the checkpoint to say done', 300_000, 250);
    await eventually(async () => {
      const work = await h.nats.jsm.streams.info(h.topology.workStream('marketing'));
      return work.state.messages === 0;
    }, 'the marketing work queue to drain', 300_000, 500);
    const seconds = (Date.now() - started) / 1000;
    const peakAfter = peakRssMb(herald);
    const sizes = await inboxSizes(h, 'mega', members);
    console.log(`1M fan-out: killed at chunk ${atKill.chunk} (${atKill.members} members), resumed from ${done.resumed_from.join(', ')}; ` +
      `${seconds.toFixed(1)} s in all; peak RSS ${peakBefore} MB before the kill, ${peakAfter} MB after`);
    expect(sizes).toEqual({ 1: members });
    expect(done).toMatchObject({ done: true, members, chunk: members / 500 });
    expect(done.resumed_from).toHaveLength(1);
    expect(done.resumed_from[0]).toBeGreaterThanOrEqual(atKill.chunk);
    // Resumed, not restarted: members resolved in both runs add up to the topic, plus at most the
    // few chunks between the last checkpoint and the kill (a restart would add all ≥ 200,000 again).
    const resolved = await eventually(async () => {
      const [row] = await (await h.clickhouse.query({
        query: `SELECT sum(count) AS n, countIf(reason LIKE 'resumed at chunk%') AS resumes FROM ${h.config.clickhouseDatabase}.receipts WHERE status = 'resolved' AND request_id = '${id}'`,
        format: 'JSONEachRow',
      })).json<{ n: string; resumes: string }>();
      return Number(row.resumes) === 1 && Number(row.n) >= members && row;
    }, 'resolved receipts of both runs', 120_000, 1_000);
    console.log(`1M fan-out: ${Number(resolved.n) - members} members resolved twice`);
    expect(Number(resolved.n) - members).toBeLessThan(25 * 500);
  }, 900_000);
});

/** Peak resident memory of a child process (VmHWM), in MB. */
function peakRssMb(p: HeraldProcess): number {
  const status = fs.readFileSync(`/proc/${p.child!.pid}/status`, 'utf8');
  return Math.round(Number(/VmHWM:\s+(\d+)/.exec(status)![1]) / 1024);
}
