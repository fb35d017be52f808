import { selfContainedPagePolicy } from './server.js';
import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import {
  cancelAcceptedSchema, cancelBodySchema, conflictProblemSchema, deliveriesPageSchema, deliveriesQuerySchema, deviceBodySchema,
  deviceRegisteredSchema, deviceTokenSchema, erasureAcceptedSchema, idempotencyKeyHeaderSchema, notificationAcceptedSchema,
  notificationBodySchema, notificationIdSchema, notificationStatusSchema, preferencesBodySchema, preferencesViewSchema,
  problemSchema, topicMembersBodySchema, topicMembersChangedSchema, topicSchema, userBodySchema, userIdSchema,
  userUpsertedSchema, userViewSchema, userTokenBodySchema, userTokenSchema, feedPageSchema, feedQuerySchema, streamQuerySchema,
  itemPatchSchema, itemChangedSchema, markAllSchema, markedAllSchema,
} from '../schemas/index.js';
import { version } from '../runtime/version.js';
import type { ApiScope } from '../stores/api-keys.js';

/*
 * The OpenAPI 3.1 document of the HTTP API, built from the zod schemas of schemas/api.ts (the same
 * schemas the types come from; client/openapi.d.ts is generated from this document). The operations
 * are listed once, below; a unit test checks them against the routes ApiServer registers.
 */

type JsonSchema = Record<string, unknown>;
type Io = 'input' | 'output';

/**
 * The named schemas: a body is described as a sender may write it (`input`: defaults optional), an
 * answer as the server writes it (`output`).
 */
const schemas = {
  NotificationBody: [notificationBodySchema, 'input'],
  NotificationAccepted: [notificationAcceptedSchema, 'output'],
  NotificationStatus: [notificationStatusSchema, 'output'],
  DeliveriesPage: [deliveriesPageSchema, 'output'],
  CancelBody: [cancelBodySchema, 'input'],
  CancelAccepted: [cancelAcceptedSchema, 'output'],
  UserView: [userViewSchema, 'output'],
  UserBody: [userBodySchema, 'input'],
  UserUpserted: [userUpsertedSchema, 'output'],
  ErasureAccepted: [erasureAcceptedSchema, 'output'],
  DeviceBody: [deviceBodySchema, 'input'],
  DeviceRegistered: [deviceRegisteredSchema, 'output'],
  PreferencesBody: [preferencesBodySchema, 'input'],
  PreferencesView: [preferencesViewSchema, 'output'],
  TopicMembersBody: [topicMembersBodySchema, 'input'],
  TopicMembersChanged: [topicMembersChangedSchema, 'output'],
  UserTokenBody: [userTokenBodySchema, 'input'],
  UserToken: [userTokenSchema, 'output'],
  FeedPage: [feedPageSchema, 'output'],
  ItemPatch: [itemPatchSchema, 'input'],
  ItemChanged: [itemChangedSchema, 'output'],
  MarkAll: [markAllSchema, 'input'],
  MarkedAll: [markedAllSchema, 'output'],
  Problem: [problemSchema, 'output'],
  ConflictProblem: [conflictProblemSchema, 'output'],
} satisfies Record<string, [z.ZodType, Io]>;
type SchemaName = keyof typeof schemas;

/** Path parameters by name: every `{name}` in a path below takes its schema from here. */
const pathParameters: Record<string, { schema: z.ZodType; description: string }> = {
  id: { schema: notificationIdSchema, description: 'The notification id (from the 202 of `POST /v1/notifications`).' },
  user_id: { schema: userIdSchema, description: 'The tenant\'s own user id.' },
  topic: { schema: topicSchema, description: 'A topic name, e.g. `followers:alice`.' },
  token: { schema: deviceTokenSchema, description: 'The device token, URL-encoded.' },
};

/** The problems an operation may answer besides 401 and 429 (which every keyed operation may). */
type ProblemStatus = 400 | 403 | 404 | 409 | 413 | 415 | 503;

interface Answer {
  description: string;
  schema?: SchemaName;
}

