import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ApiServer } from '../http/api.js';
import { ApiKeys, type ApiScope } from '../stores/api-keys.js';
import { Directory } from '../stores/directory.js';
import { erasedUserId } from '../stores/erasure.js';
import type { ApnsFake } from '../sinks/fakes/apns-fake.js';
import { eventually, Harness } from './harness.js';
import { RequestStatuses } from '../stores/request-status.js';
import { receiptSchema, type StoredReceipt } from '../schemas/index.js';

const DAY = 86_400_000;

describe('the HTTP API: status, deliveries, bulk members, stale devices and erasure', () => {
  let h: Harness;
  let api: ApiServer;
  let base: string;
  let apns: ApnsFake;
  const key = async (tenant: string, scopes: ApiScope[] = ['send', 'read', 'directory']) =>
    (await new ApiKeys(h.redis, h.topology.keys).create({ tenant, scopes, ratePerSecond: 10_000 })).secret;
  const call = async (k: string, method: string, url: string, body?: unknown, headers: Record<string, string> = {}) => {
    const res = await fetch(`${base}${url}`, {
      method,
      headers: { authorization: `Bearer ${k}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}), ...headers },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
    const text = await res.text();
    return { status: res.status, body: (text ? JSON.parse(text) : null) as any };
  };
  const send = (k: string, idempotencyKey: string, request: Record<string, unknown>) =>
    call(k, 'POST', '/v1/notifications', { tier: 'transactional', category: 'api', content: { title: 'T', body: 'B' }, ...request }, { 'idempotency-key': idempotencyKey });

  beforeAll(async () => {
    h = await Harness.create('apistatus', { HERALD_DEVICE_SWEEP_MS: '200' });
    await h.load([
      { type: 'user', tenant: 'acme', id: 'ada', email: 'ada@acme.test' },
      { type: 'user', tenant: 'acme', id: 'bob' },
      ...Array.from({ length: 5 }, (_, i) => ({ type: 'user' as const, tenant: 'acme', id: `p${i}`, email: `p${i}@acme.test` })),
      { type: 'user', tenant: 'globex', id: 'ada', email: 'ada@globex.test' },
    ]);
    const pipeline = await h.start();
    apns = pipeline.providers!.fakes.apns!;
    ({ api, base } = await h.api());
  }, 60_000);
  afterAll(async () => {
    await api?.close();
    await h?.close();
  });

  it('tells where a notification stands, with counts per channel and outcome, long before ClickHouse would', async () => {
    const acme = await key('acme');
    const posted = await send(acme, 'status-1', { recipients: { user_ids: ['ada', 'bob'] }, channels: ['email', 'inapp'] });
    expect(posted.status).toBe(202);
    const { id } = posted.body;
    // Right after the 202 it is known (queued, or already further along).
    const first = await call(acme, 'GET', `/v1/notifications/${id}`);
    expect(first.status).toBe(200);
    expect(['queued', 'processing', 'completed']).toContain(first.body.status);
    await eventually(() => h.smtp.to('ada@acme.test').length === 1, 'the email');
    const done = await eventually(async () => {
      const s = await call(acme, 'GET', `/v1/notifications/${id}`);
      return s.body.status === 'completed' ? s.body : null;
    }, 'status completed', 5_000, 50);
    expect(done).toMatchObject({
      id, tier: 'transactional', category: 'api', send_at: null, recipients: 2,
      counts: { email: { dispatched: 1, delivered: 1, suppressed: 1 }, inapp: { dispatched: 2, delivered: 2 } },
    });
    expect(Date.parse(done.accepted_at)).toBeGreaterThan(0);
    // Every receipt of the request recorded again (a redelivered batch, a re-emission after a crash): nothing changes.
    const again: StoredReceipt[] = [];
    const reader = await h.nats.js.consumers.get(h.topology.receiptsStream);
    const info = await h.nats.jsm.streams.info(h.topology.receiptsStream);
    for await (const m of await reader.fetch({ max_messages: info.state.messages, expires: 2_000 })) {
      again.push(...m.json<{ receipts: StoredReceipt[] }>().receipts.filter((r) => r.request_id === id));
      if (m.seq >= info.state.last_seq) break;
    }
    expect(again.length).toBeGreaterThanOrEqual(4);
    await new RequestStatuses(h.redis, h.topology.keys).record(again.map((r) => receiptSchema.parse(r)));
    expect((await call(acme, 'GET', `/v1/notifications/${id}`)).body).toEqual({ ...done, updated_at: done.updated_at });
    // Another tenant's key never sees it.
    const globex = await key('globex');
    expect((await call(globex, 'GET', `/v1/notifications/${id}`)).status).toBe(404);
    expect((await call(globex, 'GET', `/v1/notifications/${id}/deliveries`)).status).toBe(404);
    expect((await call(acme, 'GET', '/v1/notifications/nope')).status).toBe(404);
    // A send-only key may not read.
    expect((await call(await key('acme', ['send']), 'GET', `/v1/notifications/${id}`)).status).toBe(403);
  });

  it('counts each recipient once per step however the receipts group them: repeated, regrouped, overlapping', async () => {
    const statuses = new RequestStatuses(h.redis, h.topology.keys);
    const users = (from: number, to: number) => Array.from({ length: to - from }, (_, i) => `fan${from + i}`);
    const receipt = (status: string, user_ids: string[], extra: Record<string, unknown> = {}) => receiptSchema.parse({
      ts: Date.now(), stage: 'dispatch', status, request_id: 'regrouped', tenant: 'acme', tier: 'social', category: 'news',
      channel: 'inapp', provider: 'inbox', user_ids, count: user_ids.length, ...extra,
    });
    await statuses.record([
      receiptSchema.parse({ ts: Date.now(), stage: 'validate', status: 'accepted', request_id: 'regrouped', tenant: 'acme', tier: 'social', category: 'news', channels: ['inapp'] }),
      receiptSchema.parse({ ts: Date.now(), stage: 'resolve', status: 'resolved', request_id: 'regrouped', tenant: 'acme', tier: 'social', category: 'news', count: 3_500 }),
      // More than one script slice of ids (a thousand at a time) in one receipt.
      receipt('delivered', users(0, 3_000)),
    ]);
    // The same users again in other groupings (a redelivered batch split differently), and 500 new ones.
    await statuses.record([receipt('delivered', users(2_500, 3_500)), receipt('delivered', users(0, 3_000)), receipt('delivered', users(1_000, 1_001))]);
    await statuses.record([receipt('failed', users(3_499, 3_500), { reason: 'x' })]);
    const status = await statuses.get('acme', 'regrouped');
    expect(status?.counts).toEqual({ inapp: { delivered: 3_500, failed: 1 } });
    // Terminal per channel counted the same way: 3,501 steps ended (one user both delivered and failed, as recorded).
    expect(await h.redis.hget(h.topology.keys.tenant('acme', 'status', 'regrouped'), 't:inapp')).toBe('3501');
    // One id per recipient step, plus validate's and resolve's two.
    expect(await h.redis.scard(h.topology.keys.tenant('acme', 'status-seen', 'regrouped'))).toBe(3_504);
  });

  it('keeps a status, its seen ids and its push-done set for 7 days after its latest receipt', async () => {
    const statuses = new RequestStatuses(h.redis, h.topology.keys);
    const [status, seen, push] = ['status', 'status-seen', 'status-push'].map((kind) => h.topology.keys.tenant('acme', kind, 'expiring'));
    const base = { stage: 'dispatch', request_id: 'expiring', tenant: 'acme', tier: 'social', category: 'news', channel: 'push', provider: 'apns', user_id: 'ada', count: 1 };
    const t0 = Date.now();
    await statuses.record([
      receiptSchema.parse({ ts: t0, stage: 'validate', status: 'accepted', request_id: 'expiring', tenant: 'acme', tier: 'social', category: 'news', channels: ['push'] }),
      receiptSchema.parse({ ...base, ts: t0, status: 'delivered', unit: 'ada/d1' }),
    ]);
    const week = 7 * 86_400;
    for (const key of [status, seen, push]) expect(await h.redis.ttl(key)).toBeGreaterThan(week - 60);
    // Shortened by hand, then a later receipt: its expiries start again.
    for (const key of [status, seen, push]) await h.redis.expire(key, 1_000);
    // Four units in one call: d2 twice, d1 seen before, d4 new.
    const later = (unit: string) => receiptSchema.parse({ ...base, ts: t0 + 1_000, status: 'delivered', unit });
    await statuses.record([later('ada/d2'), later('ada/d2'), later('ada/d1'), later('ada/d4')]);
    for (const key of [status, seen, push]) expect(await h.redis.ttl(key)).toBeGreaterThan(week - 60);
    const got = await statuses.get('acme', 'expiring');
    expect(got?.counts).toEqual({ push: { delivered: 3 } });
    expect(got?.updated_at).toBe(new Date(t0 + 1_000).toISOString());
    expect(got?.accepted_at).toBe(new Date(t0).toISOString());
    // Push counts a recipient done once, whatever number of devices.
    expect(await h.redis.scard(push)).toBe(1);
  });

  it('shows a scheduled request as scheduled, and a cancelled one as cancelled', async () => {
    const acme = await key('acme');
    const later = new Date(Date.now() + 60_000).toISOString();
    const { id } = (await send(acme, 'sched-1', { recipients: { user_ids: ['ada'] }, channels: ['email'], send_at: later })).body;
    const scheduled = await eventually(async () => {
      const s = await call(acme, 'GET', `/v1/notifications/${id}`);
      return s.body.status === 'scheduled' ? s.body : null;
    }, 'status scheduled', 5_000, 50);
    expect(scheduled.send_at).toBe(later);
    expect((await call(acme, 'POST', `/v1/notifications/${id}/cancel`, {})).status).toBe(202);
    // The cancel takes effect when the request comes up; it is due in a minute, so send one due now.
    const soon = new Date(Date.now() + 1_500).toISOString();
    const second = (await send(acme, 'sched-2', { recipients: { user_ids: ['ada'] }, channels: ['email'], send_at: soon })).body.id;
    expect((await call(acme, 'POST', `/v1/notifications/${second}/cancel`, {})).status).toBe(202);
    const cancelled = await eventually(async () => {
      const s = await call(acme, 'GET', `/v1/notifications/${second}`);
      return s.body.status === 'cancelled' ? s.body : null;
    }, 'status cancelled', 15_000, 100);
    expect(cancelled.counts).not.toHaveProperty('email.delivered');
  });

  it('lists every step of every recipient, a page at a time, each once, and per user', async () => {
    const acme = await key('acme');
    const users = Array.from({ length: 5 }, (_, i) => `p${i}`);
    const { id } = (await send(acme, 'deliveries-1', { recipients: { user_ids: users }, channels: ['email', 'inapp'] })).body;
    // accepted + resolved (request level), then per user: email dispatched/delivered, inapp dispatched/delivered.
    const expected = 2 + users.length * 4;
    await eventually(async () => (await h.receipts(`request_id = '${id}'`)).length === expected, 'every receipt loaded');
    const seen: string[] = [];
    let cursor: string | null = null;
    let pages = 0;
    do {
      const page: { status: number; body: any } = await call(acme, 'GET', `/v1/notifications/${id}/deliveries?limit=3${cursor ? `&cursor=${cursor}` : ''}`);
      expect(page.status).toBe(200);
      expect(page.body.data.length).toBeLessThanOrEqual(3);
      for (const d of page.body.data) seen.push(`${d.stage}/${d.status}/${d.channel}/${d.user_id}`);
      cursor = page.body.next_cursor;
      pages++;
    } while (cursor);
    expect(pages).toBe(Math.ceil(expected / 3));
    expect(new Set(seen).size).toBe(expected);
    expect(seen).toContain('validate/accepted//');
    expect(seen).toContain('dispatch/delivered/email/p3');
    const one = await call(acme, 'GET', `/v1/notifications/${id}/deliveries?user_id=p3`);
    expect(one.status, JSON.stringify(one.body)).toBe(200);
    expect(one.body.data.map((d: { status: string; channel: string }) => `${d.channel}/${d.status}`).sort())
      .toEqual(['email/delivered', 'email/dispatched', 'inapp/delivered', 'inapp/dispatched']);
    expect(one.body.next_cursor).toBeNull();
    const bad = await call(acme, 'GET', `/v1/notifications/${id}/deliveries?limit=0&cursor=zzz&colour=red`);
    expect(bad.status).toBe(400);
    expect(bad.body.errors.join('\n')).toMatch(/limit[\s\S]*cursor[\s\S]*colour/);
  });

  it('fills and empties a topic in bulk, per tenant, and the fan-out follows it to completion', async () => {
    const acme = await key('acme');
    const members = Array.from({ length: 3_000 }, (_, i) => `m${String(i).padStart(4, '0')}`);
    const added = await call(acme, 'POST', '/v1/topics/bulk-news/members', { add: members });
    expect(added).toEqual({ status: 200, body: { added: 3_000, removed: 0 } });
    const removed = await call(acme, 'POST', '/v1/topics/bulk-news/members', { remove: members.slice(0, 1_000) });
    expect(removed.body).toEqual({ added: 0, removed: 1_000 });
    expect(await h.directory.topicSize('acme', 'bulk-news')).toBe(2_000);
    expect(await h.directory.topicSize('globex', 'bulk-news')).toBe(0);
    const tooMany = await call(acme, 'POST', '/v1/topics/bulk-news/members', { add: Array(10_001).fill('x'), remove: [''], extra: 1 });
    expect(tooMany.status).toBe(400);
    expect(tooMany.body.errors.join('\n')).toMatch(/extra[\s\S]*add: a list of at most 10,000[\s\S]*remove\[0\]/);
    await h.load(members.slice(1_000).map((id) => ({ type: 'user' as const, tenant: 'acme', id })));
    const { id } = (await send(acme, 'bulk-1', { tier: 'social', recipients: { topic: 'bulk-news' }, channels: ['inapp'] })).body;
    const done = await eventually(async () => {
      const s = await call(acme, 'GET', `/v1/notifications/${id}`);
      return s.body.status === 'completed' ? s.body : null;
    }, 'the fan-out completed', 30_000, 100);
    expect(done.recipients).toBe(2_000);
    expect(done.counts.inapp.delivered).toBe(2_000);
  });

  it('deactivates a device not seen for the stale limit, and pushes only to the one registered over HTTP', async () => {
    const acme = await key('acme');
    await h.load([{ type: 'user', tenant: 'acme', id: 'phone-user' }]);
    // A device last registered 61 days ago (the default limit is 60).
    await new Directory(h.redis, h.topology.keys, () => Date.now() - 61 * DAY).upsert([{ type: 'device', tenant: 'acme', user_id: 'phone-user', platform: 'ios', token: 'cd'.repeat(32) }]);
    const fresh = await call(acme, 'POST', '/v1/users/phone-user/devices', { platform: 'ios', token: 'ef'.repeat(32) });
    expect(fresh.status).toBe(201);
    const user = await eventually(async () => {
      const u = (await call(acme, 'GET', '/v1/users/phone-user')).body;
      return u.devices.some((d: { active: boolean }) => !d.active) ? u : null;
    }, 'the sweep to deactivate the stale device', 10_000);
    const byToken = Object.fromEntries(user.devices.map((d: { token: string }) => [d.token, d]));
    expect(byToken['cd'.repeat(32)]).toMatchObject({ active: false, deactivated_reason: expect.stringMatching(/^stale: not seen for 60 days \(last seen /) });
    expect(byToken['ef'.repeat(32)]).toMatchObject({ active: true });
    expect(Date.now() - Date.parse(byToken['ef'.repeat(32)].last_seen_at)).toBeLessThan(60_000);
    await send(acme, 'push-1', { recipients: { user_ids: ['phone-user'] }, channels: ['push'], content: { title: 'Ping', body: 'b' } });
    await eventually(() => apns.script.delivered('ef'.repeat(32)).length === 1, 'the push to the fresh device');
    await new Promise((r) => setTimeout(r, 500));
    expect(apns.script.delivered('cd'.repeat(32))).toEqual([]);
  });

  it('gives a key of one tenant 404 on every endpoint touching another tenant\'s data, and changes nothing of it', async () => {
    const a = await key('acme');
    const b = await key('globex');
    await h.load([
      { type: 'user', tenant: 'globex', id: 'only-b', email: 'only-b@globex.test' },
      { type: 'device', tenant: 'globex', user_id: 'only-b', platform: 'ios', token: 'b-token' },
      { type: 'topic_member', tenant: 'globex', topic: 'b-topic', user_id: 'only-b' },
    ]);
    const bRequest = (await send(b, 'b-1', { recipients: { user_ids: ['only-b'] }, channels: ['email'] })).body.id;
    await eventually(async () => (await call(b, 'GET', `/v1/notifications/${bRequest}`)).body.status === 'completed', 'b\'s request completed');
    const bStatus = (await call(b, 'GET', `/v1/notifications/${bRequest}`)).body;
    const bUser = (await call(b, 'GET', '/v1/users/only-b')).body;
    const answers: Record<string, number> = {
      'GET status': (await call(a, 'GET', `/v1/notifications/${bRequest}`)).status,
      'GET deliveries': (await call(a, 'GET', `/v1/notifications/${bRequest}/deliveries`)).status,
      'GET user': (await call(a, 'GET', '/v1/users/only-b')).status,
      'GET preferences': (await call(a, 'GET', '/v1/users/only-b/preferences')).status,
      'DELETE device': (await call(a, 'DELETE', '/v1/users/only-b/devices/b-token')).status,
    };
    expect(answers).toEqual({ 'GET status': 404, 'GET deliveries': 404, 'GET user': 404, 'GET preferences': 404, 'DELETE device': 404 });
    // A percent-encoded path reaches the same route, and the same check: no key, no answer (never a 500).
    expect((await fetch(`${base}/%761/notifications/${bRequest}`)).status).toBe(401);
    expect((await fetch(`${base}/v1/users/only-b%2F..`, { headers: { authorization: `Bearer ${a}` } })).status).toBe(404);
    // Writes name ids in the key's own tenant: they land there, never in the other.
    await call(a, 'POST', `/v1/notifications/${bRequest}/cancel`, {});
    await call(a, 'PUT', '/v1/users/only-b', { email: 'intruder@acme.test' });
    await call(a, 'PUT', '/v1/users/only-b/preferences', { hard_stop: true });
    await call(a, 'POST', '/v1/users/only-b/devices', { platform: 'ios', token: 'intruder-token' });
    await call(a, 'DELETE', '/v1/topics/b-topic/members/only-b');
    await call(a, 'POST', '/v1/topics/b-topic/members', { remove: ['only-b'], add: ['intruder'] });
    await call(a, 'DELETE', '/v1/users/only-b');
    expect((await call(b, 'GET', '/v1/users/only-b')).body).toEqual(bUser);
    expect(await h.directory.topicsOf('globex', 'only-b')).toEqual(['b-topic']);
    expect(await h.directory.topicPage('globex', 'b-topic', undefined, 10)).toEqual(['only-b']);
    expect((await call(b, 'GET', `/v1/notifications/${bRequest}`)).body).toEqual(bStatus);
    // Its receipts keep the user id (acme's erasure of "only-b" is acme's alone); the loader may be a moment behind.
    await eventually(async () => (await h.receipts(`tenant = 'globex' AND user_id = 'only-b' AND status = 'delivered'`)).length === 1, 'b\'s receipt, not anonymised');
  });

  it('erases a user: nothing left in Redis, the inbox gone, receipts anonymised, later requests suppressed', async () => {
    const acme = await key('acme');
    const victim = 'erase-me';
    await h.load([
      { type: 'user', tenant: 'acme', id: victim, email: 'erase-me@acme.test', phone: '+15550199' },
      { type: 'device', tenant: 'acme', user_id: victim, platform: 'android', token: 'erase-me-token' },
      { type: 'preference', tenant: 'acme', user_id: victim, channel: 'sms', enabled: false },
      { type: 'topic_member', tenant: 'acme', topic: 'erasure-topic', user_id: victim },
      { type: 'topic_member', tenant: 'acme', topic: 'erasure-topic', user_id: 'ada' },
      // The same id in another tenant is someone else: untouched.
      { type: 'user', tenant: 'globex', id: victim, email: 'other@globex.test' },
    ]);
    const before = (await send(acme, 'erase-1', { tier: 'marketing', category: 'promo', recipients: { user_ids: [victim] }, channels: ['email', 'inapp'] })).body.id;
    await eventually(async () => (await h.receipts(`request_id = '${before}' AND status = 'delivered'`)).length === 2, 'the deliveries before erasure');
    await h.redis.set(h.topology.keys.tenant('acme', 'cap', 'promo', '2026-12-01', victim), '1');
    const rowsBefore = (await h.receipts(`tenant = 'acme' AND user_id = '${victim}'`)).length;
    expect(rowsBefore).toBeGreaterThanOrEqual(4);

    const erased = await call(acme, 'DELETE', `/v1/users/${victim}`);
    expect(erased.status).toBe(202);
    expect(erased.body).toMatchObject({ user_id: victim, erasure_id: expect.any(String) });

    // Redis: no key names the user, no topic holds them.
    const left: string[] = [];
    let cursor = '0';
    do {
      const [next, keys] = await h.redis.scan(cursor, 'MATCH', `${h.topology.keys.root}acme:*`, 'COUNT', 1_000);
      left.push(...keys.filter((k) => k.includes(victim)));
      cursor = next;
    } while (cursor !== '0');
    expect(left).toEqual([]);
    expect(await h.redis.zscore(h.topology.keys.tenant('acme', 't', 'erasure-topic'), victim)).toBeNull();
    expect(await h.redis.zscore(h.topology.keys.tenant('acme', 't', 'erasure-topic'), 'ada')).not.toBeNull();
    expect(await h.inbox.list('acme', victim)).toEqual([]);
    expect((await call(acme, 'GET', `/v1/users/${victim}`)).status).toBe(404);
    expect((await h.directory.show('globex', victim)).email).toBe('other@globex.test');

    // ClickHouse: the rows still count, under a one-way hash.
    const hash = erasedUserId('acme', victim);
    await eventually(async () => (await h.receipts(`tenant = 'acme' AND user_id = '${victim}'`)).length === 0, 'the receipts anonymised', 30_000, 250);
    expect((await h.receipts(`tenant = 'acme' AND user_id = '${hash}'`)).length).toBe(rowsBefore);
    const listed = await call(acme, 'GET', `/v1/notifications/${before}/deliveries`);
    expect(JSON.stringify(listed.body)).not.toContain(victim);

    // A new request naming them is suppressed as unknown_user.
    const after = (await send(acme, 'erase-2', { recipients: { user_ids: [victim] }, channels: ['email'] })).body.id;
    await eventually(async () => (await h.receipts(`request_id = '${after}' AND status = 'suppressed' AND reason = 'unknown_user'`)).length === 1, 'the later request suppressed');
    expect(h.smtp.to('erase-me@acme.test')).toHaveLength(1);
  });
});
