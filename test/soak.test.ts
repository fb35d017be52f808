import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { queryFunnel } from '../cli/funnel.js';
import { publishRaw } from '../runtime/producer.js';
import type { NotificationRequest } from '../schemas/index.js';
import { envFor, HeraldProcess } from './child.js';
import { eventually, Harness } from './harness.js';

/**
 * Three tenants whose keys collided under the old `herald:{tenant}:{kind}:{id}` layout: the same
 * user ids in each, user ids holding the old separators, a tenant named like Herald's rate-limit
 * space, and the same idempotency keys everywhere.
 */
const tenants = ['a', 'rate', 'x'] as const;
const users = ['victim', 'u:victim', 'x:u:victim'] as const;
const emailOf = (tenant: string, user: string) => `${tenant}.${Buffer.from(user).toString('hex')}@soak.test`;

/** One hostile payload of each kind, in turn; each must be rejected once, with its reason. */
const hostileKinds: { name: string; reason: RegExp; make: (i: number) => string | Uint8Array }[] = [
  { name: 'template bomb', reason: /content\.title: only \{\{#if name\}\}/, make: (i) => JSON.stringify({
    ...base(i), content: { title: '{{#each @root.a}}{{#each @root.a}}{{#each @root.a}}XX{{/each}}{{/each}}{{/each}}', body: 'b' }, data: { a: Array.from({ length: 60 }, (_, n) => n) },
  }) },
  { name: 'log helper', reason: /only \{\{name\}\} placeholders/, make: (i) => JSON.stringify({ ...base(i), content: { title: '{{log "owned"}}', body: 'b' } }) },
  { name: 'deep data', reason: /data nested \d+ levels deep; at most 16/, make: (i) => JSON.stringify({ ...base(i), data: { d: '#' } }).replace('"#"', `${'{"d":'.repeat(200)}1${'}'.repeat(200)}`) },
  { name: 'tenant with the old separator', reason: /tenant: 1-64 of letters, digits, _ and -/, make: (i) => JSON.stringify({ ...base(i), tenant: 'a:u:x' }) },
  { name: 'tenant with a dot', reason: /tenant: 1-64 of letters, digits, _ and -/, make: (i) => JSON.stringify({ ...base(i), tenant: 'a.u' }) },
  { name: 'tier that does not exist', reason: /tier/, make: (i) => JSON.stringify({ ...base(i), tier: 'urgent' }) },
  { name: 'send_at centuries away', reason: /send_at: .* is more than 167 hours/, make: (i) => JSON.stringify({ ...base(i), send_at: '2400-01-01T00:00:00Z' }) },
  { name: 'not JSON', reason: /not UTF-8 JSON|JSON/, make: (i) => Buffer.from([0x7b, 0x22, 0xff, 0xfe, i % 256, 0x22, 0x3a, 0x31, 0x7d]) },
  { name: 'recipients of the wrong shape', reason: /recipients/, make: (i) => JSON.stringify({ ...base(i), recipients: 'everyone' }) },
];

function base(i: number) {
  return {
    tenant: tenants[i % 3], idempotency_key: `hostile-${i}`, tier: 'social', category: 'soak-bad',
    content: { title: 't', body: 'b' }, recipients: { user_ids: ['victim'] }, channels: ['email'],
  };
}

