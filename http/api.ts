import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import type { JetStreamClient } from '@nats-io/jetstream';
import type { Redis } from 'ioredis';
import type { ClickHouseClient } from '@clickhouse/client';
import type { Logger } from 'pino';
import { checkRequest } from '../processors/validate.js';
import { describeIssues, deviceRecordSchema, directoryRecordSchema, userRecordSchema, type DirectoryRecord } from '../schemas/index.js';
import type { Cancellations } from '../stores/cancellations.js';
import { Directory } from '../stores/directory.js';
import { requestIdFor } from '../runtime/ids.js';
import { logRedisErrors } from '../runtime/connections.js';
import { publishRequest } from '../runtime/producer.js';
import type { TemplateStore } from '../runtime/templates.js';
import { allows, type ApiKey, type ApiKeys, type ApiScope } from '../stores/api-keys.js';
import { takeTokens, TokenCredit } from '../stores/rate-limits.js';
import type { Topology } from '../streams/topology.js';
import { listenOn } from './server.js';
import { TurnGate } from '../runtime/turn.js';
import { RequestStatuses } from '../stores/request-status.js';
import { Erasures } from '../stores/erasure.js';
import { sqlString } from '../streams/apply.js';
import { registerOpenApi } from './openapi.js';
import { registerDemoInbox } from './demo-inbox.js';
import { registerInboxRoutes } from './inbox.js';
import { InboxStreams } from './inbox-stream.js';
import { InboxStore, type InboxOptions, type InboxView } from '../stores/inbox.js';
import { inboxViewOf } from '../stores/inbox-view.js';
import { UserTokens, type UserPrincipal } from '../stores/user-tokens.js';
import { NatsInboxEvents } from '../pipeline/inbox-bus.js';
import { ReceiptPublisher } from '../pipeline/receipt-publisher.js';
import type { NatsConnection } from '@nats-io/transport-node';

/** What the HTTP edge needs: it is a producer like any other, plus the key store. */
export interface ApiParts {
  keys: ApiKeys;
  redis: Redis;
  js: JetStreamClient;
  topology: Topology;
  templates: TemplateStore;
  /** Where `POST /v1/notifications/{id}/cancel` records a cancel (the pipeline watches it). */
  cancellations: Cancellations;
  log: Logger;
  /** Receipts in ClickHouse: deliveries listings and erasure read and change them (absent: those answer 503). */
  clickhouse?: { client: ClickHouseClient; database: string };
  /** Live inbox updates travel over core NATS (absent: the stream answers 503). */
  nc?: NatsConnection;
  /** The inbox's retention and size. */
  inbox?: InboxOptions;
  /** Categories that ignore opt-outs (the inbox shows their broadcasts regardless). */
  criticalCategories?: string[];
  /** Heartbeat of inbox streams. @default 15000 */
  sseHeartbeatMs?: number;
  /** Requests per second one user token may make. @default 50 */
  userTokenRatePerSecond?: number;
  /** The clock (tests control it). @default Date.now */
  now?: () => number;
  /** Largest request body. @default 256 KiB */
  bodyLimit?: number;
}

/** A dependency is down: the caller should retry (503 with Retry-After). */
class ServiceUnavailable extends Error {
  readonly statusCode = 503;
}

/** Paths anyone may read: the API's own description. */
const PUBLIC_PATHS = new Set(['/v1/openapi.json', '/v1/docs']);

/** How long an idempotency key is remembered per tenant (the JetStream window is shorter). */
const IDEMPOTENCY_WINDOW_S = 24 * 60 * 60;

/** An opaque cursor over (time, receipt id): the deliveries listing resumes after it. */
function encodeCursor(atMs: number, receiptId: string): string {
  return Buffer.from(`${atMs}:${receiptId}`).toString('base64url');
}

function decodeCursor(cursor: string): { atMs: number; receiptId: string } | null {
  const m = /^(\d{1,16}):([A-Za-z0-9_-]{1,64})$/.exec(Buffer.from(cursor, 'base64url').toString());
  return m ? { atMs: Number(m[1]), receiptId: m[2] } : null;
}

/** An RFC 9457 problem: what went wrong, and every bad field when there are several. */
function problem(reply: FastifyReply, status: number, title: string, detail: string, errors?: string[]) {
  return reply.code(status).type('application/problem+json').send({ type: 'about:blank', title, status, detail, ...(errors ? { errors } : {}) });
}

declare module 'fastify' {
  interface FastifyRequest {
    /** The tenant key the request came with. */
    apiKey?: ApiKey;
    /** Or the user token: it reaches that user's inbox only. */
    user?: UserPrincipal;
  }
}

