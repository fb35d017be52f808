import fs from 'node:fs';
import path from 'node:path';
import ts from 'typescript';
import { describe, expect, expectTypeOf, it, vi } from 'vitest';
import type { z } from 'zod';
import { Validator } from '@seriousme/openapi-schema-validator';
import { ApiServer, type ApiParts } from '../../http/api.js';
import { documentedRoutes, openApiDocument } from '../../http/openapi.js';
import { createLogger } from '../../runtime/logger.js';
import { version } from '../../runtime/version.js';
import { notificationBodySchema, requestSchema } from '../../schemas/index.js';
import { clientTypesFile, generateClientTypes } from '../../client/generate.js';
import type { NotificationBody, paths } from '../../client/index.js';

/** Every route any Fastify instance of this file registers, seen by an onRoute hook added at creation. */
const registered = vi.hoisted(() => [] as string[]);
vi.mock('fastify', async (importOriginal) => {
  const real = await importOriginal<typeof import('fastify')>();
  const create = ((options?: object) => {
    const app = real.default(options);
    app.addHook('onRoute', (route) => {
      for (const method of [route.method].flat()) if (method !== 'HEAD') registered.push(`${method} ${route.url}`);
    });
    return app;
  }) as typeof real.default;
  return { ...real, default: create };
});

const root = path.join(import.meta.dirname, '..', '..');

/** The real ApiServer, its parts never touched: building it registers the routes. */
function apiServer(): ApiServer {
  const unused = new Proxy({}, { get: (_t, prop) => { throw new Error(`the route listing touched parts.…${String(prop)}`); } });
  return new ApiServer({
    keys: unused, redis: unused, js: unused, topology: unused, templates: unused, cancellations: unused, log: createLogger('silent'),
  } as unknown as ApiParts);
}

/** `/v1/users/:userId` and `/v1/users/{user_id}` both become `/v1/users/{}`. */
const shape = (route: string) => route.replace(/:[^/]+|\{[^}]+\}/g, '{}');

describe('the OpenAPI document', () => {
  it('is a valid OpenAPI 3.1 document, versioned as Herald is', async () => {
    const validator = new Validator();
    const result = await validator.validate(structuredClone(openApiDocument()) as never);
    expect(result.errors ?? []).toEqual([]);
    expect(result.valid).toBe(true);
    expect(validator.version).toBe('3.1');
    expect((openApiDocument().info as { version: string }).version).toBe(version);
  });

  it('describes every route the API server registers, and no route it lacks', () => {
    registered.length = 0;
    apiServer();
    // The document is the API's (`/v1`); the demo page beside it is not part of it.
    const served = new Set(registered.filter((r) => r.split(' ')[1].startsWith('/v1/')).map(shape));
    const documented = new Set(documentedRoutes().map(shape));
    expect(served.size).toBeGreaterThan(5);
    const undocumented = [...served].filter((r) => !documented.has(r));
    const missing = documentedRoutes().filter((r) => !served.has(shape(r)));
    expect(undocumented, 'routes ApiServer registers that http/openapi.ts does not describe').toEqual([]);
    expect(missing, 'routes http/openapi.ts describes that ApiServer does not register (yet)').toEqual([]);
  });

  it('names a scope and the key problems on every keyed operation, and each path parameter once', () => {
    const doc = openApiDocument() as { paths: Record<string, Record<string, {
      security: unknown[]; description: string; responses: Record<string, unknown>; parameters?: { name: string; in: string }[];
    }>> };
    for (const [route, item] of Object.entries(doc.paths)) {
      for (const [method, op] of Object.entries(item)) {
        const where = `${method.toUpperCase()} ${route}`;
        const pathParams = (op.parameters ?? []).filter((p) => p.in === 'path').map((p) => p.name);
        expect(pathParams, where).toEqual([...route.matchAll(/\{([^}]+)\}/g)].map((m) => m[1]));
        if (op.security.length === 0) continue;
        expect(op.description, where).toMatch(/Scope: `(send|read|directory)`/);
        expect(Object.keys(op.responses), where).toEqual(expect.arrayContaining(['401', '429']));
      }
    }
  });

  it('serves itself at /v1/openapi.json and a self-contained page at /v1/docs', async () => {
    const api = apiServer();
    const json = await api.app.inject({ method: 'GET', url: '/v1/openapi.json' });
    expect(json.statusCode).toBe(200);
    expect(json.headers['content-type']).toMatch(/^application\/json/);
    expect(json.json()).toEqual(openApiDocument());
    const page = await api.app.inject({ method: 'GET', url: '/v1/docs' });
    expect(page.statusCode).toBe(200);
    expect(page.headers['content-type']).toMatch(/^text\/html/);
    expect(page.headers['content-security-policy']).toMatch(/default-src 'none'.*connect-src 'self'/);
    expect(page.body).toContain('fetch(\'openapi.json\')');
    // Nothing from elsewhere: no absolute URL, no external script or style.
    expect(page.body).not.toMatch(/https?:\/\/|\/\/[a-z0-9.-]+\.[a-z]{2,}\/|<script[^>]+src=|<link[^>]+href=/i);
    await api.close();
  });
});

