import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SmtpCatcher } from '../sinks/smtp-catcher.js';
import { queryFunnel, type FunnelRow } from '../cli/funnel.js';
import { publishRaw } from '../runtime/producer.js';
import { applyAll } from '../streams/apply.js';
import { Housekeeping } from '../pipeline/housekeeping.js';
import { Metrics } from '../pipeline/metrics.js';
import { receiptLoaderStage } from '../processors/receipt-loader.js';
import { receiptSchema } from '../schemas/index.js';
import type { StageDeps } from '../pipeline/deps.js';
import { envFor, HeraldProcess } from './child.js';
import { eventually, Harness } from './harness.js';
import { inboxSizes, loadTopic, memberId } from './topics.js';

/** One channel's row of the funnel, sandbox or not. */
function funnelOf(rows: FunnelRow[], tier: string, channel: string): Partial<FunnelRow> {
  const mine = rows.filter((r) => r.tier === tier && r.channel === channel);
  const out: Record<string, number> = {};
  for (const r of mine) for (const [k, v] of Object.entries(r)) if (typeof v === 'number') out[k] = (out[k] ?? 0) + v;
  return out as Partial<FunnelRow>;
}

describe('exact receipts: kill -9 three times during a 100,000-member in-app and 6,000-member email fan-out', () => {
  const members = 100_000;
  const catcher = new SmtpCatcher(undefined, false);
  // Email throttled so the run spans the kills; in-app goes as fast as it can.
  const env = { HERALD_INAPP_BROADCAST_THRESHOLD: '0', HERALD_ACK_WAIT_MS: '3000', HERALD_RATE_LIMITS: 'smtp=700', HERALD_MAX_ATTEMPTS: '1000' };
  let h: Harness;
  let herald: HeraldProcess;
  beforeAll(async () => {
    await catcher.start();
    h = await Harness.create('exact', { ...env, SMTP_URL: `smtp://127.0.0.1:${catcher.port}` });
    // 6,000 of the members have an email address, spread through the topic.
    await loadTopic(h, 'exact', 'all', members, (i) => ((i * 6_000) % members < 6_000 ? { email: `${memberId(i)}@exact.test` } : {}));
    herald = new HeraldProcess(envFor(h.config, env));
  }, 300_000);
  afterAll(async () => {
    await herald?.stop('SIGKILL');
    await h?.close();
    await catcher.close();
  });

  it('counts in the funnel exactly the deliveries made: one per inbox, one per distinct email recipient', async () => {
    const since = Date.now() - 1_000;
    await herald.start();
    await h.publish({
      tenant: 'exact', idempotency_key: 'all-1', tier: 'marketing', category: 'launch',
      content: { title: 'Launch', body: 'It is here' }, recipients: { topic: 'all' }, channels: ['inapp', 'email'],
    });
    const emailed = () => new Set(catcher.messages.flatMap((m) => m.to)).size;
    const kills: number[] = [];
    for (let k = 0; k < 3; k++) {
      await new Promise((r) => setTimeout(r, 700 + Math.random() * 1_500));
      kills.push(emailed());
      expect(await herald.stop('SIGKILL')).toBeNull();
      await herald.start();
    }
    await eventually(() => emailed() === 6_000, '6,000 distinct email recipients', 240_000, 500);
    await eventually(async () => (await inboxSizes(h, 'exact', members))[1] === members, 'every inbox holding the notification', 240_000, 1_000);
    expect(await inboxSizes(h, 'exact', members)).toEqual({ 1: members });
    const mails = catcher.messages.reduce((n, m) => n + m.to.length, 0);

    const counted = async () => {
      const rows = await queryFunnel(h.clickhouse, h.config.clickhouseDatabase, since);
      return { inapp: funnelOf(rows, 'marketing', 'inapp'), email: funnelOf(rows, 'marketing', 'email'), request: funnelOf(rows, 'marketing', '') };
    };
    await eventually(async () => {
      const c = await counted();
      return (c.inapp.delivered ?? 0) >= members && (c.email.delivered ?? 0) >= 6_000;
    }, 'the funnel to count every delivery', 240_000, 1_000);
    // Whatever is still on its way (a redelivered batch re-emitting its receipts) lands meanwhile.
    await new Promise((r) => setTimeout(r, 5_000));
    const c = await counted();
    const [raw] = await (await h.clickhouse.query({
      query: `SELECT count() AS rows, uniqExact(receipt_id) AS ids FROM ${h.config.clickhouseDatabase}.receipts WHERE status = 'delivered'`,
      format: 'JSONEachRow',
    })).json<{ rows: string; ids: string }>();
    console.log(`kill -9 at ${kills.join(', ')} emails; ${mails} emails to ${emailed()} recipients; ` +
      `delivered receipts loaded ${raw.rows} times for ${raw.ids} ids; funnel in-app ${c.inapp.delivered}, email ${c.email.delivered}`);
    expect(kills.filter((n) => n < 6_000).length).toBeGreaterThanOrEqual(2);
    expect(c.inapp.delivered).toBe(members);
    expect(c.email.delivered).toBe(6_000);
    expect(c.request.accepted).toBe(1);
    // Chunk-level rows count each chunk once, even the chunks resolved again after a kill.
    expect(c.request.resolved).toBe(members);
    expect(c.email.dispatched).toBeGreaterThanOrEqual(6_000);
  }, 600_000);
});

