import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Harness, eventually } from './harness.js';
import { HeraldProcess, envFor, runHerald } from './child.js';
import { requestIdFor } from '../runtime/ids.js';
import type { NotificationRequest, Receipt } from '../schemas/index.js';
import { queryFunnel } from '../cli/funnel.js';

const la = 'America/Los_Angeles';

describe('quiet hours with a controllable clock', () => {
  let h: Harness;
  // The pipeline's clock: real time shifted by `offset`, so a test can jump to any local time.
  let offset = 0;
  const setClock = (iso: string) => { offset = Date.parse(iso) - Date.now(); };
  const now = () => Date.now() + offset;

  beforeAll(async () => {
    h = await Harness.create('quiet', { HERALD_DEFER_RECHECK_MS: '200' });
    await h.load([
      { type: 'user', tenant: 'acme', id: 'night-owl', email: 'owl@acme.test', timezone: la },
      { type: 'quiet_hours', tenant: 'acme', user_id: 'night-owl', start: '22:00', end: '07:00' },
      { type: 'user', tenant: 'acme', id: 'early-bird', email: 'bird@acme.test', timezone: la },
    ]);
    await h.start({ now });
  }, 60_000);
  afterAll(() => h?.close());

  const send = (key: string, tier: NotificationRequest['tier']) => h.publish({
    tenant: 'acme', idempotency_key: key, tier, category: key, content: { title: key, body: 'b' },
    recipients: { user_ids: ['night-owl'] }, channels: ['email'],
  });
  const mails = (subject: string) => h.smtp.messages.filter((m) => m.subject === subject);

  async function deferredUntilMorning(key: string, evening: string, morning: string) {
    setClock(evening);
    await send(key, 'social');
    const [deferred] = await eventually(() => h.receipts(`category = '${key}' AND status = 'deferred'`).then((r) => r.length && r), `${key}: deferred receipt`);
    expect(deferred.reason).toBe(`quiet_hours until ${new Date(Date.parse(morning)).toISOString()}`);
    // A minute before the end of the window: still held.
    setClock(new Date(Date.parse(morning) - 60_000).toISOString());
    await new Promise((r) => setTimeout(r, 1_500));
    expect(mails(key)).toHaveLength(0);
    setClock(morning);
    await eventually(() => mails(key).length === 1, `${key}: delivered once the window ends`, 10_000);
    const deliveredAt = await eventually(async () => {
      const rows = await (await h.clickhouse.query({
        query: `SELECT toUnixTimestamp(event_time) * 1000 + event_ms AS at FROM ${h.config.clickhouseDatabase}.receipts WHERE category = '${key}' AND status = 'delivered'`,
        format: 'JSONEachRow',
      })).json<{ at: string }>();
      return rows.length && Number(rows[0].at);
    }, `${key}: delivered receipt`);
    expect(deliveredAt).toBeGreaterThanOrEqual(Date.parse(morning));
    expect(deliveredAt - Date.parse(morning)).toBeLessThan(5_000);
  }

  it('delivers a social notification sent at 23:30 local at 07:00 local', async () => {
    // 23:30 PST on 21 November is 07:30 UTC on the 22nd; 07:00 PST is 15:00 UTC.
    await deferredUntilMorning('owl-nov', '2026-11-22T07:30:00Z', '2026-11-22T15:00:00Z');
  }, 60_000);

  it('does the same across the spring-forward night (07:00 PDT comes an hour sooner)', async () => {
    await deferredUntilMorning('owl-dst', '2026-03-08T07:30:00Z', '2026-03-08T14:00:00Z');
  }, 60_000);

  it('sends at once to a user without quiet hours and later to one inside them, from the same chunk', async () => {
    setClock('2026-11-22T07:30:00Z');
    await h.publish({
      tenant: 'acme', idempotency_key: 'pair', tier: 'marketing', category: 'pair', content: { title: 'pair', body: 'b' },
      recipients: { user_ids: ['early-bird', 'night-owl'] }, channels: ['email'],
    });
    await eventually(() => mails('pair').length === 1, 'the early bird\'s email at once', 10_000);
    expect(mails('pair')[0].to).toEqual(['bird@acme.test']);
    // Seconds later in real time (inside JetStream's duplicate window), same chunk, same part number:
    // the held recipient's batch must not be taken for a repeat of the first.
    setClock('2026-11-22T15:00:00Z');
    await eventually(() => mails('pair').length === 2, 'the night owl\'s email at 07:00', 10_000);
    expect(mails('pair').map((m) => m.to[0]).sort()).toEqual(['bird@acme.test', 'owl@acme.test']);
  }, 30_000);

  it('shows the deferrals in the funnel', async () => {
    // The loader inserts about once a second: the last test's deferral may not be loaded yet.
    await eventually(() => h.receipts("category = 'pair' AND status = 'deferred'").then((r) => r.length === 1), 'the pair deferral loaded');
    const funnel = await queryFunnel(h.clickhouse, h.config.clickhouseDatabase, 0);
    const deferred = Object.fromEntries(funnel.filter((r) => r.deferred > 0).map((r) => [`${r.tier}/${r.channel}`, r.deferred]));
    // owl-nov, owl-dst (social) and the night owl's half of 'pair' (marketing).
    expect(deferred).toEqual({ 'marketing/email': 1, 'social/email': 2 });
  });

  it('delivers a transactional notification at 23:30 local at once', async () => {
    setClock('2026-11-22T07:30:00Z');
    await send('owl-reset', 'transactional');
    await eventually(() => mails('owl-reset').length === 1, 'the transactional email at night', 10_000);
    expect(await h.receipts("category = 'owl-reset' AND status = 'deferred'")).toEqual([]);
  }, 30_000);
});

