import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { publishRaw } from '../runtime/producer.js';
import { freePort } from '../servers/local-servers.js';
import { envFor } from './child.js';
import { eventually, Harness } from './harness.js';

describe('operator commands give straight answers', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await Harness.create('operator');
    await h.start();
  });
  afterAll(async () => h?.close());

  const herald = (args: string[], extra: Record<string, string> = {}) =>
    promisify(execFile)(path.join(import.meta.dirname, '..', 'bin', 'herald.js'), args, { env: { ...process.env, ...envFor(h.config), ...extra } })
      .then(({ stdout }) => ({ code: 0, stdout, stderr: '' }), (e: { code: number; stdout: string; stderr: string }) => ({ code: e.code, stdout: e.stdout, stderr: e.stderr }));

  it('fails within seconds, saying so, when Redis is down', async () => {
    const dead = `redis://127.0.0.1:${await freePort()}`;
    for (const args of [['directory', 'show', 'u1', '--tenant', 'acme'], ['inbox', 'u1', '--tenant', 'acme']]) {
      const started = Date.now();
      const r = await herald(args, { REDIS_URL: dead });
      expect(r.code).not.toBe(0);
      expect(r.stderr).toMatch(/cannot reach Redis at 127\.0\.0\.1:\d+: .*ECONNREFUSED/);
      expect(Date.now() - started).toBeLessThan(10_000);
    }
  });

  it('names what is wrong with a bad flag, and exits non-zero', async () => {
    const cases: [string[], RegExp][] = [
      [['inbox', 'u1', '--tenant', 'acme', '--limit', 'abc'], /--limit must be a whole number of at least 1, not "abc"/],
      [['inbox', 'u1', '--tenant', 'acme', '--limit', '-5'], /--limit must be a whole number of at least 1, not "-5"/],
      [['dlq', 'redrive', '--stage', 'nope'], /--stage: unknown stage "nope" \(stages: validate, resolve, filter, schedule, wake, batch, dispatch, loader, tracker\)/],
      [['dlq', 'redrive', '--seq', 'abc'], /--seq must be a whole number of at least 1, not "abc"/],
      [['dlq', 'redrive', '--seq', '999999'], /no dead letter #999999/],
      [['dlq', 'show', '999999'], /no dead letter #999999/],
      [['dlq', 'list', '--since', 'yesterday-ish'], /--since: /],
      [['cancel', 'never-existed', '--tenant', 'acme'], /no request "never-existed" of tenant acme in the receipts/],
      [['cancel', 'x', '--tenant', 'a:b'], /--tenant: "a:b" is not a tenant name/],
    ];
    for (const [args, message] of cases) {
      const r = await herald(args);
      expect(r.code, args.join(' ')).toBe(1);
      expect(r.stderr, args.join(' ')).toMatch(message);
    }
  });

  it('lists every dead letter, not only the oldest 1,000', async () => {
    for (let i = 0; i < 1_005; i++) await publishRaw(h.nats.js, h.topology, 'social', `not json ${i}`);
    await eventually(async () => (await h.nats.jsm.streams.info(h.topology.dlqStream)).state.messages === 1_005, '1,005 dead letters', 60_000, 250);
    const r = await herald(['dlq', 'list', '--json']);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toHaveLength(1_005);
  });
});
