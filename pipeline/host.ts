import { Kvm } from '@nats-io/kv';
import type { Redis } from 'ioredis';
import type { ClickHouseClient } from '@clickhouse/client';
import type { Logger } from 'pino';
import type { Config } from '../runtime/config.js';
import { connectClickHouse, connectNats, connectRedis, type Nats } from '../runtime/connections.js';
import { Directory } from '../stores/directory.js';
import { TemplateStore } from '../runtime/templates.js';
import type { Channel, Tier } from '../schemas/index.js';
import type { Sink } from '../sinks/sink.js';
import type { SmtpCatcher } from '../sinks/smtp-catcher.js';
import { buildProviders, type ProviderSet } from '../sinks/providers.js';
import type { Topology } from '../streams/topology.js';
import { DedupStore } from '../stores/dedup.js';
import type { StageDeps } from './deps.js';
import { Metrics } from './metrics.js';
import { ReceiptPublisher } from './receipt-publisher.js';
import type { StageRunner } from './runner.js';
import { Assembly } from './assembly.js';
import { pipelineGraph, topologyOf, type PipelineGraph } from './graph.js';
import { LoggedAttempts } from './attempts.js';
import { HealthServer } from '../http/server.js';
import { AttemptLog } from '../stores/attempts.js';
import { Breakers } from '../stores/breakers.js';
import { Cancellations } from '../stores/cancellations.js';
import { Checkpoints } from '../stores/checkpoints.js';
import { TierGate } from './tier-gate.js';
import { InboxStore, inboxOptions } from '../stores/inbox.js';
import { NatsInboxEvents } from './inbox-bus.js';
import { RequestStatuses } from '../stores/request-status.js';
import { RateLimiter } from '../stores/rate-limits.js';
import { answerUnknownTiers } from './unknown-tiers.js';
import { Housekeeping } from './housekeeping.js';

/**
 * How long a delivery's live inbox update waits for others to share its write to NATS. At 1,000
 * single-recipient requests/s each update was a write of its own, waking nats-server each time.
 */
const LIVE_UPDATE_LINGER_MS = 5;

/** What stages need, built once per process. */
export async function stageDeps(
  config: Config, topology: Topology, nats: Nats, redis: Redis, clickhouse: ClickHouseClient,
  sinks: Partial<Record<Channel, Sink>>, metrics: Metrics, now: () => number = Date.now,
  inbox: InboxStore = new InboxStore(redis, topology.keys, { ...inboxOptions(config), events: new NatsInboxEvents(nats.nc, topology) }),
): Promise<StageDeps> {
  const kvm = new Kvm(nats.js);
  return {
    directory: new Directory(redis, topology.keys),
    templates: new TemplateStore(config.templatesDir),
    dedup: new DedupStore(await kvm.open(topology.kvBucket('dedup'))),
    checkpoints: new Checkpoints(await kvm.open(topology.kvBucket('checkpoints'))),
    inbox,
    statuses: new RequestStatuses(redis, topology.keys),
    inappBroadcastThreshold: config.inappBroadcastThreshold,
    quietChannels: config.quietChannels,
    deferRecheckMs: config.deferRecheckMs,
    sinks,
    clickhouse,
    clickhouseDatabase: config.clickhouseDatabase,
    defaultChannels: config.defaultChannels,
    criticalCategories: config.criticalCategories,
    frequencyCaps: config.frequencyCaps,
    metrics,
    now,
  };
}

/** Which part of the pipeline this process runs. */
export interface PipelineOptions {
  /** Nodes of the graph whose consumers this process runs. @default every node */
  stages?: string[];
  /** @default every tier */
  tiers?: Tier[];
  /** Replace the clock (tests). */
  now?: () => number;
  /** Sinks to use instead of the configured ones (tests, sandbox). */
  sinks?: Partial<Record<Channel, Sink>>;
  /** The pipeline to run. @default Herald's graph in the configured wiring */
  graph?: PipelineGraph;
}