describe('the typed client', () => {
  it('has the types openapi-typescript generates from the document now (npm run client:generate)', async () => {
    const committed = fs.readFileSync(clientTypesFile, 'utf8');
    expect(committed === await generateClientTypes(), 'client/openapi.d.ts is stale: run npm run client:generate').toBe(true);
  });

  it('has request and answer types that match the zod schemas both ways (client/contract.ts compiles)', () => {
    const config = ts.getParsedCommandLineOfConfigFile(path.join(root, 'tsconfig.json'), {}, { ...ts.sys, onUnRecoverableConfigFileDiagnostic: () => undefined });
    const program = ts.createProgram([path.join(root, 'client', 'contract.ts')], { ...config!.options, noEmit: true });
    const problems = ts.getPreEmitDiagnostics(program).map((d) => ts.flattenDiagnosticMessageText(d.messageText, '\n'));
    expect(problems).toEqual([]);
    // The same for the producer's body, checked by `npx tsc -p .` as well.
    type ClientBody = NonNullable<paths['/v1/notifications']['post']['requestBody']>['content']['application/json'];
    expectTypeOf<ClientBody>().toExtend<z.input<typeof notificationBodySchema>>();
    expectTypeOf<z.input<typeof notificationBodySchema>>().toExtend<ClientBody>();
    expectTypeOf<NotificationBody>().toExtend<z.input<typeof notificationBodySchema>>();
    expectTypeOf<z.input<typeof notificationBodySchema>>().toExtend<NotificationBody>();
  }, 60_000);
});

describe('the body of POST /v1/notifications', () => {
  const body = { tier: 'transactional', category: 'orders', content: { title: 't', body: 'b' }, recipients: { user_ids: ['u1'] } };

  it('is the wire contract without tenant, with the idempotency key optional', () => {
    const cases: [string, Record<string, unknown>][] = [
      ['plain', body],
      ['with a key', { ...body, idempotency_key: 'k1' }],
      ['a template', { ...body, content: undefined, template: { id: 'welcome', locale: 'fr' }, data: { name: 'Ada' } }],
      ['content and template', { ...body, template: { id: 'welcome' } }],
      ['neither', { ...body, content: undefined }],
      ['both recipients', { ...body, recipients: { user_ids: ['u1'], topic: 't' } }],
      ['a bad tier', { ...body, tier: 'urgent' }],
      ['repeated channels', { ...body, channels: ['email', 'email'] }],
      ['a bad send_at', { ...body, send_at: 'tomorrow' }],
      ['an unknown field', { ...body, priority: 1 }],
      ['an empty key', { ...body, idempotency_key: '' }],
      ['deep data', { ...body, data: JSON.parse('{"a":'.repeat(20) + '1' + '}'.repeat(20)) }],
    ];
    for (const [name, candidate] of cases) {
      const asRequest = requestSchema.safeParse({ idempotency_key: 'k', ...candidate, tenant: 'acme' });
      const asBody = notificationBodySchema.safeParse(candidate);
      expect(asBody.success, name).toBe(asRequest.success);
      if (!asBody.success && !asRequest.success) expect(asBody.error.issues.map((i) => i.message), name).toEqual(asRequest.error.issues.map((i) => i.message));
    }
    expect(notificationBodySchema.safeParse({ ...body, tenant: 'acme' }).success).toBe(false);
  });
});
