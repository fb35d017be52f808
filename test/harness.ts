import { inject } from 'vitest';
import { Kvm } from '@nats-io/kv';
import { ApiServer, type ApiParts } from '../http/api.js';
import { ApiKeys } from '../stores/api-keys.js';
import { Cancellations } from '../stores/cancellations.js';
import { TemplateStore } from '../runtime/templates.js';
import { createLogger } from '../runtime/logger.js';
import { loadConfig, type Config } from '../runtime/config.js';
import { connectClickHouse, connectNats, connectRedis, type Nats } from '../runtime/connections.js';
import { publishRequest } from '../runtime/producer.js';
import { Directory, type DirectoryRecordInput } from '../stores/directory.js';
import type { Topology } from '../streams/topology.js';
import { topologyOf, type PipelineGraph } from '../pipeline/graph.js';
import { applyAll } from '../streams/apply.js';
import { SmtpCatcher } from '../sinks/smtp-catcher.js';
import { InboxStore } from '../stores/inbox.js';
import { Pipeline, stageDeps, type PipelineOptions } from '../pipeline/host.js';
import { Metrics } from '../pipeline/metrics.js';
import type { NotificationRequest } from '../schemas/index.js';
import type { Redis } from 'ioredis';
import type { ClickHouseClient } from '@clickhouse/client';

let counter = 0;

/** A unique namespace per test: its own streams, subjects, KV buckets, Redis keys and ClickHouse database. */
export function uniqueNamespace(label: string): string {
  return `${label}_${process.pid}_${Date.now().toString(36)}_${counter++}`.toLowerCase().replace(/[^a-z0-9_]/g, '_');
}

export function testConfig(namespace: string, extra: Record<string, string> = {}): Config {
  return loadConfig({
    NATS_URL: inject('natsUrl'),
    REDIS_URL: inject('redisUrl'),
    CLICKHOUSE_URL: inject('clickhouseUrl'),
    CLICKHOUSE_DATABASE: `t_${namespace}`,
    HERALD_NAMESPACE: namespace,
    HERALD_HTTP_PORT: '0',
    HERALD_STORAGE_BUDGET_MB: '256',
    HERALD_DATA_DIR: `${inject('dataRoot')}/herald-${namespace}`,
    LOG_LEVEL: process.env.LOG_LEVEL ?? 'silent',
    ...extra,
  });
}

/** Everything an integration test needs: applied topology, an SMTP catcher as the provider, clients. */
export class Harness {
  pipeline?: Pipeline;
  private readonly apis: ApiServer[] = [];
  /** A pipeline graph of the test's own (default: Herald's). */
  graph?: PipelineGraph;
  readonly log;
  private constructor(
    readonly config: Config,
    readonly topology: Topology,
    readonly nats: Nats,
    readonly redis: Redis,
    readonly clickhouse: ClickHouseClient,
    readonly smtp: SmtpCatcher,
  ) {
    this.log = createLogger(config.logLevel);
  }

  static async create(label: string, env: Record<string, string> = {}, graph?: PipelineGraph): Promise<Harness> {
    const namespace = uniqueNamespace(label);
    const smtp = new SmtpCatcher();
    const port = await smtp.start(0);
    const config = testConfig(namespace, { SMTP_URL: `smtp://127.0.0.1:${port}`, ...env });
    const topology = topologyOf(config, graph);
    const nats = await connectNats(config, 'herald-test');
    const clickhouse = connectClickHouse(config);
    await applyAll(nats, topology, clickhouse, config.clickhouseDatabase);
    const h = new Harness(config, topology, nats, connectRedis(config, createLogger(config.logLevel)), clickhouse, smtp);
    h.graph = graph;
    return h;
  }

  get directory(): Directory { return new Directory(this.redis, this.topology.keys); }
  get inbox(): InboxStore { return new InboxStore(this.redis, this.topology.keys); }

  /** Stage dependencies on this harness's connections (no sinks). */
  deps() {
    return stageDeps(this.config, this.topology, this.nats, this.redis, this.clickhouse, {}, new Metrics());
  }

  async load(records: DirectoryRecordInput[]): Promise<void> {
    await this.directory.upsert(records);
  }

  /**
   * An HTTP API on this harness's servers, listening on a free port of 127.0.0.1 (closed with the
   * harness). `parts` add to or replace what a `herald api` process would have.
   */
  async api(parts: Partial<ApiParts> = {}): Promise<{ api: ApiServer; base: string }> {
    const api = new ApiServer({
      keys: new ApiKeys(this.redis, this.topology.keys), redis: this.redis, js: this.nats.js, topology: this.topology,
      templates: new TemplateStore(this.config.templatesDir), log: createLogger('silent'),
      cancellations: new Cancellations(await new Kvm(this.nats.js).open(this.topology.kvBucket('cancellations'))),
      clickhouse: { client: this.clickhouse, database: this.config.clickhouseDatabase }, nc: this.nats.nc,
      ...parts,
    });
    this.apis.push(api);
    return { api, base: `http://127.0.0.1:${await api.listen('127.0.0.1', 0)}` };
  }

  async start(opts: PipelineOptions = {}): Promise<Pipeline> {
    this.pipeline = await Pipeline.start(this.config, this.log, { graph: this.graph, ...opts });
    return this.pipeline;
  }

  publish(request: NotificationRequest) {
    return publishRequest(this.nats.js, this.topology, request);
  }

  /** Receipts in ClickHouse for this namespace, as rows: one per receipt id, as the funnel counts them. */
  async receipts(where = '1'): Promise<Record<string, string | number>[]> {
    const rs = await this.clickhouse.query({
      query: `SELECT * FROM ${this.config.clickhouseDatabase}.receipts WHERE ${where} ORDER BY event_time, event_ms LIMIT 1 BY receipt_id`,
      format: 'JSONEachRow',
    });
    return rs.json();
  }

  async close(): Promise<void> {
    for (const api of this.apis) await api.close();
    await this.pipeline?.close();
    await this.smtp.close();
    await this.nats.nc.drain().catch(() => undefined);
    this.redis.disconnect();
    await this.clickhouse.close();
  }
}

/** Polls `check` until it returns a truthy value or the time runs out (then throws with `what`). */
export async function eventually<T>(check: () => Promise<T> | T, what: string, timeoutMs = 30_000, everyMs = 100): Promise<Exclude<T, null | undefined | false | 0 | ''>> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value) return value as Exclude<T, null | undefined | false | 0 | ''>;
      last = value;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; last: ${last instanceof Error ? last.message : JSON.stringify(last)}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}