interface OperationSpec {
  method: 'get' | 'put' | 'post' | 'patch' | 'delete';
  /** OpenAPI form: `/v1/users/{user_id}`. */
  path: string;
  operationId: string;
  tag: 'notifications' | 'users' | 'topics' | 'inbox' | 'documentation';
  /** A user token (for the user in the path) may call it too. */
  userToken?: boolean;
  summary: string;
  description?: string;
  /** Any one of these scopes will do (`admin` always does); `public` needs no key. */
  scopes: ApiScope[] | 'public';
  query?: z.ZodObject;
  idempotencyHeader?: boolean;
  body?: { schema: SchemaName; required: boolean };
  answers: Partial<Record<200 | 201 | 202 | 204, Answer>>;
  problems: ProblemStatus[];
}

/** Every operation of `/v1`. */
const operations: OperationSpec[] = [
  {
    method: 'post', path: '/v1/notifications', operationId: 'sendNotification', tag: 'notifications', scopes: ['send'],
    summary: 'Send a notification',
    description: 'The wire contract of `notify.request.<tier>` without `tenant` (the key decides it; naming another tenant is 403). '
      + 'Checked exactly as the pipeline\'s validate stage checks it, then published to the same subject with the same Nats-Msg-Id: '
      + 'nothing invalid reaches NATS. An idempotency key used in the last 24 hours is answered 409 with the original id.',
    idempotencyHeader: true,
    body: { schema: 'NotificationBody', required: true },
    answers: { 202: { description: 'Accepted: stored in its tier\'s intake stream.', schema: 'NotificationAccepted' } },
    problems: [400, 403, 409, 413, 415, 503],
  },
  {
    method: 'get', path: '/v1/notifications/{id}', operationId: 'getNotification', tag: 'notifications', scopes: ['read'],
    summary: 'Where a notification stands',
    description: 'Its status, and counts per channel and outcome, fresh within a second of each step.',
    answers: { 200: { description: 'The notification\'s status.', schema: 'NotificationStatus' } },
    problems: [400, 403, 404],
  },
  {
    method: 'get', path: '/v1/notifications/{id}/deliveries', operationId: 'listDeliveries', tag: 'notifications', scopes: ['read'],
    summary: 'Every step of every recipient and channel',
    description: 'Paginated, oldest first: the answer to "why did user U not get it?".',
    query: deliveriesQuerySchema,
    answers: { 200: { description: 'A page of steps.', schema: 'DeliveriesPage' } },
    problems: [400, 403, 404, 503],
  },
  {
    method: 'post', path: '/v1/notifications/{id}/cancel', operationId: 'cancelNotification', tag: 'notifications', scopes: ['send'],
    summary: 'Cancel a notification',
    description: 'Every delivery not yet sent is dropped, including scheduled and deferred ones.',
    body: { schema: 'CancelBody', required: false },
    answers: { 202: { description: 'The cancel is recorded; the pipeline stops what is not yet sent.', schema: 'CancelAccepted' } },
    problems: [400, 403, 413, 415],
  },
  {
    method: 'get', path: '/v1/users/{user_id}', operationId: 'getUser', tag: 'users', scopes: ['read', 'directory'],
    summary: 'What the directory holds about a user',
    answers: { 200: { description: 'Addresses, locale, time zone, preferences, quiet hours, hard stop, devices, topics.', schema: 'UserView' } },
    problems: [400, 403, 404],
  },
  {
    method: 'put', path: '/v1/users/{user_id}', operationId: 'putUser', tag: 'users', scopes: ['directory'],
    summary: 'Create or change a user',
    description: 'Fields not given keep their value.',
    body: { schema: 'UserBody', required: true },
    answers: {
      200: { description: 'The user existed and is changed.', schema: 'UserUpserted' },
      201: { description: 'The user is created.', schema: 'UserUpserted' },
    },
    problems: [400, 403, 413, 415],
  },
  {
    method: 'delete', path: '/v1/users/{user_id}', operationId: 'eraseUser', tag: 'users', scopes: ['directory'],
    summary: 'Erase a user',
    description: 'The profile, devices, preferences, memberships, inbox and frequency counters are deleted, the user\'s receipts '
      + 'anonymised (the user id replaced by a one-way hash), and a later request naming them is suppressed as `unknown_user`.',
    answers: { 202: { description: 'The erasure is under way.', schema: 'ErasureAccepted' } },
    problems: [400, 403, 503],
  },
  {
    method: 'post', path: '/v1/users/{user_id}/devices', operationId: 'registerDevice', tag: 'users', scopes: ['directory'],
    summary: 'Register a device',
    description: 'Idempotent: registering the same token again is harmless (and records when it was last seen).',
    body: { schema: 'DeviceBody', required: true },
    answers: { 201: { description: 'The device is registered and active.', schema: 'DeviceRegistered' } },
    problems: [400, 403, 413, 415],
  },
  {
    method: 'delete', path: '/v1/users/{user_id}/devices/{token}', operationId: 'removeDevice', tag: 'users', scopes: ['directory'],
    summary: 'Remove a device',
    answers: { 204: { description: 'The device is removed.' } },
    problems: [400, 403, 404],
  },
  {
    method: 'get', path: '/v1/users/{user_id}/preferences', operationId: 'getPreferences', tag: 'users', scopes: ['read', 'directory'],
    summary: 'A user\'s preferences',
    answers: { 200: { description: 'Opt-outs per channel × category, quiet hours, hard stop.', schema: 'PreferencesView' } },
    problems: [400, 403, 404],
  },
  {
    method: 'put', path: '/v1/users/{user_id}/preferences', operationId: 'putPreferences', tag: 'users', scopes: ['directory'],
    summary: 'Change a user\'s preferences',
    description: 'What is not given keeps its value; every bad field is named.',
    body: { schema: 'PreferencesBody', required: true },
    answers: { 200: { description: 'The preferences as they now are.', schema: 'PreferencesView' } },
    problems: [400, 403, 404, 413, 415],
  },
  {
    method: 'post', path: '/v1/topics/{topic}/members', operationId: 'changeTopicMembers', tag: 'topics', scopes: ['directory'],
    summary: 'Add and remove many members',
    description: 'Up to 10,000 user ids in each list.',
    body: { schema: 'TopicMembersBody', required: true },
    answers: { 200: { description: 'How many were added and removed.', schema: 'TopicMembersChanged' } },
    problems: [400, 403, 413, 415],
  },
  {
    method: 'put', path: '/v1/topics/{topic}/members/{user_id}', operationId: 'addTopicMember', tag: 'topics', scopes: ['directory'],
    summary: 'Add a member to a topic',
    answers: { 204: { description: 'The user is a member.' } },
    problems: [400, 403],
  },
  {
    method: 'delete', path: '/v1/topics/{topic}/members/{user_id}', operationId: 'removeTopicMember', tag: 'topics', scopes: ['directory'],
    summary: 'Remove a member from a topic',
    answers: { 204: { description: 'The user is not a member.' } },
    problems: [400, 403],
  },
  {
    method: 'post', path: '/v1/users/{user_id}/token', operationId: 'mintUserToken', tag: 'inbox', scopes: ['directory'],
    summary: 'A user token for an app',
    description: 'A signed token (JWT) that reads and changes this one user\'s inbox and nothing else: the app\'s backend mints it '
      + 'for a signed-in user and hands it to the app (as `Authorization: Bearer`, or `?token=` for EventSource).',
    body: { schema: 'UserTokenBody', required: false },
    answers: { 201: { description: 'The token.', schema: 'UserToken' } },
    problems: [400, 403, 415],
  },
  {
    method: 'get', path: '/v1/users/{user_id}/notifications', operationId: 'listInbox', tag: 'inbox', scopes: ['read'], userToken: true,
    summary: 'The user\'s in-app feed, with counts',
    description: 'Newest first, a cursor per page; their topics\' broadcasts merged in their place (their preferences and hard stop applied). '
      + '`counts` are a recount of the same snapshot, so they always agree with the feed.',
    query: feedQuerySchema,
    answers: { 200: { description: 'A page of the feed and its counts.', schema: 'FeedPage' } },
    problems: [400, 403],
  },
  {
    method: 'get', path: '/v1/users/{user_id}/notifications/stream', operationId: 'streamInbox', tag: 'inbox', scopes: ['read'], userToken: true,
    summary: 'Live updates (Server-Sent Events)',
    description: 'A `notification` event for each new item (its `id` is the item\'s cursor: reconnect with `Last-Event-ID` to get what was missed), '
      + 'a `counts` event whenever counts change (from any device), and a heartbeat comment. Any replica serves any user.',
    query: streamQuerySchema,
    answers: { 200: { description: 'A `text/event-stream` that stays open.' } },
    problems: [400, 403, 503],
  },
  {
    method: 'patch', path: '/v1/users/{user_id}/notifications/{id}', operationId: 'changeInboxItem', tag: 'inbox', scopes: ['directory'], userToken: true,
    summary: 'Mark an item seen, read, archived or snoozed',
    description: 'Read implies seen; un-reading is allowed; a snoozed item leaves the feed until its time and comes back unseen. '
      + 'The first seen, read and archived of each item are receipts (the funnel goes on past delivered).',
    body: { schema: 'ItemPatch', required: true },
    answers: { 200: { description: 'The item and the counts now.', schema: 'ItemChanged' } },
    problems: [400, 403, 404, 415],
  },
  {
    method: 'post', path: '/v1/users/{user_id}/notifications/{id}/click', operationId: 'clickInboxItem', tag: 'inbox', scopes: ['directory'], userToken: true,
    summary: 'Record a click (before following the action URL)',
    description: 'Marks it read too. The first click is a `clicked` receipt.',
    answers: { 200: { description: 'The item and the counts now.', schema: 'ItemChanged' } },
    problems: [400, 403, 404],
  },
  {
    method: 'post', path: '/v1/users/{user_id}/notifications/mark-all', operationId: 'markAllInbox', tag: 'inbox', scopes: ['directory'], userToken: true,
    summary: 'Mark every item seen, read or archived',
    description: 'Optionally only those at or `before` a cursor or a time.',
    body: { schema: 'MarkAll', required: true },
    answers: { 200: { description: 'How many changed, and the counts now.', schema: 'MarkedAll' } },
    problems: [400, 403, 415],
  },
  {
    method: 'get', path: '/v1/openapi.json', operationId: 'getOpenApiDocument', tag: 'documentation', scopes: 'public',
    summary: 'This document',
    answers: { 200: { description: 'The OpenAPI 3.1 document.' } },
    problems: [],
  },
  {
    method: 'get', path: '/v1/docs', operationId: 'getDocsPage', tag: 'documentation', scopes: 'public',
    summary: 'This document as a page',
    answers: { 200: { description: 'An HTML page listing every operation.' } },
    problems: [],
  },
];

