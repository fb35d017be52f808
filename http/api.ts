import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import type { JetStreamClient } from '@nats-io/jetstream';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { checkRequest } from '../processors/validate.js';
import { describeIssues, deviceRecordSchema, directoryRecordSchema, userRecordSchema, type DirectoryRecord } from '../schemas/index.js';
import type { Cancellations } from '../stores/cancellations.js';
import { Directory } from '../stores/directory.js';
import { requestIdFor } from '../runtime/ids.js';
import { publishRequest } from '../runtime/producer.js';
import type { TemplateStore } from '../runtime/templates.js';
import { allows, type ApiKey, type ApiKeys, type ApiScope } from '../stores/api-keys.js';
import { takeTokens } from '../stores/rate-limits.js';
import type { Topology } from '../streams/topology.js';
import { listenOn } from './server.js';
import { registerOpenApi } from './openapi.js';

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
  /** Largest request body. @default 256 KiB */
  bodyLimit?: number;
}

/** Paths anyone may read: the API's own description. */
const PUBLIC_PATHS = new Set(['/v1/openapi.json', '/v1/docs']);

/** How long an idempotency key is remembered per tenant (the JetStream window is shorter). */
const IDEMPOTENCY_WINDOW_S = 24 * 60 * 60;

/** An RFC 9457 problem: what went wrong, and every bad field when there are several. */
function problem(reply: FastifyReply, status: number, title: string, detail: string, errors?: string[]) {
  return reply.code(status).type('application/problem+json').send({ type: 'about:blank', title, status, detail, ...(errors ? { errors } : {}) });
}

declare module 'fastify' {
  interface FastifyRequest {
    apiKey?: ApiKey;
  }
}

/**
 * Herald's HTTP API (`/v1`): tenant keys decide the tenant (`Authorization: Bearer hk_…`), each key
 * rate-limited in Redis (shared by every replica). Stateless: any number of replicas.
 * `POST /v1/notifications` checks a request exactly as validate would and publishes it to the same
 * subject a NATS producer uses, with the same Nats-Msg-Id.
 */
export class ApiServer {
  readonly app: FastifyInstance;

  constructor(private readonly parts: ApiParts) {
    this.app = Fastify({
      loggerInstance: parts.log.child({ component: 'api' }) as FastifyBaseLogger,
      logController: new LogController({ disableRequestLogging: true }),
      bodyLimit: parts.bodyLimit ?? 256 * 1024,
      // Long path parameters reach the handlers, which say what is wrong (Fastify would answer a bare 414).
      routerOptions: { maxParamLength: 5_000 },
    });
    this.app.setErrorHandler((err: Error & { statusCode?: number; code?: string }, _req, reply) => {
      const status = err.statusCode && err.statusCode >= 400 && err.statusCode < 500 ? err.statusCode : 500;
      if (status === 500) parts.log.error({ err }, 'api: unexpected error');
      const title = status === 413 ? 'Request body too large' : status === 415 ? 'Unsupported media type' : status === 500 ? 'Internal error' : 'Bad request';
      return problem(reply, status, title, status === 500 ? 'something went wrong on our side; try again' : err.message);
    });
    this.app.setNotFoundHandler((req, reply) => problem(reply, 404, 'Not found', `no route ${req.method} ${req.url.split('?')[0]}`));
    this.app.addHook('onRequest', (req, reply) => this.authenticate(req, reply));
    registerOpenApi(this.app);
    this.app.post('/v1/notifications', (req, reply) => this.send(req, reply));
    this.app.post<{ Params: { id: string } }>('/v1/notifications/:id/cancel', (req, reply) => this.cancel(req, reply));
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
    if (!allows(req.apiKey!, 'directory') && this.forbidden(req, reply, 'read')) return null;
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

  private get directory(): Directory {
    return new Directory(this.parts.redis, this.parts.topology.keys);
  }

  /** A user id from the path, within the directory's bounds. */
  private userId(id: string, reply: FastifyReply): string | null {
    if (id.length >= 1 && id.length <= 128) return id;
    problem(reply, 400, 'Bad request', 'user_id: 1 to 128 characters', ['user_id: 1 to 128 characters']);
    return null;
  }

  /** POST /v1/notifications/{id}/cancel: every delivery of the key's tenant's request not yet sent is dropped. */
  private async cancel(req: FastifyRequest<{ Params: { id: string } }>, reply: FastifyReply) {
    if (this.forbidden(req, reply, 'send')) return reply;
    const { id } = req.params;
    if (id.length < 1 || id.length > 128) return problem(reply, 400, 'Bad request', 'id: 1 to 128 characters');
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

  /** Every /v1 route needs a live key, within its rate. */
  private async authenticate(req: FastifyRequest, reply: FastifyReply) {
    if (!req.url.startsWith('/v1/') || PUBLIC_PATHS.has(req.url.split('?')[0])) return;
    const header = req.headers.authorization;
    const presented = header && /^Bearer\s+(\S+)$/i.exec(header)?.[1];
    if (!presented) {
      reply.header('www-authenticate', 'Bearer');
      return problem(reply, 401, 'Unauthorized', 'send a tenant key: Authorization: Bearer hk_…');
    }
    const key = await this.parts.keys.verify(presented);
    if (!key) {
      reply.header('www-authenticate', 'Bearer error="invalid_token"');
      return problem(reply, 401, 'Unauthorized', 'this key is unknown or revoked');
    }
    const { keys } = this.parts.topology;
    const rate = { perSecond: key.ratePerSecond, burst: key.ratePerSecond };
    const waitMs = await takeTokens(this.parts.redis, [[keys.internal('rate', 'k', key.id), rate]], keys.internal('rate', 'pause', `k:${key.id}`), Date.now(), 1);
    reply.header('ratelimit-limit', String(key.ratePerSecond));
    if (waitMs > 0) {
      const seconds = Math.max(1, Math.ceil(waitMs / 1000));
      reply.header('retry-after', String(seconds)).header('ratelimit-remaining', '0').header('ratelimit-reset', String(seconds));
      return problem(reply, 429, 'Too many requests', `this key may make ${key.ratePerSecond} requests per second; try again in ${seconds} s`);
    }
    req.apiKey = key;
  }

  private forbidden(req: FastifyRequest, reply: FastifyReply, scope: ApiScope) {
    if (allows(req.apiKey!, scope)) return null;
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
    const fresh = await this.parts.redis.set(remembered, id, 'EX', IDEMPOTENCY_WINDOW_S, 'NX');
    if (fresh === null) {
      const original = (await this.parts.redis.get(remembered)) ?? id;
      return reply.code(409).type('application/problem+json').send({
        type: 'about:blank', title: 'Conflict', status: 409, detail: 'this idempotency key was used in the last 24 hours',
        id: original, status_url: `/v1/notifications/${encodeURIComponent(original)}`,
      });
    }
    try {
      await publishRequest(this.parts.js, this.parts.topology, request);
    } catch (err) {
      // Not stored: forget the key, so the producer's retry is not taken for a repeat.
      await this.parts.redis.del(remembered).catch(() => undefined);
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
    await this.app.close();
  }
}
