import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SmtpCatcher } from '../sinks/smtp-catcher.js';
import { HeraldProcess, envFor } from './child.js';
import { DedicatedServers } from './servers.js';
import { eventually, Harness } from './harness.js';

/** Recipients and duplicates seen by an SMTP catcher. */
function tally(catcher: SmtpCatcher) {
  const seen = new Map<string, number>();
  for (const m of catcher.messages) for (const to of m.to) seen.set(to, (seen.get(to) ?? 0) + 1);
  const total = [...seen.values()].reduce((a, b) => a + b, 0);
  return { unique: seen.size, duplicates: total - seen.size };
}

const fast = { HERALD_ACK_WAIT_MS: '3000', HERALD_RATE_LIMITS: 'smtp=1000000', HERALD_BACKOFF_BASE_MS: '100', HERALD_BACKOFF_CAP_MS: '2000', HERALD_MAX_ATTEMPTS: '1000' };

describe('crashes: kill -9 during a 50,000-recipient fan-out', () => {
  const catcher = new SmtpCatcher(undefined, false);
  let h: Harness;
  let herald: HeraldProcess;
  beforeAll(async () => {
    await catcher.start();
    h = await Harness.create('kill9', { SMTP_URL: `smtp://127.0.0.1:${catcher.port}`, ...fast });
    const records = [];
    for (let i = 0; i < 50_000; i++) {
      records.push({ type: 'user' as const, tenant: 'acme', id: `k${i}`, email: `k${i}@acme.test` });
      records.push({ type: 'topic_member' as const, tenant: 'acme', topic: 'everyone', user_id: `k${i}` });
    }
    await h.load(records);
    herald = new HeraldProcess(envFor(h.config, fast));
  });
  afterAll(async () => {
    await herald?.stop('SIGKILL');
    await h?.close();
    await catcher.close();
  });

  it('delivers to every recipient, with under 0.1 % duplicates, across five kills', async () => {
    await herald.start();
    await h.publish({
      tenant: 'acme', idempotency_key: 'everyone-1', tier: 'marketing', category: 'news',
      content: { title: 'News', body: 'b' }, recipients: { topic: 'everyone' }, channels: ['email'],
    });
    const kills: number[] = [];
    for (let k = 0; k < 5; k++) {
      await new Promise((r) => setTimeout(r, 1_000 + Math.random() * 2_500));
      kills.push(tally(catcher).unique);
      await herald.stop('SIGKILL');
      await herald.start();
    }
    const t0 = Date.now();
    await eventually(() => tally(catcher).unique === 50_000, 'all 50,000 recipients', 240_000, 500);
    console.log(`after the last kill: ${((Date.now() - t0) / 1000).toFixed(1)} s to finish`);
    const { duplicates } = tally(catcher);
    console.log(`kill -9 at ${kills.join(', ')} delivered; duplicates: ${duplicates} of 50,000`);
    if (process.env.DEBUG_DUPS) {
      const seen = new Map<string, number[]>();
      catcher.messages.forEach((m, i) => m.to.forEach((t) => seen.set(t, [...(seen.get(t) ?? []), i])));
      const dups = [...seen].filter(([, v]) => v.length > 1).map(([k, v]) => `${k.split('@')[0]}@${v.join('/')}`);
      console.log(dups.slice(0, 60).join(' '));
    }
    expect(kills.filter((n) => n > 0 && n < 50_000).length).toBeGreaterThanOrEqual(3);
    expect(duplicates).toBeLessThan(50);
  }, 300_000);
});

