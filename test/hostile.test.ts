import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { publishRaw } from '../runtime/producer.js';
import { listDeadLetters, originalOf } from '../streams/dead-letters.js';
import { envFor, HeraldProcess } from './child.js';
import { LoggedAttempts } from '../pipeline/attempts.js';
import { AttemptLog } from '../stores/attempts.js';
import { eventually, Harness } from './harness.js';

describe('hostile requests against a running herald', () => {
  let h: Harness;
  let herald: HeraldProcess;
  beforeAll(async () => {
    h = await Harness.create('hostile');
    await h.load([{ type: 'user', tenant: 'acme', id: 'calm', email: 'calm@acme.test', locale: 'en', timezone: 'UTC' }]);
    herald = new HeraldProcess(envFor(h.config));
    await herald.start();
  });
  afterAll(async () => {
    await herald?.stop('SIGKILL');
    await h?.close();
  });

  it('rejects the template bomb and 5,000-deep data at once, stays up, and delivers the request behind them', async () => {
    const a = Array.from({ length: 60 }, (_, i) => i);
    const bomb = '{{#each @root.a}}{{#each @root.a}}{{#each @root.a}}{{#each @root.a}}XXXXXXXXXXXXXXXX{{/each}}{{/each}}{{/each}}{{/each}}';
    // Written out by hand: JSON.stringify of it would overflow this process's stack too.
    const deep = `${'{"d":'.repeat(5_000)}{"leaf":1}${'}'.repeat(5_000)}`;
    const base = { tenant: 'acme', tier: 'social', category: 'c', recipients: { user_ids: ['calm'] }, channels: ['email'] };
    const started = Date.now();
    await publishRaw(h.nats.js, h.topology, 'social', JSON.stringify({ ...base, idempotency_key: 'bomb', content: { title: bomb, body: 'b' }, data: { a } }));
    const deepRequest = JSON.stringify({ ...base, idempotency_key: 'deep', content: { title: 't', body: 'b' }, data: { deep: '#' } });
    await publishRaw(h.nats.js, h.topology, 'social', deepRequest.replace('"#"', deep));
    await h.publish({ ...base, tier: 'social', channels: ['email'], idempotency_key: 'calm', content: { title: 'After the storm', body: 'b' } });
    await eventually(() => h.smtp.to('calm@acme.test').some((m) => m.subject === 'After the storm'), 'the good request delivered', 30_000);
    const letters = await eventually(async () => {
      const d = await listDeadLetters(h.nats.jsm, h.topology, { stage: 'validate' });
      return d.length === 2 ? d : null;
    }, 'both rejections');
    expect(Date.now() - started).toBeLessThan(10_000);
    const problems = letters.map((d) => d.problems.join('; ')).join('\n');
    expect(problems).toMatch(/content\.title: only \{\{#if name\}\} and \{\{#unless name\}\} blocks/);
    expect(problems).toMatch(/data: data nested 17 levels deep; at most 16/);
    // Each was rejected once, on its first attempt.
    expect(letters.map((d) => d.attempts)).toEqual([1, 1]);
    const rejected = await eventually(async () => {
      const r = await h.receipts("status = 'rejected'");
      return r.length === 2 ? r : null;
    }, 'two rejected receipts');
    expect(rejected.map((r) => r.attempt)).toEqual([1, 1]);
    expect(herald.exitCode).toBeUndefined();
  });

  it('counts, in Redis, the starts of a redelivered message that never settled (the poison-pill count)', async () => {
    const attempts = new LoggedAttempts(new AttemptLog(h.redis, h.topology.keys));
    const id = 'validate_social:999';
    expect([await attempts.started(id), await attempts.started(id), await attempts.started(id)]).toEqual([0, 1, 2]);
    attempts.settled(id);
    await eventually(async () => (await attempts.started(id)) === 0, 'a nak resets the count');
    attempts.clear(id);
    await eventually(async () => (await h.redis.exists(h.topology.keys.internal('attempts', id))) === 0, 'cleared');
  });

  it('refuses a request over 2 MiB at publish, and dead-letters one just under it whole, redrivable', async () => {
    const huge = JSON.stringify({ tenant: 'acme', idempotency_key: 'huge', tier: 'social', category: 'c', recipients: { user_ids: ['calm'] }, padding: 'x'.repeat(2_200_000) });
    await expect(publishRaw(h.nats.js, h.topology, 'social', huge)).rejects.toThrow(/message size exceeds maximum allowed/);
    const almost = JSON.stringify({ tenant: 'acme', idempotency_key: 'almost', tier: 'social', category: 'c', recipients: { user_ids: ['calm'] }, padding: 'x'.repeat(2_090_000) });
    const ack = await publishRaw(h.nats.js, h.topology, 'social', almost);
    const letter = await eventually(async () => {
      const d = await listDeadLetters(h.nats.jsm, h.topology, { stage: 'validate', reason: 'rejected' });
      return d.find((x) => x.stream_seq === ack.seq) ?? null;
    }, 'the dead letter of the large request');
    expect(letter.stream).toBe(h.topology.intakeStream('social'));
    expect(letter.problems.join('\n')).toMatch(/padding/);
    expect(Buffer.from(await originalOf(h.nats.jsm, letter)).toString()).toBe(almost);
    // Settled once: nothing of it is left pending.
    const ci = await h.nats.jsm.consumers.info(h.topology.intakeStream('social'), 'validate_social');
    expect(ci.num_ack_pending).toBe(0);
  });

  it('does not wedge on receipts larger than a message: 3 × 10,000 unknown users on 4 channels, all counted, SIGTERM exits', async () => {
    for (const n of [1, 2, 3]) {
      await h.publish({
        tenant: 'acme', idempotency_key: `unknown-${n}`, tier: 'marketing', category: 'promo',
        content: { title: 'Nobody', body: 'b' }, recipients: { user_ids: Array.from({ length: 10_000 }, (_, i) => `ghost-${n}-${i}-${"x".repeat(110)}`) },
        channels: ['email', 'inapp', 'push', 'sms'],
      });
    }
    await eventually(async () => {
      const [row] = await (await h.clickhouse.query({
        query: `SELECT count() AS n FROM ${h.config.clickhouseDatabase}.receipts WHERE status = 'suppressed' AND category = 'promo'`,
        format: 'JSONEachRow',
      })).json<{ n: string }>();
      return Number(row.n) === 120_000;
    }, '120,000 suppressed receipts (3 requests × 10,000 users × 4 channels)', 60_000, 500);
    const ci = await h.nats.jsm.consumers.info(h.topology.intakeStream('marketing'), 'validate_marketing');
    expect([ci.num_pending, ci.num_ack_pending]).toEqual([0, 0]);
    expect(await herald.stop('SIGTERM')).toBe(0);
  });
});

describe('a full intake is one tier\'s problem', () => {
  let h: Harness;
  beforeAll(async () => {
    // 64 MB in all: the marketing intake gets 8 % of it (about 5 MB).
    h = await Harness.create('flood', { HERALD_STORAGE_BUDGET_MB: '64', HERALD_HOUSEKEEPING_MS: '200' });
    await h.load([{ type: 'user', tenant: 'acme', id: 'u', email: 'u@acme.test' }]);
  });
  afterAll(async () => h?.close());

  it('takes a password reset while a marketing flood fills its own intake, handles the flood, and frees its room', async () => {
    const promo = (i: number) => ({
      tenant: 'acme', idempotency_key: `promo-${i}`, tier: 'marketing' as const, category: 'promo',
      content: { title: 'Sale', body: 'Everything must go' }, data: { catalogue: 'x'.repeat(20_000) }, recipients: { user_ids: ['u'] }, channels: ['inapp' as const],
    });
    // Nothing runs yet: the flood stays in the marketing intake until it is full.
    let stored = 0;
    let refusal: Error | undefined;
    for (let i = 0; !refusal && i < 10_000; i++) {
      await h.publish(promo(i)).then(() => { stored++; }, (err: Error) => { refusal = err; });
    }
    expect(refusal?.message).toMatch(/maximum bytes exceeded/i);
    const ack = await h.publish({
      tenant: 'acme', idempotency_key: 'reset-1', tier: 'transactional', category: 'password-reset',
      content: { title: 'Reset', body: 'Your code is 123456' }, recipients: { user_ids: ['u'] }, channels: ['email'],
    });
    expect(ack.stream).toBe(h.topology.intakeStream('transactional'));
    await h.start();
    await eventually(() => h.smtp.messages.some((m) => m.subject === 'Reset'), 'the password reset delivered');
    await eventually(async () => (await h.inbox.list('acme', 'u', 1_000)).length === stored, 'the flood handled', 60_000, 250);
    const validate = await h.nats.jsm.consumers.info(h.topology.intakeStream('marketing'), 'validate_marketing');
    expect([validate.num_pending, validate.num_ack_pending]).toEqual([0, 0]);
    // Handled and copied to the replayable log, the flood leaves its intake: room for the next one.
    await eventually(async () => (await h.nats.jsm.streams.info(h.topology.intakeStream('marketing'))).state.messages === 0, 'the marketing intake trimmed', 30_000, 250);
    await h.publish(promo(stored + 1));
    await eventually(async () => (await h.nats.jsm.streams.info(h.topology.requestsStream)).state.messages === stored + 2, 'every request in the log');
    console.log(`marketing intake full after ${stored} requests of 20 KB; transactional took its request meanwhile`);
  }, 120_000);
});

