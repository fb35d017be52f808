import { AckPolicy, DeliverPolicy, type ConsumerConfig } from '@nats-io/jetstream';
import { nuid } from '@nats-io/nuid';
import type { Logger } from 'pino';
import type { Nats } from '../runtime/connections.js';
import type { Config } from '../runtime/config.js';
import type { Tier } from '../schemas/index.js';
import { msToNs, type Topology } from '../streams/topology.js';
import { Metrics } from './metrics.js';
import { ReceiptPublisher } from './receipt-publisher.js';
import { StageRunner } from './runner.js';
import { bindings } from './graph.js';
import type { StageDeps } from './deps.js';

/** Where a replay starts and stops. */
export interface ReplayOptions {
  fromSeq?: number;
  /** ms since epoch; used when fromSeq is not given */
  fromTime?: number;
  /** @default the stream's last sequence when the replay starts */
  toSeq?: number;
  tier?: Tier;
}

/**
 * Feeds REQUESTS messages back through validation, from a sequence (or time) to another, with a
 * consumer of its own that starts there: no copy of the messages is made. Downstream dedup keeps
 * deliveries already made from repeating. Returns how many requests were fed.
 */
export async function replay(nats: Nats, topology: Topology, config: Config, deps: StageDeps, log: Logger, opts: ReplayOptions): Promise<{ fed: number; lastSequence: number }> {
  const stream = topology.requestsStream;
  const info = await nats.jsm.streams.info(stream);
  const lastSequence = Math.min(opts.toSeq ?? info.state.last_seq, info.state.last_seq);
  const name = `replay_${nuid.next()}`;
  const config_: Partial<ConsumerConfig> = {
    name,
    filter_subject: topology.request(opts.tier ?? '*'),
    ack_policy: AckPolicy.Explicit,
    ack_wait: msToNs(30_000),
    max_ack_pending: 1_000,
    inactive_threshold: msToNs(300_000),
    ...(opts.fromSeq !== undefined
      ? { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: opts.fromSeq }
      : { deliver_policy: DeliverPolicy.StartTime, opt_start_time: new Date(opts.fromTime ?? 0).toISOString() }),
  };
  await nats.jsm.consumers.add(stream, config_);
  const receipts = new ReceiptPublisher(nats.js, topology);
  const metrics = new Metrics();
  // The same first step the pipeline runs on REQUESTS (validate, or the validate → filter chain).
  const [entry] = bindings(topology, { stages: ['validate'], tiers: [opts.tier ?? 'transactional'], wiring: config.wiring });
  const runner = new StageRunner(entry.def, entry.create(deps), await nats.js.consumers.get(stream, name), name,
    entry.route, nats.js, topology, receipts, log, metrics, { ...entry.options, lastSequence, concurrency: 64, pullBatch: 200, replayId: name });
  await runner.start();
  try {
    for (;;) {
      await new Promise((r) => setTimeout(r, 200));
      const ci = await nats.jsm.consumers.info(stream, name);
      const drained = ci.num_pending === 0 && ci.num_ack_pending === 0;
      // A fresh consumer delivers in stream order: once a message past the end arrived and nothing
      // is in hand, everything up to the end has been handled.
      if ((runner.passedEnd || drained) && runner.idle) return { fed: ci.ack_floor.consumer_seq, lastSequence };
    }
  } finally {
    await runner.close();
    await receipts.close();
    await nats.jsm.consumers.delete(stream, name).catch(() => undefined);
  }
}
