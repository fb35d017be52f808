import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectNats, type Nats } from '../runtime/connections.js';
import { ApiKeys } from '../stores/api-keys.js';
import { InboxStore } from '../stores/inbox.js';
import { INBOX_BATCH_FROM, NatsInboxEvents, type InboxBatchSignal } from '../pipeline/inbox-bus.js';
import { queryFunnel } from '../cli/funnel.js';
import { HeraldProcess, envFor, runHerald } from './child.js';
import { eventually, Harness } from './harness.js';

const HOUR = 3_600_000;

/** A Server-Sent Events client over fetch: every event it received, as it received them. */
async function openStream(url: string, headers: Record<string, string> = {}) {
  const abort = new AbortController();
  const res = await fetch(url, { headers, signal: abort.signal });
  const events: { event: string; id?: string; data: any }[] = [];
  const done = (async () => {
    const reader = res.body!.getReader();
    const decoder = new TextDecoder();
    let buffer = '';
    try {
      for (;;) {
        const { value, done: end } = await reader.read();
        if (end) return;
        buffer += decoder.decode(value, { stream: true });
        let cut: number;
        while ((cut = buffer.indexOf('\n\n')) >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          const fields: Record<string, string> = {};
          for (const line of block.split('\n')) {
            if (line.startsWith(':')) continue;
            const colon = line.indexOf(':');
            if (colon > 0) fields[line.slice(0, colon)] = line.slice(colon + 1).trimStart();
          }
          if (fields.event && fields.data) events.push({ event: fields.event, id: fields.id, data: JSON.parse(fields.data) });
        }
      }
    } catch {
      // aborted
    }
  })();
  return {
    status: res.status,
    events,
    notifications: () => events.filter((e) => e.event === 'notification'),
    lastCounts: () => [...events].reverse().find((e) => e.event === 'counts')?.data,
    close: async () => { abort.abort(); await done; },
  };
}

/** Users one delivery reaches together: enough for its live update to travel as one batch message. */
const CROWD = Array.from({ length: INBOX_BATCH_FROM + 4 }, (_, i) => `crowd${i}`);

