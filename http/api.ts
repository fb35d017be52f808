import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import type { JetStreamClient } from '@nats-io/jetstream';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { checkRequest } from '../processors/validate.js';
import { requestIdFor } from '../runtime/ids.js';
import { publishRequest } from '../runtime/producer.js';
import type { TemplateStore } from '../runtime/templates.js';
import { allows, type ApiKey, type ApiKeys, type ApiScope } from '../stores/api-keys.js';
import { takeTokens } from '../stores/rate-limits.js';
import type { Topology } from '../streams/topology.js';
import { listenOn } from './server.js';

/** What the HTTP edge needs: it is a producer like any other, plus the key store. */
export interface ApiParts {
  keys: ApiKeys;
  redis: Redis;
  js: JetStreamClient;
  topology: Topology;
  templates: TemplateStore;
  log: Logger;
  /** Largest request body. @default 256 KiB */
  bodyLimit?: number;
}

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
    });
    this.app.setErrorHandler((err: Error & { statusCode?: number; code?: string }, _req, reply) => {
      const status = err.statusCode && err.statusCode >= 400 && err.statusCode < 500 ? err.statusCode : 500;
      if (status === 500) parts.log.error({ err }, 'api: unexpected error');
      const title = status === 413 ? 'Request body too large' : status === 415 ? 'Unsupported media type' : status === 500 ? 'Internal error' : 'Bad request';
      return problem(reply, status, title, status === 500 ? 'something went wrong on our side; try again' : err.message);
    });
    this.app.setNotFoundHandler((req, reply) => problem(reply, 404, 'Not found', `no route ${req.method} ${req.url.split('?')[0]}`));
    this.app.addHook('onRequest', (req, reply) => this.authenticate(req, reply));
    this.app.post('/v1/notifications', (req, reply) => this.send(req, reply));
  }

  /** Every /v1 route needs a live key, within its rate. */
  private async authenticate(req: FastifyRequest, reply: FastifyReply) {
    if (!req.url.startsWith('/v1/')) return;
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