/** Routes a user token may call (for its own user only). */
const USER_TOKEN_ROUTES = /^\/v1\/users\/:userId\/notifications(\/|$)/;

/**
 * Herald's HTTP API (`/v1`): tenant keys decide the tenant (`Authorization: Bearer hk_…`), each key
 * rate-limited in Redis (shared by every replica). Stateless: any number of replicas.
 * `POST /v1/notifications` checks a request exactly as validate would and publishes it to the same
 * subject a NATS producer uses, with the same Nats-Msg-Id.
 */
export class ApiServer {
  readonly app: FastifyInstance;
  private readonly now: () => number;
  /** Per-key and per-user rate tokens taken from Redis in blocks (one call per block, not per request). */
  private readonly credit = new TokenCredit();
  /** Sends arriving together leave together: one Redis write and one NATS write for all of them. */
  private readonly sendGate = new TurnGate();

  constructor(private readonly parts: ApiParts) {
    this.now = parts.now ?? Date.now;
    this.app = Fastify({
      loggerInstance: parts.log.child({ component: 'api' }) as FastifyBaseLogger,
      logController: new LogController({ disableRequestLogging: true }),
      bodyLimit: parts.bodyLimit ?? 256 * 1024,
      // Long path parameters reach the handlers, which say what is wrong (Fastify would answer a bare 414).
      routerOptions: { maxParamLength: 5_000 },
      // A replica that stops closes its keep-alive connections too (load balancers retry elsewhere).
      forceCloseConnections: true,
    });
    this.app.setErrorHandler((err: Error & { statusCode?: number; code?: string }, _req, reply) => {
      const status = err.statusCode && ((err.statusCode >= 400 && err.statusCode < 500) || err instanceof ServiceUnavailable) ? err.statusCode : 500;
      if (status === 500) parts.log.error({ err }, 'api: unexpected error');
      if (status === 503) reply.header('retry-after', '2');
      const title = status === 413 ? 'Request body too large' : status === 415 ? 'Unsupported media type' : status === 500 ? 'Internal error' : status === 503 ? 'Unavailable' : 'Bad request';
      return problem(reply, status, title, status === 500 ? 'something went wrong on our side; try again' : err.message);
    });
    this.app.setNotFoundHandler((req, reply) => problem(reply, 404, 'Not found', `no route ${req.method} ${req.url.split('?')[0]}`));
    this.app.addHook('onRequest', (req, reply) => this.authenticate(req, reply));
    registerOpenApi(this.app);
    registerDemoInbox(this.app);
    this.app.post('/v1/notifications', (req, reply) => this.send(req, reply));
    this.app.post<{ Params: { id: string } }>('/v1/notifications/:id/cancel', (req, reply) => this.cancel(req, reply));
    this.app.get<{ Params: { id: string } }>('/v1/notifications/:id', (req, reply) => this.status(req, reply));
    this.app.get<{ Params: { id: string }; Querystring: Record<string, string | undefined> }>('/v1/notifications/:id/deliveries', (req, reply) => this.deliveries(req, reply));
    this.app.delete<{ Params: { userId: string } }>('/v1/users/:userId', (req, reply) => this.erase(req, reply));
    this.app.post<{ Params: { topic: string } }>('/v1/topics/:topic/members', (req, reply) => this.bulkMembership(req, reply));
    const lazy = this.lazy;
    registerInboxRoutes(this.app, {
      get inbox() { return lazy.inbox; }, get streams() { return lazy.streams; }, get userTokens() { return lazy.userTokens; },
      viewOf: (tenant, userId) => this.viewOf(tenant, userId),
      directoryViewOf: (tenant, userId) => this.directory.inboxView(tenant, userId, this.parts.criticalCategories ?? []),
      // Stored before the change they report is written (or the change is refused): never lost.
      receipt: async (receipts) => {
        if (receipts.length === 0) return;
        for (const r of receipts) lazy.receipts.add(r);
        let timer: NodeJS.Timeout | undefined;
        await Promise.race([
          lazy.receipts.flush(true),
          new Promise((_, reject) => { timer = setTimeout(() => reject(new ServiceUnavailable('receipts could not be stored (NATS); try again')), 5_000); }),
        ]).finally(() => clearTimeout(timer));
      },
      problem, now: () => this.now(),
    });
    this.app.get<{ Params: { userId: string } }>('/v1/users/:userId', (req, reply) => this.showUser(req, reply));
    this.app.put<{ Params: { userId: string } }>('/v1/users/:userId', (req, reply) => this.putUser(req, reply));
    this.app.post<{ Params: { userId: string } }>('/v1/users/:userId/devices', (req, reply) => this.addDevice(req, reply));
    this.app.delete<{ Params: { userId: string; token: string } }>('/v1/users/:userId/devices/:token', (req, reply) => this.removeDevice(req, reply));
    this.app.get<{ Params: { userId: string } }>('/v1/users/:userId/preferences', (req, reply) => this.showPreferences(req, reply));
    this.app.put<{ Params: { userId: string } }>('/v1/users/:userId/preferences', (req, reply) => this.putPreferences(req, reply));
    this.app.put<{ Params: { topic: string; userId: string } }>('/v1/topics/:topic/members/:userId', (req, reply) => this.membership(req, reply, true));
    this.app.delete<{ Params: { topic: string; userId: string } }>('/v1/topics/:topic/members/:userId', (req, reply) => this.membership(req, reply, false));
  }

