import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Command, Option } from 'commander';
import { loadConfig, ConfigError, sandboxDir, type Config } from '../runtime/config.js';
import { createLogger } from '../runtime/logger.js';
import { connectClickHouse, connectNats, connectRedis, connectRedisOrFail, type Nats } from '../runtime/connections.js';
import type { Redis } from 'ioredis';
import { Directory } from '../stores/directory.js';
import { publishRequest } from '../runtime/producer.js';
import { describeIssues, directoryRecordSchema, requestSchema, tenantSchema, tiers, type Tier } from '../schemas/index.js';
import { applyAll, sqlString } from '../streams/apply.js';
import { pipelineGraph, topologyOf } from '../pipeline/graph.js';
import { InboxStore, inboxOptions } from '../stores/inbox.js';
import { readInbox } from '../stores/inbox-view.js';
import { recordsFromFlags, type DirectorySetFlags } from './directory-set.js';
import type { UserView } from '../stores/directory.js';
import type { FakeRecord } from '../sinks/fakes/script.js';
// The pipeline, its provider libraries and the replay load only in the commands that run them: a
// `herald api` process (one per replica, each holding thousands of streams) is lighter without them.
import type { Pipeline } from '../pipeline/host.js';
import { isListening, startServer, stopDetached, urlOf, type ServerName } from '../servers/local-servers.js';
import { parseDuration, parseSince } from './duration.js';
import { formatFunnel, queryFunnel } from './funnel.js';
import { answerPrimary, defaultWorkerCount, isWorker, serversOnThisMachine, shareMetrics, superviseWorkers } from '../pipeline/workers.js';
import { progress } from './progress.js';
import { Kvm } from '@nats-io/kv';
import { Cancellations } from '../stores/cancellations.js';
import { listDeadLetters, originalOf, readDeadLetter, redriveDeadLetters } from '../streams/dead-letters.js';
import { ApiServer } from '../http/api.js';
import { Erasures } from '../stores/erasure.js';
import { MAX_USER_TOKEN_TTL_S, UserTokens } from '../stores/user-tokens.js';
import { RequestStatuses } from '../stores/request-status.js';
import type { ClickHouseClient } from '@clickhouse/client';
import { ApiKeys, apiScopes, type ApiScope } from '../stores/api-keys.js';
import { TemplateStore } from '../runtime/templates.js';

