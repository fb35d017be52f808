import { AckPolicy, DeliverPolicy, type ConsumerConfig } from '@nats-io/jetstream';
import { nuid } from '@nats-io/nuid';
import type { Logger } from 'pino';
import type { Nats } from '../runtime/connections.js';
import type { Config } from '../runtime/config.js';
import { tiers, type Tier } from '../schemas/index.js';
import { msToNs, type Topology } from '../streams/topology.js';
import { Assembly } from './assembly.js';
import type { StageDeps } from './deps.js';
import { pipelineGraph, type PipelineGraph } from './graph.js';
import { Metrics } from './metrics.js';
import { ReceiptPublisher } from './receipt-publisher.js';
import { ReplayWindow, type StageRunner } from './runner.js';

/** Where a replay starts and stops. */
export interface ReplayOptions {
  fromSeq?: number;
  /** ms since epoch; used when fromSeq is not given */
  fromTime?: number;
  /** @default the stream's last sequence when the replay starts */
  toSeq?: number;
  /** Only this tier. @default every tier, each request through its own tier's entry */
  tier?: Tier;
  /** Called about every 200 ms while it runs. */
  onProgress?: (p: ReplayProgress) => void;
}

/** How far a replay has come: requests handled, and how many it expects at most. */
export interface ReplayProgress {
  done: number;
  total: number;
}

/**
 * Feeds REQUESTS back through the graph's entry node, from a sequence (or time) to another. Each
 * tier has consumers of its own that start there (no copy of the messages is made) and run its
 * own tier's entry flow, exactly as `herald run` does: one per form of the tier's request subject
 * (tenantless and per tenant), as NATS 2.9 gives a consumer one filter and no pattern matches both
 * forms of one tier alone. Downstream dedup keeps deliveries already made from repeating. Returns
 * how many requests were fed.
 */
export async function replay(
  nats: Nats, topology: Topology, config: Config, deps: StageDeps, log: Logger, opts: ReplayOptions,
  // The operator's command feeds the pipeline; the running processes deliver (and hold the sinks).
  graph: PipelineGraph = pipelineGraph(config.wiring, { deliverInline: false }),
): Promise<{ fed: number; lastSequence: number }> {
  const stream = topology.requestsStream;
  const info = await nats.jsm.streams.info(stream);
  if (opts.fromSeq !== undefined && opts.fromSeq > info.state.last_seq) {
    throw new Error(`--from-seq ${opts.fromSeq} is past the end of ${stream} (last sequence ${info.state.last_seq})`);
  }
  if (opts.fromSeq !== undefined && opts.toSeq !== undefined && opts.fromSeq > opts.toSeq) {
    throw new Error(`--from-seq ${opts.fromSeq} is after --to-seq ${opts.toSeq}`);
  }
  const lastSequence = Math.min(opts.toSeq ?? info.state.last_seq, info.state.last_seq);
  const id = `replay_${nuid.next()}`;
  const receipts = new ReceiptPublisher(nats.js, topology, { log });
  const assembly = new Assembly({
    graph, topology, deps, receipts, metrics: new Metrics(), log,
    settings: { ackWaitMs: config.ackWaitMs, retry: config.retry },
    publish: (subject, data, msgID) => nats.js.publish(subject, data, { msgID }),
  });
  const specs = assembly.consumers({ nodes: [graph.nodes.find((n) => n.reads === 'requests')!.name], tiers: opts.tier ? [opts.tier] : [...tiers] });
  const running: { name: string; runner: StageRunner; total: number }[] = [];
  try {
    for (const spec of specs) {
      for (const [i, subject] of topology.requestSubjects(spec.tier!).entries()) {
        const name = `${id}_${spec.tier}_${i ? 'tenants' : 'tenantless'}`;
        const consumer: Partial<ConsumerConfig> = {
          name,
          filter_subject: subject,
          ack_policy: AckPolicy.Explicit,
          ack_wait: msToNs(config.ackWaitMs),
          max_ack_pending: 1_000,
          inactive_threshold: msToNs(300_000),
          ...(opts.fromSeq !== undefined
            ? { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: opts.fromSeq }
            : { deliver_policy: DeliverPolicy.StartTime, opt_start_time: new Date(opts.fromTime ?? 0).toISOString() }),
        };
        const ci = await nats.jsm.consumers.add(stream, consumer);
        const runner = assembly.runner({ ...spec, durable: name }, await nats.js.consumers.get(stream, name), {
          window: new ReplayWindow(lastSequence, id), options: { concurrency: 64, pullBatch: 200 },
        });
        running.push({ name, runner, total: ci.num_pending });
        await runner.start();
      }
    }
    for (;;) {
      await new Promise((r) => setTimeout(r, 200));
      let fed = 0;
      let finished = 0;
      for (const r of running) {
        const ci = await nats.jsm.consumers.info(stream, r.name);
        fed += ci.ack_floor.consumer_seq;
        const drained = ci.num_pending === 0 && ci.num_ack_pending === 0;
        // A fresh consumer delivers in stream order: once a message past the end arrived and nothing
        // is in hand, everything up to the end has been handled.
        if ((r.runner.passedEnd || drained) && r.runner.idle) finished++;
      }
      opts.onProgress?.({ done: fed, total: Math.max(fed, running.reduce((n, r) => n + r.total, 0)) });
      if (finished === running.length) return { fed, lastSequence };
    }
  } finally {
    await Promise.all(running.map((r) => r.runner.close()));
    await receipts.close();
    await Promise.all(running.map((r) => nats.jsm.consumers.delete(stream, r.name).catch(() => undefined)));
  }
}