  /** GET /v1/users/{user_id}/preferences: opt-outs per channel × category, quiet hours, hard stop. */
  private async showPreferences(req: FastifyRequest<{ Params: { userId: string } }>, reply: FastifyReply) {
    const view = await this.readUser(req, reply);
    if (!view) return reply;
    return reply.send({ preferences: view.preferences, quiet_hours: view.quiet_hours ?? null, hard_stop: view.hard_stop });
  }

  /** One of the key's tenant's users, for a key that may read (a 403, 400 or 404 is sent otherwise). */
  private async readUser(req: FastifyRequest<{ Params: { userId: string } }>, reply: FastifyReply) {
    if (!(req.apiKey && allows(req.apiKey, 'directory')) && this.forbidden(req, reply, 'read')) return null;
    const userId = this.userId(req.params.userId, reply);
    if (userId === null) return null;
    const view = await this.directory.show(req.apiKey!.tenant, userId);
    if (!view.exists) {
      problem(reply, 404, 'Not found', `no user "${userId}"`);
      return null;
    }
    return view;
  }

  /**
   * PUT /v1/users/{user_id}/preferences: `{preferences?: [{channel?, category?, enabled}],
   * quiet_hours?: {start, end} | null, hard_stop?: boolean}`; what is not given keeps its value.
   */
  private async putPreferences(req: FastifyRequest<{ Params: { userId: string } }>, reply: FastifyReply) {
    if (this.forbidden(req, reply, 'directory')) return reply;
    const userId = this.userId(req.params.userId, reply);
    if (userId === null) return reply;
    const body = req.body as { preferences?: unknown; quiet_hours?: unknown; hard_stop?: unknown } | null;
    if (!body || typeof body !== 'object' || Array.isArray(body)) return problem(reply, 400, 'Bad request', 'the body must be a JSON object');
    const unknown = Object.keys(body).filter((k) => !['preferences', 'quiet_hours', 'hard_stop'].includes(k));
    const tenant = req.apiKey!.tenant;
    const candidates: [string, unknown][] = [];
    if (body.preferences !== undefined) {
      if (!Array.isArray(body.preferences) || body.preferences.length > 200) return problem(reply, 400, 'Invalid preferences', 'preferences: a list of at most 200', ['preferences: a list of at most 200']);
      body.preferences.forEach((p, i) => candidates.push([`preferences[${i}]`, { ...(p as object), type: 'preference', tenant, user_id: userId }]));
    }
    if (body.quiet_hours !== undefined) candidates.push(['quiet_hours', { ...(body.quiet_hours ?? {}) as object, type: 'quiet_hours', tenant, user_id: userId }]);
    if (body.hard_stop !== undefined) candidates.push(['hard_stop', { enabled: body.hard_stop, type: 'hard_stop', tenant, user_id: userId }]);
    const records: DirectoryRecord[] = [];
    const errors = unknown.map((k) => `${k}: not a field of preferences`);
    for (const [where, candidate] of candidates) {
      const parsed = directoryRecordSchema.safeParse(candidate);
      if (parsed.success) records.push(parsed.data);
      else errors.push(...describeIssues(parsed.error.issues).map((e) => `${where}.${e}`));
    }
    if (errors.length) return problem(reply, 400, 'Invalid preferences', `${errors.length} problem${errors.length === 1 ? '' : 's'}`, errors);
    await this.directory.upsert(records);
    return this.showPreferences(req, reply);
  }