describe('a hostile-producer soak: 18,000 hostile requests and 2,000 good ones across colliding tenants', () => {
  let h: Harness;
  let herald: HeraldProcess;
  const goods = 2_000;
  const bads = 18_000;
  const huge = 10;
  beforeAll(async () => {
    // Room in the DLQ for every dead letter, each a copy of its request (a few of them 2 MiB).
    h = await Harness.create('soak', { HERALD_STORAGE_BUDGET_MB: '2048' });
    await h.load(tenants.flatMap((tenant) => users.map((id) => ({ type: 'user' as const, tenant, id, email: emailOf(tenant, id), locale: 'en', timezone: 'UTC' }))));
    herald = new HeraldProcess(envFor(h.config, { HERALD_STORAGE_BUDGET_MB: '2048' }));
    await herald.start();
  }, 60_000);
  afterAll(async () => {
    await herald?.stop('SIGKILL');
    await h?.close();
  });

  it('delivers every good request once to its own tenant\'s users, rejects every bad one once with its reason, and ends with nothing pending', async () => {
    const since = Date.now() - 1_000;
    const pid = herald.child!.pid;
    // Good request i goes to two users of one tenant; the same idempotency keys recur in every tenant.
    const good = (i: number): NotificationRequest => ({
      tenant: tenants[i % 3], idempotency_key: `k:${Math.floor(i / 3)}`, tier: 'social', category: 'soak',
      content: { title: `good ${i}`, body: 'b' }, recipients: { user_ids: [users[i % 3], users[(i + 1) % 3]] }, channels: ['email', 'inapp'],
    });
    const pending: Promise<unknown>[] = [];
    let g = 0;
    for (let i = 0; i < bads; i++) {
      pending.push(publishRaw(h.nats.js, h.topology, 'social', hostileKinds[i % hostileKinds.length].make(i)));
      if (i % 9 === 0) pending.push(h.publish(good(g++)));
      if (i % 1_800 === 0) {
        // Just under the largest request: dead-lettered whole.
        pending.push(publishRaw(h.nats.js, h.topology, 'social', JSON.stringify({ ...base(bads + i), idempotency_key: `huge-${i}`, padding: 'x'.repeat(2_000_000) })));
      }
      if (pending.length >= 500) await Promise.all(pending.splice(0));
    }
    await Promise.all(pending);
    expect(g).toBe(goods);

    // Every good request: one email to each of its two users, at its own tenant's address, and one inbox entry each.
    const expected = new Map<string, string[]>();
    for (let i = 0; i < goods; i++) {
      const r = good(i);
      expected.set(`good ${i}`, (r.recipients as { user_ids: string[] }).user_ids.map((u) => emailOf(r.tenant, u)).sort());
    }
    const goodMails = () => h.smtp.messages.filter((m) => m.subject.startsWith('good '));
    await eventually(() => goodMails().length >= goods * 2, `${goods * 2} emails`, 120_000, 500);
    await new Promise((r) => setTimeout(r, 2_000));
    const got = new Map<string, string[]>();
    for (const m of goodMails()) got.set(m.subject, [...(got.get(m.subject) ?? []), ...m.to]);
    for (const [subject, to] of got) got.set(subject, to.sort());
    expect(got).toEqual(expected);
    for (const tenant of tenants) {
      for (const user of users) {
        const inbox = await h.inbox.list(tenant, user, 1_000);
        const mine = [...expected].filter(([, to]) => to.includes(emailOf(tenant, user))).map(([subject]) => subject).sort();
        expect(inbox.map((e) => e.title).sort()).toEqual(mine);
      }
    }

    // Every bad request rejected once, each with a reason; nothing left pending anywhere; no restart.
    const funnel = await eventually(async () => {
      const rows = await queryFunnel(h.clickhouse, h.config.clickhouseDatabase, since);
      const sum = (k: 'rejected' | 'accepted') => rows.reduce((n, r) => n + r[k], 0);
      return sum('rejected') >= bads + huge && sum('accepted') >= goods && rows;
    }, 'every rejection and acceptance in the funnel', 120_000, 1_000);
    await new Promise((r) => setTimeout(r, 3_000));
    const rows = await queryFunnel(h.clickhouse, h.config.clickhouseDatabase, since);
    const total = (k: 'rejected' | 'accepted' | 'delivered', channel?: string) =>
      rows.filter((r) => channel === undefined || r.channel === channel).reduce((n, r) => n + r[k], 0);
    expect(funnel.length).toBeGreaterThan(0);
    expect(total('rejected')).toBe(bads + huge);
    expect(total('accepted')).toBe(goods);
    expect(total('delivered', 'email')).toBe(goods * 2);
    expect(total('delivered', 'inapp')).toBe(goods * 2);
    const [blank] = await (await h.clickhouse.query({
      query: `SELECT count() AS n FROM ${h.config.clickhouseDatabase}.receipts WHERE status = 'rejected' AND reason = ''`, format: 'JSONEachRow',
    })).json<{ n: string }>();
    expect(Number(blank.n)).toBe(0);
    const letters = (await h.nats.jsm.streams.info(h.topology.dlqStream)).state.messages;
    expect(letters).toBe(bads + huge);

    // Each kind got the reason that names its fault.
    const reasons = await (await h.clickhouse.query({
      query: `SELECT DISTINCT reason FROM ${h.config.clickhouseDatabase}.receipts WHERE status = 'rejected' LIMIT 10000`, format: 'JSONEachRow',
    })).json<{ reason: string }>();
    for (const kind of hostileKinds) {
      expect(reasons.some((r) => kind.reason.test(r.reason)), kind.name).toBe(true);
    }

    for await (const stream of h.nats.jsm.streams.list()) {
      if (!stream.config.name.startsWith(h.topology.requestsStream.replace(/REQUESTS$/, ''))) continue;
      for await (const ci of h.nats.jsm.consumers.list(stream.config.name)) {
        expect([ci.num_pending, ci.num_ack_pending], `${stream.config.name}/${ci.name}`).toEqual([0, 0]);
      }
    }
    expect(herald.exitCode).toBeUndefined();
    expect(herald.child!.pid).toBe(pid);
  }, 400_000);
});