describe('exact receipts: repeats that JetStream does not catch', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await Harness.create('repeat');
    await h.load([
      { type: 'user', tenant: 'acme', id: 'u1', email: 'u1@acme.test' },
      { type: 'user', tenant: 'acme', id: 'u2', email: 'u2@acme.test' },
    ]);
    await h.start();
  });
  afterAll(async () => h?.close());

  it('counts a request published twice without Nats-Msg-Id once, and sends it once', async () => {
    const since = Date.now() - 1_000;
    const body = JSON.stringify({
      tenant: 'acme', idempotency_key: 'twice', tier: 'social', category: 'twice',
      content: { title: 'Twice', body: 'b' }, recipients: { user_ids: ['u1', 'u2'] }, channels: ['email', 'inapp'],
    });
    await publishRaw(h.nats.js, h.topology, 'social', body);
    await eventually(() => h.smtp.messages.length >= 2, 'the first two emails');
    await publishRaw(h.nats.js, h.topology, 'social', body);
    // The second copy is validated again (same request id, so the same receipt id), and its work
    // is dropped as a repeat further on.
    const accepts = async () => {
      const [row] = await (await h.clickhouse.query({
        query: `SELECT count() AS n FROM ${h.config.clickhouseDatabase}.receipts WHERE category = 'twice' AND status = 'accepted'`, format: 'JSONEachRow',
      })).json<{ n: string }>();
      return Number(row.n);
    };
    await eventually(async () => (await accepts()) === 2, 'both copies accepted', 30_000, 250);
    await eventually(async () => funnelOf(await queryFunnel(h.clickhouse, h.config.clickhouseDatabase, since), 'social', 'inapp').delivered === 2, 'in-app receipts');
    await new Promise((r) => setTimeout(r, 1_000));
    const rows = await queryFunnel(h.clickhouse, h.config.clickhouseDatabase, since);
    expect(h.smtp.messages).toHaveLength(2);
    expect(funnelOf(rows, 'social', '')).toMatchObject({ accepted: 1, resolved: 2 });
    expect(funnelOf(rows, 'social', 'email')).toMatchObject({ dispatched: 2, delivered: 2 });
    expect(funnelOf(rows, 'social', 'inapp')).toMatchObject({ dispatched: 2, delivered: 2 });
  });

  it('upgrades a receipts table made before receipt ids: old rows keep counting, identical old rows once', async () => {
    const db = `${h.config.clickhouseDatabase}_legacy`;
    await h.clickhouse.command({ query: `CREATE DATABASE IF NOT EXISTS ${db}` });
    // The table and view as Herald made them before receipts had ids.
    await h.clickhouse.command({
      query: `CREATE TABLE ${db}.receipts (event_time DateTime, event_ms UInt16, event_date Date DEFAULT toDate(event_time), stage String,
        status String, request_id String, tenant String, tier String, category String, channel String, provider String, user_id String,
        reason String, attempt UInt16, latency_ms UInt32, count UInt32) ENGINE = MergeTree() PARTITION BY toYYYYMM(event_date) ORDER BY (tenant, request_id, event_time)`,
    });
    await h.clickhouse.command({ query: `CREATE VIEW ${db}.funnel_daily AS SELECT event_date, tier, channel, sumIf(count, status = 'delivered') AS delivered FROM ${db}.receipts GROUP BY event_date, tier, channel` });
    const old = (user: string) => ({
      event_time: Math.floor(Date.now() / 1000), event_ms: 5, event_date: new Date().toISOString().slice(0, 10), stage: 'dispatch', status: 'delivered',
      request_id: 'old', tenant: 'acme', tier: 'social', category: 'old', channel: 'email', provider: 'smtp', user_id: user, reason: '', attempt: 1, latency_ms: 1, count: 1,
    });
    await h.clickhouse.insert({ table: `${db}.receipts`, values: [old('a'), old('b'), old('b')], format: 'JSONEachRow' });

    const results = await applyAll(h.nats, h.topology, h.clickhouse, db);
    expect(results.filter((r) => r.kind === 'clickhouse' && r.action === 'updated').map((r) => r.name).sort()).toEqual([`${db}.funnel_daily`, `${db}.receipts`]);
    // Applying again changes nothing.
    expect((await applyAll(h.nats, h.topology, h.clickhouse, db)).filter((r) => r.kind === 'clickhouse' && r.action !== 'unchanged')).toEqual([]);
    // A new receipt loaded twice (a loader that crashed before its ack) counts once beside the old rows.
    const fresh = { ...old('c'), receipt_id: 'fresh-1' };
    await h.clickhouse.insert({ table: `${db}.receipts`, values: [fresh, fresh], format: 'JSONEachRow' });
    expect(funnelOf(await queryFunnel(h.clickhouse, db, 0), 'social', 'email').delivered).toBe(3);
    const [daily] = await (await h.clickhouse.query({ query: `SELECT delivered FROM ${db}.funnel_daily`, format: 'JSONEachRow' })).json<{ delivered: string }>();
    expect(Number(daily.delivered)).toBe(3);
    await h.clickhouse.command({ query: `DROP DATABASE ${db}` });
  });
});

