import type { Logger } from 'pino';
import { tiers, type Tier } from '../schemas/index.js';
import type { Topology } from '../streams/topology.js';
import type { AttemptCounter } from './attempts.js';
import { DeadLetterWriter } from './dead-letters.js';
import type { StageDeps } from './deps.js';
import { Flow, type FlowStep } from './flow.js';
import { checkGraph, edgeFrom, nodeOf, type GraphNode, type GraphSettings, type PipelineGraph } from './graph.js';
import type { Metrics } from './metrics.js';
import type { Publish } from './outputs.js';
import { StageRunner, type MessageSource, type Priority, type ReceiptSink, type ReplayWindow, type RunnerOptions } from './runner.js';

/** One durable consumer of the graph: a node on a tier (and partition), where it reads. */
export interface ConsumerSpec {
  node: GraphNode;
  tier?: Tier;
  partition?: string;
  stream: string;
  durable: string;
  /** The subject it reads. */
  subject: string;
}

/** What runners are made of, shared by every runner of a process (or of a replay). */
export interface AssemblyParts {
  graph: PipelineGraph;
  topology: Topology;
  settings: GraphSettings;
  deps: StageDeps;
  publish: Publish;
  receipts: ReceiptSink;
  metrics: Metrics;
  log: Logger;
  attempts?: AttemptCounter;
  /** Priority between tiers in this process (transactional urgent). */
  priority?: (tier: Tier | undefined) => Priority | undefined;
}

/**
 * Builds runners from the graph: the one composition root for `herald run` and `herald replay`.
 * A consumer runs its node and every node joined to it by an inline edge for its tier; a durable
 * edge becomes a route to the next node's subject.
 */
export class Assembly {
  private readonly deadLetters: DeadLetterWriter;

  constructor(private readonly parts: AssemblyParts) {
    checkGraph(parts.graph);
    this.deadLetters = new DeadLetterWriter(parts.publish, parts.topology, parts.metrics);
  }

  /** Every consumer of the graph, optionally only some nodes and tiers (untiered nodes whatever the tiers). */
  consumers(only: { nodes?: string[]; tiers?: Tier[] } = {}): ConsumerSpec[] {
    const { graph, topology } = this.parts;
    for (const name of only.nodes ?? []) nodeOf(graph, name);
    const out: ConsumerSpec[] = [];
    for (const node of graph.nodes) {
      if (only.nodes && !only.nodes.includes(node.name)) continue;
      if (node.reads === 'receipts') {
        out.push({ node, stream: topology.receiptsStream, durable: topology.durable(node.name), subject: topology.receipt('*') });
        continue;
      }
      for (const tier of only.tiers ?? tiers) {
        for (const partition of node.partitions ?? [undefined]) {
          out.push({
            node, tier, partition, stream: topology.streamOf(node.name, tier),
            durable: topology.durable(node.name, tier, partition), subject: topology.input(node.name, tier, partition),
          });
        }
      }
    }
    return out;
  }

  /** What a consumer of `node` runs on `tier`: that node, then each node after it in this process. */
  flow(node: string, tier?: Tier): Flow {
    return new Flow(this.step(nodeOf(this.parts.graph, node), tier), this.parts.metrics);
  }

  /** A runner of `spec` reading from `source`; a replay passes its own name, window and limits. */
  runner(spec: Pick<ConsumerSpec, 'node' | 'tier' | 'durable'>, source: MessageSource, extra: { window?: ReplayWindow; options?: Partial<RunnerOptions> } = {}): StageRunner {
    const p = this.parts;
    return new StageRunner({
      flow: this.flow(spec.node.name, spec.tier),
      source,
      durable: spec.durable,
      publish: p.publish,
      receipts: p.receipts,
      deadLetters: this.deadLetters,
      metrics: p.metrics,
      log: p.log,
      options: { ...spec.node.run(spec.tier, p.settings), ...extra.options },
      attempts: p.attempts,
      priority: p.priority?.(spec.tier),
      window: extra.window,
      // The entry node holds a request's body to the tenant its subject names.
      tenantOf: spec.node.reads === 'requests' ? (subject) => p.topology.requestOf(subject)?.tenant : undefined,
    });
  }

  private step(node: GraphNode, tier: Tier | undefined): FlowStep {
    const { graph, deps, settings, log } = this.parts;
    const stage = node.def.create(node.def.config.parse(node.config?.(tier) ?? {}), deps);
    const step: FlowStep = {
      node, tier, stage,
      log: log.child({ stage: node.name }),
      maxAttempts: node.run(tier, settings).maxAttempts,
      ownSubject: this.ownSubject(node, tier),
    };
    const out = edgeFrom(graph, node.name, 'out');
    if (out) {
      const target = nodeOf(graph, out.to);
      if (tier && out.link(tier) === 'inline') {
        const next = this.step(target, tier);
        step.next = { step: next, concurrency: out.concurrency ?? 1 };
      } else {
        step.route = this.routeTo(target);
      }
    }
    const later = edgeFrom(graph, node.name, 'later');
    if (later) step.laterRoute = this.routeTo(nodeOf(graph, later.to));
    return step;
  }

  /** A node's own input subject for one of its inputs (a redrive target). */
  private ownSubject(node: GraphNode, tier: Tier | undefined): (input: unknown) => string {
    const { topology } = this.parts;
    if (node.reads === 'requests') return () => topology.request(tier ?? '*');
    if (node.reads === 'receipts') return () => topology.receipt('*');
    return this.routeTo(node);
  }

  /** Subjects of a node by tier and partition, computed once: routing runs for every output. */
  private routeTo(target: GraphNode): (output: unknown) => string {
    const { topology } = this.parts;
    const { tierOf, partitionOf } = target.def;
    if (!tierOf) throw new Error(`graph: nothing can be routed to ${target.name}: its stage has no tierOf`);
    const subjects = new Map<string, string>();
    for (const tier of tiers) {
      for (const partition of target.partitions ?? [undefined]) subjects.set(`${tier}|${partition ?? ''}`, topology.input(target.name, tier, partition));
    }
    return (output) => {
      const tier = tierOf(output);
      const partition = partitionOf?.(output) ?? '';
      const subject = subjects.get(`${tier}|${partition}`);
      if (!subject) throw new Error(`no subject for ${target.name} on tier "${tier}"${partition ? ` partition "${partition}"` : ''}`);
      return subject;
    };
  }
}