  /** PUT|DELETE /v1/topics/{topic}/members/{user_id}. */
  private async membership(req: FastifyRequest<{ Params: { topic: string; userId: string } }>, reply: FastifyReply, join: boolean) {
    if (this.forbidden(req, reply, 'directory')) return reply;
    const userId = this.userId(req.params.userId, reply);
    if (userId === null) return reply;
    const parsed = directoryRecordSchema.safeParse({ type: 'topic_member', tenant: req.apiKey!.tenant, topic: req.params.topic, user_id: userId });
    if (!parsed.success) return problem(reply, 400, 'Invalid membership', 'the topic or user has problems', describeIssues(parsed.error.issues));
    if (join) await this.directory.upsert([parsed.data]);
    else await this.directory.leaveTopic(req.apiKey!.tenant, userId, req.params.topic);
    return reply.code(204).send();
  }

  private get statuses(): RequestStatuses {
    return (this.made.statuses ??= new RequestStatuses(this.parts.redis, this.parts.topology.keys));
  }


  /** GET /v1/notifications/{id}: where it stands, fresh within a second of each step. */
  private async status(req: FastifyRequest<{ Params: { id: string } }>, reply: FastifyReply) {
    if (this.forbidden(req, reply, 'read')) return reply;
    const id = this.requestId(req.params.id, reply);
    if (id === null) return reply;
    const status = await this.statuses.get(req.apiKey!.tenant, id);
    if (!status) return problem(reply, 404, 'Not found', `no notification "${id}"`);
    return reply.send({ ...status, deliveries_url: `/v1/notifications/${encodeURIComponent(id)}/deliveries` });
  }

  /**
   * GET /v1/notifications/{id}/deliveries?user_id=&cursor=&limit=: every step of every recipient and
   * channel, oldest first, each receipt once (from ClickHouse, seconds behind at most).
   */
  private async deliveries(req: FastifyRequest<{ Params: { id: string }; Querystring: Record<string, string | undefined> }>, reply: FastifyReply) {
    if (this.forbidden(req, reply, 'read')) return reply;
    const id = this.requestId(req.params.id, reply);
    if (id === null) return reply;
    const { user_id: userId, cursor, limit: limitText } = req.query;
    const errors: string[] = [];
    const limit = limitText === undefined ? 100 : Number(limitText);
    if (!Number.isInteger(limit) || limit < 1 || limit > 500) errors.push('limit: a whole number from 1 to 500');
    if (userId !== undefined && (userId.length < 1 || userId.length > 128)) errors.push('user_id: 1 to 128 characters');
    const after = cursor === undefined ? undefined : decodeCursor(cursor);
    if (after === null) errors.push('cursor: not a cursor this API gave out');
    const unknown = Object.keys(req.query).filter((k) => !['user_id', 'cursor', 'limit'].includes(k));
    errors.push(...unknown.map((k) => `${k}: not a parameter of this listing`));
    if (errors.length) return problem(reply, 400, 'Bad request', errors.join('; '), errors);
    const ch = this.parts.clickhouse;
    if (!ch) return problem(reply, 503, 'Unavailable', 'this replica has no ClickHouse configured');
    const tenant = req.apiKey!.tenant;
    const where = [`tenant = ${sqlString(tenant)}`, `request_id = ${sqlString(id)}`];
    if (userId !== undefined) where.push(`user_id = ${sqlString(userId)}`);
    const having = after ? `HAVING at_ms > ${after.atMs} OR (at_ms = ${after.atMs} AND receipt_id > ${sqlString(after.receiptId)})` : '';
    // Each receipt id once (a step recorded twice after a crash is one step), at its first time.
    const rs = await ch.client.query({
      // Aliases differ from the columns: ClickHouse would read an alias in WHERE as the aggregate.
      query: `SELECT receipt_id, min(toUInt64(event_time) * 1000 + event_ms) AS at_ms, any(stage) AS d_stage, any(status) AS d_status,
        any(channel) AS d_channel, any(provider) AS d_provider, any(user_id) AS d_user, any(reason) AS d_reason, min(attempt) AS d_attempt
        FROM ${ch.database}.receipts WHERE ${where.join(' AND ')} GROUP BY receipt_id ${having}
        ORDER BY at_ms, receipt_id LIMIT ${limit + 1}`,
      format: 'JSONEachRow',
    });
    const rows = await rs.json<{ receipt_id: string; at_ms: string | number; d_stage: string; d_status: string; d_channel: string; d_provider: string; d_user: string; d_reason: string; d_attempt: number }>();
    // Nothing recorded and no status either: no such notification of this tenant (the status outlives no receipt).
    if (rows.length === 0 && !after && !(await this.statuses.get(tenant, id))) return problem(reply, 404, 'Not found', `no notification "${id}"`);
    const page = rows.slice(0, limit);
    const last = page[page.length - 1];
    return reply.send({
      data: page.map((r) => ({
        at: new Date(Number(r.at_ms)).toISOString(), stage: r.d_stage, status: r.d_status, channel: r.d_channel,
        provider: r.d_provider, user_id: r.d_user, reason: r.d_reason, attempt: Number(r.d_attempt),
      })),
      next_cursor: rows.length > limit && last ? encodeCursor(Number(last.at_ms), last.receipt_id) : null,
    });
  }