describe('send_at', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await Harness.create('sendat');
    await h.load([{ type: 'user', tenant: 'acme', id: 'sched', email: 'sched@acme.test' }]);
  }, 60_000);
  afterAll(() => h?.close());

  const request = (key: string, extra: Partial<NotificationRequest>): NotificationRequest => ({
    tenant: 'acme', idempotency_key: key, tier: 'social', category: key, content: { title: key, body: 'b' },
    recipients: { user_ids: ['sched'] }, channels: ['email'], ...extra,
  });
  const arrival = (subject: string) => eventually(() => h.smtp.messages.find((m) => m.subject === subject)?.received_at, `${subject} delivered`, 15_000, 20);

  it('releases a request scheduled 5 s ahead between 5 and 6 s later', async () => {
    await h.start();
    const due = Date.now() + 5_000;
    await h.publish(request('at-5s', { send_at: new Date(due).toISOString() }));
    const lateBy = (await arrival('at-5s')) - due;
    console.log(`send_at: delivered ${lateBy} ms after its time`);
    expect(lateBy).toBeGreaterThanOrEqual(0);
    expect(lateBy).toBeLessThan(1_000);
  }, 30_000);

  it('still releases it on time when Herald restarts in between', async () => {
    const child = new HeraldProcess(envFor(h.config));
    await h.pipeline!.close();
    h.pipeline = undefined;
    await child.start();
    const due = Date.now() + 5_000;
    await h.publish(request('at-5s-restart', { send_at: new Date(due).toISOString() }));
    await new Promise((r) => setTimeout(r, 1_500));
    expect(await child.stop('SIGKILL')).toBeNull();
    await child.start();
    try {
      const lateBy = (await arrival('at-5s-restart')) - due;
      console.log(`send_at across a kill -9: delivered ${lateBy} ms after its time`);
      expect(lateBy).toBeGreaterThanOrEqual(0);
      expect(lateBy).toBeLessThan(1_000);
      await new Promise((r) => setTimeout(r, 1_000));
      expect(h.smtp.messages.filter((m) => m.subject === 'at-5s-restart')).toHaveLength(1);
    } finally {
      await child.stop();
    }
  }, 60_000);

  it('drops a scheduled request that is cancelled, or that expires before its time, with receipts', async () => {
    await h.start();
    await h.publish(request('at-cancel', { send_at: new Date(Date.now() + 2_000).toISOString() }));
    await h.nats.nc.request(h.topology.cancel, JSON.stringify({ tenant: 'acme', id: requestIdFor('acme', 'at-cancel') }));
    await h.publish(request('at-expire', { send_at: new Date(Date.now() + 2_000).toISOString(), expires_at: new Date(Date.now() + 1_000).toISOString() }));
    const statuses = await eventually(async () => {
      const rows = await h.receipts("category IN ('at-cancel', 'at-expire') AND status IN ('cancelled', 'expired')");
      return rows.length === 2 && rows.map((r) => `${r.category}:${r.status}`).sort();
    }, 'cancelled and expired receipts', 15_000, 250);
    expect(statuses).toEqual(['at-cancel:cancelled', 'at-expire:expired']);
    const funnel = await queryFunnel(h.clickhouse, h.config.clickhouseDatabase, 0);
    expect(funnel.reduce((n, r) => n + r.cancelled, 0)).toBe(1);
    expect(funnel.reduce((n, r) => n + r.expired, 0)).toBe(1);
    await new Promise((r) => setTimeout(r, 1_000));
    expect(h.smtp.messages.filter((m) => m.subject.startsWith('at-cancel') || m.subject.startsWith('at-expire'))).toEqual([]);
  }, 30_000);
});