describe('the in-app inbox for apps: feed, state, counts, live updates, engagement', () => {
  let h: Harness;
  let secondNats: Nats;
  let bases: string[];
  let tenantKey: string;
  let globexKey: string;
  /** The API's clock: tests move it to expire tokens and wake snoozed items. */
  let offset = 0;
  const now = () => Date.now() + offset;
  const herald = (...args: string[]) => runHerald(h.config, args);
  const call = async (auth: string, method: string, url: string, body?: unknown, base = bases[0]) => {
    const res = await fetch(`${base}${url}`, {
      method,
      headers: { authorization: `Bearer ${auth}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
    const text = await res.text();
    return { status: res.status, body: (text ? JSON.parse(text) : null) as any };
  };
  const userToken = async (user: string, tenant = 'acme', ttl_seconds = 3_600) =>
    (await call(tenant === 'acme' ? tenantKey : globexKey, 'POST', `/v1/users/${user}/token`, { ttl_seconds })).body.token as string;
  /** Items written straight into the inbox, as the in-app sink writes them, each arriving after the last. */
  let arrival = Date.now();
  const deliver = (tenant: string, users: string[], ids: string[], category = 'social') => h.inbox.write(tenant,
    ids.map((id) => ({ locale: 'en', content: { id, category, tier: 'social', title: `Title ${id}`, body: 'b', created_at: Date.now() } })),
    ids.flatMap((id) => { const at = (arrival = Math.max(arrival + 1, Date.now())); return users.map((userId) => ({ userId, locale: 'en', requestId: id, createdAt: at })); }));
  /** Every item of a feed, page by page (the recount the counts must equal). */
  const everything = async (auth: string, user: string, query = '') => {
    const seen: any[] = [];
    let cursor: string | null = null;
    do {
      const page: { body: any } = await call(auth, 'GET', `/v1/users/${user}/notifications?limit=100${query}${cursor ? `&cursor=${cursor}` : ''}`);
      seen.push(...page.body.data);
      cursor = page.body.next_cursor;
    } while (cursor);
    return seen;
  };

  beforeAll(async () => {
    h = await Harness.create('inbox', { HERALD_INAPP_BROADCAST_THRESHOLD: '3' });
    await h.load([
      ...['ada', 'bob', 'cy', 'dee', 'race', 'pager', 'live', 'fan1', 'fan2', 'fan3', 'quiet', ...CROWD].map((id) => ({ type: 'user' as const, tenant: 'acme', id, email: `${id}@acme.test` })),
      { type: 'user', tenant: 'globex', id: 'ada' },
      ...['fan1', 'fan2', 'fan3', 'quiet'].map((user_id) => ({ type: 'topic_member' as const, tenant: 'acme', topic: 'fans', user_id })),
      { type: 'preference', tenant: 'acme', user_id: 'quiet', channel: 'inapp', category: 'promo', enabled: false },
    ]);
    await h.start();
    secondNats = await connectNats(h.config, 'herald-test-replica-2');
    const replica = (nc: Nats['nc']) => h.api({ nc, now, sseHeartbeatMs: 500, userTokenRatePerSecond: 1_000 });
    const [a, b] = [await replica(h.nats.nc), await replica(secondNats.nc)];
    bases = [a.base, b.base];
    const keys = new ApiKeys(h.redis, h.topology.keys);
    tenantKey = (await keys.create({ tenant: 'acme', scopes: ['send', 'read', 'directory'], ratePerSecond: 10_000 })).secret;
    globexKey = (await keys.create({ tenant: 'globex', scopes: ['send', 'read', 'directory'], ratePerSecond: 10_000 })).secret;
  }, 60_000);
  afterAll(async () => {
    await h?.close();
    await secondNats?.nc.drain().catch(() => undefined);
  });

  it('gives a user token its own inbox and nothing else: 403 elsewhere, 401 when expired or forged', async () => {
    const token = await userToken('ada');
    const cliToken = JSON.parse((await herald('keys', 'user-token', '--tenant', 'acme', '--user', 'ada', '--ttl', '2h', '--json')).stdout) as { token: string; expires_at: string };
    expect(Date.parse(cliToken.expires_at) - Date.now()).toBeGreaterThan(1.9 * HOUR);
    await deliver('acme', ['ada'], ['tok-1']);
    for (const t of [token, cliToken.token]) {
      const mine = await call(t, 'GET', '/v1/users/ada/notifications');
      expect(mine.status).toBe(200);
      expect(mine.body.data.map((i: { id: string }) => i.id)).toContain('tok-1');
    }
    const refused = {
      'another user': (await call(token, 'GET', '/v1/users/bob/notifications')).status,
      'another user\'s item': (await call(token, 'PATCH', '/v1/users/bob/notifications/tok-1', { read: true })).status,
      'the directory': (await call(token, 'GET', '/v1/users/ada')).status,
      'sending': (await call(token, 'POST', '/v1/notifications', { tier: 'social', category: 'x', content: { title: 't', body: 'b' }, recipients: { user_ids: ['ada'] } })).status,
      'minting': (await call(token, 'POST', '/v1/users/ada/token', {})).status,
    };
    expect(refused).toEqual({ 'another user': 403, 'another user\'s item': 403, 'the directory': 403, sending: 403, minting: 403 });
    // A key that may only read reads inboxes, but neither changes them nor mints tokens for them.
    const reader = (await new ApiKeys(h.redis, h.topology.keys).create({ tenant: 'acme', scopes: ['read'] })).secret;
    expect((await call(reader, 'GET', '/v1/users/ada/notifications')).status).toBe(200);
    expect((await call(reader, 'PATCH', '/v1/users/ada/notifications/tok-1', { read: true })).status).toBe(403);
    expect((await call(reader, 'POST', '/v1/users/ada/token', {})).status).toBe(403);
    // The same user id in another tenant is someone else: a globex token sees globex's ada only.
    await deliver('globex', ['ada'], ['globex-only']);
    const theirs = await call(await userToken('ada', 'globex'), 'GET', '/v1/users/ada/notifications');
    expect(theirs.body.data.map((i: { id: string }) => i.id)).toEqual(['globex-only']);
    expect((await call(token, 'GET', '/v1/users/ada/notifications')).body.data.map((i: { id: string }) => i.id)).not.toContain('globex-only');
    // Forged: ada's token with another signature; expired: the clock two hours on.
    const forged = `${token.split('.').slice(0, 2).join('.')}.${'A'.repeat(43)}`;
    expect((await call(forged, 'GET', '/v1/users/ada/notifications')).status).toBe(401);
    offset = 2 * HOUR;
    try {
      const expired = await call(token, 'GET', '/v1/users/ada/notifications');
      expect(expired.status).toBe(401);
      expect(expired.body.detail).toMatch(/expired/);
    } finally {
      offset = 0;
    }
  });

  it('pages 250 items newest first with a cursor: none twice, none missed, while new ones arrive', async () => {
    const ids = Array.from({ length: 250 }, (_, i) => `page-${String(i).padStart(3, '0')}`);
    for (let i = 0; i < ids.length; i += 50) await deliver('acme', ['bob'], ids.slice(i, i + 50));
    const token = await userToken('bob');
    const seen: string[] = [];
    let cursor: string | null = null;
    let pages = 0;
    do {
      const page: { status: number; body: any } = await call(token, 'GET', `/v1/users/bob/notifications?limit=37${cursor ? `&cursor=${cursor}` : ''}`);
      expect(page.status).toBe(200);
      seen.push(...page.body.data.map((i: { id: string }) => i.id));
      cursor = page.body.next_cursor;
      // New items keep arriving between pages: they are newer, so they never shift what is left.
      await deliver('acme', ['bob'], [`late-${pages++}`]);
    } while (cursor);
    const originals = seen.filter((id) => id.startsWith('page-'));
    expect(originals).toHaveLength(250);
    expect(new Set(originals).size).toBe(250);
    expect(originals).toEqual([...ids].reverse());
    const bad = await call(token, 'GET', '/v1/users/bob/notifications?limit=101&cursor=nope&status=maybe&colour=red');
    expect(bad.status).toBe(400);
    expect(bad.body.errors.join('\n')).toMatch(/limit[\s\S]*status[\s\S]*colour|colour[\s\S]*limit/);
  });

  it('marks read (read implies seen), un-reads, archives, snoozes and wakes with the clock, filters by status', async () => {
    await deliver('acme', ['cy'], ['s-1', 's-2', 's-3', 's-4']);
    // Valid past the hour the clock moves below.
    const token = await userToken('cy', 'acme', 3 * 3_600);
    const feed = (query = '') => call(token, 'GET', `/v1/users/cy/notifications${query}`);
    expect((await feed()).body.counts).toEqual({ unseen: 4, unread: 4, total: 4 });
    const read = await call(token, 'PATCH', '/v1/users/cy/notifications/s-1', { read: true });
    expect(read.body.item).toMatchObject({ id: 's-1', read: true, seen: true });
    expect(read.body.counts).toEqual({ unseen: 3, unread: 3, total: 4 });
    await call(token, 'PATCH', '/v1/users/cy/notifications/s-2', { seen: true });
    expect((await feed()).body.counts).toEqual({ unseen: 2, unread: 3, total: 4 });
    expect((await feed('?status=unread')).body.data.map((i: { id: string }) => i.id)).toEqual(['s-4', 's-3', 's-2']);
    expect((await feed('?status=unseen')).body.data.map((i: { id: string }) => i.id)).toEqual(['s-4', 's-3']);
    expect((await call(token, 'PATCH', '/v1/users/cy/notifications/s-1', { read: false })).body.counts).toEqual({ unseen: 2, unread: 4, total: 4 });
    // Archived: out of the feed and its counts, listed with archived=true.
    await call(token, 'PATCH', '/v1/users/cy/notifications/s-3', { archived: true });
    expect((await feed()).body.counts).toEqual({ unseen: 1, unread: 3, total: 3 });
    expect((await feed('?archived=true')).body.data.map((i: { id: string }) => i.id)).toEqual(['s-3']);
    // Snoozed for an hour: gone; the clock past it: back, unseen and unread.
    await call(token, 'PATCH', '/v1/users/cy/notifications/s-2', { read: true });
    const until = new Date(Date.now() + HOUR).toISOString();
    const snoozed = await call(token, 'PATCH', '/v1/users/cy/notifications/s-2', { snoozed_until: until });
    expect(snoozed.body.counts).toEqual({ unseen: 1, unread: 2, total: 2 });
    expect((await feed()).body.data.map((i: { id: string }) => i.id)).toEqual(['s-4', 's-1']);
    offset = HOUR + 1_000;
    try {
      const woke = await feed();
      expect(woke.body.data.map((i: { id: string }) => i.id)).toEqual(['s-4', 's-2', 's-1']);
      expect(woke.body.data.find((i: { id: string }) => i.id === 's-2')).toMatchObject({ seen: false, read: false, snoozed_until: null });
      expect(woke.body.counts).toEqual({ unseen: 2, unread: 3, total: 3 });
      // Un-snooze at once (times on the API's clock, which stays an hour on).
      await call(token, 'PATCH', '/v1/users/cy/notifications/s-4', { snoozed_until: new Date(now() + HOUR).toISOString() });
      expect((await feed()).body.counts.total).toBe(2);
      await call(token, 'PATCH', '/v1/users/cy/notifications/s-4', { snoozed_until: null });
      expect((await feed()).body.counts.total).toBe(3);
    } finally {
      offset = 0;
    }
    const bad = await call(token, 'PATCH', '/v1/users/cy/notifications/s-4', { read: 'yes', colour: 1 });
    expect(bad.status).toBe(400);
    expect(bad.body.errors.join('\n')).toMatch(/read[\s\S]*colour|colour[\s\S]*read/);
    expect((await call(token, 'PATCH', '/v1/users/cy/notifications/not-mine', { read: true })).status).toBe(404);
    // An id longer than any notification's is refused for what it is, not looked for.
    const long = await call(token, 'PATCH', `/v1/users/cy/notifications/${'x'.repeat(200)}`, { read: true });
    expect(long.status).toBe(400);
    expect(long.body.errors).toEqual(['id: 1 to 128 characters']);
  });

  it('merges a topic\'s broadcast into each member\'s feed with their own state, hiding it from an opted-out member', async () => {
    const sent = await call(tenantKey, 'POST', '/v1/notifications', { tier: 'marketing', category: 'promo', content: { title: 'Big sale', body: 'now', action_url: 'https://shop.test/sale' }, recipients: { topic: 'fans' }, channels: ['inapp'], idempotency_key: 'bcast-1' });
    expect(sent.status).toBe(202);
    await eventually(async () => (await h.inbox.broadcastCount('acme', 'fans')) === 1, 'the broadcast record');
    const [t1, t2, tq] = [await userToken('fan1'), await userToken('fan2'), await userToken('quiet')];
    const item = (await call(t1, 'GET', '/v1/users/fan1/notifications')).body.data[0];
    expect(item).toMatchObject({ id: sent.body.id, title: 'Big sale', action_url: 'https://shop.test/sale', read: false });
    await call(t1, 'PATCH', `/v1/users/fan1/notifications/${sent.body.id}`, { read: true });
    expect((await call(t1, 'GET', '/v1/users/fan1/notifications')).body.counts).toEqual({ unseen: 0, unread: 0, total: 1 });
    expect((await call(t2, 'GET', '/v1/users/fan2/notifications')).body.counts).toEqual({ unseen: 1, unread: 1, total: 1 });
    expect((await call(tq, 'GET', '/v1/users/quiet/notifications')).body).toMatchObject({ data: [], counts: { total: 0 } });
    expect((await call(tq, 'PATCH', `/v1/users/quiet/notifications/${sent.body.id}`, { read: true })).status).toBe(404);
  });

  it('keeps counts exact under races: two devices at once, deliveries racing mark-all, redelivered batches', async () => {
    const token = await userToken('race');
    await deliver('acme', ['race'], Array.from({ length: 40 }, (_, i) => `r-${i}`));
    const ids = Array.from({ length: 40 }, (_, i) => `r-${i}`);
    // Two devices mark the same items read at once, on two replicas; a third marks all seen; deliveries
    // (some of them repeats of a batch already written) land meanwhile.
    await Promise.all([
      ...ids.map((id) => call(token, 'PATCH', `/v1/users/race/notifications/${id}`, { read: true }, bases[0])),
      ...ids.map((id) => call(token, 'PATCH', `/v1/users/race/notifications/${id}`, { read: true }, bases[1])),
      call(token, 'POST', '/v1/users/race/notifications/mark-all', { seen: true }),
      ...Array.from({ length: 10 }, (_, i) => deliver('acme', ['race'], [`r-late-${i}`, ids[i]])),
      ...ids.slice(0, 20).map((id, n) => call(token, 'PATCH', `/v1/users/race/notifications/${id}`, { read: false }, bases[n % 2])),
    ]);
    const all = await everything(token, 'race');
    const recount = { unseen: all.filter((x) => !x.seen).length, unread: all.filter((x) => !x.read).length, total: all.length };
    const counts = (await call(token, 'GET', '/v1/users/race/notifications')).body.counts;
    expect(counts).toEqual(recount);
    expect(all).toHaveLength(50);
    expect(new Set(all.map((x) => x.id)).size).toBe(50);
    for (const x of all) if (x.read) expect(x.seen).toBe(true);
    // A mark-all racing new deliveries: what was there is read, what came after is not, counts agree.
    await Promise.all([call(token, 'POST', '/v1/users/race/notifications/mark-all', { read: true }), deliver('acme', ['race'], ['after-1', 'after-2'])]);
    const after = await everything(token, 'race');
    const final = (await call(token, 'GET', '/v1/users/race/notifications')).body.counts;
    expect(final).toEqual({ unseen: after.filter((x) => !x.seen).length, unread: after.filter((x) => !x.read).length, total: after.length });
    expect(final.unread).toBeGreaterThanOrEqual(0);
    expect(final.unread).toBeLessThanOrEqual(2);
  });

  it('makes the first seen, read, clicked and archived receipts, each once, and the funnel goes on past delivered', async () => {
    const sent = await call(tenantKey, 'POST', '/v1/notifications', { tier: 'social', category: 'engage', content: { title: 'Engage', body: 'b' }, recipients: { user_ids: ['dee'] }, channels: ['inapp'], idempotency_key: 'engage-1' });
    const token = await userToken('dee');
    await eventually(async () => (await call(token, 'GET', '/v1/users/dee/notifications')).body.data.some((i: { id: string }) => i.id === sent.body.id), 'delivered in-app');
    const path = `/v1/users/dee/notifications/${sent.body.id}`;
    await Promise.all([call(token, 'PATCH', path, { seen: true }), call(token, 'PATCH', path, { seen: true })]);
    await call(token, 'POST', `${path}/click`);
    await call(token, 'POST', `${path}/click`);
    await call(token, 'PATCH', path, { read: false });
    await call(token, 'PATCH', path, { read: true });
    await call(token, 'PATCH', path, { archived: true });
    await call(token, 'POST', '/v1/users/dee/notifications/mark-all', { archived: true });
    const rows = await eventually(async () => {
      const r = await h.receipts(`request_id = '${sent.body.id}' AND stage = 'inbox'`);
      return r.length === 4 ? r : null;
    }, 'four engagement receipts', 15_000);
    expect(rows.map((r) => r.status).sort()).toEqual(['archived', 'clicked', 'read', 'seen']);
    expect(rows.every((r) => r.user_id === 'dee' && r.channel === 'inapp' && r.tier === 'social' && r.category === 'engage')).toBe(true);
    const funnel = await queryFunnel(h.clickhouse, h.config.clickhouseDatabase, Date.now() - HOUR, true);
    expect(funnel.find((r) => r.channel === 'inapp' && r.category === 'engage' && r.tier === 'social')).toMatchObject({ delivered: 1, seen: 1, read: 1, clicked: 1, archived: 1 });
  });

  it('streams new items and counts to a user on another replica than the one the delivery went through, and resumes with Last-Event-ID', async () => {
    const token = await userToken('live');
    const stream = await openStream(`${bases[1]}/v1/users/live/notifications/stream?token=${token}`);
    expect(stream.status).toBe(200);
    await eventually(() => stream.lastCounts(), 'the first counts');
    const send = (key: string) => call(tenantKey, 'POST', '/v1/notifications', { tier: 'transactional', category: 'live', content: { title: key, body: 'b' }, recipients: { user_ids: ['live'] }, channels: ['inapp'], idempotency_key: key }, bases[0]);
    const first = (await send('live-1')).body.id;
    const event = await eventually(() => stream.notifications().find((e) => e.data.id === first), 'the notification event', 5_000, 20);
    expect(event.data).toMatchObject({ title: 'live-1', read: false, seen: false });
    await eventually(() => stream.lastCounts()?.unread === 1, 'counts after the delivery', 5_000, 20);
    // A change made on another replica (another device) reaches this stream as counts.
    await call(token, 'PATCH', `/v1/users/live/notifications/${first}`, { read: true }, bases[0]);
    await eventually(() => stream.lastCounts()?.unread === 0, 'counts after mark read elsewhere', 5_000, 20);
    await stream.close();
    // Away for a while: two deliveries; back with the last id seen, they arrive, oldest first.
    const missed = [(await send('live-2')).body.id, (await send('live-3')).body.id];
    await eventually(async () => (await call(token, 'GET', '/v1/users/live/notifications')).body.counts.total === 3, 'both delivered');
    const back = await openStream(`${bases[0]}/v1/users/live/notifications/stream`, { authorization: `Bearer ${token}`, 'last-event-id': event.id! });
    await eventually(() => back.notifications().length === 2, 'the missed items', 5_000, 20);
    expect(back.notifications().map((e) => e.data.id)).toEqual(missed);
    expect(back.lastCounts()).toEqual({ unseen: 2, unread: 2, total: 3 });
    await back.close();
    // A stream for another user's inbox is refused.
    const other = await openStream(`${bases[0]}/v1/users/ada/notifications/stream?token=${token}`);
    expect(other.status).toBe(403);
    await other.close();
  });

  it('tells the users of one delivery to many in one NATS message, which streams on every replica hear', async () => {
    const watched = [CROWD[0], CROWD[5], CROWD[CROWD.length - 1]];
    const streams = await Promise.all(watched.map(async (u, i) => openStream(`${bases[i % 2]}/v1/users/${u}/notifications/stream?token=${await userToken(u)}`)));
    for (const s of streams) await eventually(() => s.lastCounts(), 'the first counts');
    // What travels: the batch messages, and (there must be none) a watched user's own subject.
    const batches: InboxBatchSignal[] = [];
    const perUser: string[] = [];
    const batchSub = h.nats.nc.subscribe(h.topology.inboxBatches, { callback: (_e, m) => { batches.push(m.json<InboxBatchSignal>()); } });
    const userSub = h.nats.nc.subscribe(h.topology.inboxUser('acme', CROWD[0]), { callback: (_e, m) => { perUser.push(m.string()); } });
    await h.nats.nc.flush();
    const store = new InboxStore(h.redis, h.topology.keys, { events: new NatsInboxEvents(h.nats.nc, h.topology) });
    const at = Date.now();
    await store.write('acme', [{ locale: 'en', content: { id: 'crowd-1', category: 'social', tier: 'social', title: 'To the crowd', body: 'b', created_at: at } }],
      CROWD.map((userId) => ({ userId, locale: 'en', requestId: 'crowd-1', createdAt: at })));
    for (const s of streams) {
      const event = await eventually(() => s.notifications().find((e) => e.data.id === 'crowd-1'), 'the event', 5_000, 20);
      expect(event.data).toMatchObject({ title: 'To the crowd', read: false });
      await eventually(() => s.lastCounts()?.unread === 1, 'counts after the delivery', 5_000, 20);
    }
    expect(batches).toEqual([{ tenant: 'acme', id: 'crowd-1', at, users: CROWD }]);
    expect(perUser).toEqual([]);
    batchSub.unsubscribe();
    userSub.unsubscribe();
    for (const s of streams) await s.close();
  });

  it('holds a delivery\'s live updates for the linger, then sends them together; flush sends what is held at once', async () => {
    const seen: { subject: string; data: unknown; at: number }[] = [];
    const sub = h.nats.nc.subscribe(h.topology.inboxUser('acme', 'x').replace(/x$/, '*'), { callback: (_e, m) => { seen.push({ subject: m.subject, data: m.json(), at: performance.now() }); } });
    await h.nats.nc.flush();
    const events = new NatsInboxEvents(h.nats.nc, h.topology, 300);
    const sentAt = performance.now();
    events.delivered('acme', ['linger-a'], 'r-1', 1);
    events.delivered('acme', ['linger-b'], 'r-2', 2);
    await new Promise((r) => setTimeout(r, 150));
    await h.nats.nc.flush();
    expect(seen).toEqual([]);
    await eventually(() => seen.length === 2, 'both updates after the linger', 5_000, 10);
    expect(seen.map((e) => [e.subject, e.data])).toEqual([
      [h.topology.inboxUser('acme', 'linger-a'), { kind: 'new', id: 'r-1', at: 1 }],
      [h.topology.inboxUser('acme', 'linger-b'), { kind: 'new', id: 'r-2', at: 2 }],
    ]);
    expect(seen[0].at - sentAt).toBeGreaterThanOrEqual(290);
    // Shutting down: what is held goes now, not after the linger.
    events.delivered('acme', ['linger-c'], 'r-3', 3);
    const flushedAt = performance.now();
    events.flush();
    await h.nats.nc.flush();
    await eventually(() => seen.length === 3, 'the flushed update', 1_000, 5);
    expect(seen[2].data).toEqual({ kind: 'new', id: 'r-3', at: 3 });
    expect(seen[2].at - flushedAt).toBeLessThan(200);
    sub.unsubscribe();
  });

  it('reads each item in the locale it was rendered in, a broadcast in the user\'s (then its language, the fallback, any), whatever its id', async () => {
    const store = new InboxStore(h.redis, h.topology.keys, { now });
    const content = (id: string, title: string) => ({ id, category: 'c', title, body: 'b', created_at: 1 });
    const at = Date.now();
    await store.write('acme', [
      { locale: 'de', content: content('own:1%', 'de') }, { locale: 'en', content: content('own:1%', 'en') }, { locale: '*', content: content('own:1%', 'any') },
      { locale: 'pt-BR', content: content('own-2', 'pt-BR') },
    ], [{ userId: 'poly', locale: 'de', requestId: 'own:1%', createdAt: at }, { userId: 'poly', locale: 'fr', requestId: 'own-2', createdAt: at + 1 }]);
    await store.writeBroadcast('acme', 'polyglots', 'b:1', [{ locale: 'es', content: content('b:1', 'es') }, { locale: '*', content: content('b:1', 'any') }], at + 2);
    await store.writeBroadcast('acme', 'polyglots', 'b%2', [{ locale: 'en', content: content('b%2', 'en') }], at + 3);
    const view = { topics: ['polyglots'], locale: 'es-MX', visibility: { none: false, shown: true, categories: {} }, visible: () => true };
    const page = await store.feed('acme', 'poly', view, { limit: 10 });
    expect(page.items.map((i) => [i.id, i.title])).toEqual([['b%2', 'en'], ['b:1', 'es'], ['own-2', 'pt-BR'], ['own:1%', 'de']]);
    // The same choice as reading one item's content alone (the live-update path).
    for (const item of page.items) {
      const alone = await store.contentItem('acme', item.id, item.created_at, view.locale, item.id.startsWith('own') ? 'poly' : undefined);
      expect(alone?.title).toBe(item.title);
    }
    const since = await store.since('acme', 'poly', view, page.items[3].cursor);
    expect(since.map((i) => i.title)).toEqual(['pt-BR', 'es', 'en']);
  });

  it('keeps at most the newest items and drops old ones, their state too, counts still right', async () => {
    const store = new InboxStore(h.redis, h.topology.keys, { maxItems: 5, retentionMs: 10 * HOUR, now });
    const write = (ids: string[], at: number) => store.write('acme', ids.map((id) => ({ locale: 'en', content: { id, category: 'c', title: id, body: 'b', created_at: at } })),
      ids.map((id, i) => ({ userId: 'pager', locale: 'en', requestId: id, createdAt: at + i })));
    await write(['old-1', 'old-2'], Date.now() - 11 * HOUR);
    await store.update('acme', 'pager', undefined, 'old-1', { read: true });
    await write(['k-1', 'k-2', 'k-3', 'k-4', 'k-5', 'k-6'], Date.now());
    const page = await store.feed('acme', 'pager', undefined, { limit: 100 });
    expect(page.items.map((i) => i.id)).toEqual(['k-6', 'k-5', 'k-4', 'k-3', 'k-2']);
    expect(page.counts).toEqual({ unseen: 5, unread: 5, total: 5 });
    expect(await h.redis.smembers(h.topology.keys.tenant('acme', 'inbox-read', 'pager'))).toEqual([]);
    // An idle inbox: nothing new arrives to trim it, yet what passed its retention is no longer counted.
    const idle = new InboxStore(h.redis, h.topology.keys, { maxItems: 5, retentionMs: 10 * HOUR, now: () => Date.now() + 11 * HOUR });
    expect((await idle.feed('acme', 'pager', undefined)).counts).toEqual({ unseen: 0, unread: 0, total: 0 });
  });

  it('drops an item that passed its retention when the next one arrives, and keeps an inbox of one new item', async () => {
    let clock = Date.now();
    const store = new InboxStore(h.redis, h.topology.keys, { maxItems: 5, retentionMs: 10 * HOUR, now: () => clock });
    const index = h.topology.keys.tenant('acme', 'inbox', 'ager');
    const write = (id: string) => store.write('acme', [{ locale: 'en', content: { id, category: 'c', title: id, body: 'b', created_at: clock } }],
      [{ userId: 'ager', locale: 'en', requestId: id, createdAt: clock }]);
    await write('first');
    await write('second');
    expect(await h.redis.zrange(index, 0, -1)).toEqual(['first', 'second']);
    // Eleven hours on, 'first' and 'second' are past the retention; 'third', an hour younger, is not.
    clock += HOUR;
    await write('third');
    clock += 10 * HOUR - 1;
    await write('fourth');
    expect(await h.redis.zrange(index, 0, -1)).toEqual(['third', 'fourth']);
    await h.redis.del(index);
    expect(await write('alone')).toEqual([true]);
    expect(await h.redis.zrange(index, 0, -1)).toEqual(['alone']);
  });

  it('keeps a delivery that was stored when trimming its inbox then fails, and trims at the next one', async () => {
    const store = new InboxStore(h.redis, h.topology.keys, { maxItems: 2, now });
    // Arrival times that only go forward, however fast the writes come (a retry keeps its first time).
    let arrived = Date.now();
    const times = new Map<string, number>();
    const write = (ids: string[]) => store.write('acme', ids.map((id) => ({ locale: 'en', content: { id, category: 'c', title: id, body: 'b', created_at: Date.now() } })),
      ids.map((id) => ({ userId: 'jammed', locale: 'en', requestId: id, createdAt: times.get(id) ?? times.set(id, ++arrived).get(id)! })));
    // A state key of the wrong type makes the trim fail (WRONGTYPE) after the references are stored.
    const clicked = h.topology.keys.tenant('acme', 'inbox-click', 'jammed');
    await h.redis.set(clicked, 'not a set');
    expect(await write(['j-1', 'j-2', 'j-3'])).toEqual([true, true, true]);
    // Stored once: a retry finds them there; reads stay within the size meanwhile.
    expect(await write(['j-1', 'j-2', 'j-3'])).toEqual([false, false, false]);
    expect((await store.feed('acme', 'jammed', undefined)).items.map((i) => i.id)).toEqual(['j-3', 'j-2']);
    await h.redis.del(clicked);
    expect(await write(['j-4'])).toEqual([true]);
    expect(await h.redis.zrange(h.topology.keys.tenant('acme', 'inbox', 'jammed'), 0, -1)).toEqual(['j-3', 'j-4']);
  });
});

describe('live inbox updates across processes', () => {
  let h: Harness;
  let herald: HeraldProcess;
  let secondNats: Nats;
  beforeAll(async () => {
    h = await Harness.create('inboxproc');
    await h.load([{ type: 'user', tenant: 'acme', id: 'far' }]);
    // The pipeline runs in a process of its own, as `herald run` (its own API off).
    herald = new HeraldProcess(envFor(h.config, { HERALD_API_PORT: '0' }));
    await herald.start();
    secondNats = await connectNats(h.config, 'herald-test-replica-b');
  }, 60_000);
  afterAll(async () => {
    await herald?.stop();
    await h?.close();
    await secondNats?.nc.drain().catch(() => undefined);
  });

  it('delivers the event to a stream on one replica when the request came through another and the pipeline ran elsewhere', async () => {
    const [front, back] = [await h.api(), await h.api({ nc: secondNats.nc })];
    const key = (await new ApiKeys(h.redis, h.topology.keys).create({ tenant: 'acme', scopes: ['send', 'read', 'directory'] })).secret;
    const token = (await (await fetch(`${front.base}/v1/users/far/token`, { method: 'POST', headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' }, body: '{}' })).json() as { token: string }).token;
    const stream = await openStream(`${back.base}/v1/users/far/notifications/stream?token=${token}`);
    await eventually(() => stream.lastCounts(), 'the stream open');
    const sent = await fetch(`${front.base}/v1/notifications`, {
      method: 'POST', headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json', 'idempotency-key': 'far-1' },
      body: JSON.stringify({ tier: 'transactional', category: 'far', content: { title: 'From afar', body: 'b' }, recipients: { user_ids: ['far'] }, channels: ['inapp'] }),
    });
    const { id } = await sent.json() as { id: string };
    const event = await eventually(() => stream.notifications().find((e) => e.data.id === id), 'the event on the other replica', 10_000, 20);
    expect(event.data.title).toBe('From afar');
    await eventually(() => stream.lastCounts()?.unread === 1, 'the counts event', 5_000, 20);
    await stream.close();
  });
});