/** A running Herald process: every chosen stage on every chosen tier, plus health and metrics. */
export class Pipeline {
  readonly runners: StageRunner[] = [];
  private closing?: Promise<void>;
  private health?: HealthServer;
  private housekeeping?: Housekeeping;
  private deviceSweep?: NodeJS.Timeout;
  inbox?: InboxStore;
  /** The live updates the in-app sink's deliveries send (held back for a few ms to share writes). */
  inboxEvents?: NatsInboxEvents;
  private sweeping?: Promise<void>;
  catcher?: SmtpCatcher;
  providers?: ProviderSet;
  cancellations?: Cancellations;
  breakers?: Breakers;
  limiter?: RateLimiter;
  readonly metrics = new Metrics();

  private constructor(
    readonly config: Config,
    readonly topology: Topology,
    readonly nats: Nats,
    readonly redis: Redis,
    readonly clickhouse: ClickHouseClient,
    readonly log: Logger,
    private readonly receipts: ReceiptPublisher,
    private readonly sinks: Partial<Record<Channel, Sink>>,
  ) {}

  static async start(config: Config, log: Logger, opts: PipelineOptions = {}): Promise<Pipeline> {
    const graph = opts.graph ?? pipelineGraph(config.wiring);
    const topology = topologyOf(config, graph);
    const nats = await connectNats(config, 'herald-pipeline');
    const redis = connectRedis(config, log);
    const clickhouse = connectClickHouse(config);
    const receipts = new ReceiptPublisher(nats.js, topology, { log });
    const pipeline = new Pipeline(config, topology, nats, redis, clickhouse, log, receipts, {});
    try {
      const kvm = new Kvm(nats.js);
      pipeline.cancellations = new Cancellations(await kvm.open(topology.kvBucket('cancellations')));
      await pipeline.cancellations.start();
      if (config.guards.enabled) {
        pipeline.breakers = new Breakers(await kvm.open(topology.kvBucket('breakers')), {
          failureThreshold: config.guards.breakerFailures, coolDownMs: config.guards.breakerCoolDownMs,
        });
        await pipeline.breakers.start();
        const rates = Object.fromEntries(Object.entries(config.guards.rateLimits).map(([p, perSecond]) => [p, { perSecond }]));
        pipeline.limiter = new RateLimiter(redis, topology.keys, rates, config.guards.tenantRateLimit ? { perSecond: config.guards.tenantRateLimit } : undefined);
      }
      // One inbox for the in-app sink and the broadcasts resolve writes, telling open apps over NATS.
      pipeline.inboxEvents = new NatsInboxEvents(nats.nc, topology, LIVE_UPDATE_LINGER_MS);
      pipeline.inbox = new InboxStore(redis, topology.keys, { ...inboxOptions(config), events: pipeline.inboxEvents });
      await pipeline.startSinks(opts.sinks);
      const deps = await stageDeps(config, topology, nats, redis, clickhouse, pipeline.sinks, pipeline.metrics, opts.now, pipeline.inbox);
      deps.cancellations = pipeline.cancellations;
      deps.dedupEnabled = config.dedup;
      const gate = new TierGate();
      const assembly = new Assembly({
        graph, topology, deps, receipts, metrics: pipeline.metrics, log,
        settings: { ackWaitMs: config.ackWaitMs, retry: config.retry },
        publish: (subject, data, msgID) => nats.js.publish(subject, data, { msgID }),
        attempts: new LoggedAttempts(new AttemptLog(redis, topology.keys)),
        priority: (tier) => (tier ? gate.priority(tier === 'transactional') : undefined),
      });
      for (const spec of assembly.consumers({ nodes: opts.stages, tiers: opts.tiers })) {
        const runner = assembly.runner(spec, await nats.js.consumers.get(spec.stream, spec.durable));
        await runner.start();
        pipeline.runners.push(runner);
      }
      pipeline.listenForCancels();
      answerUnknownTiers(nats.nc, topology, log);
      const runs = (node: string) => !opts.stages || opts.stages.includes(node);
      const entry = graph.nodes.find((n) => n.reads === 'requests')!.name;
      const loader = graph.nodes.find((n) => n.reads === 'receipts')?.name;
      pipeline.housekeeping = new Housekeeping(nats.jsm, topology, pipeline.metrics, log, {
        everyMs: config.housekeepingMs, trimIntake: runs(entry), watchReceipts: loader !== undefined && runs(loader),
      });
      pipeline.housekeeping.start();
      pipeline.startDeviceSweep();
      await pipeline.startHealth();
      log.info({ consumers: pipeline.runners.length, namespace: config.namespace || '(none)' }, 'pipeline running');
      return pipeline;
    } catch (err) {
      await pipeline.close();
      throw err;
    }
  }

