import { createClient } from '@clickhouse/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HealthServer } from '../http/server.js';
import { Metrics } from '../pipeline/metrics.js';
import { version } from '../runtime/version.js';
import { freePort } from '../servers/local-servers.js';
import { Harness } from './harness.js';

describe('health, readiness and metrics over HTTP', () => {
  let h: Harness;
  const servers: HealthServer[] = [];
  beforeAll(async () => { h = await Harness.create('http'); });
  afterAll(async () => {
    await Promise.all(servers.map((s) => s.close()));
    await h?.close();
  });

  async function serve(deps: ConstructorParameters<typeof HealthServer>[1], timeoutMs = 500): Promise<string> {
    const server = new HealthServer(new Metrics(), deps, h.log, timeoutMs);
    servers.push(server);
    const port = await server.listen('127.0.0.1', 0);
    return `http://127.0.0.1:${port}`;
  }

  it('reports each server it depends on, with the version, and 200 when all answer', async () => {
    const base = await serve({ nats: h.nats.nc, redis: h.redis, clickhouse: h.clickhouse });
    expect(await (await fetch(`${base}/healthz`)).json()).toEqual({ ok: true, version });
    const ready = await fetch(`${base}/readyz`);
    expect(ready.status).toBe(200);
    const body = await ready.json();
    expect(body).toMatchObject({ ready: true, version, checks: { nats: { ok: true }, redis: { ok: true }, clickhouse: { ok: true } } });
    const metrics = await fetch(`${base}/metrics`);
    expect(metrics.headers.get('content-type')).toMatch(/text\/plain/);
    expect(await metrics.text()).toMatch(/process_resident_memory_bytes/);
    expect((await fetch(`${base}/nothing-here`)).status).toBe(404);
  });

  it('answers 503 naming the server that did not answer, within its timeout', async () => {
    const deadPort = await freePort();
    const clickhouse = createClient({ url: `http://127.0.0.1:${deadPort}`, request_timeout: 5_000 });
    const base = await serve({ nats: h.nats.nc, redis: h.redis, clickhouse }, 500);
    const started = Date.now();
    const ready = await fetch(`${base}/readyz`);
    expect(Date.now() - started).toBeLessThan(3_000);
    expect(ready.status).toBe(503);
    const body = (await ready.json()) as { ready: boolean; checks: Record<string, { ok: boolean; error?: string }> };
    expect(body.ready).toBe(false);
    expect(body.checks.nats.ok).toBe(true);
    expect(body.checks.redis.ok).toBe(true);
    expect(body.checks.clickhouse.ok).toBe(false);
    expect(body.checks.clickhouse.error).toMatch(/ECONNREFUSED|connect|no answer/i);
    await clickhouse.close();
  });
});