  /** DELETE /v1/users/{user_id}: erasure of everything Herald holds of the user. */
  private async erase(req: FastifyRequest<{ Params: { userId: string } }>, reply: FastifyReply) {
    if (this.forbidden(req, reply, 'directory')) return reply;
    const userId = this.userId(req.params.userId, reply);
    if (userId === null) return reply;
    const ch = this.parts.clickhouse;
    if (!ch) return problem(reply, 503, 'Unavailable', 'this replica has no ClickHouse configured');
    try {
      const report = await new Erasures(this.parts.redis, this.parts.topology.keys, ch.client, ch.database).erase(req.apiKey!.tenant, userId);
      return reply.code(202).send({ erasure_id: report.erasure_id, user_id: userId, receipts: report.receipts });
    } catch (err) {
      this.parts.log.warn({ err }, 'api: erasure not finished');
      reply.header('retry-after', '5');
      return problem(reply, 503, 'Unavailable', `the erasure did not finish (${(err as Error).message}); send it again, it is safe to repeat`);
    }
  }

  /** POST /v1/topics/{topic}/members: `{add?: [user ids], remove?: [user ids]}`, up to 10,000 each. */
  private async bulkMembership(req: FastifyRequest<{ Params: { topic: string } }>, reply: FastifyReply) {
    if (this.forbidden(req, reply, 'directory')) return reply;
    const body = req.body as { add?: unknown; remove?: unknown } | null;
    if (!body || typeof body !== 'object' || Array.isArray(body)) return problem(reply, 400, 'Bad request', 'the body must be a JSON object');
    const tenant = req.apiKey!.tenant;
    const errors = Object.keys(body).filter((k) => k !== 'add' && k !== 'remove').map((k) => `${k}: not a field (use "add" and "remove")`);
    const lists: Record<'add' | 'remove', string[]> = { add: [], remove: [] };
    for (const field of ['add', 'remove'] as const) {
      const value = body[field];
      if (value === undefined) continue;
      if (!Array.isArray(value) || value.length > 10_000) {
        errors.push(`${field}: a list of at most 10,000 user ids`);
        continue;
      }
      value.forEach((userId, i) => {
        const parsed = directoryRecordSchema.safeParse({ type: 'topic_member', tenant, topic: req.params.topic, user_id: userId });
        if (parsed.success) lists[field].push(parsed.data.type === 'topic_member' ? parsed.data.user_id : '');
        else errors.push(...describeIssues(parsed.error.issues).map((e) => (e.startsWith('user_id') ? `${field}[${i}]${e.slice('user_id'.length)}` : e)));
      });
    }
    if (errors.length) {
      const shown = [...new Set(errors)].slice(0, 100);
      return problem(reply, 400, 'Invalid members', `${errors.length} problem${errors.length === 1 ? '' : 's'}`, shown);
    }
    if (lists.add.length) await this.directory.upsert(lists.add.map((user_id) => ({ type: 'topic_member' as const, tenant, topic: req.params.topic, user_id })));
    if (lists.remove.length) await this.directory.leaveTopicMany(tenant, req.params.topic, lists.remove);
    return reply.send({ added: lists.add.length, removed: lists.remove.length });
  }

  private get directory(): Directory {
    return (this.made.directory ??= new Directory(this.parts.redis, this.parts.topology.keys));
  }

  /** An id from the path (a request's or a user's), within its bounds of 1 to 128 characters; null once a 400 is sent. */
  private pathId(id: string, field: 'id' | 'user_id', reply: FastifyReply): string | null {
    if (id.length >= 1 && id.length <= 128) return id;
    problem(reply, 400, 'Bad request', `${field}: 1 to 128 characters`, [`${field}: 1 to 128 characters`]);
    return null;
  }

  private userId(id: string, reply: FastifyReply): string | null {
    return this.pathId(id, 'user_id', reply);
  }

  private requestId(id: string, reply: FastifyReply): string | null {
    return this.pathId(id, 'id', reply);
  }