/** A zod schema as JSON Schema 2020-12 (OpenAPI 3.1's dialect). */
function jsonSchema(schema: z.ZodType, io: Io): JsonSchema {
  const { $schema: _dialect, ...rest } = z.toJSONSchema(schema, { io, target: 'draft-2020-12', unrepresentable: 'any' }) as JsonSchema;
  return rest;
}

const ref = (name: SchemaName) => ({ $ref: `#/components/schemas/${name}` });

const rateLimitHeaders = {
  'RateLimit-Limit': { description: 'Requests per second this key may make.', schema: { type: 'integer' } },
  'RateLimit-Remaining': { description: 'Requests left now (0).', schema: { type: 'integer' } },
  'RateLimit-Reset': { description: 'Seconds until a request is taken again.', schema: { type: 'integer' } },
  'Retry-After': { description: 'Seconds to wait.', schema: { type: 'integer' } },
};

/** The problem answers, once each (`#/components/responses/...`). */
const problemResponses: Record<ProblemStatus | 401 | 429, [string, JsonSchema]> = {
  400: ['BadRequest', { description: 'Bad request: every bad field is named in `errors`.' }],
  401: ['Unauthorized', {
    description: 'A missing, unknown or revoked key.',
    headers: { 'WWW-Authenticate': { description: '`Bearer`, or `Bearer error="invalid_token"`.', schema: { type: 'string' } } },
  }],
  403: ['Forbidden', { description: 'The key lacks the scope, or the body names another tenant.' }],
  404: ['NotFound', { description: 'Nothing of the key\'s tenant by that name.' }],
  409: ['Conflict', { description: 'The idempotency key was used in the last 24 hours: `id` and `status_url` name the notification it made.' }],
  413: ['PayloadTooLarge', { description: 'The body is over the limit (256 KiB by default).' }],
  415: ['UnsupportedMediaType', { description: 'The body is not `application/json`.' }],
  429: ['TooManyRequests', { description: 'Past the key\'s rate (a token bucket shared by every replica).', headers: rateLimitHeaders }],
  503: ['Unavailable', {
    description: 'Not done for now (a server Herald needs did not answer); nothing was kept half-way, so a retry is safe.',
    headers: { 'Retry-After': rateLimitHeaders['Retry-After'] },
  }],
};