describe('infrastructure outages', () => {
  const servers = new DedicatedServers();
  const catcher = new SmtpCatcher(undefined, false);
  let h: Harness;
  let herald: HeraldProcess;
  let counter = 0;
  beforeAll(async () => {
    await catcher.start();
    const env = await servers.start(['nats', 'redis', 'clickhouse']);
    h = await Harness.create('outage', { ...env, SMTP_URL: `smtp://127.0.0.1:${catcher.port}`, ...fast });
    await h.load(Array.from({ length: 500 }, (_, i) => ({ type: 'user' as const, tenant: 'acme', id: `o${i}`, email: `o${i}@acme.test` })));
    herald = new HeraldProcess(envFor(h.config, fast));
    await herald.start();
  });
  afterAll(async () => {
    await herald?.stop('SIGKILL');
    await h?.close();
    await catcher.close();
    await servers.close();
  });

  /** Publishes one email request per user, retrying while NATS is away, as a producer must. */
  async function publishBurst(n: number): Promise<string[]> {
    const tag = `burst${counter++}`;
    for (let i = 0; i < n; i++) {
      const request = {
        tenant: 'acme', idempotency_key: `${tag}-${i}`, tier: 'transactional' as const, category: tag,
        content: { title: tag, body: 'b' }, recipients: { user_ids: [`o${i}`] }, channels: ['email' as const],
      };
      await eventually(() => h.publish(request).then(() => true), `publish ${tag}-${i}`, 30_000, 200);
    }
    return [tag];
  }
  const recipientsSince = (before: number) => new Set(catcher.messages.slice(before).flatMap((m) => m.to)).size;

  it('loses nothing when nats-server restarts in the middle of a run', async () => {
    const before = catcher.messages.length;
    const publishing = publishBurst(400);
    await new Promise((r) => setTimeout(r, 300));
    await servers.down('nats');
    await new Promise((r) => setTimeout(r, 2_000));
    await servers.up('nats');
    await publishing;
    await eventually(() => recipientsSince(before) === 400, 'all 400 recipients after the restart', 90_000, 250);
    // Give a redelivery that was still on its way the time to land, then count it.
    await new Promise((r) => setTimeout(r, 2_000));
    const duplicates = catcher.messages.length - before - 400;
    console.log(`nats-server restart: ${duplicates} duplicates of 400`);
    // At least once: a restart may repeat the sends in flight when it hit. Seen on this machine over
    // 17 runs: 0 in 15, then 7 and 24 of 400 (uninvestigated: see the session-4 note). A bounded
    // few — never a replay of the run (400).
    expect(duplicates).toBeLessThan(40);
  });

  it('keeps delivering while ClickHouse is down for 30 s, and loads every receipt when it is back', async () => {
    const before = catcher.messages.length;
    await servers.down('clickhouse');
    const [tag] = await publishBurst(200);
    await eventually(() => catcher.messages.length - before >= 200, '200 emails with ClickHouse down', 30_000, 250);
    await new Promise((r) => setTimeout(r, 30_000 - 1_000));
    await servers.up('clickhouse');
    const counts = await eventually(async () => {
      const [r] = await (await h.clickhouse.query({
        query: `SELECT uniqExactIf(request_id, status = 'accepted') AS accepted, uniqExactIf(user_id, status = 'delivered') AS delivered
                FROM ${h.config.clickhouseDatabase}.receipts WHERE category = '${tag}'`,
        format: 'JSONEachRow',
      })).json<{ accepted: string; delivered: string }>();
      return Number(r.delivered) === 200 && Number(r.accepted) === 200 ? r : null;
    }, 'every accepted and delivered receipt of the burst in ClickHouse', 60_000, 1_000);
    expect(counts).toEqual({ accepted: '200', delivered: '200' });
  }, 180_000);

  it('pauses while Redis is down for 10 s and loses nothing once it is back', async () => {
    const before = catcher.messages.length;
    await servers.down('redis');
    const publishing = publishBurst(200);
    await new Promise((r) => setTimeout(r, 10_000));
    expect(catcher.messages.length - before).toBe(0);
    await servers.up('redis');
    await publishing;
    await eventually(() => recipientsSince(before) === 200, 'all 200 recipients after Redis returned', 90_000, 250);
    // The outage is told in the logs, a line per 10 s at most, and its end too; ioredis's own
    // message for an error nobody listens to (one per retry, on stderr) never appears.
    expect(herald.output).toContain('redis: connection failing; retrying');
    expect(herald.output).toContain('redis: connected again');
    expect(herald.output).not.toContain('Unhandled error event');
    expect(herald.output.split('redis: connection failing').length - 1).toBeLessThanOrEqual(6);
  });

  it('finishes in-flight work on SIGTERM and exits 0', async () => {
    const before = catcher.messages.length;
    const publishing = publishBurst(300);
    await new Promise((r) => setTimeout(r, 500));
    expect(await herald.stop('SIGTERM')).toBe(0);
    await publishing;
    await herald.start();
    await eventually(() => recipientsSince(before) === 300, 'all 300 recipients across the restart', 90_000, 250);
    await new Promise((r) => setTimeout(r, 1_000));
    // A graceful stop finishes what it started: nothing is sent twice.
    expect(catcher.messages.length - before).toBe(300);
  });
});
