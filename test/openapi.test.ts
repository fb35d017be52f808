import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHeraldClient, type NotificationBody } from '../client/index.js';
import { ApiServer } from '../http/api.js';
import { openApiDocument } from '../http/openapi.js';
import {
  cancelAcceptedSchema, conflictProblemSchema, deliveriesPageSchema, deviceRegisteredSchema, notificationAcceptedSchema,
  notificationStatusSchema, preferencesViewSchema, problemSchema, topicMembersChangedSchema, userUpsertedSchema, userViewSchema,
} from '../schemas/index.js';
import { runHerald } from './child.js';
import { eventually, Harness } from './harness.js';

describe('the OpenAPI document and the typed client, against a running API', () => {
  let h: Harness;
  let api: ApiServer;
  let base: string;
  const herald = (...args: string[]) => runHerald(h.config, args);
  const newKey = async (...args: string[]) => JSON.parse((await herald('keys', 'create', '--json', ...args)).stdout) as { key: string };
  const body = (title: string): NotificationBody => ({
    tier: 'transactional', category: 'api', content: { title, body: 'b' }, recipients: { user_ids: ['u1'] }, channels: ['inapp'],
  });

  beforeAll(async () => {
    h = await Harness.create('openapi');
    await h.load([{ type: 'user', tenant: 'acme', id: 'u1', email: 'u1@acme.test' }]);
    await h.start();
    ({ api, base } = await h.api());
  }, 60_000);
  afterAll(async () => {
    await api?.close();
    await h?.close();
  });

  it('serves /v1/openapi.json and /v1/docs without a key', async () => {
    const doc = await fetch(`${base}/v1/openapi.json`);
    expect(doc.status).toBe(200);
    expect(await doc.json()).toEqual(openApiDocument());
    const page = await fetch(`${base}/v1/docs`);
    expect(page.status).toBe(200);
    expect(page.headers.get('content-type')).toMatch(/^text\/html/);
    expect(await page.text()).toContain('<title>Herald API</title>');
    // Everything else under /v1 still needs one.
    expect((await fetch(`${base}/v1/users/u1`)).status).toBe(401);
  });

  it('sends with the typed client: 202 for a good notification, a 400 problem naming each bad field, a 409 naming the first', async () => {
    const { key } = await newKey('--tenant', 'acme', '--scopes', 'send,read');
    const herald = createHeraldClient({ baseUrl: base, key });
    const sent = await herald.send(body('Typed'), { idempotencyKey: 'typed-1' });
    expect(sent.response.status).toBe(202);
    const accepted = notificationAcceptedSchema.parse(sent.data);
    expect(accepted.status_url).toBe(`/v1/notifications/${accepted.id}`);
    await eventually(async () => (await h.inbox.list('acme', 'u1')).some((e) => e.title === 'Typed'), 'the inbox entry');

    // What the types refuse, a producer in plain JavaScript may still send: the server names each field.
    const bad = await herald.send({ ...body('x'), tier: 'urgent', category: 'a b' } as unknown as NotificationBody);
    expect(bad.response.status).toBe(400);
    expect(bad.response.headers.get('content-type')).toMatch(/^application\/problem\+json/);
    const problem = problemSchema.parse(bad.error);
    expect(problem.errors?.join('\n')).toMatch(/idempotency_key/);
    expect(problem.errors?.join('\n')).toMatch(/tier/);
    expect(problem.errors?.join('\n')).toMatch(/category/);

    const again = await herald.POST('/v1/notifications', { body: { ...body('Typed'), idempotency_key: 'typed-1' } });
    expect(again.response.status).toBe(409);
    expect(conflictProblemSchema.parse(again.error)).toMatchObject({ status: 409, id: accepted.id });

    // The answers of the status and deliveries reads are what the document says.
    const status = await herald.GET('/v1/notifications/{id}', { params: { path: { id: accepted.id } } });
    expect(status.response.status).toBe(200);
    expect(notificationStatusSchema.parse(status.data).id).toBe(accepted.id);
    const deliveries = await herald.GET('/v1/notifications/{id}/deliveries', { params: { path: { id: accepted.id }, query: { limit: 10 } } });
    expect(deliveries.response.status).toBe(200);
    deliveriesPageSchema.parse(deliveries.data);
    const cancelled = await herald.POST('/v1/notifications/{id}/cancel', { params: { path: { id: accepted.id } }, body: { reason: 'test' } });
    expect(cancelAcceptedSchema.parse(cancelled.data)).toEqual({ id: accepted.id, status: 'cancelled' });

    const unknownKey = createHeraldClient({ baseUrl: base, key: 'hk_AAAAAAAAAAAAAAAA_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA' });
    const refused = await unknownKey.send(body('x'), { idempotencyKey: 'nope' });
    expect(refused.response.status).toBe(401);
    expect(problemSchema.parse(refused.error).status).toBe(401);
  });

  it('answers the directory calls with the bodies the document describes', async () => {
    const { key } = await newKey('--tenant', 'acme', '--scopes', 'directory,read');
    const herald = createHeraldClient({ baseUrl: base, key });
    const user = { params: { path: { user_id: 'typed-u2' } } };
    const put = await herald.PUT('/v1/users/{user_id}', { ...user, body: { email: 'u2@acme.test', timezone: 'Europe/Paris' } });
    expect(put.response.status).toBe(201);
    expect(userUpsertedSchema.parse(put.data)).toEqual({ id: 'typed-u2', created: true });
    const device = await herald.POST('/v1/users/{user_id}/devices', { ...user, body: { platform: 'ios', token: 'tok/1' } });
    expect(deviceRegisteredSchema.parse(device.data)).toEqual({ user_id: 'typed-u2', platform: 'ios', active: true });
    const prefs = await herald.PUT('/v1/users/{user_id}/preferences', {
      ...user, body: { preferences: [{ channel: 'email', enabled: false }], quiet_hours: { start: '22:00', end: '07:00' } },
    });
    expect(preferencesViewSchema.parse(prefs.data)).toMatchObject({ quiet_hours: '22:00-07:00', hard_stop: false });
    const members = await herald.POST('/v1/topics/{topic}/members', { params: { path: { topic: 'typed' } }, body: { add: ['typed-u2', 'u1'] } });
    expect(topicMembersChangedSchema.parse(members.data)).toEqual({ added: 2, removed: 0 });
    const shown = await herald.GET('/v1/users/{user_id}', user);
    expect(shown.response.status).toBe(200);
    const view = userViewSchema.parse(shown.data);
    expect(view).toMatchObject({ email: 'u2@acme.test', timezone: 'Europe/Paris', topics: ['typed'] });
    expect(view.devices.map((d) => d.token)).toEqual(['tok/1']);
    const removed = await herald.DELETE('/v1/users/{user_id}/devices/{token}', { params: { path: { user_id: 'typed-u2', token: 'tok/1' } } });
    expect(removed.response.status).toBe(204);
    const missing = await herald.GET('/v1/users/{user_id}/preferences', { params: { path: { user_id: 'nobody' } } });
    expect(missing.response.status).toBe(404);
    expect(problemSchema.parse(missing.error).status).toBe(404);
  });
});