function parameters(op: OperationSpec): JsonSchema[] {
  const out: JsonSchema[] = [];
  for (const [, name] of op.path.matchAll(/\{([^}]+)\}/g)) {
    const param = pathParameters[name];
    if (!param) throw new Error(`openapi: no schema for the path parameter {${name}} of ${op.path}`);
    out.push({ name, in: 'path', required: true, description: param.description, schema: jsonSchema(param.schema, 'input') });
  }
  for (const [name, field] of Object.entries(op.query?.shape ?? {}) as [string, z.ZodType][]) {
    const { description, ...schema } = jsonSchema(field, 'input');
    out.push({ name, in: 'query', required: !field.safeParse(undefined).success, ...(description ? { description } : {}), schema });
  }
  if (op.idempotencyHeader) {
    out.push({
      name: 'Idempotency-Key', in: 'header', required: false, schema: jsonSchema(idempotencyKeyHeaderSchema, 'input'),
      description: 'The producer\'s key for this notification (or `idempotency_key` in the body). The same key within 24 hours is a 409.',
    });
  }
  return out;
}

function scopeNote(scopes: ApiScope[]): string {
  return `Scope: ${scopes.map((s) => `\`${s}\``).join(' or ')} (or \`admin\`).`;
}

function operation(op: OperationSpec): JsonSchema {
  const keyed = op.scopes !== 'public';
  const responses: Record<string, unknown> = {};
  for (const [status, answer] of Object.entries(op.answers)) {
    responses[status] = {
      description: answer.description,
      ...(answer.schema ? { content: { 'application/json': { schema: ref(answer.schema) } } } : {}),
    };
  }
  if (op.path === '/v1/openapi.json') responses[200] = { ...responses[200] as object, content: { 'application/json': { schema: { type: 'object' } } } };
  if (op.path === '/v1/docs') responses[200] = { ...responses[200] as object, content: { 'text/html': { schema: { type: 'string' } } } };
  for (const status of [...op.problems, ...(keyed ? [401, 429] as const : [])].sort()) {
    responses[status] = { $ref: `#/components/responses/${problemResponses[status][0]}` };
  }
  const params = parameters(op);
  return {
    operationId: op.operationId,
    tags: [op.tag],
    summary: op.summary,
    description: [op.description, keyed ? scopeNote(op.scopes as ApiScope[]) : 'No key needed.'].filter(Boolean).join('\n\n'),
    ...(keyed ? { security: [...(op.scopes as ApiScope[]).map((s) => ({ bearer: [s] })), ...(op.userToken ? [{ userToken: [] }] : [])] } : { security: [] }),
    ...(params.length ? { parameters: params } : {}),
    ...(op.body ? { requestBody: { required: op.body.required, content: { 'application/json': { schema: ref(op.body.schema) } } } } : {}),
    responses,
  };
}