describe('scheduled work waits off the live consumers', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await Harness.create('parked');
    await h.load([{ type: 'user', tenant: 'acme', id: 'u', email: 'u@acme.test' }]);
    await h.start();
  }, 60_000);
  afterAll(() => h?.close());

  const request = (key: string, tier: NotificationRequest['tier'], extra: Partial<NotificationRequest> = {}): NotificationRequest => ({
    tenant: 'acme', idempotency_key: key, tier, category: key, content: { title: key, body: 'b' },
    recipients: { user_ids: ['u'] }, channels: ['email'], ...extra,
  });

  /** Receipts of a status as they were published to RECEIPTS (every copy, before any counting). */
  async function published(status: string): Promise<Receipt[]> {
    const consumer = await h.nats.js.consumers.get(h.topology.receiptsStream, { filter_subjects: h.topology.receipt(status) });
    const info = await h.nats.jsm.streams.info(h.topology.receiptsStream, { subjects_filter: h.topology.receipt(status) });
    const want = Object.values(info.state.subjects ?? {}).reduce((a, b) => a + b, 0);
    const out: Receipt[] = [];
    for (let seen = 0; seen < want;) {
      const m = await consumer.next({ expires: 5_000 });
      if (!m) break;
      seen++;
      out.push(...(m.json<{ receipts: Receipt[] }>().receipts));
    }
    return out;
  }

  it('delivers a due request at once behind more scheduled ones than any tier\'s consumer holds', async () => {
    const inAnHour = new Date(Date.now() + 3_600_000).toISOString();
    // More than max_ack_pending of either tier's live consumers (2,000 and 1,000).
    const parked = [
      ...Array.from({ length: 2_500 }, (_, i) => request(`later-t-${i}`, 'transactional', { send_at: inAnHour })),
      ...Array.from({ length: 1_500 }, (_, i) => request(`later-m-${i}`, 'marketing', { send_at: inAnHour })),
    ];
    for (let i = 0; i < parked.length; i += 500) await Promise.all(parked.slice(i, i + 500).map((r) => h.publish(r)));
    await eventually(async () => {
      const [t, m] = await Promise.all(['transactional', 'marketing'].map((tier) => h.nats.jsm.consumers.info(h.topology.workStream(tier as 'marketing'), `schedule_${tier}`)));
      return t.num_ack_pending + t.num_pending === 2_500 && m.num_ack_pending + m.num_pending === 1_500;
    }, 'every scheduled request parked', 60_000, 250);
    const sent = Date.now();
    await h.publish(request('now-t', 'transactional'));
    await h.publish(request('now-m', 'marketing'));
    await eventually(() => h.smtp.messages.some((m) => m.subject === 'now-t') && h.smtp.messages.some((m) => m.subject === 'now-m'), 'both due requests delivered', 15_000, 50);
    console.log(`due requests behind 4,000 scheduled ones: delivered in ${Date.now() - sent} ms`);
    expect(h.smtp.messages.filter((m) => m.subject.startsWith('later-'))).toEqual([]);
    // The live consumers hold nothing of what is scheduled.
    for (const tier of ['transactional', 'marketing'] as const) {
      const live = await h.nats.jsm.consumers.info(h.topology.intakeStream(tier), `validate_${tier}`);
      expect([live.num_pending, live.num_ack_pending]).toEqual([0, 0]);
    }
  }, 120_000);

  it('says accepted once for a scheduled request, not again when it comes due', async () => {
    const due = Date.now() + 2_000;
    await h.publish(request('once', 'social', { send_at: new Date(due).toISOString() }));
    await eventually(() => h.smtp.messages.some((m) => m.subject === 'once'), 'the scheduled request delivered', 15_000, 50);
    const id = requestIdFor('acme', 'once');
    await eventually(async () => (await published('delivered')).some((r) => r.request_id === id), 'its delivered receipt published', 10_000, 250);
    expect((await published('accepted')).filter((r) => r.request_id === id)).toHaveLength(1);
    expect((await published('deferred')).filter((r) => r.request_id === id)).toHaveLength(1);
  }, 30_000);
});

