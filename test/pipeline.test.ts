import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { publishRaw } from '../runtime/producer.js';
import { listDeadLetters } from '../streams/dead-letters.js';
import { applyAll } from '../streams/apply.js';
import type { DirectoryRecord } from '../schemas/index.js';
import { eventually, Harness } from './harness.js';

describe('pipeline against real NATS, Redis, ClickHouse and SMTP', () => {
  let h: Harness;
  beforeAll(async () => {
    // Per-member in-app fan-out is under test here: no fan-out-on-read broadcast.
    h = await Harness.create('pipe', { HERALD_INAPP_BROADCAST_THRESHOLD: '0' });
    await h.load([
      { type: 'user', tenant: 'acme', id: 'a1', email: 'a1@acme.test', locale: 'en', timezone: 'UTC' },
      { type: 'user', tenant: 'globex', id: 'a1', email: 'a1@globex.test', locale: 'en', timezone: 'UTC' },
    ]);
    await h.start();
  });
  afterAll(async () => h?.close());

  it('rejects a bad request with a receipt and a DLQ entry naming each problem, and keeps going', async () => {
    await publishRaw(h.nats.js, h.topology, 'transactional', JSON.stringify({
      tenant: 'acme', idempotency_key: 'bad-1', tier: 'transactional', category: 42,
      template: { id: 'no-such-template' }, recipients: {}, colour: 'blue',
    }));
    await publishRaw(h.nats.js, h.topology, 'transactional', '{"not json');
    await h.publish({
      tenant: 'acme', idempotency_key: 'good-after-bad', tier: 'transactional', category: 'news',
      content: { title: 'Hello {{who}}', body: 'Body for {{who}}' }, data: { who: 'a1' },
      recipients: { user_ids: ['a1'] }, channels: ['email'],
    });
    await eventually(() => h.smtp.to('a1@acme.test').some((m) => m.subject === 'Hello a1'), 'the good request delivered');

    const dead = await eventually(async () => {
      const d = await listDeadLetters(h.nats.jsm, h.topology, { stage: 'validate' });
      return d.length >= 2 ? d : null;
    }, 'two dead letters');
    const bad = dead.find((d) => d.request_id)!;
    const problems = bad.problems.join('\n');
    expect(problems).toMatch(/category: .*string/i);
    expect(problems).toMatch(/recipients: give exactly one of user_ids or topic/);
    expect(problems).toMatch(/colour/);
    expect(problems).toMatch(/template.id: no template "no-such-template"/);
    expect(bad.tenant).toBe('acme');
    expect(JSON.parse(Buffer.from(bad.original_b64!, 'base64').toString()).colour).toBe('blue');
    const notJson = dead.find((d) => !d.request_id)!;
    expect(notJson.problems[0]).toMatch(/not UTF-8 JSON/);

    const rejected = await eventually(async () => {
      const r = await h.receipts("status = 'rejected'");
      return r.length >= 2 ? r : null;
    }, 'rejected receipts');
    expect(rejected.some((r) => r.tenant === 'acme' && String(r.reason).includes('no-such-template'))).toBe(true);
  });

  it('rejects a template variable missing from data', async () => {
    await h.publish({
      tenant: 'acme', idempotency_key: 'missing-var', tier: 'social', category: 'news',
      template: { id: 'password-reset' }, data: { code: '1234' }, recipients: { user_ids: ['a1'] },
    });
    const dead = await eventually(async () => {
      const d = await listDeadLetters(h.nats.jsm, h.topology, { stage: 'validate', reason: 'minutes' });
      return d.length ? d : null;
    }, 'dead letter for the missing variable');
    expect(dead[0].problems).toContain('template "password-reset" (en) uses {{minutes}} but data has no "minutes"');
  });

  it('delivers a request published twice once, and the same key under two tenants to both', async () => {
    const request = (tenant: string) => ({
      tenant, idempotency_key: 'same-key', tier: 'transactional' as const, category: 'account',
      content: { title: `Once for ${tenant}`, body: 'x' }, recipients: { user_ids: ['a1'] }, channels: ['email' as const],
    });
    const first = await h.publish(request('acme'));
    const second = await h.publish(request('acme'));
    await h.publish(request('globex'));
    expect(first.duplicate).toBe(false);
    expect(second.duplicate).toBe(true);
    await eventually(() => h.smtp.to('a1@globex.test').some((m) => m.subject === 'Once for globex'), 'globex delivery');
    await eventually(() => h.smtp.to('a1@acme.test').some((m) => m.subject === 'Once for acme'), 'acme delivery');
    // Give a duplicate time to show up if there were one.
    await new Promise((r) => setTimeout(r, 1_000));
    expect(h.smtp.to('a1@acme.test').filter((m) => m.subject === 'Once for acme')).toHaveLength(1);
    expect(h.smtp.to('a1@globex.test').filter((m) => m.subject === 'Once for globex')).toHaveLength(1);
  });

  it('fans a 10,000-member topic out to 10,000 inboxes, each exactly once', async () => {
    const members: DirectoryRecord[] = [];
    for (let i = 0; i < 10_000; i++) {
      const id = `f${String(i).padStart(5, '0')}`;
      members.push({ type: 'user', tenant: 'fan', id, locale: 'en', timezone: 'UTC' });
      members.push({ type: 'topic_member', tenant: 'fan', topic: 'followers:star', user_id: id });
    }
    await h.load(members);
    await h.publish({
      tenant: 'fan', idempotency_key: 'star-post-1', tier: 'social', category: 'social',
      content: { title: 'Star posted', body: 'Look' }, recipients: { topic: 'followers:star' }, channels: ['inapp'],
    });
    const delivered = await eventually(async () => {
      const [row] = await h.receipts("tenant = 'fan' AND status = 'delivered'").then((r) => [r.length]);
      return row >= 10_000 ? row : null;
    }, '10,000 delivered receipts', 60_000, 500);
    expect(delivered).toBe(10_000);
    const counts = new Map<number, number>();
    const pipeline = h.redis.pipeline();
    for (let i = 0; i < 10_000; i++) pipeline.zcard(h.topology.keys.tenant('fan', 'inbox', `f${String(i).padStart(5, '0')}`));
    for (const [, n] of (await pipeline.exec())!) counts.set(n as number, (counts.get(n as number) ?? 0) + 1);
    expect(Object.fromEntries(counts)).toEqual({ 1: 10_000 });
    const resolved = await h.receipts("tenant = 'fan' AND status = 'resolved'");
    expect(resolved.reduce((a, r) => a + Number(r.count), 0)).toBe(10_000);
    expect(resolved).toHaveLength(20);
  });

  it('apply twice changes nothing the second time', async () => {
    const again = await applyAll(h.nats, h.topology, h.clickhouse, h.config.clickhouseDatabase);
    expect(again.filter((r) => r.action !== 'unchanged')).toEqual([]);
    expect(again.length).toBeGreaterThan(30);
  });

  it('apply updates a changed limit', async () => {
    const name = h.topology.dlqStream;
    const before = await h.nats.jsm.streams.info(name);
    await h.nats.jsm.streams.update(name, { ...before.config, max_bytes: 1024 * 1024 });
    const results = await applyAll(h.nats, h.topology);
    const dlq = results.find((r) => r.name === name)!;
    expect(dlq.action).toBe('updated');
    expect(dlq.changed).toEqual(['max_bytes']);
    expect((await h.nats.jsm.streams.info(name)).config.max_bytes).toBe(before.config.max_bytes);
  });
});