/** The OpenAPI 3.1 document of `/v1`, derived from the zod schemas. */
export function openApiDocument(): JsonSchema {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const op of operations) (paths[op.path] ??= {})[op.method] = operation(op);
  const responses = Object.fromEntries(Object.entries(problemResponses).map(([status, [name, response]]) => [name, {
    ...response,
    content: { 'application/problem+json': { schema: ref(status === '409' ? 'ConflictProblem' : 'Problem') } },
  }]));
  return {
    openapi: '3.1.0',
    info: {
      title: 'Herald API',
      version,
      description: 'Send notifications and follow them, keep the recipient directory: users, devices, preferences, topics. '
        + 'JSON in snake_case; every error is `application/problem+json` (RFC 9457) naming each bad field. '
        + 'A tenant key (`Authorization: Bearer hk_…`, made by `herald keys create`) decides the tenant: nothing in a body can name another.',
    },
    servers: [{ url: '/', description: 'The Herald API serving this document (`herald api`, 127.0.0.1:8080 by default).' }],
    security: [{ bearer: [] }],
    tags: [
      { name: 'notifications', description: 'Send, follow and cancel notifications.' },
      { name: 'users', description: 'The recipient directory: users, devices, preferences, erasure.' },
      { name: 'topics', description: 'Topic members, for fan-out to a topic.' },
      { name: 'inbox', description: 'The in-app inbox for apps: the feed, read state, live updates, user tokens.' },
      { name: 'documentation', description: 'This document.' },
    ],
    paths,
    components: {
      schemas: Object.fromEntries(Object.entries(schemas).map(([name, [schema, io]]) => [name, jsonSchema(schema, io)])),
      responses,
      securitySchemes: {
        bearer: {
          type: 'http', scheme: 'bearer', bearerFormat: 'hk_…',
          description: 'A tenant key from `herald keys create`; its scopes (`send`, `read`, `directory`, `admin`) decide what it may do.',
        },
        userToken: {
          type: 'http', scheme: 'bearer', bearerFormat: 'JWT',
          description: 'A user token from `POST /v1/users/{user_id}/token` (or `herald keys user-token`): that user\'s inbox only.',
        },
      },
    },
  };
}