  /** POST /v1/notifications/{id}/cancel: every delivery of the key's tenant's request not yet sent is dropped. */
  private async cancel(req: FastifyRequest<{ Params: { id: string } }>, reply: FastifyReply) {
    if (this.forbidden(req, reply, 'send')) return reply;
    const id = this.requestId(req.params.id, reply);
    if (id === null) return reply;
    const body = (req.body ?? {}) as { reason?: unknown };
    await this.parts.cancellations.cancel(req.apiKey!.tenant, id, typeof body.reason === 'string' ? body.reason : 'cancelled over HTTP');
    return reply.code(202).send({ id, status: 'cancelled' });
  }

  /** GET /v1/users/{user_id}: what the directory holds about one of the tenant's users. */
  private async showUser(req: FastifyRequest<{ Params: { userId: string } }>, reply: FastifyReply) {
    const view = await this.readUser(req, reply);
    if (!view) return reply;
    const { tenant: _tenant, ...rest } = view;
    return reply.send(rest);
  }

  /** PUT /v1/users/{user_id}: addresses, locale, time zone; fields not given keep their value. */
  private async putUser(req: FastifyRequest<{ Params: { userId: string } }>, reply: FastifyReply) {
    if (this.forbidden(req, reply, 'directory')) return reply;
    const userId = this.userId(req.params.userId, reply);
    if (userId === null) return reply;
    const body = req.body;
    if (!body || typeof body !== 'object' || Array.isArray(body)) return problem(reply, 400, 'Bad request', 'the body must be a JSON object');
    const tenant = req.apiKey!.tenant;
    const current = await this.directory.show(tenant, userId);
    const kept = Object.fromEntries(Object.entries({ email: current.email, phone: current.phone, locale: current.locale, timezone: current.timezone })
      .filter(([, v]) => v !== undefined));
    const parsed = userRecordSchema.safeParse({ ...kept, ...body, type: 'user', tenant, id: userId });
    if (!parsed.success) return problem(reply, 400, 'Invalid user', 'the user has problems', describeIssues(parsed.error.issues));
    await this.directory.upsert([parsed.data]);
    return reply.code(current.exists ? 200 : 201).send({ id: userId, created: !current.exists });
  }

  /** POST /v1/users/{user_id}/devices: `{platform, token}`; registering the same token again is harmless. */
  private async addDevice(req: FastifyRequest<{ Params: { userId: string } }>, reply: FastifyReply) {
    if (this.forbidden(req, reply, 'directory')) return reply;
    const userId = this.userId(req.params.userId, reply);
    if (userId === null) return reply;
    const body = req.body;
    if (!body || typeof body !== 'object' || Array.isArray(body)) return problem(reply, 400, 'Bad request', 'the body must be a JSON object');
    const parsed = deviceRecordSchema.safeParse({ ...body, type: 'device', tenant: req.apiKey!.tenant, user_id: userId, active: true });
    if (!parsed.success) return problem(reply, 400, 'Invalid device', 'the device has problems', describeIssues(parsed.error.issues));
    await this.directory.upsert([parsed.data]);
    return reply.code(201).send({ user_id: userId, platform: parsed.data.platform, active: true });
  }

  /** DELETE /v1/users/{user_id}/devices/{token}. */
  private async removeDevice(req: FastifyRequest<{ Params: { userId: string; token: string } }>, reply: FastifyReply) {
    if (this.forbidden(req, reply, 'directory')) return reply;
    const userId = this.userId(req.params.userId, reply);
    if (userId === null) return reply;
    if (!(await this.directory.removeDevice(req.apiKey!.tenant, userId, req.params.token))) {
      return problem(reply, 404, 'Not found', `user "${userId}" has no such device`);
    }
    return reply.code(204).send();
  }

  /** A user token: its own user's inbox only, within the user's rate. */
  private async authenticateUser(req: FastifyRequest, reply: FastifyReply, token: string) {
    const verdict = await this.lazy.userTokens.verify(token);
    if (verdict === 'expired' || verdict === 'invalid') {
      reply.header('www-authenticate', `Bearer error="invalid_token"`);
      return problem(reply, 401, 'Unauthorized', verdict === 'expired' ? 'this user token has expired; ask the app\'s backend for a new one' : 'this token is not valid');
    }
    const params = req.params as { userId?: string };
    if (!USER_TOKEN_ROUTES.test(req.routeOptions.url ?? '') || params.userId !== verdict.userId) {
      return problem(reply, 403, 'Forbidden', 'a user token reaches only its own user\'s notifications');
    }
    const perSecond = this.parts.userTokenRatePerSecond ?? 50;
    const { keys } = this.parts.topology;
    const waitMs = await this.takeRate(keys.internal('rate', 'u', verdict.tenant, verdict.userId), keys.internal('rate', 'pause', 'u'), perSecond);
    if (waitMs > 0) {
      const seconds = Math.max(1, Math.ceil(waitMs / 1000));
      reply.header('retry-after', String(seconds)).header('ratelimit-limit', String(perSecond)).header('ratelimit-remaining', '0').header('ratelimit-reset', String(seconds));
      return problem(reply, 429, 'Too many requests', `a user token may make ${perSecond} requests per second; try again in ${seconds} s`);
    }
    req.user = verdict;
  }