describe('exact receipts: the one limit, watched', () => {
  let h: Harness;
  // 64 MB in all: RECEIPTS gets a fifth (about 13 MB). No pipeline runs, so no loader takes anything.
  beforeAll(async () => { h = await Harness.create('backlog', { HERALD_STORAGE_BUDGET_MB: '64' }); });
  afterAll(async () => h?.close());

  it('loads receipts whose text holds tabs, newlines, backslashes, quotes, NULs and any script, exactly as sent', async () => {
    const odd = ['tab\there', 'line\nbreak\r\n', 'back\\slash \\t', "quote ' \" `", 'nul\0byte', 'ü 😀 中文'];
    const loader = receiptLoaderStage.create({}, { clickhouse: h.clickhouse, clickhouseDatabase: h.config.clickhouseDatabase } as StageDeps);
    await loader.processBatch!([{ receipts: odd.map((text, i) => receiptSchema.parse({
      ts: 1_780_000_000_000 + i, stage: 'dispatch', status: 'failed', request_id: 'odd', tenant: 'acme', tier: 'social', category: text, user_ids: [text, `u${i}`], reason: text,
    })) }], {} as never);
    const rows = await (await h.clickhouse.query({
      query: `SELECT user_id, reason, category FROM ${h.config.clickhouseDatabase}.receipts WHERE request_id = 'odd' ORDER BY event_ms, user_id`, format: 'JSONEachRow',
    })).json<{ user_id: string; reason: string; category: string }>();
    expect(rows.filter((r) => !r.user_id.startsWith('u')).map((r) => [r.user_id, r.reason, r.category])).toEqual(odd.map((t) => [t, t, t]));
    expect(rows).toHaveLength(odd.length * 2);
  });

  it('measures the loader\'s backlog against RECEIPTS\' room, and counts and logs receipts dropped unloaded', async () => {
    const metrics = new Metrics();
    const errors: unknown[] = [];
    const log = { warn: () => undefined, error: (o: unknown) => errors.push(o) } as never;
    const housekeeping = new Housekeeping(h.nats.jsm, h.topology, metrics, log, { trimIntake: false });
    const batch = (n: number) => JSON.stringify({ receipts: Array.from({ length: 1_000 }, (_, i) => ({
      ts: Date.now(), stage: 'dispatch', status: 'delivered', request_id: `r${n}`, tenant: 'acme', tier: 'social', category: 'c', user_id: `u${i}`, reason: 'x'.repeat(200),
    })) });
    for (let n = 0; n < 20; n++) await h.nats.js.publish(h.topology.receipt('delivered'), batch(n));
    await housekeeping.once();
    const value = async (name: string) => (await metrics.registry.getSingleMetric(name)!.get()).values[0]?.value ?? 0;
    const half = await value('herald_receipts_backlog_ratio');
    expect(half).toBeGreaterThan(0.2);
    expect(half).toBeLessThan(1);
    expect(await value('herald_receipts_dropped_unloaded_total')).toBe(0);
    // Past its room, RECEIPTS drops the oldest, loaded or not: that is counted and said.
    for (let n = 20; n < 80; n++) await h.nats.js.publish(h.topology.receipt('delivered'), batch(n));
    await housekeeping.once();
    const dropped = await value('herald_receipts_dropped_unloaded_total');
    const first = (await h.nats.jsm.streams.info(h.topology.receiptsStream)).state.first_seq;
    expect(dropped).toBe(first - 1);
    expect(dropped).toBeGreaterThan(0);
    expect(errors).toHaveLength(1);
    // Counted once: a later round adds only what was dropped since.
    await housekeeping.once();
    expect(await value('herald_receipts_dropped_unloaded_total')).toBe(dropped);
    expect(await value('herald_receipts_backlog_ratio')).toBeGreaterThan(0.9);
  });
});

