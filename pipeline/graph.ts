import type { z } from 'zod';
import { channels, tiers, type Tier } from '../schemas/index.js';
import { tierLimits, Topology, type NodePlacement } from '../streams/topology.js';
import { batchStage } from '../processors/batch.js';
import { dispatchStage } from '../processors/dispatch.js';
import { preferenceFilterStage } from '../processors/preference-filter.js';
import { receiptLoaderStage } from '../processors/receipt-loader.js';
import { resolveStage } from '../processors/resolve.js';
import { validateStage } from '../processors/validate.js';
import { scheduleStage, wakeStage } from '../processors/wake.js';
import { statusTrackerStage } from '../processors/status-tracker.js';
import type { StageDeps } from './deps.js';
import type { RunnerOptions } from './runner.js';
import type { StageDefinition } from './stage.js';

export type AnyDefinition = StageDefinition<any, any, any, StageDeps>;

/** What the graph's run settings are derived from (the parsed configuration). */
export interface GraphSettings {
  ackWaitMs: number;
  retry: { maxAttempts: number; backoffBaseMs: number; backoffCapMs: number };
}

/** A stage placed in the pipeline: where it reads (see NodePlacement) and how its runner works. */
export interface GraphNode extends NodePlacement {
  def: AnyDefinition;
  /** The stage's config for a tier; defaults live in the stage's config schema. */
  config?: (tier: Tier | undefined) => Record<string, unknown>;
  /** How its runner pulls, bounds and retries work for a tier (untiered nodes get undefined). */
  run: (tier: Tier | undefined, settings: GraphSettings) => RunnerOptions;
}

/** A JetStream subject between two nodes (work can be spread over processes), or a call in one process. */
export type LinkKind = 'durable' | 'inline';

/** One edge of the graph: outputs of `from` are inputs of `to`. */
export interface GraphEdge {
  from: string;
  to: string;
  /** `out`: what the stage returns; `later`: what it hands back with `ctx.later` (always durable). @default 'out' */
  port?: 'out' | 'later';
  /** Per tier: durable or inline. */
  link: (tier: Tier) => LinkKind;
  /** Inline only: inputs of `to` handled at once per input of `from` (1 streams a fan-out flat). @default 1 */
  concurrency?: number;
}

/** The whole pipeline, described once. Topology, consumers, runners, replay and metrics derive from it. */
export interface PipelineGraph {
  nodes: GraphNode[];
  edges: GraphEdge[];
}

/**
 * `chained` (the default): validate → resolve → filter run in-process on the request (no hop where
 * nothing is gained), and on the transactional tier batch → dispatch too; `split`: every edge is a
 * JetStream subject.
 */
export type Wiring = 'chained' | 'split';

/** JetStream's max_ack_pending for "no cap". */
const UNLIMITED = -1;

const perTier = (tier: Tier | undefined, s: GraphSettings): RunnerOptions => {
  const limits = tierLimits[tier ?? 'transactional'];
  return { pullBatch: limits.pullBatch, concurrency: limits.concurrency, ackWaitMs: s.ackWaitMs, ...s.retry };
};

/** Variations of the graph for who runs it. */
export interface GraphOptions {
  /**
   * Chained wiring runs the transactional tier's batch and dispatch on the request message too.
   * A replay turns this off: it feeds the pipeline, and the running processes deliver. @default true
   */
  deliverInline?: boolean;
}

