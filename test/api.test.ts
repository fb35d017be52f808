import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ApiServer } from '../http/api.js';
import { runHerald } from './child.js';
import { eventually, Harness } from './harness.js';

describe('the HTTP API: keys, sending, and the walls between tenants', () => {
  let h: Harness;
  let api: ApiServer;
  let base: string;
  const herald = (...args: string[]) => runHerald(h.config, args);
  /** A key made the way an operator makes one. */
  const newKey = async (...args: string[]) => JSON.parse((await herald('keys', 'create', '--json', ...args)).stdout) as { id: string; key: string; tenant: string };
  const post = (key: string | undefined, body: unknown, headers: Record<string, string> = {}) => fetch(`${base}/v1/notifications`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(key ? { authorization: `Bearer ${key}` } : {}), ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  const stored = async () => (await h.nats.jsm.streams.info(h.topology.intakeStream('transactional'))).state.last_seq;
  const request = (title: string) => ({
    tier: 'transactional', category: 'api', content: { title, body: 'b' }, recipients: { user_ids: ['u1'] }, channels: ['email', 'inapp'],
  });

  beforeAll(async () => {
    h = await Harness.create('api');
    await h.load([
      { type: 'user', tenant: 'acme', id: 'u1', email: 'u1@acme.test' },
      { type: 'user', tenant: 'globex', id: 'u1', email: 'u1@globex.test' },
    ]);
    await h.start();
    ({ api, base } = await h.api());
  }, 60_000);
  afterAll(async () => {
    await api?.close();
    await h?.close();
  });

  it('takes a request with a key made by `herald keys create`, answers 202, and delivers it', async () => {
    const { key, tenant } = await newKey('--tenant', 'acme', '--name', 'backend');
    expect(tenant).toBe('acme');
    const res = await post(key, request('Over HTTP'), { 'idempotency-key': 'http-1' });
    expect(res.status).toBe(202);
    const body = await res.json() as { id: string; status_url: string };
    expect(body.status_url).toBe(`/v1/notifications/${body.id}`);
    await eventually(() => h.smtp.to('u1@acme.test').some((m) => m.subject === 'Over HTTP'), 'the email');
    await eventually(async () => (await h.inbox.list('acme', 'u1')).some((e) => e.title === 'Over HTTP'), 'the inbox entry');
    expect(h.smtp.to('u1@globex.test')).toEqual([]);
  });

  it('answers 409 with the original id for a repeated idempotency key, and takes the same key from another tenant', async () => {
    const acme = await newKey('--tenant', 'acme');
    const globex = await newKey('--tenant', 'globex');
    const first = await (await post(acme.key, request('Once'), { 'idempotency-key': 'same' })).json() as { id: string };
    const again = await post(acme.key, { ...request('Once'), idempotency_key: 'same' });
    expect(again.status).toBe(409);
    expect(await again.json()).toMatchObject({ id: first.id, status_url: `/v1/notifications/${first.id}` });
    expect((await post(globex.key, request('Once'), { 'idempotency-key': 'same' })).status).toBe(202);
    await eventually(() => h.smtp.to('u1@globex.test').some((m) => m.subject === 'Once'), 'globex\'s email');
    await eventually(() => h.smtp.to('u1@acme.test').some((m) => m.subject === 'Once'), 'acme\'s email');
    await new Promise((r) => setTimeout(r, 500));
    expect(h.smtp.messages.filter((m) => m.subject === 'Once')).toHaveLength(2);
  });

  it('refuses a missing, unknown or revoked key (401), another tenant\'s name or a missing scope (403)', async () => {
    const before = await stored();
    expect((await post(undefined, request('x'), { 'idempotency-key': 'k' })).status).toBe(401);
    expect((await post('hk_AAAAAAAAAAAAAAAA_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA', request('x'), { 'idempotency-key': 'k' })).status).toBe(401);
    const acme = await newKey('--tenant', 'acme');
    const crossing = await post(acme.key, { ...request('x'), tenant: 'globex' }, { 'idempotency-key': 'k' });
    expect(crossing.status).toBe(403);
    expect((await crossing.json() as { detail: string }).detail).toMatch(/belongs to tenant "acme"/);
    const reader = await newKey('--tenant', 'acme', '--scopes', 'read');
    const unscoped = await post(reader.key, request('x'), { 'idempotency-key': 'k' });
    expect(unscoped.status).toBe(403);
    expect((await unscoped.json() as { detail: string }).detail).toMatch(/"send" scope/);
    await herald('keys', 'revoke', acme.id);
    // Replicas cache a key for at most a second.
    await new Promise((r) => setTimeout(r, 1_100));
    expect((await post(acme.key, request('x'), { 'idempotency-key': 'k2' })).status).toBe(401);
    const listed = JSON.parse((await herald('keys', 'list', '--tenant', 'acme', '--json')).stdout) as { id: string; revokedAt?: number }[];
    expect(listed.find((k) => k.id === acme.id)?.revokedAt).toBeGreaterThan(0);
    // The secret is everything after `hk_<id>_` (base64url: it may hold "_" itself).
    expect(JSON.stringify(listed)).not.toContain(acme.key.slice(`hk_${acme.id}_`.length));
    expect(await stored()).toBe(before);
  });

  it('names each bad field (400, problem+json), refuses a body over 256 KB (413) and bad JSON (400), publishing nothing', async () => {
    const { key } = await newKey('--tenant', 'acme');
    const before = await stored();
    const bad = await post(key, { tier: 'urgent', category: 5, content: { title: 't' }, recipients: { user_ids: [] } });
    expect(bad.status).toBe(400);
    expect(bad.headers.get('content-type')).toMatch(/application\/problem\+json/);
    const errors = (await bad.json() as { errors: string[] }).errors.join('\n');
    for (const field of ['idempotency_key', 'tier', 'category', 'content', 'recipients']) expect(errors).toContain(field);
    const huge = await post(key, { ...request('x'), data: { blob: 'x'.repeat(300_000) } }, { 'idempotency-key': 'huge' });
    expect(huge.status).toBe(413);
    expect(huge.headers.get('content-type')).toMatch(/application\/problem\+json/);
    expect((await post(key, '{"tier": ', { 'idempotency-key': 'broken' })).status).toBe(400);
    expect((await fetch(`${base}/v1/nowhere`, { headers: { authorization: `Bearer ${key}` } })).status).toBe(404);
    expect(await stored()).toBe(before);
  });

  it('limits a key to its rate: 429 with Retry-After, then 202 again after waiting', async () => {
    const { key } = await newKey('--tenant', 'acme', '--rate', '10');
    const started = Date.now();
    const answers = await Promise.all(Array.from({ length: 30 }, (_, i) => post(key, request(`burst ${i}`), { 'idempotency-key': `burst-${i}` })));
    const seconds = (Date.now() - started) / 1000;
    const limited = answers.filter((r) => r.status === 429);
    const accepted = answers.filter((r) => r.status === 202).length;
    // The burst of 10, plus what the bucket refilled (10/s) while the 30 were answered.
    expect(accepted).toBeGreaterThanOrEqual(10);
    expect(accepted).toBeLessThanOrEqual(10 + Math.ceil(seconds * 10));
    expect(limited.length).toBe(30 - accepted);
    expect(Number(limited[0].headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    expect(limited[0].headers.get('ratelimit-limit')).toBe('10');
    await new Promise((r) => setTimeout(r, Number(limited[0].headers.get('retry-after')) * 1_000));
    expect((await post(key, request('after the wait'), { 'idempotency-key': 'burst-after' })).status).toBe(202);
  });

  it('keeps the directory per tenant: a key reads and changes only its own tenant\'s users and devices', async () => {
    const acme = await newKey('--tenant', 'acme', '--scopes', 'send,read,directory');
    const globex = await newKey('--tenant', 'globex', '--scopes', 'directory');
    const call = (key: string, method: string, url: string, body?: unknown) => fetch(`${base}${url}`, {
      method, headers: { authorization: `Bearer ${key}`, ...(body ? { 'content-type': 'application/json' } : {}) }, ...(body ? { body: JSON.stringify(body) } : {}),
    });
    // Same user id in both tenants: each key sees its own.
    expect(await (await call(acme.key, 'GET', '/v1/users/u1')).json()).toMatchObject({ id: 'u1', email: 'u1@acme.test' });
    expect(await (await call(globex.key, 'GET', '/v1/users/u1')).json()).toMatchObject({ id: 'u1', email: 'u1@globex.test' });
    // A partial PUT keeps the fields not given; the other tenant's user is untouched.
    expect((await call(acme.key, 'PUT', '/v1/users/u1', { locale: 'fr', timezone: 'Europe/Paris' })).status).toBe(200);
    expect(await (await call(acme.key, 'GET', '/v1/users/u1')).json()).toMatchObject({ email: 'u1@acme.test', locale: 'fr', timezone: 'Europe/Paris' });
    expect(await (await call(globex.key, 'GET', '/v1/users/u1')).json()).toMatchObject({ email: 'u1@globex.test', locale: 'en', timezone: 'UTC' });
    const bad = await call(acme.key, 'PUT', '/v1/users/u1', { timezone: 'Mars/Olympus', phone: '12' });
    expect(bad.status).toBe(400);
    expect((await bad.json() as { errors: string[] }).errors.join('\n')).toMatch(/timezone[\s\S]*phone|phone[\s\S]*timezone/);
    expect((await call(acme.key, 'PUT', '/v1/users/new-one', { email: 'new@acme.test' })).status).toBe(201);
    expect((await call(globex.key, 'GET', '/v1/users/new-one')).status).toBe(404);
    // Devices: registered twice is one device; another tenant cannot remove it.
    for (let i = 0; i < 2; i++) expect((await call(acme.key, 'POST', '/v1/users/u1/devices', { platform: 'ios', token: 'tok-acme-1' })).status).toBe(201);
    expect((await (await call(acme.key, 'GET', '/v1/users/u1')).json() as { devices: unknown[] }).devices).toEqual([{ token: 'tok-acme-1', platform: 'ios', active: true, last_seen_at: expect.any(String) }]);
    expect((await call(acme.key, 'POST', '/v1/users/u1/devices', { platform: 'pager', token: 't' })).status).toBe(400);
    expect((await call(globex.key, 'DELETE', '/v1/users/u1/devices/tok-acme-1')).status).toBe(404);
    expect((await call(acme.key, 'DELETE', '/v1/users/u1/devices/tok-acme-1')).status).toBe(204);
    expect((await (await call(acme.key, 'GET', '/v1/users/u1')).json() as { devices: unknown[] }).devices).toEqual([]);
    // A key without the directory scope may read (read scope) but not change.
    const sender = await newKey('--tenant', 'acme', '--scopes', 'send');
    expect((await call(sender.key, 'PUT', '/v1/users/u1', { locale: 'de' })).status).toBe(403);
    expect((await call(sender.key, 'GET', '/v1/users/u1')).status).toBe(403);
  });

  it('sets preferences and topic members per tenant, and the pipeline follows them', async () => {
    const acme = await newKey('--tenant', 'acme', '--scopes', 'send,read,directory');
    const globex = await newKey('--tenant', 'globex', '--scopes', 'send,directory');
    const call = (key: string, method: string, url: string, body?: unknown) => fetch(`${base}${url}`, {
      method, headers: { authorization: `Bearer ${key}`, ...(body ? { 'content-type': 'application/json' } : {}) }, ...(body ? { body: JSON.stringify(body) } : {}),
    });
    const set = await call(acme.key, 'PUT', '/v1/users/u1/preferences', {
      preferences: [{ channel: 'email', category: 'promo', enabled: false }], quiet_hours: { start: '22:00', end: '07:00' },
    });
    expect(set.status).toBe(200);
    expect(await set.json()).toEqual({ preferences: { 'email:promo': false }, quiet_hours: '22:00-07:00', hard_stop: false });
    expect((await call(acme.key, 'PUT', '/v1/users/u1/preferences', { quiet_hours: null })).status).toBe(200);
    expect(await (await call(acme.key, 'GET', '/v1/users/u1/preferences')).json()).toEqual({ preferences: { 'email:promo': false }, quiet_hours: null, hard_stop: false });
    const bad = await call(acme.key, 'PUT', '/v1/users/u1/preferences', { preferences: [{ channel: 'fax', enabled: 'no' }], quiet_hours: { start: '25:00' }, colour: 'red' });
    expect(bad.status).toBe(400);
    const errors = (await bad.json() as { errors: string[] }).errors.join('\n');
    for (const where of ['colour', 'preferences[0].channel', 'preferences[0].enabled', 'quiet_hours.start']) expect(errors).toContain(where);
    // Both tenants have a topic "news"; each key fills only its own.
    expect((await call(acme.key, 'PUT', '/v1/topics/news/members/u1')).status).toBe(204);
    expect((await call(globex.key, 'PUT', '/v1/topics/news/members/u1')).status).toBe(204);
    expect((await call(globex.key, 'DELETE', '/v1/topics/news/members/u1')).status).toBe(204);
    const promo = { tier: 'marketing', category: 'promo', content: { title: 'Promo news', body: 'b' }, recipients: { topic: 'news' }, channels: ['email', 'inapp'] };
    expect((await post(acme.key, promo, { 'idempotency-key': 'promo-1' })).status).toBe(202);
    expect((await post(globex.key, promo, { 'idempotency-key': 'promo-1' })).status).toBe(202);
    await eventually(async () => (await h.inbox.list('acme', 'u1')).some((e) => e.title === 'Promo news'), 'acme\'s member got it in-app');
    await eventually(async () => (await h.receipts("category = 'promo' AND status = 'suppressed' AND tenant = 'acme'")).length === 1, 'acme\'s email suppressed by the preference');
    await new Promise((r) => setTimeout(r, 1_000));
    expect(h.smtp.messages.filter((m) => m.subject === 'Promo news')).toEqual([]);
    expect((await h.inbox.list('globex', 'u1')).some((e) => e.title === 'Promo news')).toBe(false);
  });

  it('cancels a scheduled request of the key\'s own tenant only', async () => {
    const acme = await newKey('--tenant', 'acme');
    const globex = await newKey('--tenant', 'globex');
    const later = new Date(Date.now() + 2_000).toISOString();
    const mine = await (await post(acme.key, { ...request('Cancelled'), send_at: later }, { 'idempotency-key': 'to-cancel' })).json() as { id: string };
    const theirs = await (await post(globex.key, { ...request('Not cancelled'), send_at: later }, { 'idempotency-key': 'to-cancel' })).json() as { id: string };
    // globex names acme's id: it can only ever cancel its own request of that id (none here).
    expect((await fetch(`${base}/v1/notifications/${mine.id}/cancel`, { method: 'POST', headers: { authorization: `Bearer ${globex.key}` } })).status).toBe(202);
    expect((await fetch(`${base}/v1/notifications/${mine.id}/cancel`, { method: 'POST', headers: { authorization: `Bearer ${acme.key}` } })).status).toBe(202);
    expect(theirs.id).not.toBe(mine.id);
    await eventually(() => h.smtp.to('u1@globex.test').some((m) => m.subject === 'Not cancelled'), 'globex\'s scheduled email', 15_000);
    await eventually(async () => (await h.receipts(`request_id = '${mine.id}' AND status = 'cancelled'`)).length > 0, 'acme\'s cancelled receipt', 15_000);
    expect(h.smtp.to('u1@acme.test').filter((m) => m.subject === 'Cancelled')).toEqual([]);
  });

  it('answers 5,000 fuzzed requests each with a 4xx and a reason: no 5xx, nothing published', async () => {
    const { key } = await newKey('--tenant', 'acme', '--rate', '100000');
    const before = await stored();
    const rnd = (n: number) => Math.floor(Math.random() * n);
    const deep = (n: number) => `${'['.repeat(n)}${']'.repeat(n)}`;
    const shapes: (() => { method: string; url: string; headers: Record<string, string>; body?: string })[] = [
      () => ({ method: 'POST', url: '/v1/notifications', headers: { 'idempotency-key': `f${rnd(1e9)}` }, body: JSON.stringify({ ...request('t'), tier: rnd(5) }) }),
      () => ({ method: 'POST', url: '/v1/notifications', headers: {}, body: JSON.stringify({ category: 'c' }) }),
      () => ({ method: 'POST', url: '/v1/notifications', headers: { 'idempotency-key': 'x' }, body: JSON.stringify({ ...request('t'), recipients: { user_ids: 'u1' } }) }),
      () => ({ method: 'POST', url: '/v1/notifications', headers: { 'idempotency-key': 'x' }, body: '{"tier": "transactional", ' }),
      () => ({ method: 'POST', url: '/v1/notifications', headers: { 'idempotency-key': 'x' }, body: deep(5_000 + rnd(50_000)) }),
      () => ({ method: 'POST', url: '/v1/notifications', headers: { 'idempotency-key': 'x' }, body: JSON.stringify({ ...request('t'), data: { d: JSON.parse(`${'{"a":'.repeat(40)}1${'}'.repeat(40)}`) } }) }),
      () => ({ method: 'POST', url: '/v1/notifications', headers: { 'idempotency-key': 'x' }, body: JSON.stringify({ ...request('t'), content: { title: '{{#each @root.a}}x{{/each}}', body: 'b' } }) }),
      () => ({ method: 'POST', url: '/v1/notifications', headers: { 'idempotency-key': 'x', 'content-type': 'text/plain' }, body: 'hello' }),
      () => ({ method: 'POST', url: '/v1/notifications', headers: { 'idempotency-key': 'x', authorization: 'Basic Zm9vOmJhcg==' }, body: '{}' }),
      () => ({ method: 'POST', url: '/v1/notifications', headers: { 'idempotency-key': 'x', authorization: `Bearer ${key}x` }, body: '{}' }),
      () => ({ method: ['GET', 'PATCH', 'DELETE', 'PUT'][rnd(4)], url: '/v1/notifications', headers: {} }),
      () => ({ method: 'GET', url: `/v1/${'x'.repeat(rnd(2_000))}?q=${rnd(100)}`, headers: {} }),
      () => ({ method: 'PUT', url: `/v1/users/${'u'.repeat(129 + rnd(100))}`, headers: {}, body: '{}' }),
      () => ({ method: 'PUT', url: '/v1/users/u1', headers: {}, body: JSON.stringify([1, 2, 3]) }),
      () => ({ method: 'POST', url: '/v1/users/u1/devices', headers: {}, body: JSON.stringify({ platform: 'ios', token: 5 }) }),
      () => ({ method: 'POST', url: '/v1/notifications', headers: { 'idempotency-key': 'x' }, body: 'null' }),
    ];
    const statuses = new Map<number, number>();
    let withoutReason = 0;
    for (let i = 0; i < 5_000; i += 50) {
      await Promise.all(Array.from({ length: 50 }, async () => {
        const shape = shapes[rnd(shapes.length)]();
        const headers: Record<string, string> = { authorization: `Bearer ${key}`, 'content-type': 'application/json', ...shape.headers };
        const res = await fetch(`${base}${shape.url}`, { method: shape.method, headers, ...(shape.body !== undefined ? { body: shape.body } : {}) });
        statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
        const text = await res.text();
        if (!/"detail":"[^"]+/.test(text)) withoutReason++;
      }));
    }
    console.log(`fuzzed API answers: ${JSON.stringify(Object.fromEntries(statuses))}`);
    expect([...statuses.keys()].every((s) => s >= 400 && s < 500)).toBe(true);
    expect(withoutReason).toBe(0);
    expect(await stored()).toBe(before);
    // Still serving.
    expect((await post(key, request('after the fuzz'), { 'idempotency-key': 'after-fuzz' })).status).toBe(202);
  }, 120_000);
});
