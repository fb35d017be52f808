import type { Logger } from 'pino';
import { DeferError, errorMessage, PermanentError, PoisonError } from '../runtime/errors.js';
import type { Receipt, ReceiptStatus, Tier } from '../schemas/index.js';
import type { GraphNode } from './graph.js';
import type { Metrics } from './metrics.js';
import type { Identity, Stage, StageContext } from './stage.js';

/** One output ready to publish: its subject, body and msgID. */
export interface Emitted {
  subject: string;
  data: string;
  id: string;
}

/** A dead letter a node writes: for a stage's partial failure, or when a node gives up on its input. */
export interface NodeLetter {
  node: string;
  /** Where a redrive sends the payload: the node's own input subject. */
  subject: string;
  reason: string;
  problems: string[];
  payload: Uint8Array;
  attempts: number;
  firstError?: string;
  identities: Identity[];
  /** Names the letter, so a redelivery that gives up again writes the same one (null: a fresh name). */
  key: string | null;
}

/** What the runner lends a flow for one message (or one batch). */
export interface FlowEnv {
  attempt: number;
  firstError?: string;
  redrive: boolean;
  replay?: string;
  storedAt: number;
  /** The tenant the input's subject names (see StageContext.claimedTenant): the first node's alone. */
  claimedTenant?: string;
  signal: AbortSignal;
  receipt(receipt: Receipt): void;
  /** Runs `fn` once every output published so far is stored (the input is not acked before). */
  afterOutputs(fn: () => Promise<void>): void;
  /** Publishes work handed back with `ctx.later`, tracked with the outputs. */
  publish(subject: string, data: string, id: string): void;
  deadLetter(letter: NodeLetter): Promise<void>;
  /** Prefix of every msgID this runner publishes (its durable name). */
  idRoot: string;
  /** The input made durable progress (see StageContext.progress). */
  progress?(): void;
}

/** One node as it runs in a flow: its stage, its logger, its budget, and where its outputs go. */
export interface FlowStep {
  node: GraphNode;
  /** The tier this flow runs for (untiered nodes: none). */
  tier?: Tier;
  stage: Stage<any, any>;
  log: Logger;
  maxAttempts: number;
  /** The next node in this process (an inline edge), with how many of its inputs run at once. */
  next?: { step: FlowStep; concurrency: number };
  /** The subject of an output (a durable edge); absent for a stage without outputs. */
  route?: (output: unknown) => string;
  /** The subject of work handed back with `ctx.later`. */
  laterRoute?: (work: unknown) => string;
  /** This node's own input subject for an input: where a redrive of its dead letter goes. */
  ownSubject: (input: unknown) => string;
}

/** A retryable failure of an in-process node: the runner retries the whole message (never gives up on its behalf). */
export class InlineFailure extends Error {
  constructor(readonly node: string, override readonly cause: unknown) {
    super(`${node}: ${errorMessage(cause)}`);
    this.name = 'InlineFailure';
  }
}

type Produced<O> = O[] | Promise<O[]> | AsyncIterable<O>;

const isStream = <O>(p: Produced<O>): p is AsyncIterable<O> => Symbol.asyncIterator in (p as object);

async function* iterate<O>(produced: Produced<O>): AsyncIterable<O> {
  if (isStream(produced)) yield* produced;
  else yield* await produced;
}

async function toArray<O>(produced: Produced<O>): Promise<O[]> {
  if (!isStream(produced)) return produced;
  const out: O[] = [];
  for await (const x of produced) out.push(x);
  return out;
}

type Settled<T> = { ok: true; value: T } | { ok: false; error: unknown };
const settle = <T>(p: Promise<T>): Promise<Settled<T>> => p.then((value) => ({ ok: true as const, value }), (error) => ({ ok: false as const, error }));

/** Receipts saying a node gave up on an input: one per request it carried, with the node's give-up status. */
export function giveUpReceipts(node: string, status: ReceiptStatus, identities: Identity[], reason: string, attempt: number, message: string): Receipt[] {
  return identities.map((who) => ({
    ts: Date.now(), stage: node, status, tenant: who.tenant, request_id: who.request_id, tier: who.tier, category: who.category,
    channel: who.channel ?? '', reason: reason.slice(0, 2_000), attempt,
    // A request too broken to name itself is counted per message, not lumped with every other such request.
    ...(who.request_id ? {} : { unit: message }),
    ...(who.user_ids ? { user_ids: who.user_ids, count: who.user_ids.length } : { count: 1 }),
  }));
}