  /** One request's token from a bucket shared by every replica (`perSecond`, bursting as much): 0, or the ms to wait. */
  private takeRate(bucket: string, pauseKey: string, perSecond: number): Promise<number> {
    return this.credit.take(bucket, 1, perSecond, (n) =>
      takeTokens(this.parts.redis, [[bucket, { perSecond, burst: perSecond }]], pauseKey, Date.now(), n));
  }

  private viewOf(tenant: string, userId: string): Promise<InboxView> {
    return inboxViewOf(this.directory, tenant, userId, this.parts.criticalCategories ?? []);
  }

  /** Every /v1 route needs a live key (or a user token on its inbox), within its rate. */
  private async authenticate(req: FastifyRequest, reply: FastifyReply) {
    // Decided on the route that matched, not the raw URL: a percent-encoded path (`/%761/…`) reaches
    // the same route and must meet the same check.
    const route = req.routeOptions.url;
    if (!route || !route.startsWith('/v1/') || PUBLIC_PATHS.has(route)) return;
    const header = req.headers.authorization;
    const fromHeader = header ? /^Bearer\s+(\S+)$/i.exec(header)?.[1] : undefined;
    // EventSource cannot send headers: a user token (never a tenant key) may come as ?token=.
    const fromQuery = (req.query as { token?: unknown } | undefined)?.token;
    const presented = fromHeader ?? (typeof fromQuery === 'string' && !fromQuery.startsWith('hk_') ? fromQuery : undefined);
    if (!presented) {
      reply.header('www-authenticate', 'Bearer');
      return problem(reply, 401, 'Unauthorized', 'send a tenant key: Authorization: Bearer hk_… (or a user token on a user\'s notifications)');
    }
    if (!presented.startsWith('hk_')) return this.authenticateUser(req, reply, presented);
    const key = await this.parts.keys.verify(presented);
    if (!key) {
      reply.header('www-authenticate', 'Bearer error="invalid_token"');
      return problem(reply, 401, 'Unauthorized', 'this key is unknown or revoked');
    }
    const { keys } = this.parts.topology;
    const waitMs = await this.takeRate(keys.internal('rate', 'k', key.id), keys.internal('rate', 'pause', `k:${key.id}`), key.ratePerSecond);
    reply.header('ratelimit-limit', String(key.ratePerSecond));
    if (waitMs > 0) {
      const seconds = Math.max(1, Math.ceil(waitMs / 1000));
      reply.header('retry-after', String(seconds)).header('ratelimit-remaining', '0').header('ratelimit-reset', String(seconds));
      return problem(reply, 429, 'Too many requests', `this key may make ${key.ratePerSecond} requests per second; try again in ${seconds} s`);
    }
    req.apiKey = key;
  }

  private forbidden(req: FastifyRequest, reply: FastifyReply, scope: ApiScope) {
    // Fails closed: a route reached without a tenant key (never meant to happen) is refused.
    if (!req.apiKey) return problem(reply, 401, 'Unauthorized', 'send a tenant key: Authorization: Bearer hk_…');
    if (allows(req.apiKey, scope)) return null;
    return problem(reply, 403, 'Forbidden', `this key lacks the "${scope}" scope`);
  }

