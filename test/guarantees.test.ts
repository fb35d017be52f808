import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { publishRaw } from '../runtime/producer.js';
import { listDeadLetters, redriveDeadLetters } from '../streams/dead-letters.js';
import type { TwilioFake } from '../sinks/fakes/twilio-fake.js';
import { eventually, Harness } from './harness.js';

const phone = (i: number) => `+1555${String(i).padStart(7, '0')}`;

/** A pipeline whose SMS goes to the sandbox Twilio fake, with fast breakers and backoff, and users p0…pN. */
async function smsPipeline(label: string, users: number, env: Record<string, string>) {
  const h = await Harness.create(label, {
    HERALD_BREAKER_FAILURES: '3', HERALD_BREAKER_COOLDOWN_MS: '1000', HERALD_BACKOFF_BASE_MS: '50', HERALD_BACKOFF_CAP_MS: '400',
    HERALD_RATE_LIMITS: 'twilio=100000', ...env,
  });
  await h.load(Array.from({ length: users }, (_, i) => ({ type: 'user' as const, tenant: 'acme', id: `p${i}`, phone: phone(i) })));
  const pipeline = await h.start();
  const sms = (key: string, ids: string[]) => h.publish({
    tenant: 'acme', idempotency_key: key, tier: 'transactional', category: 'otp',
    content: { title: key, body: 'b' }, recipients: { user_ids: ids }, channels: ['sms'],
  });
  return { h, twilio: pipeline.providers!.fakes.twilio!, sms };
}

describe('delivery guarantees against a failing provider (Twilio fake)', () => {
  let h: Harness;
  let twilio: TwilioFake;
  let sms: (key: string, users: string[]) => Promise<unknown>;
  beforeAll(async () => {
    ({ h, twilio, sms } = await smsPipeline('guarantees', 60, { HERALD_MAX_ATTEMPTS: '4' }));
  });
  afterAll(async () => h?.close());

  it('honours Retry-After on a 429: the provider is not called again before then', async () => {
    twilio.script.fail('*', { kind: 'throttle', retryAfterSec: 2, times: 1 });
    await sms('throttled', ['p20']);
    const delivered = await eventually(() => twilio.script.delivered(phone(20))[0], 'the throttled SMS delivered', 20_000);
    const throttled = twilio.script.records.find((r) => r.target === phone(20) && r.status === 429)!;
    expect(delivered.at - throttled.at).toBeGreaterThanOrEqual(1_900);
  });

  it('dead-letters a delivery that always fails after the last attempt, while the ones behind it flow', async () => {
    twilio.script.fail(phone(30), { kind: 'retry' });
    await sms('poison', ['p30']);
    await sms('behind-poison', ['p31', 'p32']);
    await eventually(() => twilio.script.delivered(phone(31)).length === 1 && twilio.script.delivered(phone(32)).length === 1, 'the messages behind it');
    const [dead] = await eventually(async () => {
      const d = await listDeadLetters(h.nats.jsm, h.topology, { stage: 'dispatch', reason: 'retries exhausted' });
      return d.length ? d : null;
    }, 'the poison message in the DLQ', 30_000);
    expect(dead.problems[0]).toMatch(/^p30: retries exhausted: 20503/);
    expect(dead.attempts).toBe(4);
    expect(dead.first_error).toMatch(/deliveries to retry/);
    expect(twilio.script.records.filter((r) => r.target === phone(30))).toHaveLength(4);

    // Fixed at the provider: a redrive sends it, and only it.
    twilio.script.clear();
    expect(await redriveDeadLetters(h.nats, h.topology, { seq: dead.dlq_seq })).toBe(1);
    await eventually(() => twilio.script.delivered(phone(30)).length === 1, 'the redriven delivery');
    await new Promise((r) => setTimeout(r, 500));
    expect(twilio.script.delivered(phone(31))).toHaveLength(1);
    expect(await listDeadLetters(h.nats.jsm, h.topology, { reason: 'retries exhausted' })).toHaveLength(0);
  });

  it('cancels a request: deliveries not yet sent are dropped with a receipt', async () => {
    twilio.script.fail('*', { kind: 'retry' });
    await sms('to-cancel', ['p40', 'p41']);
    await eventually(() => twilio.script.records.some((r) => r.target === phone(40)), 'a first failed try');
    const { requestIdFor } = await import('../runtime/ids.js');
    await h.nats.nc.request(h.topology.cancel, JSON.stringify({ tenant: 'acme', id: requestIdFor('acme', 'to-cancel') }));
    twilio.script.clear();
    const rows = await eventually(async () => {
      const r = await h.receipts("status = 'cancelled'");
      return r.length ? r : null;
    }, 'the cancelled receipt', 30_000);
    expect(rows.reduce((a, r) => a + Number(r.count), 0)).toBe(2);
    expect(twilio.script.delivered(phone(40))).toHaveLength(0);
  });
});