/** Whom an input is about, or nobody when it is too broken to say (a dead letter is written regardless). */
export function identitiesOf(node: GraphNode, input: unknown): Identity[] {
  try {
    return node.def.identify(input);
  } catch {
    return [];
  }
}

/** Why a node gave up, as a reason and its problems. */
export function failureOf(err: unknown, attempt: number): { reason: string; problems: string[] } {
  if (err instanceof PermanentError) return { reason: err.message, problems: err.problems };
  if (err instanceof PoisonError) return { reason: err.message, problems: [err.message] };
  return { reason: `gave up after ${attempt} attempts: ${errorMessage(err)}`, problems: [errorMessage(err)] };
}

/**
 * The nodes one runner runs on a message: the node its consumer feeds, and every node after it
 * joined by an inline edge. Each node keeps its identity (the shape of Benthos' observed wrapper):
 * its own logger, metrics label, attempt budget, give-up status, DLQ subject and receipts. A node
 * after the first that fails for good dead-letters its own input and lets the rest go on; one that
 * fails for now makes the runner retry the message.
 */
export class Flow {
  constructor(readonly root: FlowStep, private readonly metrics: Metrics) {}

  /** Runs the first node on one input, then the in-process nodes after it. */
  run(input: unknown, env: FlowEnv, idBase: string): Produced<Emitted> {
    const window = this.windowFor(this.root);
    const produced = this.root.stage.process!(input, this.context(this.root, env, window));
    return this.forward(this.root, produced, idBase, env, window);
  }

  /** Runs a batch node on several inputs at once, then the in-process nodes after it. */
  async runBatch(inputs: unknown[], env: FlowEnv, idBase: string): Promise<Emitted[]> {
    const window = this.windowFor(this.root);
    const produced = await this.root.stage.processBatch!(inputs, this.context(this.root, env, window));
    return toArray(this.forward(this.root, produced, idBase, env, window));
  }

  private windowFor(step: FlowStep): OrderedWindow | undefined {
    return step.next && step.next.concurrency > 1 ? new OrderedWindow(step.next.concurrency) : undefined;
  }

  private context(step: FlowStep, env: FlowEnv, window?: OrderedWindow): StageContext {
    return {
      log: step.log,
      attempt: env.attempt,
      replay: env.replay,
      redrive: env.redrive,
      isLastAttempt: env.attempt >= step.maxAttempts,
      storedAt: env.storedAt,
      // The subject is the first node's input's; the nodes after it get what that node made.
      ...(step === this.root && env.claimedTenant !== undefined ? { claimedTenant: env.claimedTenant } : {}),
      signal: env.signal,
      receipt: env.receipt,
      progress: env.progress,
      afterOutputs: window ? (fn) => window.after(fn) : env.afterOutputs,
      later: (work, untilMs, id) => {
        if (!step.laterRoute) throw new Error(`node ${step.node.name} has no "later" edge to hand work back on`);
        const deferred = { until: untilMs, work };
        env.publish(step.laterRoute(deferred), JSON.stringify(deferred), `${env.idRoot}:later:${id}`);
      },
      deadLetter: (reason, problems, payload) => env.deadLetter({
        node: step.node.name, subject: step.ownSubject(payload), reason, problems,
        payload: Buffer.from(JSON.stringify(payload)), attempts: env.attempt, firstError: env.firstError,
        identities: [], key: null,
      }),
    };
  }

