import { Kvm } from '@nats-io/kv';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { publishRaw } from '../runtime/producer.js';
import { listDeadLetters } from '../streams/dead-letters.js';
import { eventually, Harness } from './harness.js';

describe('tenants are walled off in every key', () => {
  let h: Harness;
  beforeAll(async () => {
    // Tenant rate limits on: their buckets share Redis with tenants' own keys.
    h = await Harness.create('walls', { HERALD_TENANT_RATE_LIMIT: '1000' });
    await h.load([
      { type: 'user', tenant: 'a', id: 'x', email: 'x@a.test', locale: 'en', timezone: 'UTC' },
      { type: 'user', tenant: 'a', id: 'x:u:victim', email: 'colon@a.test', locale: 'en', timezone: 'UTC' },
      { type: 'user', tenant: 'a', id: 'x%3Au%3Avictim', email: 'percent@a.test', locale: 'en', timezone: 'UTC' },
      { type: 'user', tenant: 'acme', id: 'buyer', email: 'buyer@acme.test', locale: 'en', timezone: 'UTC' },
      // A tenant named like Herald's internal rate-limit space, with a topic named like tenant acme.
      { type: 'topic_member', tenant: 'rate', topic: 'acme', user_id: 'm1' },
      { type: 'topic_member', tenant: 'rate', topic: 't', user_id: 'm1' },
    ]);
    await h.start();
  });
  afterAll(async () => h?.close());

  const send = (tenant: string, key: string, userIds: string[], id?: string) => h.publish({
    tenant, idempotency_key: key, tier: 'transactional', category: 'walls', ...(id ? { id } : {}),
    content: { title: key, body: 'b' }, recipients: { user_ids: userIds }, channels: ['email'],
  });

  const cases: { name: string; run: () => Promise<void> }[] = [
    {
      name: 'user ids holding the old separators reach only their own addresses',
      run: async () => {
        await send('a', 'ids-1', ['x', 'x:u:victim', 'x%3Au%3Avictim']);
        await eventually(() => h.smtp.messages.filter((m) => m.subject === 'ids-1').length === 3, 'three emails');
        expect(h.smtp.messages.filter((m) => m.subject === 'ids-1').flatMap((m) => m.to).sort()).toEqual(['colon@a.test', 'percent@a.test', 'x@a.test']);
      },
    },
    {
      name: 'a tenant named "rate" with a topic "acme" leaves acme\'s rate limiter alone',
      run: async () => {
        await send('acme', 'rate-1', ['buyer']);
        await eventually(() => h.smtp.to('buyer@acme.test').some((m) => m.subject === 'rate-1'), 'acme\'s email');
      },
    },
    {
      name: 'a request id with "." and ":" gets its email (its dedup key is a valid KV key)',
      run: async () => {
        await send('acme', 'dotted-1', ['buyer'], 'order.1:2');
        await eventually(() => h.smtp.to('buyer@acme.test').some((m) => m.subject === 'dotted-1'), 'the dotted request\'s email', 15_000);
      },
    },
    {
      name: 'a tenant that could reach into another\'s keys is rejected, saying why',
      run: async () => {
        await publishRaw(h.nats.js, h.topology, 'transactional', JSON.stringify({
          tenant: 'a:u:x', idempotency_key: 'K', tier: 'transactional', category: 'walls',
          content: { title: 't', body: 'b' }, recipients: { user_ids: ['victim'] },
        }));
        const [letter] = await eventually(async () => {
          const d = await listDeadLetters(h.nats.jsm, h.topology, { stage: 'validate' });
          return d.length ? d : null;
        }, 'the rejection');
        expect(letter.problems.join('\n')).toMatch(/tenant: 1-64 of letters, digits, _ and -/);
      },
    },
  ];
  for (const c of cases) it(c.name, c.run);

  it('answers a publish to a tier that does not exist with the tiers that do, and a real tier as before', async () => {
    const wrong = await h.nats.js.publish(h.topology.request('urgent' as 'social'), '{}').then(() => null, (err: Error) => err);
    expect(wrong?.message).toBe(`no tier "urgent" (${h.topology.request('urgent' as 'social')}): publish to one of ` +
      `${h.topology.request('transactional')}, ${h.topology.request('social')}, ${h.topology.request('marketing')}`);
    const ack = await h.nats.js.publish(h.topology.request('social'), '{}');
    expect(ack.stream).toBe(h.topology.intakeStream('social'));
  });

  it('refuses a cancel on the cancel subject for a tenant that is no tenant, and bounds its reason', async () => {
    const ask = async (body: unknown) => (await h.nats.nc.request(h.topology.cancel, JSON.stringify(body), { timeout: 5_000 })).json<{ ok: boolean; error?: string }>();
    expect(await ask({ tenant: 'a:u:x', id: 'r1' })).toMatchObject({ ok: false, error: expect.stringMatching(/is not a tenant name/) });
    expect(await ask({ tenant: 'acme', id: 'x'.repeat(200) })).toMatchObject({ ok: false, error: 'a request id is 1-128 characters' });
    expect(await ask({ tenant: 'acme', id: 'r1', reason: 'y'.repeat(100_000) })).toEqual({ ok: true });
    const kv = await new Kvm(h.nats.js).open(h.topology.kvBucket('cancellations'));
    const entry = await kv.get('acme.r1');
    expect(entry?.json<{ reason: string }>().reason).toHaveLength(500);
  });

  it('keeps the tenant "rate"\'s topic and Herald\'s rate buckets apart in Redis', async () => {
    const topicKey = h.topology.keys.tenant('rate', 't', 'acme');
    expect(await h.redis.type(topicKey)).toBe('zset');
    const buckets = await h.redis.keys(`${h.topology.keys.root}~rate:*`);
    expect(buckets.length).toBeGreaterThan(0);
    expect(buckets).not.toContain(topicKey);
    expect(await h.directory.topicPage('rate', 'acme', undefined, 10)).toEqual(['m1']);
  });
});