describe('a provider outage behind the circuit breaker', () => {
  let h: Harness;
  let twilio: TwilioFake;
  let sms: (key: string, users: string[]) => Promise<unknown>;
  beforeAll(async () => {
    ({ h, twilio, sms } = await smsPipeline('breaker', 10, {}));
  });
  afterAll(async () => h?.close());

  it('opens the breaker on a provider answering 500, sends only probes while open, and loses nothing', async () => {
    twilio.script.fail('*', { kind: 'retry' });
    for (let i = 0; i < 10; i++) {
      await sms(`outage-${i}`, [`p${i}`]);
      await new Promise((r) => setTimeout(r, 30));
    }
    const breakers = h.pipeline!.breakers!;
    await eventually(() => breakers.state('twilio-sandbox').state !== 'closed', 'the breaker to open');
    const openedAt = Date.now();
    const callsBefore = twilio.script.records.length;
    await new Promise((r) => setTimeout(r, 4_000));
    const calls = twilio.script.records.filter((r) => r.at >= openedAt + 50);
    // One probe per second of cool-down, each a single call, give or take one in flight.
    expect(calls.length).toBeLessThanOrEqual(6);
    expect(callsBefore).toBeGreaterThanOrEqual(3);
    twilio.script.clear();
    await eventually(() => new Set(twilio.script.delivered().map((r) => r.target)).size === 10, 'all ten delivered after recovery', 30_000);
    expect(twilio.script.delivered()).toHaveLength(10);
    await eventually(() => breakers.state('twilio-sandbox').state === 'closed', 'the breaker closed again');
  });

});

describe('10,000 bad requests interleaved with good ones', () => {
  let h: Harness;
  beforeAll(async () => {
    // Room in the DLQ for 10,000 dead letters (a full DLQ refuses them, and the work waits).
    h = await Harness.create('fuzz', { HERALD_STORAGE_BUDGET_MB: '1024' });
    await h.load([{ type: 'user', tenant: 'acme', id: 'good', locale: 'en', timezone: 'UTC' }]);
    await h.start();
  });
  afterAll(async () => h?.close());

  function badRequest(i: number): Uint8Array | string {
    const base = { tenant: 'acme', idempotency_key: `bad-${i}`, tier: 'social', category: 'c', content: { title: 't', body: 'b' }, recipients: { user_ids: ['good'] } };
    const rnd = (n: number) => Math.floor(Math.random() * n);
    switch (i % 8) {
      case 0: return JSON.stringify({ [`k${rnd(1e6)}`]: rnd(1e6), nested: [rnd(9), { x: null }] });
      case 1: return JSON.stringify({ ...base, category: rnd(100), recipients: 'everyone' });
      case 2: return JSON.stringify({ ...base, content: { title: 'x'.repeat(10_000), body: 'b' } });
      case 3: return Buffer.from([0x7b, 0x22, 0xff, 0xfe, 0x22, 0x3a, 0x31, 0x7d]);
      case 4: { const { tenant: _, recipients: __, ...rest } = base; return JSON.stringify(rest); }
      case 5: return JSON.stringify({ ...base, tier: 'urgent' });
      case 6: return Buffer.from(Array.from({ length: 64 }, () => rnd(256)));
      default: return JSON.stringify({ ...base, send_at: 'tomorrow', channels: ['fax'] });
    }
  }

  it('rejects each with a clear reason, never crashes, and delivers every good request', async () => {
    const pending: Promise<unknown>[] = [];
    for (let i = 0; i < 10_000; i++) {
      pending.push(publishRaw(h.nats.js, h.topology, 'social', badRequest(i)));
      if (i % 100 === 0) {
        pending.push(h.publish({
          tenant: 'acme', idempotency_key: `good-${i}`, tier: 'social', category: 'c',
          content: { title: `good ${i}`, body: 'b' }, recipients: { user_ids: ['good'] }, channels: ['inapp'],
        }));
      }
      if (pending.length > 500) await Promise.all(pending.splice(0));
    }
    await Promise.all(pending);
    await eventually(async () => {
      const n = (await h.inbox.list('acme', 'good', 200)).length;
      return n === 100;
    }, '100 good requests delivered', 60_000, 1000);
    const rejected = await eventually(async () => {
      const [row] = await (await h.clickhouse.query({
        query: `SELECT count() AS n, countIf(reason = '') AS blank FROM ${h.config.clickhouseDatabase}.receipts WHERE status = 'rejected'`,
        format: 'JSONEachRow',
      })).json<{ n: string; blank: string }>();
      return Number(row.n) === 10_000 ? row : null;
    }, '10,000 rejected receipts', 60_000, 500);
    expect(Number(rejected.blank)).toBe(0);
    // Every bad request was settled once: nothing left pending, nothing redelivered.
    const ci = await h.nats.jsm.consumers.info(h.topology.intakeStream('social'), 'validate_social');
    expect([ci.num_pending, ci.num_ack_pending, ci.num_redelivered]).toEqual([0, 0, 0]);
    expect((await h.nats.jsm.streams.info(h.topology.dlqStream)).state.messages).toBe(10_000);
    const sample = await listDeadLetters(h.nats.jsm, h.topology, { stage: 'validate', limit: 16 });
    expect(sample.map((d) => d.problems.join('; ')).join('\n')).toMatch(/tier|content.title|not UTF-8 JSON|recipients/);
    expect(h.pipeline!.runners.length).toBeGreaterThan(0);
    expect(await fetchReady(h)).toBe(true);
  });
});

async function fetchReady(h: Harness): Promise<boolean> {
  return !h.pipeline!.nats.nc.isClosed() && h.pipeline!.redis.status === 'ready';
}