  /** Deactivates stale devices now and then (every process may; the sweep is idempotent). */
  private startDeviceSweep(): void {
    if (!this.config.deviceSweepMs) return;
    const directory = new Directory(this.redis, this.topology.keys);
    const sweep = () => {
      this.sweeping = directory.sweepStaleDevices(this.config.deviceStaleMs).then(
        ({ deactivated }) => { if (deactivated) this.log.info({ deactivated, staleDays: this.config.deviceStaleMs / 86_400_000 }, 'stale devices deactivated'); },
        (err) => this.log.warn({ err }, 'stale-device sweep failed; next try at the next sweep'),
      );
    };
    this.deviceSweep = setInterval(sweep, this.config.deviceSweepMs);
    this.deviceSweep.unref();
    sweep();
  }

  private async startSinks(override?: Partial<Record<Channel, Sink>>): Promise<void> {
    this.providers = await buildProviders(this.config, this.redis, this.topology.keys, this.log, { breaker: this.breakers, limiter: this.limiter, inbox: this.inbox });
    this.catcher = this.providers.catcher;
    Object.assign(this.sinks, this.providers.sinks, override ?? {});
  }

  /** `{"tenant": …, "id": …}` on the cancel subject cancels a request (one process of the group records it). */
  private listenForCancels(): void {
    const sub = this.nats.nc.subscribe(this.topology.cancel, { queue: 'herald-cancel' });
    void (async () => {
      for await (const m of sub) {
        try {
          const { tenant, id, reason } = m.json<{ tenant?: unknown; id?: unknown; reason?: unknown }>();
          if (typeof tenant !== 'string' || typeof id !== 'string') throw new Error('a cancel needs string "tenant" and "id"');
          await this.cancellations!.cancel(tenant, id, typeof reason === 'string' ? reason : '');
          m.respond(JSON.stringify({ ok: true }));
        } catch (err) {
          m.respond(JSON.stringify({ ok: false, error: (err as Error).message }));
        }
      }
    })();
  }

  /** Health, readiness and metrics on their own port (HERALD_HTTP_PORT; 0: none). */
  private async startHealth(): Promise<void> {
    if (!this.config.httpPort) return;
    this.health = new HealthServer(this.metrics, { nats: this.nats.nc, redis: this.redis, clickhouse: this.clickhouse }, this.log);
    await this.health.listen(this.config.httpHost, this.config.httpPort).catch((err) => this.log.warn({ err }, 'health/metrics endpoint not started'));
  }

  /**
   * Stops pulling, lets in-flight work settle, flushes receipts, closes sinks, drains NATS.
   * Idempotent; every step runs even if an earlier one throws.
   */
  close(): Promise<void> {
    this.closing ??= (async () => {
      const steps: [string, () => Promise<unknown>][] = [
        ['runners', () => Promise.all(this.runners.map((r) => r.close()))],
        ['receipts', () => this.receipts.close()],
        // Live updates the sinks' last deliveries held back go even if a provider fails to close.
        ['sinks', async () => { try { await this.providers?.close(); } finally { this.inboxEvents?.flush(); } }],
        ['watchers', async () => { this.cancellations?.stop(); this.breakers?.stop(); clearInterval(this.deviceSweep); await this.housekeeping?.stop(); await this.sweeping; }],
        ['http', async () => this.health?.close()],
        ['nats', () => this.nats.nc.drain()],
        ['redis', async () => { this.redis.disconnect(); }],
        ['clickhouse', () => this.clickhouse.close()],
      ];
      for (const [what, step] of steps) {
        try { await step(); } catch (err) { this.log.error({ err }, `close: ${what} failed`); }
      }
    })();
    return this.closing;
  }
}
