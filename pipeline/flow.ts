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

/**
 * An input's name (the root of its outputs' msgIDs, its dead letter's key), or how to make it: an
 * in-process node's input is named only if that node fails or publishes, so the common path never
 * pays for the name (the batch stage hashes every recipient into its own). Stages never change
 * their inputs, so a name made later is the one it would have been.
 */
type InputId = string | (() => string);
const idText = (id: InputId): string => (typeof id === 'string' ? id : id());
const lazily = (make: () => string): (() => string) => {
  let made: string | undefined;
  return () => (made ??= make());
};

/** What a flow hands the runner: a list, or a stream when a node streams (a large fan-out). */
export type FlowOutput = Emitted[] | AsyncIterable<Emitted>;

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
  run(input: unknown, env: FlowEnv, idBase: string): Promise<FlowOutput> {
    const window = this.windowFor(this.root);
    const produced = this.root.stage.process!(input, this.context(this.root, env, window));
    return this.forward(this.root, produced, idBase, env, window);
  }

  /** Runs a batch node on several inputs at once, then the in-process nodes after it. */
  async runBatch(inputs: unknown[], env: FlowEnv, idBase: string): Promise<Emitted[]> {
    const window = this.windowFor(this.root);
    const produced = await this.root.stage.processBatch!(inputs, this.context(this.root, env, window));
    return toArray(await this.forward(this.root, produced, idBase, env, window));
  }

  private windowFor(step: FlowStep): OrderedWindow | undefined {
    return step.next && step.next.concurrency > 1 ? new OrderedWindow(step.next.concurrency) : undefined;
  }

  private context(step: FlowStep, env: FlowEnv, window?: OrderedWindow): StageContext {
    // The subject is the first node's input's; the nodes after it get what that node made.
    return new NodeContext(step, env, window, step === this.root ? env.claimedTenant : undefined);
  }

  /**
   * Where a node's outputs go: named, then published, or handed to the next node in this process.
   * Lists stay lists (no async generators per message: a password reset passes five nodes); only a
   * node that streams makes the rest of the way a stream.
   */
  private async forward(step: FlowStep, produced: Produced<unknown>, parentId: InputId, env: FlowEnv, window?: OrderedWindow): Promise<FlowOutput> {
    const named = step.node.def.outputId;
    const idOf = (o: unknown, i: number) => (named ? `${env.idRoot}:${named(o)}` : `${idText(parentId)}:${i}`);
    const idFor = (o: unknown, i: number) => lazily(() => idOf(o, i));
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
      return (await produced).map(emit);
    }
    const next = step.next.step;
    if (!isStream(produced)) {
      const list = await produced;
      if (list.length === 0 && (!window || window.empty)) return [];
      // One output, nothing registered to run after it: straight to the next node.
      if (list.length === 1 && (!window || window.empty)) return this.isolated(next, list[0], idFor(list[0], 0), env);
      produced = list;
    }
    if (!window) {
      // One at a time: the next node's outputs stream as they come (a fan-out stays flat in memory).
      const self = this;
      const inputs = produced;
      return (async function* () {
        let i = 0;
        for await (const o of iterate(inputs)) {
          const out = await self.isolated(next, o, idFor(o, i++), env);
          yield* out;
        }
      })();
    }
    return window.run(iterate(produced), async (o, i) => toArray(await this.isolated(next, o, idFor(o, i), env)), env.afterOutputs);
  }

  /** Runs an in-process node on one input under its own identity; a failure for good dead-letters that input alone. */
  private async isolated(step: FlowStep, input: unknown, id: InputId, env: FlowEnv): Promise<FlowOutput> {
    const started = performance.now();
    let out: FlowOutput;
    try {
      const window = this.windowFor(step);
      const ctx = this.context(step, env, window);
      // A batch stage in-process batches what one input brings (a request's deliveries).
      const produced = step.stage.process ? step.stage.process(input, ctx) : step.stage.processBatch!([input], ctx);
      out = await this.forward(step, produced, id, env, window);
    } catch (err) {
      return this.failed(step, input, id, err, env, started);
    }
    if (!isStream(out)) {
      this.metrics.processed(step.node.name, 'ok', performance.now() - started);
      return out;
    }
    // A stream fails while it is read: the same decision, then.
    const self = this;
    const stream = out;
    return (async function* () {
      try {
        yield* stream;
      } catch (err) {
        yield* await self.failed(step, input, id, err, env, started);
        return;
      }
      self.metrics.processed(step.node.name, 'ok', performance.now() - started);
    })();
  }

  /** A node's input failed: retried with the whole message (thrown), or given up on alone (nothing more comes of it). */
  private async failed(step: FlowStep, input: unknown, id: InputId, err: unknown, env: FlowEnv, started: number): Promise<Emitted[]> {
    // Already decided further down, or a wait: the runner handles the message as a whole.
    if (err instanceof InlineFailure || err instanceof DeferError) throw err;
    this.metrics.processed(step.node.name, 'failed', performance.now() - started);
    const givingUp = err instanceof PermanentError || env.attempt >= step.maxAttempts;
    if (!givingUp) throw new InlineFailure(step.node.name, err);
    await this.giveUp(step, input, id, err, env);
    return [];
  }

  private async giveUp(step: FlowStep, input: unknown, inputId: InputId, err: unknown, env: FlowEnv): Promise<void> {
    const id = idText(inputId);
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

/** What a node is lent for one input: the runner's env under the node's own name. One object per node and input, no closures. */
class NodeContext implements StageContext {
  readonly log: Logger;
  readonly attempt: number;
  readonly replay?: string;
  readonly redrive: boolean;
  readonly isLastAttempt: boolean;
  readonly storedAt: number;
  readonly signal: AbortSignal;
  readonly progress?: () => void;

  constructor(private readonly step: FlowStep, private readonly env: FlowEnv, private readonly window: OrderedWindow | undefined, readonly claimedTenant: string | undefined) {
    this.log = step.log;
    this.attempt = env.attempt;
    this.replay = env.replay;
    this.redrive = env.redrive;
    this.isLastAttempt = env.attempt >= step.maxAttempts;
    this.storedAt = env.storedAt;
    this.signal = env.signal;
    this.progress = env.progress;
  }

  receipt(receipt: Receipt): void {
    this.env.receipt(receipt);
  }

  afterOutputs(fn: () => Promise<void>): void {
    if (this.window) this.window.after(fn);
    else this.env.afterOutputs(fn);
  }

  later(work: unknown, untilMs: number, id: string): void {
    const { step, env } = this;
    if (!step.laterRoute) throw new Error(`node ${step.node.name} has no "later" edge to hand work back on`);
    const deferred = { until: untilMs, work };
    env.publish(step.laterRoute(deferred), JSON.stringify(deferred), `${env.idRoot}:later:${id}`);
  }

  deadLetter(reason: string, problems: string[], payload: unknown): Promise<void> {
    const { step, env } = this;
    return env.deadLetter({
      node: step.node.name, subject: step.ownSubject(payload), reason, problems,
      payload: Buffer.from(JSON.stringify(payload)), attempts: env.attempt, firstError: env.firstError,
      identities: [], key: null,
    });
  }
}

/**
 * Runs the next node on up to `size` inputs at once and hands their outputs on in input order;
 * a checkpoint registered by the producing node passes on only once everything before it has.
 */
class OrderedWindow {
  private readonly entries: { done: Promise<Settled<Emitted[]>>; after?: () => Promise<void> }[] = [];
  /** Entries that are work (not checkpoints): only these count toward the size. */
  private working = 0;
  private static readonly nothing = Promise.resolve({ ok: true as const, value: [] as Emitted[] });

  constructor(private readonly size: number) {}

  /** Nothing registered to run after outputs (then one output may bypass the window). */
  get empty(): boolean {
    return this.entries.length === 0;
  }

  after(fn: () => Promise<void>): void {
    this.entries.push({ done: OrderedWindow.nothing, after: fn });
  }

  run<O>(inputs: AsyncIterable<O>, work: (input: O, index: number) => Promise<Emitted[]>, passOn: (fn: () => Promise<void>) => void): AsyncIterable<Emitted> {
    const entries = this.entries;
    const size = this.size;
    const self = this;
    const next = async function* () {
      const head = entries.shift()!;
      if (!head.after) self.working--;
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
          self.working++;
          // Only work counts toward the size: a checkpoint after every page would otherwise halve it.
          while (self.working >= size || (entries.length > 0 && entries[0].after)) yield* next();
        }
        while (entries.length) yield* next();
      } finally {
        // On an error, let the work already started finish before the message is settled.
        await Promise.all(entries.map((e) => e.done));
      }
    })();
  }
}