  /** POST /v1/notifications: 202 with the id; 409 for an idempotency key used in the last 24 h. */
  private async send(req: FastifyRequest, reply: FastifyReply) {
    const key = req.apiKey!;
    if (this.forbidden(req, reply, 'send')) return reply;
    const body = req.body;
    if (!body || typeof body !== 'object' || Array.isArray(body)) return problem(reply, 400, 'Bad request', 'the body must be a JSON object');
    const fields = body as Record<string, unknown>;
    if (fields.tenant !== undefined && fields.tenant !== key.tenant) {
      return problem(reply, 403, 'Forbidden', `this key belongs to tenant "${key.tenant}"; leave "tenant" out`);
    }
    const header = req.headers['idempotency-key'];
    const idempotencyKey = typeof header === 'string' ? header : fields.idempotency_key;
    if (typeof header === 'string' && fields.idempotency_key !== undefined && fields.idempotency_key !== header) {
      return problem(reply, 400, 'Bad request', 'the Idempotency-Key header and "idempotency_key" differ', ['idempotency_key: differs from the Idempotency-Key header']);
    }
    const raw = { ...fields, tenant: key.tenant, idempotency_key: idempotencyKey };
    const { parsed, problems } = checkRequest(raw, this.parts.templates, Date.now());
    if (!parsed.success || problems.length) {
      const missingKey = idempotencyKey === undefined ? ['idempotency_key: send an Idempotency-Key header (or "idempotency_key")'] : [];
      const errors = [...missingKey, ...problems.filter((p) => !(missingKey.length && p.startsWith('idempotency_key')))];
      return problem(reply, 400, 'Invalid request', `${errors.length} problem${errors.length === 1 ? '' : 's'} with the request`, errors);
    }
    const request = parsed.data;
    const id = request.id ?? requestIdFor(request.tenant, request.idempotency_key);
    const statusUrl = `/v1/notifications/${encodeURIComponent(id)}`;
    const remembered = this.parts.topology.keys.internal('idem', request.tenant, request.idempotency_key);
    await this.sendGate.pass();
    const original = await this.statuses.admit(remembered, IDEMPOTENCY_WINDOW_S, request.tenant, id,
      { tier: request.tier, category: request.category, send_at: request.send_at }, Date.now());
    if (original !== null) {
      return reply.code(409).type('application/problem+json').send({
        type: 'about:blank', title: 'Conflict', status: 409, detail: 'this idempotency key was used in the last 24 hours',
        id: original, status_url: `/v1/notifications/${encodeURIComponent(original)}`,
      });
    }
    try {
      await publishRequest(this.parts.js, this.parts.topology, request);
    } catch (err) {
      // Not stored: forget the key, so the producer's retry is not taken for a repeat.
      await this.statuses.forget(remembered).catch(() => undefined);
      this.parts.log.warn({ err }, 'api: publish failed');
      reply.header('retry-after', '1');
      return problem(reply, 503, 'Unavailable', `the request could not be stored (${(err as Error).message}); try again`);
    }
    return reply.code(202).send({ id, status_url: statusUrl });
  }

  /** Listens; resolves with the port (useful when `port` is 0). */
  listen(host: string, port: number): Promise<number> {
    return listenOn(this.app, host, port);
  }

  async close(): Promise<void> {
    // Open streams first: the server cannot close while they are held open.
    const steps = [() => this.made.streams?.close(), () => this.app.close(), () => this.made.receipts?.close(), () => this.made.inboxRedis?.disconnect()];
    for (const step of steps) {
      try { await step(); } catch (err) { this.parts.log.error({ err }, 'api: close step failed'); }
    }
  }

  /** Parts made on first use (building the app touches none of the connections). */
  private readonly made: { inboxRedis?: Redis; inbox?: InboxStore; streams?: InboxStreams; userTokens?: UserTokens; receipts?: ReceiptPublisher; directory?: Directory; statuses?: RequestStatuses } = {};
  private get lazy() {
    const self = this;
    const { parts, made } = this;
    return {
      get inbox() {
        // Feed pages get a connection that writes each command at once (see InboxOptions.feedRedis).
        // Streams' recounts stay batched: they come 10,000 at once after a broadcast, and moving them
        // too made the API's busy time after one 1,062 / 1,174 ms against 821 / 758 ms (one run each).
        made.inboxRedis ??= logRedisErrors(parts.redis.duplicate({ enableAutoPipelining: false }), parts.log);
        return (made.inbox ??= new InboxStore(parts.redis, parts.topology.keys, {
          ...parts.inbox, now: self.now, feedRedis: made.inboxRedis, ...(parts.nc ? { events: new NatsInboxEvents(parts.nc, parts.topology) } : {}),
        }));
      },
      get streams() {
        if (!parts.nc) throw new Error('api: no NATS connection for inbox streams');
        return (made.streams ??= new InboxStreams({
          nc: parts.nc, topology: parts.topology, inbox: this.inbox, log: parts.log, heartbeatMs: parts.sseHeartbeatMs,
          viewOf: (tenant, userId) => self.viewOf(tenant, userId),
        }));
      },
      get userTokens() { return (made.userTokens ??= new UserTokens(parts.redis, parts.topology.keys, 1_000, self.now)); },
      get receipts() { return (made.receipts ??= new ReceiptPublisher(parts.js, parts.topology, { log: parts.log })); },
    };
  }
}