/** Herald's pipeline. Adding a stage is a file in processors/ and an entry here. */
export function pipelineGraph(wiring: Wiring = 'chained', options: GraphOptions = {}): PipelineGraph {
  const chained = (_tier: Tier): LinkKind => (wiring === 'chained' ? 'inline' : 'durable');
  // A password reset crosses one JetStream hop: its request message is acked after the provider
  // call and the receipts. Bulk tiers keep the durable hops, where batching across requests and
  // spreading over processes pay.
  const deliverInline = wiring === 'chained' && options.deliverInline !== false;
  const shortTransactional = (tier: Tier): LinkKind => (deliverInline && tier === 'transactional' ? 'inline' : 'durable');
  return {
    nodes: [
      { name: 'validate', def: validateStage, reads: 'requests', subject: 'request', config: (tier) => ({ tier }), run: perTier },
      { name: 'resolve', def: resolveStage, reads: 'work', subject: 'validated', run: perTier },
      { name: 'filter', def: preferenceFilterStage, reads: 'work', subject: 'resolved', run: perTier },
      // Held work waits on consumers with no cap on pending messages: any amount of it leaves room
      // for work that is due (the caps of the live consumers are what isolate the tiers).
      { name: 'schedule', def: scheduleStage, reads: 'work', subject: 'scheduled', maxAckPending: UNLIMITED, run: perTier },
      { name: 'wake', def: wakeStage, reads: 'work', subject: 'deferred', maxAckPending: UNLIMITED, run: perTier },
      {
        name: 'batch', def: batchStage, reads: 'work', subject: 'filtered',
        run: (tier, s) => ({ ...perTier(tier, s), lingerMs: tier === 'transactional' ? 2 : 10, batchConcurrency: 4 }),
      },
      { name: 'dispatch', def: dispatchStage, reads: 'work', subject: 'deliver', partitions: channels, run: perTier },
      {
        name: 'loader', def: receiptLoaderStage, reads: 'receipts', subject: 'receipt', maxAckPending: 20_000,
        // ClickHouse outages are waited out (deferred), so attempts only count inserts it refused.
        // Few large inserts: ClickHouse's cost goes by inserts more than rows. At 1,000 requests/s an
        // insert per 200 receipt messages took 15 % of a core, one a second 4–5 % (npm run
        // bench:cost); receipts reach analysts within about a second.
        run: (_tier, s) => ({
          pullBatch: 500, concurrency: 1, maxBatch: 5_000, maxBatchBytes: 16 * 1024 * 1024, lingerMs: 1_000, batchConcurrency: 2, ackWaitMs: s.ackWaitMs,
          maxAttempts: 1_000_000, backoffBaseMs: s.retry.backoffBaseMs, backoffCapMs: 30_000,
        }),
      },
      {
        name: 'tracker', def: statusTrackerStage, reads: 'receipts', subject: 'receipt', maxAckPending: 20_000,
        // A short linger: a request's status is fresh within a second of each step.
        run: (_tier, s) => ({
          pullBatch: 500, concurrency: 1, maxBatch: 200, lingerMs: 20, batchConcurrency: 2, ackWaitMs: s.ackWaitMs,
          maxAttempts: s.retry.maxAttempts, backoffBaseMs: s.retry.backoffBaseMs, backoffCapMs: 30_000,
        }),
      },
    ],
    edges: [
      { from: 'validate', to: 'resolve', link: chained },
      // A request with a later send_at is parked, then resolved when due.
      { from: 'validate', to: 'schedule', port: 'later', link: () => 'durable' },
      { from: 'schedule', to: 'resolve', link: () => 'inline' },
      // A topic fan-out streams its chunks into the filter, eight at a time.
      { from: 'resolve', to: 'filter', link: chained, concurrency: 8 },
      { from: 'filter', to: 'batch', link: shortTransactional },
      { from: 'filter', to: 'wake', port: 'later', link: () => 'durable' },
      // Woken recipients are filtered again at once, with the preferences of that moment.
      { from: 'wake', to: 'filter', link: () => 'inline' },
      // In-process, a request's channels are dispatched side by side.
      { from: 'batch', to: 'dispatch', link: shortTransactional, concurrency: channels.length },
    ],
  };
}

/** The node of that name (throws naming the graph's nodes when there is none). */
export function nodeOf(graph: PipelineGraph, name: string): GraphNode {
  const node = graph.nodes.find((n) => n.name === name);
  if (!node) throw new Error(`graph: no node "${name}" (nodes: ${graph.nodes.map((n) => n.name).join(', ')})`);
  return node;
}

/** The edge leaving `from` by `port`, if any. */
export function edgeFrom(graph: PipelineGraph, from: string, port: 'out' | 'later' = 'out'): GraphEdge | undefined {
  return graph.edges.find((e) => e.from === from && (e.port ?? 'out') === port);
}

/**
 * Checks at start-up that the graph holds together: names unique and matching their stages, each
 * edge's schemas agreeing, a durable edge's target able to route (it has a tier), no in-process
 * cycle, at most one edge per port. (An in-process batch stage batches one input's outputs.)
 */