function config(): Config {
  try {
    return loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`herald: ${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
}

function fail(message: string): never {
  process.stderr.write(`herald: ${message}\n`);
  process.exit(1);
}

function formatUser(u: UserView): string {
  const prefs = Object.entries(u.preferences).map(([k, v]) => `${k}=${v ? 'on' : 'off'}`).join(', ') || '(none: opted in to everything)';
  return [
    `${u.tenant}/${u.id}${u.exists ? '' : '  (no user record)'}`,
    `  email: ${u.email ?? '-'}   phone: ${u.phone ?? '-'}   locale: ${u.locale}   timezone: ${u.timezone}`,
    `  quiet hours: ${u.quiet_hours ?? '-'}   hard stop: ${u.hard_stop ? 'ON (nothing is delivered)' : 'off'}`,
    `  preferences: ${prefs}`,
    `  devices: ${u.devices.map((d) => `${d.platform}:${d.token.slice(0, 12)}${d.token.length > 12 ? '…' : ''}${d.active ? '' : ' (inactive)'}`).join(', ') || '-'}`,
    `  topics: ${u.topics.join(', ') || '-'}`,
  ].join('\n');
}

/** Runs one command's work on a NATS connection, drained after. */
async function withNats<T>(cfg: Config, name: string, work: (nats: Nats) => Promise<T>): Promise<T> {
  const nats = await connectNats(cfg, name);
  try {
    return await work(nats);
  } finally {
    await nats.nc.drain();
  }
}

/** Runs one command's work on a Redis connection, closed after. */
async function withRedis<T>(cfg: Config, work: (redis: Redis) => Promise<T>): Promise<T> {
  // Fails within seconds, with the reason, when Redis is down (a plain client would wait forever).
  const redis = await connectRedisOrFail(cfg);
  try {
    return await work(redis);
  } finally {
    redis.disconnect();
  }
}

/** A whole number ≥ 1 given to `flag`, or an error naming the flag and the value. */
function positiveInt(value: string, flag: string): number {
  if (!/^\d+$/.test(value) || Number(value) < 1) fail(`${flag} must be a whole number of at least 1, not "${value}"`);
  return Number(value);
}

/** The HTTP API on the configured host and port, over these connections. */
async function serveApi(cfg: Config, log: ReturnType<typeof createLogger>, nats: Nats, redis: Redis, clickhouse: ClickHouseClient): Promise<ApiServer> {
  const topology = topologyOf(cfg);
  const cancellations = new Cancellations(await new Kvm(nats.js).open(topology.kvBucket('cancellations')));
  const api = new ApiServer({
    keys: new ApiKeys(redis, topology.keys), redis, js: nats.js, topology, templates: new TemplateStore(cfg.templatesDir), cancellations, log,
    clickhouse: { client: clickhouse, database: cfg.clickhouseDatabase },
    nc: nats.nc, inbox: inboxOptions(cfg), criticalCategories: cfg.criticalCategories, sseHeartbeatMs: cfg.sseHeartbeatMs,
  });
  const port = await api.listen(cfg.apiHost, cfg.apiPort);
  log.info({ url: `http://${cfg.apiHost}:${port}/v1` }, 'API listening');
  return api;
}

/** `--workers`: as given (1 to 64), or the cores this machine can spare. */
function workerCount(given: string | undefined, cfg: Config): number {
  const workers = given === undefined ? defaultWorkerCount(serversOnThisMachine(cfg)) : Number(given);
  if (!Number.isInteger(workers) || workers < 1 || workers > 64) fail(`--workers: "${given}" is not a whole number from 1 to 64`);
  return workers;
}

const print = (json: boolean, value: unknown, text: () => string) =>
  process.stdout.write(`${json ? JSON.stringify(value, null, 2) : text()}\n`);

const program = new Command('herald')
  .description('Herald: notification delivery on NATS JetStream')
  .showHelpAfterError();

program
  .command('apply')
  .description('create or update streams, consumers, KV buckets and ClickHouse tables (idempotent)')
  .option('--json', 'machine-readable output')
  .action(async (o: { json?: boolean }) => {
    const cfg = config();
    const nats = await connectNats(cfg, 'herald-apply');
    const ch = connectClickHouse(cfg);
    try {
      const results = await applyAll(nats, topologyOf(cfg), ch, cfg.clickhouseDatabase);
      print(!!o.json, results, () => results.map((r) =>
        `${r.action.padEnd(9)} ${r.kind.padEnd(10)} ${r.name}${r.changed ? ` (${r.changed.join(', ')})` : ''}`).join('\n'));
    } finally {
      await nats.nc.drain();
      await ch.close();
    }
  });

program
  .command('run')
  .description('run the pipeline in the foreground until SIGTERM')
  .option('--stages <list>', `comma-separated stages: ${pipelineGraph().nodes.map((n) => n.name).join(',')}`)
  .option('--tiers <list>', `comma-separated tiers: ${tiers.join(',')}`)
  .option('--demo', 'publish a sample notification once running and show where it arrived')
  .option('--nice <n>', 'lower this process\'s CPU priority (0-19): run bulk tiers this way beside a transactional process')
  .option('--no-api', 'do not serve the HTTP API (HERALD_API_HOST:HERALD_API_PORT) from this process')
  .option('--workers <n>', 'worker processes sharing the consumers and the API port (default: the cores, less one when the servers run on this machine)')
  .action(async (o: { stages?: string; tiers?: string; demo?: boolean; nice?: string; api: boolean; workers?: string }) => {
    const cfg = config();
    const log = createLogger(cfg.logLevel);
    const workers = workerCount(o.workers, cfg);
    if (o.nice !== undefined) {
      const nice = Number(o.nice);
      if (!Number.isInteger(nice) || nice < 0 || nice > 19) fail(`--nice: "${o.nice}" is not a whole number from 0 to 19`);
      os.setPriority(nice);
    }
    const stages = o.stages?.split(',').map((s) => s.trim());
    const nodes = pipelineGraph(cfg.wiring).nodes.map((n) => n.name);
    for (const s of stages ?? []) if (!nodes.includes(s)) fail(`--stages: unknown stage "${s}" (stages: ${nodes.join(', ')})`);
    const tierList = o.tiers?.split(',') as Tier[] | undefined;
    for (const t of tierList ?? []) if (!tiers.includes(t)) fail(`unknown tier "${t}"`);
    if (workers > 1 && !isWorker()) {
      await superviseWorkers({ count: workers, httpHost: cfg.httpHost, httpPort: cfg.httpPort, log, demo: o.demo });
      return;
    }
    // A bug that escapes every handler: say so, and exit for the supervisor to restart us (unacked
    // work is redelivered, so nothing is lost).
    process.on('unhandledRejection', (err) => {
      log.fatal({ err }, 'unhandled rejection: exiting');
      process.exit(1);
    });
    let pipeline: Pipeline | undefined;
    let api: Awaited<ReturnType<typeof serveApi>> | undefined;
    let apiBase: string | undefined;
    let stopping = false;
    const stop = (signal: string) => {
      if (stopping) {
        log.warn({ signal }, 'second signal: exiting now');
        process.exit(130);
      }
      stopping = true;
      log.info({ signal }, 'shutting down: finishing in-flight work');
      Promise.resolve(api?.close()).then(() => pipeline?.close()).then(() => process.exit(0), () => process.exit(1));
    };
    process.on('SIGTERM', () => stop('SIGTERM'));
    process.on('SIGINT', () => stop('SIGINT'));
    const demo = () => {
      if (pipeline) import('./demo.js').then(({ runDemo }) => runDemo(pipeline!, apiBase)).catch((err) => log.error({ err }, 'demo failed'));
    };
    if (isWorker()) {
      answerPrimary({ deps: () => pipeline && { nats: pipeline.nats.nc, redis: pipeline.redis, clickhouse: pipeline.clickhouse }, demo, stop });
    }
    const { Pipeline } = await import('../pipeline/host.js');
    pipeline = await Pipeline.start(cfg, log, { stages, tiers: tierList });
    if (isWorker()) shareMetrics(pipeline.metrics.registry);
    // The pipeline runs whether or not the port is free: a second `herald run` on one machine is normal.
    api = o.api ? await serveApi(cfg, log, pipeline.nats, pipeline.redis, pipeline.clickhouse).catch((err) => {
      log.warn({ err: (err as Error).message }, 'HTTP API not served (set HERALD_API_PORT, or --no-api)');
      return undefined;
    }) : undefined;
    const address = api?.app.server.address();
    apiBase = address && typeof address === 'object' ? `http://${cfg.apiHost}:${address.port}` : undefined;
    // With workers, the primary says when to run the demo (once, in one of them).
    if (o.demo && !isWorker()) demo();
  });

program
  .command('api')
  .description('serve the HTTP API alone (stateless: run as many as you like behind a load balancer)')
  .option('--workers <n>', 'processes sharing the API port (default: the cores, less one when the servers run on this machine)')
  .action(async (o: { workers?: string }) => {
    const cfg = config();
    const log = createLogger(cfg.logLevel);
    const workers = workerCount(o.workers, cfg);
    if (workers > 1 && !isWorker()) {
      // No health port of its own (as `herald api` alone has none): the API answers for itself.
      await superviseWorkers({ count: workers, httpHost: cfg.httpHost, httpPort: 0, log });
      return;
    }
    let parts: { nats: Nats; redis: Redis; clickhouse: ClickHouseClient; api: ApiServer } | undefined;
    let stopping = false;
    const stop = () => {
      // SIGINT, the primary's SIGTERM and its disconnect may all come: drain once.
      if (stopping) return;
      stopping = true;
      if (!parts) process.exit(0);
      const { api, nats, redis, clickhouse } = parts;
      api.close().then(() => nats.nc.drain()).then(() => clickhouse.close()).then(() => { redis.disconnect(); process.exit(0); }, () => process.exit(1));
    };
    if (isWorker()) answerPrimary({ deps: () => parts && { nats: parts.nats.nc, redis: parts.redis, clickhouse: parts.clickhouse }, demo: () => undefined, stop });
    const nats = await connectNats(cfg, 'herald-api');
    const redis = connectRedis(cfg, log);
    const clickhouse = connectClickHouse(cfg);
    const api = await serveApi(cfg, log, nats, redis, clickhouse).catch((err) => fail(`HTTP API: ${(err as Error).message}`));
    parts = { nats, redis, clickhouse, api };
    process.on('SIGTERM', stop);
    process.on('SIGINT', stop);
  });

const keysCommand = program.command('keys').description('tenant API keys (stored hashed in Redis)');
keysCommand
  .command('create')
  .description('make a key for a tenant; the key is printed once and cannot be shown again')
  .requiredOption('--tenant <tenant>', 'the tenant the key acts for')
  .option('--name <name>', 'what it is for', '')
  .option('--scopes <list>', `comma-separated: ${apiScopes.join(',')}`, 'send,read')
  .option('--rate <n>', 'requests per second this key may make', '100')
  .option('--json', 'machine-readable output: {"id","key","tenant"}')
  .action(async (o: { tenant: string; name: string; scopes: string; rate: string; json?: boolean }) => {
    const cfg = config();
    const tenant = tenantSchema.safeParse(o.tenant);
    if (!tenant.success) fail(`--tenant: ${describeIssues(tenant.error.issues).join('; ')}`);
    const scopes = o.scopes.split(',').map((s) => s.trim()).filter(Boolean);
    for (const s of scopes) if (!apiScopes.includes(s as ApiScope)) fail(`--scopes: unknown scope "${s}" (scopes: ${apiScopes.join(', ')})`);
    const rate = positiveInt(o.rate, '--rate');
    if (o.name.length > 200) fail(`--name: at most 200 characters, not ${o.name.length}`);
    await withRedis(cfg, async (redis) => {
      const { key, secret } = await new ApiKeys(redis, topologyOf(cfg).keys).create({ tenant: o.tenant, name: o.name, scopes: scopes as ApiScope[], ratePerSecond: rate });
      print(!!o.json, { id: key.id, key: secret, tenant: key.tenant }, () =>
        `${secret}\n(key ${key.id} for tenant ${key.tenant}, scopes ${key.scopes.join(',')}, ${key.ratePerSecond}/s; shown once: store it now)`);
    });
  });
keysCommand
  .command('list')
  .description('every key (never its secret), or one tenant\'s')
  .option('--tenant <tenant>')
  .option('--json', 'machine-readable output')
  .action(async (o: { tenant?: string; json?: boolean }) => {
    const cfg = config();
    await withRedis(cfg, async (redis) => {
      const list = await new ApiKeys(redis, topologyOf(cfg).keys).list(o.tenant);
      print(!!o.json, list, () => list.length === 0 ? '(no keys)' : list.map((k) =>
        `${k.id}  ${k.tenant}  ${k.scopes.join(',')}  ${k.ratePerSecond}/s  ${k.revokedAt ? `revoked ${new Date(k.revokedAt).toISOString()}` : 'live'}  ${k.name}`).join('\n'));
    });
  });
keysCommand
  .command('user-token')
  .description("a user token for an app: reads and changes that one user's inbox, nothing else")
  .requiredOption('--tenant <tenant>', 'the user\'s tenant')
  .requiredOption('--user <user>', 'the user id')
  .option('--ttl <duration>', 'how long it is valid (60s to 7d)', '1h')
  .option('--json', 'machine-readable output: {"token","user_id","expires_at"}')
  .action(async (o: { tenant: string; user: string; ttl: string; json?: boolean }) => {
    const cfg = config();
    const tenant = tenantSchema.safeParse(o.tenant);
    if (!tenant.success) fail(`--tenant: ${describeIssues(tenant.error.issues).join('; ')}`);
    if (o.user.length < 1 || o.user.length > 128) fail('--user: 1 to 128 characters');
    let ttlMs: number;
    try { ttlMs = parseDuration(o.ttl); } catch (err) { fail(`--ttl: ${(err as Error).message}`); }
    if (ttlMs < 60_000 || ttlMs > MAX_USER_TOKEN_TTL_S * 1000) fail(`--ttl: from 60s to 7d, not ${o.ttl}`);
    await withRedis(cfg, async (redis) => {
      const minted = await new UserTokens(redis, topologyOf(cfg).keys).mint(o.tenant, o.user, Math.round(ttlMs / 1000));
      print(!!o.json, { token: minted.token, user_id: o.user, expires_at: minted.expires_at }, () => `${minted.token}
(user ${o.user} of ${o.tenant}, valid until ${minted.expires_at})`);
    });
  });
keysCommand
  .command('revoke')
  .description('revoke a key: every replica refuses it within a second')
  .argument('<id>')
  .action(async (id: string) => {
    const cfg = config();
    await withRedis(cfg, async (redis) => {
      if (!(await new ApiKeys(redis, topologyOf(cfg).keys).revoke(id))) fail(`no key "${id}" (herald keys list shows them)`);
      process.stdout.write(`revoked ${id}\n`);
    });
  });

program
  .command('publish')
  .description('publish a request (JSON file, or - for stdin) to notify.request.<tier>.<tenant>')
  .argument('<file>', 'request JSON')
  .option('--json', 'machine-readable output')
  .action(async (file: string, o: { json?: boolean }) => {
    const cfg = config();
    const text = file === '-' ? fs.readFileSync(0, 'utf8') : fs.readFileSync(file, 'utf8');
    let body: unknown;
    try { body = JSON.parse(text); } catch (err) { fail(`${file}: not JSON: ${(err as Error).message}`); }
    const parsed = requestSchema.safeParse(body);
    if (!parsed.success) fail(`${file}: request is invalid:\n  ${describeIssues(parsed.error.issues).join('\n  ')}`);
    await withNats(cfg, 'herald-publish', async (nats) => {
      const ack = await publishRequest(nats.js, topologyOf(cfg), parsed.data);
      print(!!o.json, ack, () => `${ack.duplicate ? 'duplicate (dropped by JetStream)' : 'published'}: ${ack.stream} seq ${ack.seq}`);
    });
  });

const directory = program.command('directory').description('the recipient directory in Redis');
directory
  .command('import')
  .description('load users, devices, preferences and topic members from a JSONL file')
  .argument('<file>')
  .option('--json', 'machine-readable output')
  .action(async (file: string, o: { json?: boolean }) => {
    const cfg = config();
    if (!fs.existsSync(file)) fail(`${file}: no such file`);
    await withRedis(cfg, async (redis) => {
      const bar = progress(`importing ${path.basename(file)}`, 'bytes', !o.json && process.stderr.isTTY === true);
      const size = fs.statSync(file).size;
      const report = await new Directory(redis, topologyOf(cfg).keys).importFile(file, (read) => bar.update(read, size));
      bar.stop();
      print(!!o.json, report, () => [
        `loaded ${report.loaded} records from ${file}`,
        ...report.errors.map((e) => `${file}:${e.line}: ${e.problems.join('; ')}`),
      ].join('\n'));
      if (report.errors.length) process.exitCode = 1;
    });
  });

const collect = (value: string, previous: string[] = []) => [...previous, value];
directory
  .command('set')
  .description("set a user's address, locale, time zone, preferences, quiet hours, hard stop, devices and topics")
  .argument('<user>')
  .requiredOption('--tenant <tenant>', 'tenant id')
  .option('--email <address>')
  .option('--phone <e164>', 'E.164, e.g. +15550100')
  .option('--locale <locale>', 'e.g. fr-CA')
  .option('--timezone <iana>', 'IANA name, e.g. America/Los_Angeles')
  .option('--pref <key=on|off>', 'preference (repeatable): all, channel:email, category:promo, email:promo', collect)
  .option('--quiet-hours <window>', 'HH:MM-HH:MM in the user\'s time zone, or off')
  .option('--hard-stop <on|off>', 'do not contact, ever (until set off)')
  .option('--device <platform:token>', 'ios|android|web:TOKEN[:inactive] (repeatable)', collect)
  .option('--topic <topic>', 'join a topic (repeatable)', collect)
  .option('--leave-topic <topic>', 'leave a topic (repeatable)', collect)
  .option('--json', 'machine-readable output')
  .action(async (user: string, o: DirectorySetFlags & { tenant: string; json?: boolean }) => {
    const cfg = config();
    await withRedis(cfg, async (redis) => {
      const dir = new Directory(redis, topologyOf(cfg).keys);
      let records;
      try {
        records = recordsFromFlags(o.tenant, user, o, await dir.show(o.tenant, user));
        const problems = records.flatMap((r, i) => {
          const parsed = directoryRecordSchema.safeParse(r);
          return parsed.success ? [] : describeIssues(parsed.error.issues).map((p) => `${r.type} (change ${i + 1}): ${p}`);
        });
        if (problems.length) throw new Error(problems.join('\n'));
      } catch (err) {
        fail((err as Error).message);
      }
      await dir.upsert(records);
      for (const topic of o.leaveTopic ?? []) await dir.leaveTopic(o.tenant, user, topic);
      const view = await dir.show(o.tenant, user);
      print(!!o.json, view, () => formatUser(view));
    });
  });

directory
  .command('show')
  .description("everything the directory holds about a user")
  .argument('<user>')
  .requiredOption('--tenant <tenant>', 'tenant id')
  .option('--json', 'machine-readable output')
  .action(async (user: string, o: { tenant: string; json?: boolean }) => {
    const cfg = config();
    await withRedis(cfg, async (redis) => {
      const view = await new Directory(redis, topologyOf(cfg).keys).show(o.tenant, user);
      print(!!o.json, view, () => formatUser(view));
      if (!view.exists && view.devices.length === 0 && view.topics.length === 0) process.exitCode = 1;
    });
  });

directory
  .command('erase')
  .description("erase a user: profile, devices, preferences, memberships, inbox and counters deleted, their receipts anonymised")
  .argument('<user>')
  .requiredOption('--tenant <tenant>', 'tenant id')
  .option('--json', 'machine-readable output')
  .action(async (user: string, o: { tenant: string; json?: boolean }) => {
    const cfg = config();
    if (!tenantSchema.safeParse(o.tenant).success) fail(`--tenant: "${o.tenant}" is not a tenant name (1-64 of letters, digits, _ and -)`);
    if (user.length < 1 || user.length > 128) fail('USER: 1 to 128 characters');
    const ch = connectClickHouse(cfg);
    try {
      await withRedis(cfg, async (redis) => {
        const report = await new Erasures(redis, topologyOf(cfg).keys, ch, cfg.clickhouseDatabase).erase(o.tenant, user);
        print(!!o.json, report, () => `erased ${user} of ${o.tenant} (erasure ${report.erasure_id}): ${report.keys_deleted} keys deleted, receipts being anonymised as ${report.user_hash}`);
      });
    } finally {
      await ch.close();
    }
  });

program
  .command('inbox')
  .description("list a user's in-app notifications, newest first")
  .argument('<user>')
  .requiredOption('--tenant <tenant>', 'tenant id')
  .option('--limit <n>', 'how many', '50')
  .option('--json', 'machine-readable output')
  .action(async (user: string, o: { tenant: string; limit: string; json?: boolean }) => {
    const cfg = config();
    const limit = positiveInt(o.limit, '--limit');
    await withRedis(cfg, async (redis) => {
      const prefix = topologyOf(cfg).keys;
      const entries = await readInbox(new InboxStore(redis, prefix), new Directory(redis, prefix), o.tenant, user, limit, cfg.criticalCategories);
      print(!!o.json, entries, () => entries.length === 0 ? `(no notifications for ${user} in ${o.tenant})` :
        entries.map((e) => `${new Date(e.created_at).toISOString()}  ${e.read ? '   ' : '[*]'} ${e.title} — ${e.body}  (${e.category}, ${e.id})`).join('\n'));
    });
  });

program
  .command('mailbox')
  .description('list the emails the local SMTP catcher received (when no SMTP_URL is set)')
  .option('--json', 'machine-readable output')
  .action(async (o: { json?: boolean }) => {
    const cfg = config();
    const { readMailbox } = await import('../sinks/smtp-catcher.js');
    const mails = readMailbox(path.join(cfg.dataDir, 'mailbox'));
    print(!!o.json, mails, () => mails.length === 0 ? '(mailbox empty)' :
      mails.map((m) => `${new Date(m.received_at).toISOString()}  to ${m.to.join(', ')}  "${m.subject}"  ${m.file}`).join('\n'));
  });

program
  .command('sandbox')
  .description('what the sandbox fakes of APNs, FCM and Twilio received (channels without credentials)')
  .argument('[provider]', 'apns, fcm or twilio (default: all)')
  .option('--limit <n>', 'newest n per provider', '20')
  .option('--json', 'machine-readable output')
  .action((provider: string | undefined, o: { limit: string; json?: boolean }) => {
    const cfg = config();
    const names = provider ? [provider] : ['apns', 'fcm', 'twilio'];
    for (const n of names) if (!['apns', 'fcm', 'twilio'].includes(n)) fail(`unknown provider "${n}" (apns, fcm, twilio)`);
    const out: Record<string, FakeRecord[]> = {};
    for (const n of names) {
      const file = path.join(sandboxDir(cfg), `${n}.jsonl`);
      const lines = fs.existsSync(file) ? fs.readFileSync(file, 'utf8').split('\n').filter(Boolean) : [];
      out[n] = lines.slice(-Number(o.limit)).map((l) => JSON.parse(l) as FakeRecord);
    }
    print(!!o.json, out, () => names.map((n) => [`== ${n} (${out[n].length})`,
      ...out[n].map((r) => `${new Date(r.at).toISOString()}  ${r.status}  ${r.target.slice(0, 24)}  ${JSON.stringify(r.body).slice(0, 120)}`)].join('\n')).join('\n'));
  });

program
  .command('funnel')
  .description('the delivery funnel by tier and channel (delivered → seen → read → clicked in-app), from the receipts in ClickHouse')
  .option('--since <when>', 'a duration back (15m, 1h, 2d) or an ISO date-time', '24h')
  .option('--by-category', 'a row per category too')
  .option('--json', 'machine-readable output')
  .action(async (o: { since: string; json?: boolean; byCategory?: boolean }) => {
    const cfg = config();
    let since: number;
    try { since = parseSince(o.since); } catch (err) { fail((err as Error).message); }
    const ch = connectClickHouse(cfg);
    try {
      const rows = await queryFunnel(ch, cfg.clickhouseDatabase, since, !!o.byCategory);
      print(!!o.json, rows, () => rows.length ? formatFunnel(rows) : '(no receipts in that period)');
    } finally {
      await ch.close();
    }
  });

program
  .command('replay')
  .description('feed REQUESTS back through the pipeline from a sequence (or time); dedup keeps sent deliveries from repeating')
  .option('--from-seq <n>', 'first stream sequence')
  .option('--since <when>', 'instead of --from-seq: a duration back or an ISO date-time')
  .option('--to-seq <n>', 'last stream sequence (default: the last one now)')
  .addOption(new Option('--tier <tier>', 'only this tier').choices([...tiers]))
  .option('--json', 'machine-readable output')
  .action(async (o: { fromSeq?: string; since?: string; toSeq?: string; tier?: Tier; json?: boolean }) => {
    const cfg = config();
    if (o.fromSeq === undefined && o.since === undefined) fail('give --from-seq N or --since WHEN');
    const num = (v: string | undefined, name: string) => {
      if (v === undefined) return undefined;
      if (!/^\d+$/.test(v) || Number(v) < 1) fail(`${name} must be a positive integer, not "${v}"`);
      return Number(v);
    };
    const log = createLogger(cfg.logLevel);
    const nats = await connectNats(cfg, 'herald-replay');
    const redis = connectRedis(cfg, log);
    const ch = connectClickHouse(cfg);
    try {
      const topology = topologyOf(cfg);
      const [{ stageDeps }, { Metrics }, { replay }] = await Promise.all([import('../pipeline/host.js'), import('../pipeline/metrics.js'), import('../pipeline/replay.js')]);
      const deps = await stageDeps(cfg, topology, nats, redis, ch, {}, new Metrics());
      const bar = progress('replaying', 'requests', !o.json && process.stderr.isTTY === true);
      const started = Date.now();
      const result = await replay(nats, topology, cfg, deps, log, {
        fromSeq: num(o.fromSeq, '--from-seq'), toSeq: num(o.toSeq, '--to-seq'), tier: o.tier,
        fromTime: o.since ? parseSince(o.since) : undefined,
        onProgress: (p) => bar.update(p.done, p.total),
      }).finally(() => bar.stop());
      const seconds = (Date.now() - started) / 1000;
      print(!!o.json, result, () => `replayed ${result.fed} requests up to sequence ${result.lastSequence} in ${seconds.toFixed(1)} s`);
    } finally {
      await nats.nc.drain();
      redis.disconnect();
      await ch.close();
    }
  });

program
  .command('dedup')
  .description('the dedup bucket')
  .command('purge')
  .description('forget every dedup key, so a replay sends again')
  .action(async () => {
    const cfg = config();
    await withNats(cfg, 'herald-dedup', async (nats) => {
      const stream = `KV_${topologyOf(cfg).kvBucket('dedup')}`;
      const r = await nats.jsm.streams.purge(stream);
      process.stdout.write(`purged ${r.purged} dedup entries\n`);
    });
  });

const dlq = program.command('dlq').description('dead letters: inspect them and send them back');
const dlqFilters = (c: Command) => c
  .option('--stage <stage>', pipelineGraph().nodes.map((n) => n.name).join(', '))
  .option('--reason <text>', 'reason or problem contains this')
  .option('--since <when>', 'a duration back (15m, 1h) or an ISO date-time');
const dlqQuery = (o: { stage?: string; reason?: string; since?: string }) => {
  const stages = pipelineGraph().nodes.map((n) => n.name);
  if (o.stage !== undefined && !stages.includes(o.stage)) fail(`--stage: unknown stage "${o.stage}" (stages: ${stages.join(', ')})`);
  let since: number | undefined;
  try { since = o.since ? parseSince(o.since) : undefined; } catch (err) { fail(`--since: ${(err as Error).message}`); }
  return { stage: o.stage, reason: o.reason, since };
};
dlqFilters(dlq.command('list').description('dead letters, oldest first'))
  .option('--json', 'machine-readable output')
  .action(async (o: { stage?: string; reason?: string; since?: string; json?: boolean }) => {
    const cfg = config();
    await withNats(cfg, 'herald-dlq', async (nats) => {
      const letters = await listDeadLetters(nats.jsm, topologyOf(cfg), dlqQuery(o));
      print(!!o.json, letters.map(({ original_b64: _, original_ref: __, ...d }) => d), () => letters.length === 0 ? '(no dead letters)' : letters.map((d) =>
        `#${d.dlq_seq}  ${new Date(d.failed_at).toISOString()}  ${d.stage.padEnd(8)}  ${d.tenant ?? '-'}/${d.request_id ?? '-'}  after ${d.attempts}: ${d.reason}`).join('\n'));
    });
  });
dlq.command('show').description('one dead letter in full, with its original message')
  .argument('<seq>', 'the # from dlq list')
  .action(async (seq: string) => {
    const cfg = config();
    await withNats(cfg, 'herald-dlq', async (nats) => {
      const d = await readDeadLetter(nats.jsm, topologyOf(cfg), positiveInt(seq, 'dlq show'));
      if (!d) fail(`no dead letter #${seq}`);
      const original = Buffer.from(await originalOf(nats.jsm, d)).toString('utf8');
      let parsed: unknown = original;
      try { parsed = JSON.parse(original); } catch { /* shown as text */ }
      const { original_b64: _, original_ref: __, ...rest } = d;
      process.stdout.write(`${JSON.stringify({ ...rest, original: parsed }, null, 2)}\n`);
    });
  });
dlqFilters(dlq.command('redrive').description('send dead letters back to their stage (dedup keeps what was sent from repeating)'))
  .option('--seq <n>', 'only this one')
  .action(async (o: { stage?: string; reason?: string; since?: string; seq?: string }) => {
    const cfg = config();
    const query = { ...dlqQuery(o), seq: o.seq === undefined ? undefined : positiveInt(o.seq, '--seq') };
    await withNats(cfg, 'herald-dlq', async (nats) => {
      const bar = progress('redriving', 'dead letters');
      const n = await redriveDeadLetters(nats, topologyOf(cfg), query, (done, total) => bar.update(done, total))
        .finally(() => bar.stop());
      process.stdout.write(`redrove ${n} dead letter${n === 1 ? '' : 's'}\n`);
    });
  });

program
  .command('status')
  .description("where a request stands: its state and how many recipients reached each outcome per channel")
  .argument('<request-id>')
  .requiredOption('--tenant <tenant>', 'tenant id')
  .option('--json', 'machine-readable output')
  .action(async (id: string, o: { tenant: string; json?: boolean }) => {
    const cfg = config();
    if (!tenantSchema.safeParse(o.tenant).success) fail(`--tenant: "${o.tenant}" is not a tenant name (1-64 of letters, digits, _ and -)`);
    await withRedis(cfg, async (redis) => {
      const status = await new RequestStatuses(redis, topologyOf(cfg).keys).get(o.tenant, id);
      if (!status) fail(`no request "${id}" of tenant ${o.tenant} (statuses are kept 7 days)`);
      print(!!o.json, status, () => [
        `${status.id}: ${status.status} (${status.tier}/${status.category}, ${status.recipients} recipients${status.send_at ? `, send_at ${status.send_at}` : ''})`,
        ...Object.entries(status.counts).map(([channel, counts]) => `  ${channel.padEnd(6)} ${Object.entries(counts).map(([k, n]) => `${k} ${n}`).join(', ')}`),
        ...(status.reason ? [`  reason: ${status.reason}`] : []),
      ].join('\n'));
    });
  });

program
  .command('cancel')
  .description('cancel a request: every delivery not yet sent is dropped with a cancelled receipt')
  .argument('<request-id>')
  .requiredOption('--tenant <tenant>', 'tenant id')
  .option('--reason <text>', 'why, for the record', '')
  .option('--force', 'cancel even though no receipt names the request yet (it may not have been validated)')
  .action(async (id: string, o: { tenant: string; reason: string; force?: boolean }) => {
    const cfg = config();
    if (!tenantSchema.safeParse(o.tenant).success) fail(`--tenant: "${o.tenant}" is not a tenant name (1-64 of letters, digits, _ and -)`);
    if (!o.force) {
      const ch = connectClickHouse(cfg);
      try {
        const rows = await (await ch.query({
          query: `SELECT count() AS n FROM ${cfg.clickhouseDatabase}.receipts WHERE tenant = ${sqlString(o.tenant)} AND request_id = ${sqlString(id)}`,
          format: 'JSONEachRow',
        })).json<{ n: string }>();
        if (Number(rows[0]?.n ?? 0) === 0) fail(`no request "${id}" of tenant ${o.tenant} in the receipts (if it was only just published, --force cancels it anyway)`);
      } finally {
        await ch.close();
      }
    }
    await withNats(cfg, 'herald-cancel', async (nats) => {
      const kv = await new Kvm(nats.js).open(topologyOf(cfg).kvBucket('cancellations'));
      await new Cancellations(kv).cancel(o.tenant, id, o.reason);
      process.stdout.write(`cancelled ${o.tenant}/${id}\n`);
    });
  });

const servers = program.command('servers').description('local NATS, Redis and ClickHouse from the Debian packages (no Docker)');
const serverPorts = (cfg: Config): Record<ServerName, number> => ({
  nats: Number(new URL(cfg.natsUrl).port || 4222),
  redis: Number(new URL(cfg.redisUrl).port || 6379),
  clickhouse: Number(new URL(cfg.clickhouseUrl).port || 8123),
});
servers
  .command('start')
  .description('start whichever of the three is not reachable, with data under HERALD_DATA_DIR')
  .action(async () => {
    const cfg = config();
    const ports = serverPorts(cfg);
    const side: Record<ServerName, number> = { nats: 8222, redis: 0, clickhouse: 9000 };
    for (const name of ['nats', 'redis', 'clickhouse'] as ServerName[]) {
      if (await isListening(ports[name])) {
        process.stdout.write(`${name.padEnd(10)} already running at ${urlOf(name, ports[name])}\n`);
        continue;
      }
      const s = await startServer({ name, port: ports[name], sidePort: side[name], dataDir: path.join(cfg.dataDir, name) }, true);
      process.stdout.write(`${name.padEnd(10)} started at ${s.url} (pid ${s.pid}, data in ${path.join(cfg.dataDir, name)})\n`);
    }
  });
servers
  .command('stop')
  .description('stop the servers `herald servers start` started')
  .action(async () => {
    const cfg = config();
    for (const name of ['nats', 'redis', 'clickhouse'] as ServerName[]) {
      const stopped = await stopDetached(name, path.join(cfg.dataDir, name));
      process.stdout.write(`${name.padEnd(10)} ${stopped ? 'stopped' : 'was not started by herald'}\n`);
    }
  });
servers
  .command('status')
  .action(async () => {
    const cfg = config();
    const ports = serverPorts(cfg);
    for (const name of ['nats', 'redis', 'clickhouse'] as ServerName[]) {
      process.stdout.write(`${name.padEnd(10)} ${(await isListening(ports[name])) ? 'up  ' : 'down'} ${urlOf(name, ports[name])}\n`);
    }
  });

program.parseAsync(process.argv).catch((err) => {
  fail(err instanceof Error ? err.message : String(err));
});