/** The routes the document describes, as `METHOD /path/{param}`. */
export function documentedRoutes(): string[] {
  return operations.map((op) => `${op.method.toUpperCase()} ${op.path}`);
}

/** Serves the document at `GET /v1/openapi.json` and a page for people at `GET /v1/docs`. */
export function registerOpenApi(app: FastifyInstance): void {
  const document = JSON.stringify(openApiDocument());
  const page = docsPage();
  app.get('/v1/openapi.json', (_req, reply) => reply.type('application/json; charset=utf-8').header('cache-control', 'no-cache').send(document));
  app.get('/v1/docs', (_req, reply) => reply.type('text/html; charset=utf-8').header('content-security-policy', page.csp).send(page.html));
}

/**
 * The page: plain HTML and a little script that reads the document and lists each operation with
 * its parameters, body and answers. Nothing is loaded from elsewhere (the policy allows this one
 * script and style, and fetching from this server only).
 */
function docsPage(): { html: string; csp: string } {
  const csp = selfContainedPagePolicy(PAGE_SCRIPT, PAGE_STYLE);
  const html = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Herald API</title>
<style>${PAGE_STYLE}</style>
</head>
<body>
<main id="doc"><p>Reading <a href="openapi.json">openapi.json</a>…</p></main>
<script>${PAGE_SCRIPT}</script>
</body>
</html>
`;
  return { html, csp };
}

const PAGE_STYLE = `
body { font: 15px/1.5 system-ui, sans-serif; margin: 0; color: #1b1f24; background: #fafafa; }
main { max-width: 960px; margin: 0 auto; padding: 1.5rem; }
h1 { margin-bottom: .2rem; } h2 { margin-top: 2.2rem; border-bottom: 1px solid #ddd; text-transform: capitalize; }
code, .path { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: .92em; }
details.op { background: #fff; border: 1px solid #ddd; border-radius: 6px; margin: .5rem 0; }
details.op > summary { cursor: pointer; padding: .5rem .75rem; list-style: none; }
details.op > div { padding: 0 .9rem .8rem; border-top: 1px solid #eee; }
.method { display: inline-block; min-width: 4.2em; font-weight: 700; text-transform: uppercase; font-family: ui-monospace, monospace; }
.get { color: #0a6cbd; } .post { color: #168a3a; } .put { color: #a86500; } .delete { color: #c0262d; }
.muted { color: #666; } .req { color: #c0262d; font-size: .85em; }
table { border-collapse: collapse; width: 100%; margin: .3rem 0 .8rem; } td, th { text-align: left; vertical-align: top; padding: .25rem .5rem; border-bottom: 1px solid #eee; }
ul.schema { margin: .2rem 0; padding-left: 1.2rem; } ul.schema li { margin: .1rem 0; }
h4 { margin: .9rem 0 .2rem; }
`;

/** Runs in the browser: builds the page with DOM calls and textContent only. */
const PAGE_SCRIPT = `
(async () => {
  const main = document.getElementById('doc');
  const el = (tag, attrs, ...children) => {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    for (const child of children) if (child != null) node.append(typeof child === 'string' ? document.createTextNode(child) : child);
    return node;
  };
  /** Prose with \`code\` spans. */
  const prose = (tag, text) => el(tag, {}, ...String(text).split('\`').map((part, i) => (i % 2 ? el('code', {}, part) : part)));
  let doc;
  try {
    const res = await fetch('openapi.json');
    if (!res.ok) throw new Error('HTTP ' + res.status);
    doc = await res.json();
  } catch (err) {
    main.replaceChildren(el('p', {}, 'Could not read openapi.json: ' + err.message));
    return;
  }
  const resolve = (node) => {
    while (node && node.$ref) node = node.$ref.split('/').slice(1).reduce((at, key) => at && at[key], doc);
    return node || {};
  };
  const refName = (node) => (node && node.$ref ? node.$ref.split('/').pop() : null);
  const typeOf = (s) => {
    s = resolve(s);
    if (s.anyOf || s.oneOf) return (s.anyOf || s.oneOf).map(typeOf).join(' | ');
    if (s.enum) return s.enum.map((v) => JSON.stringify(v)).join(' | ');
    if (s.const !== undefined) return JSON.stringify(s.const);
    const t = Array.isArray(s.type) ? s.type.join(' | ') : s.type || 'any';
    if (t === 'array') {
      const item = typeOf(s.items);
      return (item.includes(' | ') ? '(' + item + ')' : item) + '[]';
    }
    if (t === 'object' && !s.properties && s.additionalProperties && typeof s.additionalProperties === 'object') {
      return '{ [key]: ' + typeOf(s.additionalProperties) + ' }';
    }
    return t + (s.format ? ' (' + s.format + ')' : '');
  };
  const limits = (s) => {
    s = resolve(s);
    const out = [];
    if (s.minLength !== undefined || s.maxLength !== undefined) out.push((s.minLength ?? 0) + '–' + (s.maxLength ?? '∞') + ' characters');
    if (s.minItems !== undefined || s.maxItems !== undefined) out.push((s.minItems ?? 0) + '–' + (s.maxItems ?? '∞') + ' items');
    if (s.minimum !== undefined && s.minimum > -1e15) out.push('≥ ' + s.minimum);
    if (s.maximum !== undefined && s.maximum < 1e15) out.push('≤ ' + s.maximum);
    if (s.default !== undefined) out.push('default ' + JSON.stringify(s.default));
    if (s.pattern && !s.format && s.pattern.length < 60) out.push('matches ' + s.pattern);
    if (s.additionalProperties === false) out.push('no other fields');
    return out.join(', ');
  };
  /** A schema as a nested list of its fields, to a few levels. */
  const fields = (schema, depth) => {
    let s = resolve(schema);
    if (s.anyOf) s = resolve(s.anyOf.find((x) => resolve(x).type !== 'null') || s);
    if (s.type === 'array') s = resolve(s.items);
    if (!s.properties || depth > 4) return null;
    const required = new Set(s.required || []);
    return el('ul', { class: 'schema' }, ...Object.entries(s.properties).map(([name, prop]) => {
      const p = resolve(prop);
      const note = limits(p);
      return el('li', {},
        el('code', {}, name), ' ', el('span', { class: 'muted' }, typeOf(prop)),
        required.has(name) ? el('span', { class: 'req' }, ' required') : null,
        note ? el('span', { class: 'muted' }, ' — ' + note) : null,
        p.description ? prose('div', p.description) : null,
        fields(prop, depth + 1));
    }));
  };
  const schemaBlock = (schema) => {
    const s = resolve(schema);
    return el('div', {}, el('span', { class: 'muted' }, (refName(schema) ? refName(schema) + ': ' : '') + typeOf(schema)),
      s.description ? prose('div', s.description) : null, fields(schema, 0));
  };
  const parts = [el('h1', {}, doc.info.title + ' ', el('span', { class: 'muted' }, doc.info.version)),
    prose('p', doc.info.description), el('p', { class: 'muted' }, 'Machine-readable: ', el('a', { href: 'openapi.json' }, 'openapi.json'),
      ' (OpenAPI ' + doc.openapi + ').')];
  const byTag = new Map((doc.tags || []).map((t) => [t.name, []]));
  for (const [path, item] of Object.entries(doc.paths)) {
    for (const [method, op] of Object.entries(item)) {
      const tag = (op.tags && op.tags[0]) || 'other';
      if (!byTag.has(tag)) byTag.set(tag, []);
      byTag.get(tag).push({ path, method, op });
    }
  }
  for (const [tag, ops] of byTag) {
    if (!ops.length) continue;
    const info = (doc.tags || []).find((t) => t.name === tag);
    parts.push(el('h2', { id: tag }, tag), info && info.description ? prose('p', info.description) : null);
    for (const { path, method, op } of ops) {
      const body = el('div', {});
      for (const para of (op.description || '').split('\\n\\n')) if (para) body.append(prose('p', para));
      if (op.parameters && op.parameters.length) {
        body.append(el('h4', {}, 'Parameters'), el('table', {},
          el('tr', {}, el('th', {}, 'name'), el('th', {}, 'in'), el('th', {}, 'type'), el('th', {}, 'about')),
          ...op.parameters.map((p) => el('tr', {}, el('td', {}, el('code', {}, p.name), p.required ? el('span', { class: 'req' }, ' required') : null),
            el('td', {}, p.in), el('td', {}, typeOf(p.schema)), prose('td', [p.description, limits(p.schema)].filter(Boolean).join(' — '))))));
      }
      if (op.requestBody) {
        const [type, media] = Object.entries(op.requestBody.content)[0];
        body.append(el('h4', {}, 'Body ', el('span', { class: 'muted' }, type + (op.requestBody.required ? '' : ', optional'))), schemaBlock(media.schema));
      }
      body.append(el('h4', {}, 'Answers'));
      const answers = el('table', {});
      for (const [status, raw] of Object.entries(op.responses)) {
        const r = resolve(raw);
        const [type, media] = Object.entries(r.content || {})[0] || [];
        const headers = Object.keys(r.headers || {});
        answers.append(el('tr', {}, el('td', {}, el('strong', {}, status)),
          el('td', {}, prose('span', r.description || ''), type ? el('div', { class: 'muted' }, type) : null,
            headers.length ? el('div', { class: 'muted' }, 'headers: ' + headers.join(', ')) : null,
            media && status < 300 && media.schema && resolve(media.schema).properties ? schemaBlock(media.schema) : null)));
      }
      body.append(answers);
      parts.push(el('details', { class: 'op', id: op.operationId },
        el('summary', {}, el('span', { class: 'method ' + method }, method), ' ', el('span', { class: 'path' }, path), ' ',
          el('span', { class: 'muted' }, '— ' + (op.summary || ''))),
        body));
    }
  }
  const problem = doc.components && doc.components.schemas && doc.components.schemas.Problem;
  if (problem) parts.push(el('h2', {}, 'errors'), el('p', {}, 'Every error is application/problem+json:'), schemaBlock({ $ref: '#/components/schemas/Problem' }));
  main.replaceChildren(...parts.filter(Boolean));
})();
`;