export function checkGraph(graph: PipelineGraph): void {
  const problems: string[] = [];
  const names = new Set<string>();
  for (const n of graph.nodes) {
    if (names.has(n.name)) problems.push(`node "${n.name}" appears twice`);
    names.add(n.name);
    if (n.def.name !== n.name) problems.push(`node "${n.name}" runs stage "${n.def.name}": name them alike`);
    if (!/^[a-z][a-z0-9-]*$/.test(n.name)) problems.push(`node "${n.name}": names are lowercase letters, digits and -`);
    if (n.partitions && !n.def.partitionOf) problems.push(`node "${n.name}" is read per partition but its stage has no partitionOf`);
  }
  for (const e of graph.edges) {
    const from = graph.nodes.find((n) => n.name === e.from);
    const to = graph.nodes.find((n) => n.name === e.to);
    if (!from || !to) {
      problems.push(`edge ${e.from} → ${e.to}: no node "${!from ? e.from : e.to}"`);
      continue;
    }
    const port = e.port ?? 'out';
    if (graph.edges.filter((x) => x.from === e.from && (x.port ?? 'out') === port).length > 1) problems.push(`node "${e.from}" has more than one "${port}" edge`);
    if (port === 'out' && (from.def.output as z.ZodType | null) !== to.def.input) {
      problems.push(`edge ${e.from} → ${e.to}: ${e.from} emits a schema that ${e.to} does not take`);
    }
    if (port === 'later' && from.def.later !== to.def.input) {
      problems.push(`edge ${e.from} → ${e.to} (later): ${e.from} hands back a schema that ${e.to} does not take`);
    }
    if (!to.def.tierOf) problems.push(`edge ${e.from} → ${e.to}: stage ${e.to} has no tierOf, so nothing can be routed to it`);
    if (to.reads !== 'work') problems.push(`edge ${e.from} → ${e.to}: only work-stream nodes can be edge targets`);
    for (const tier of tiers) {
      if (e.link(tier) === 'inline' && port === 'later') problems.push(`edge ${e.from} → ${e.to} (${tier}): work handed back is stored, so the link must be durable`);
    }
  }
  for (const tier of tiers) {
    for (const start of graph.nodes) {
      const seen = new Set([start.name]);
      for (let e = edgeFrom(graph, start.name); e && e.link(tier) === 'inline'; e = edgeFrom(graph, e.to)) {
        if (seen.has(e.to)) {
          problems.push(`${tier}: in-process cycle through "${e.to}"`);
          break;
        }
        seen.add(e.to);
      }
    }
  }
  if (problems.length) throw new Error(`pipeline graph:\n  - ${problems.join('\n  - ')}`);
}

/** The topology of a graph in a configuration's namespace (the graph defaults to the configured wiring's). */
export function topologyOf(
  config: { namespace: string; storageBudgetBytes: number; replicas: number; ackWaitMs: number; wiring?: Wiring },
  graph: PipelineGraph = pipelineGraph(config.wiring),
): Topology {
  return new Topology(graph.nodes, config.namespace, config.storageBudgetBytes, config.replicas, config.ackWaitMs);
}

/**
 * The graph as the README's "How it is built" table: each node's input subject, the stream that
 * holds it, and where its outputs go. A test checks the README against it.
 */
export function describeGraph(graph: PipelineGraph, wiring: Wiring): string[] {
  const lines: string[] = [];
  for (const n of graph.nodes) {
    const subject = n.reads === 'receipts' ? 'notify.receipt.<status>' : `notify.${n.subject}${n.partitions ? '.<channel>' : ''}.<tier>`;
    const stream = n.reads === 'requests' ? 'REQUESTS_<TIER>' : n.reads === 'receipts' ? 'RECEIPTS' : 'WORK_<TIER>';
    const inProcess = (e: GraphEdge) => {
      const on = tiers.filter((t) => e.link(t) === 'inline');
      return on.length === 0 ? '' : on.length === tiers.length ? ' (in-process)' : ` (in-process: ${on.join(', ')})`;
    };
    const out = graph.edges.filter((e) => e.from === n.name).map((e) => `${e.port === 'later' ? 'later ' : ''}→ ${e.to}${inProcess(e)}`);
    lines.push(`${subject.padEnd(32)} ${stream.padEnd(15)} ${n.name.padEnd(9)} ${out.join(', ') || '(no outputs)'}`);
  }
  lines.push(`${'(every intake, copied)'.padEnd(32)} ${'REQUESTS'.padEnd(15)} the replayable log (herald replay)`);
  lines.push(`${'notify.dlq.<node>'.padEnd(32)} ${'DLQ'.padEnd(15)} dead letters of every node (wiring: ${wiring})`);
  return lines;
}