  /** Where a node's outputs go: named, then published, or handed to the next node in this process. */
  private forward(step: FlowStep, produced: Produced<unknown>, parentId: string, env: FlowEnv, window?: OrderedWindow): Produced<Emitted> {
    const named = step.node.def.outputId;
    const idOf = (o: unknown, i: number) => (named ? `${env.idRoot}:${named(o)}` : `${parentId}:${i}`);
    if (!step.next) {
      const route = step.route;
      const emit = (o: unknown, i: number): Emitted => {
        if (!route) throw new Error(`node ${step.node.name} has no outgoing edge but produced an output`);
        return { subject: route(o), data: JSON.stringify(o), id: idOf(o, i) };
      };
      if (isStream(produced)) {
        return (async function* () {
          let i = 0;
          for await (const o of produced) yield emit(o, i++);
        })();
      }
      return Promise.resolve(produced).then((list) => list.map(emit));
    }
    const next = step.next.step;
    if (!window) {
      // One at a time: the next node's outputs stream as they come (a fan-out stays flat in memory).
      const self = this;
      return (async function* () {
        let i = 0;
        for await (const o of iterate(produced)) yield* self.isolated(next, o, idOf(o, i++), env);
      })();
    }
    return window.run(iterate(produced), (o, i) => toArray(this.isolated(next, o, idOf(o, i), env)), env.afterOutputs);
  }

  /** Runs an in-process node on one input under its own identity; a failure for good dead-letters that input alone. */
  private isolated(step: FlowStep, input: unknown, id: string, env: FlowEnv): AsyncIterable<Emitted> {
    const self = this;
    return (async function* () {
      const started = performance.now();
      try {
        const window = self.windowFor(step);
        const ctx = self.context(step, env, window);
        // A batch stage in-process batches what one input brings (a request's deliveries).
        const produced = step.stage.process ? step.stage.process(input, ctx) : step.stage.processBatch!([input], ctx);
        yield* iterate(self.forward(step, produced, id, env, window));
        self.metrics.processed(step.node.name, 'ok', performance.now() - started);
      } catch (err) {
        // Already decided further down, or a wait: the runner handles the message as a whole.
        if (err instanceof InlineFailure || err instanceof DeferError) throw err;
        self.metrics.processed(step.node.name, 'failed', performance.now() - started);
        const givingUp = err instanceof PermanentError || env.attempt >= step.maxAttempts;
        if (!givingUp) throw new InlineFailure(step.node.name, err);
        await self.giveUp(step, input, id, err, env);
      }
    })();
  }

  private async giveUp(step: FlowStep, input: unknown, id: string, err: unknown, env: FlowEnv): Promise<void> {
    const { reason, problems } = failureOf(err, env.attempt);
    const identities = identitiesOf(step.node, input);
    step.log.warn({ reason, problems: problems.slice(0, 20), attempt: env.attempt }, 'dead-lettered');
    const status = err instanceof PermanentError ? step.node.def.giveUpStatus ?? 'dead_lettered' : 'dead_lettered';
    for (const r of giveUpReceipts(step.node.name, status, identities, `${reason}: ${problems.join('; ')}`, env.attempt, `msg:${id}`)) {
      env.receipt(r);
    }
    await env.deadLetter({
      node: step.node.name, subject: step.ownSubject(input), reason, problems, payload: Buffer.from(JSON.stringify(input)),
      attempts: env.attempt, firstError: env.firstError, identities, key: id,
    });
  }
}

/**
 * Runs the next node on up to `size` inputs at once and hands their outputs on in input order;
 * a checkpoint registered by the producing node passes on only once everything before it has.
 */
class OrderedWindow {
  private readonly entries: { done: Promise<Settled<Emitted[]>>; after?: () => Promise<void> }[] = [];
  private static readonly nothing = Promise.resolve({ ok: true as const, value: [] as Emitted[] });

  constructor(private readonly size: number) {}

  after(fn: () => Promise<void>): void {
    this.entries.push({ done: OrderedWindow.nothing, after: fn });
  }

  run<O>(inputs: AsyncIterable<O>, work: (input: O, index: number) => Promise<Emitted[]>, passOn: (fn: () => Promise<void>) => void): AsyncIterable<Emitted> {
    const entries = this.entries;
    const size = this.size;
    const next = async function* () {
      const head = entries.shift()!;
      const done = await head.done;
      if (!done.ok) throw done.error;
      if (head.after) passOn(head.after);
      yield* done.value;
    };
    return (async function* () {
      let i = 0;
      try {
        for await (const input of inputs) {
          const index = i++;
          entries.push({ done: settle(Promise.resolve().then(() => work(input, index))) });
          while (entries.length >= size || (entries.length > 0 && entries[0].after)) yield* next();
        }
        while (entries.length) yield* next();
      } finally {
        // On an error, let the work already started finish before the message is settled.
        await Promise.all(entries.map((e) => e.done));
      }
    })();
  }
}