describe('herald directory set / show', () => {
  let h: Harness;
  beforeAll(async () => { h = await Harness.create('dircli'); }, 60_000);
  afterAll(() => h?.close());

  const herald = (...args: string[]) => runHerald(h.config, args);

  it('sets preferences, quiet hours, devices and topics, and shows them', async () => {
    await herald('directory', 'set', 'ada', '--tenant', 'acme', '--email', 'ada@acme.test', '--timezone', 'Europe/Paris',
      '--pref', 'email:promo=off', '--quiet-hours', '22:00-07:00', '--device', 'ios:tok-1', '--topic', 'news', '--topic', 'launches');
    await herald('directory', 'set', 'ada', '--tenant', 'acme', '--locale', 'fr', '--leave-topic', 'launches');
    const { stdout } = await herald('directory', 'show', 'ada', '--tenant', 'acme', '--json');
    expect(JSON.parse(stdout)).toEqual({
      tenant: 'acme', id: 'ada', exists: true, email: 'ada@acme.test', locale: 'fr', timezone: 'Europe/Paris',
      quiet_hours: '22:00-07:00', hard_stop: false, preferences: { 'email:promo': false },
      devices: [{ token: 'tok-1', platform: 'ios', active: true, last_seen_at: expect.any(String) }], topics: ['news'],
    });
    const text = (await herald('directory', 'show', 'ada', '--tenant', 'acme')).stdout;
    expect(text).toContain('quiet hours: 22:00-07:00');
    // What the pipeline reads agrees with what was shown.
    const [profile] = await h.directory.profiles('acme', ['ada'], true);
    expect(profile).toMatchObject({ quietHours: '22:00-07:00', locale: 'fr', preferences: { 'email:promo': false } });
  }, 60_000);

  it('rejects a bad flag with the reason, changing nothing', async () => {
    const failed = await herald('directory', 'set', 'bob', '--tenant', 'acme', '--timezone', 'Mars/Olympus').then(() => null, (e) => e);
    expect(failed?.code).toBe(1);
    expect(failed?.stderr).toMatch(/timezone.*unknown IANA time zone/);
    const shown = await herald('directory', 'show', 'bob', '--tenant', 'acme', '--json').then(() => null, (e) => e);
    expect(JSON.parse(shown.stdout).exists).toBe(false);
  }, 30_000);
});
