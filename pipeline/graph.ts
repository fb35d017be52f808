import type { z } from 'zod';
import { channels, tiers, type Channel, type Tier } from '../schemas/index.js';
import { tierLimits, type StageName, type Topology } from '../streams/topology.js';
import { batchStage } from '../processors/batch.js';
import type { StageDeps } from './deps.js';
import { dispatchStage } from '../processors/dispatch.js';
import { preferenceFilterStage } from '../processors/preference-filter.js';
import { receiptLoaderStage } from '../processors/receipt-loader.js';
import { resolveStage } from '../processors/resolve.js';
import type { RunnerOptions } from './runner.js';
import type { Stage, StageDefinition } from './stage.js';
import { chain } from './chain.js';
import { validateStage } from '../processors/validate.js';
import { wakeStage } from '../processors/wake.js';

type AnyDefinition = StageDefinition<any, any, any, StageDeps>;

/** One consumer a process runs: which stage, where it reads, where its outputs go. */
export interface Binding {
  /** The stage that decodes the input (the head of a chain). */
  def: AnyDefinition;
  /** Builds what runs: the stage itself, or a chain starting with it. */
  create: (deps: StageDeps) => Stage<any, any>;
  stream: string;
  durable: string;
  route: ((output: any) => string) | null;
  options: RunnerOptions;
  tier?: Tier;
  channel?: Channel;
}

/** The pipeline, in order. Adding a stage is a file in processors/ and a line here. */
export const pipeline: AnyDefinition[] = [validateStage, resolveStage, preferenceFilterStage, batchStage, dispatchStage];

/** Each stage's output schema must be the next stage's input schema. */
export function checkPipeline(stages: AnyDefinition[]): void {
  for (let i = 0; i + 1 < stages.length; i++) {
    const out = stages[i].output as z.ZodType | null;
    if (out !== stages[i + 1].input) {
      throw new Error(`wiring: ${stages[i].name} emits a schema that ${stages[i + 1].name} does not take`);
    }
  }
}

/**
 * Which stage boundaries are JetStream subjects. `split`: every one. `chained` (the default):
 * validate → resolve → filter run as one step on the request (no hop where nothing is gained),
 * then batch and dispatch have their own consumers.
 */
export type Wiring = 'chained' | 'split';

/**
 * A request's chunk is named by its number, not by its position in this delivery's outputs: a
 * fan-out resumed from its checkpoint starts at a later chunk, and must not reuse earlier msgIDs.
 */
const chunkId = (o: { request: { tenant: string; id: string; replay?: string }; chunk: number }) =>
  `${o.request.tenant}:${o.request.id}:${o.request.replay ?? ''}:${o.chunk}`;

const build = (def: AnyDefinition, config: Record<string, unknown> = {}) => (deps: StageDeps) => def.create(def.config.parse(config), deps);

/** Every binding for the chosen stages and tiers. */
export function bindings(
  topology: Topology,
  only?: { stages?: StageName[]; tiers?: Tier[]; wiring?: Wiring; retry?: { maxAttempts: number; backoffBaseMs: number; backoffCapMs: number } },
): Binding[] {
  checkPipeline(pipeline);
  const want = (s: StageName) => !only?.stages || only.stages.includes(s);
  const chained = (only?.wiring ?? 'chained') === 'chained';
  const out: Binding[] = [];
  for (const tier of only?.tiers ?? tiers) {
    const limits = tierLimits[tier];
    const base: RunnerOptions = { pullBatch: limits.pullBatch, concurrency: limits.concurrency, ackWaitMs: topology.ackWaitMs };
    const work = topology.workStream(tier);
    // Every binding that runs the preference filter: recipients it holds back go to the tier's deferred subject.
    const filtering: RunnerOptions = { ...base, laterRoute: (held) => topology.deferred(held.request.tier) };
    if (chained && want('validate')) {
      out.push({ def: validateStage, stream: topology.requestsStream, durable: topology.durable('validate', tier), tier,
        create: (deps) => chain(chain(build(validateStage, { tier })(deps), build(resolveStage)(deps), 1), build(preferenceFilterStage)(deps), 8),
        route: (o) => topology.filtered(o.request.tier), options: { ...filtering, outputId: chunkId } });
    }
    if (!chained && want('validate')) out.push({ def: validateStage, create: build(validateStage, { tier }), stream: topology.requestsStream,
      durable: topology.durable('validate', tier), tier, route: (o) => topology.validated(o.request.tier), options: base });
    if (!chained && want('resolve')) out.push({ def: resolveStage, create: build(resolveStage), stream: work, durable: topology.durable('resolve', tier), tier,
      route: (o) => topology.resolved(o.request.tier), options: { ...base, outputId: chunkId } });
    if (!chained && want('filter')) out.push({ def: preferenceFilterStage, create: build(preferenceFilterStage), stream: work, durable: topology.durable('filter', tier), tier,
      route: (o) => topology.filtered(o.request.tier), options: filtering });
    if (want('filter')) out.push({ def: wakeStage, stream: work, durable: topology.durable('wake', tier), tier,
      create: (deps) => chain(build(wakeStage)(deps), build(preferenceFilterStage)(deps), 1),
      route: (o) => topology.filtered(o.request.tier), options: filtering });
    if (want('batch')) out.push({ def: batchStage, create: build(batchStage), stream: work, durable: topology.durable('batch', tier), tier,
      route: (o) => topology.deliver(o.channel, o.tier), options: { ...base, lingerMs: tier === 'transactional' ? 2 : 10, batchConcurrency: 4 } });
    if (want('dispatch')) {
      for (const channel of channels) {
        out.push({ def: dispatchStage, create: build(dispatchStage), stream: work, durable: topology.durable('dispatch', tier, channel), tier, channel, route: null,
          options: { ...base, maxAttempts: only?.retry?.maxAttempts ?? 12, backoffBaseMs: only?.retry?.backoffBaseMs ?? 500, backoffCapMs: only?.retry?.backoffCapMs ?? 300_000 } });
      }
    }
  }
  if (want('loader')) {
    out.push({ def: receiptLoaderStage, create: build(receiptLoaderStage), stream: topology.receiptsStream, durable: topology.durable('loader'), route: null,
      options: { pullBatch: 500, maxBatch: 200, lingerMs: 200, batchConcurrency: 2, maxAttempts: 1_000_000, backoffCapMs: 30_000, ackWaitMs: topology.ackWaitMs } });
  }
  return out;
}
