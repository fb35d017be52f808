import type { JsMsg } from '@nats-io/jetstream';
import type { Logger } from 'pino';
import { backoffMs, DeferError, errorMessage, isBackpressure, PermanentError, PoisonError, RetryableError } from '../runtime/errors.js';
import { defaults } from '../runtime/defaults.js';
import { describeIssues, type Receipt } from '../schemas/index.js';
import { REDRIVE_HEADER } from '../streams/dead-letters.js';
import { deliveryCountAttempts, type AttemptCounter } from './attempts.js';
import type { DeadLetterWriter } from './dead-letters.js';
import { failureOf, giveUpReceipts, identitiesOf, InlineFailure, type Flow, type FlowEnv, type FlowOutput } from './flow.js';
import type { Metrics } from './metrics.js';
import { Outputs, type Publish } from './outputs.js';
import { Slots } from './slots.js';

/** How one runner pulls, bounds and retries its work. The graph sets these per node and tier. */
export interface RunnerOptions {
  /** Messages asked for per pull. */
  pullBatch: number;
  /** Messages handled at once (per-message nodes) in this process. */
  concurrency: number;
  /** For batch nodes: inputs handed over at once. @default pullBatch */
  maxBatch?: number;
  /** For batch nodes: a batch is handed over once its inputs hold this many bytes, whatever their count. @default unbounded */
  maxBatchBytes?: number;
  /** For batch nodes: longest an input waits for companions. @default 5 */
  lingerMs?: number;
  /** Batches processed at once (batch nodes). @default 4 */
  batchConcurrency?: number;
  /** Attempts before the first node gives up on a message (each in-process node has its own). */
  maxAttempts: number;
  backoffBaseMs: number;
  backoffCapMs: number;
  /** The consumer's ack_wait; `working()` is sent at a third of it. */
  ackWaitMs: number;
  /** Publishes in flight at once while streaming a large output (it bounds how far a fan-out runs ahead of its last checkpoint). @default 64 */
  maxPublishesInFlight?: number;
}

/** Where messages come from: a JetStream consumer's `consume()`. */
export interface MessageSource {
  consume(opts: { max_messages: number }): Promise<AsyncIterable<JsMsg> & { close(): Promise<void | Error> }>;
}

/**
 * Receipts are batched by the process; `flush` resolves once those added so far are stored, soon
 * when `promptly` (the caller holds a slot meanwhile).
 */
export interface ReceiptSink {
  add(receipt: Receipt): void;
  flush(promptly?: boolean): Promise<void>;
}

/** Priority within a process: urgent runners hold the gate; bulk ones step aside while it is held. */
export interface Priority {
  urgent: boolean;
  hold(): void;
  release(): void;
  /** Undefined when nothing urgent is in hand; else a bounded wait. */
  clear(): Promise<void> | undefined;
}

/** A replay stops at a sequence: messages after it are left alone and `passedEnd` turns true. */
export class ReplayWindow {
  passedEnd = false;
  constructor(readonly lastSequence: number, readonly replayId: string) {}

  admits(seq: number): boolean {
    if (seq <= this.lastSequence) return true;
    this.passedEnd = true;
    return false;
  }
}

/** Everything a runner works with, in one object. */
export interface RunnerParts {
  /** What runs on each message: a node, and the nodes after it in this process. */
  flow: Flow;
  source: MessageSource;
  /** The consumer's name: in logs, msgIDs and attempt ids. */
  durable: string;
  publish: Publish;
  receipts: ReceiptSink;
  deadLetters: DeadLetterWriter;
  metrics: Metrics;
  log: Logger;
  options: RunnerOptions;
  /** @default JetStream's delivery count */
  attempts?: AttemptCounter;
  priority?: Priority;
  /** Set when this runner replays a stream for an operator. */
  window?: ReplayWindow;
  /** The entry node's: the tenant a request's subject names (undefined: none), handed to the node as `claimedTenant`. */
  tenantOf?: (subject: string) => string | undefined;
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

const POISON_STARTS = defaults.poisonStarts;

/** `fn`, run the first time only. */
function once(fn: () => void): () => void {
  let done = false;
  return () => {
    if (!done) {
      done = true;
      fn();
    }
  };
}

/** How long a message waits while a stream downstream is full. */
const BACKPRESSURE_BASE_MS = 1_000;
const BACKPRESSURE_CAP_MS = 30_000;

/**
 * Runs one flow on one consumer, and is the only code that touches a JsMsg: it pulls, decodes with
 * the first node's schema, hands the value to the flow, publishes the outputs with msgIDs derived
 * from the input, acks only after every output, receipt and dead letter has its PubAck, naks with
 * backoff + full jitter, and dead-letters then terms what cannot succeed.
 */
export class StageRunner {
  private readonly o: Required<RunnerOptions>;
  private readonly attempts: AttemptCounter;
  private readonly log: Logger;
  private readonly node: string;
  private messages?: AsyncIterable<JsMsg> & { close(): Promise<void | Error> };
  private readonly inFlight = new Set<Promise<void>>();
  private readonly abort = new AbortController();
  private closing?: Promise<void>;
  private loop?: Promise<void>;
  private batchBuffer: JsMsg[] = [];
  private batchBytes = 0;
  private batchTimer?: NodeJS.Timeout;
  private readonly inHand = new Map<number, JsMsg>();
  private workingTimer?: NodeJS.Timeout;
  /**
   * Whether a message's slot goes to the next one while it waits for its receipts. A bulk tier's
   * concurrency is its share of a process beside urgent work, so a bulk message keeps its slot
   * until acked; urgent and ungated runners hand it on, so the receipts' linger costs them no
   * throughput.
   */
  private readonly handsSlotOnEarly: boolean;

  constructor(private readonly parts: RunnerParts) {
    const o = parts.options;
    this.o = { maxBatch: o.pullBatch, maxBatchBytes: Infinity, lingerMs: 5, batchConcurrency: 4, maxPublishesInFlight: 64, ...o };
    this.attempts = parts.attempts ?? deliveryCountAttempts;
    this.node = parts.flow.root.node.name;
    this.log = parts.log.child({ stage: this.node, consumer: parts.durable });
    this.handsSlotOnEarly = !parts.priority || parts.priority.urgent;
  }

  async start(): Promise<void> {
    this.workingTimer = setInterval(() => this.inHand.forEach((m) => m.working()), Math.max(1_000, this.o.ackWaitMs / 3));
    this.messages = await this.parts.source.consume({ max_messages: this.o.pullBatch });
    this.loop = this.parts.flow.root.stage.processBatch ? this.runBatches(this.messages) : this.runEach(this.messages);
    this.loop.catch((err) => this.log.error({ err }, 'consume loop failed'));
  }

  /** True once a replay saw a message past its end. */
  get passedEnd(): boolean {
    return this.parts.window?.passedEnd ?? false;
  }

  /** No message is being handled right now. */
  get idle(): boolean {
    return this.inFlight.size === 0 && this.batchBuffer.length === 0;
  }

  private track(p: Promise<void>): void {
    this.inFlight.add(p);
    p.finally(() => this.inFlight.delete(p));
  }

  /** Takes a message in hand unless it is past a replay's end or already in hand (a redelivery after ack_wait). */
  private admit(m: JsMsg): boolean {
    const seq = m.info.streamSequence;
    if (this.parts.window && !this.parts.window.admits(seq)) return false;
    // Handling a redelivery of a message still in hand would send twice.
    if (this.inHand.has(seq)) return false;
    this.inHand.set(seq, m);
    if (this.parts.priority?.urgent) this.parts.priority.hold();
    return true;
  }

  private release(msgs: JsMsg[]): void {
    for (const m of msgs) {
      if (this.inHand.delete(m.info.streamSequence) && this.parts.priority?.urgent) this.parts.priority.release();
    }
  }

  /** A bulk runner lets urgent work in this process go first (a bounded wait; nothing when none is in hand). */
  private stepAside(): Promise<void> | undefined {
    const p = this.parts.priority;
    return p && !p.urgent ? p.clear() : undefined;
  }

  private async runEach(messages: AsyncIterable<JsMsg>): Promise<void> {
    const slots = new Slots(this.o.concurrency);
    for await (const m of messages) {
      if (!this.admit(m)) continue;
      await this.stepAside();
      await slots.take();
      const give = once(() => slots.give());
      this.track(this.handleOne(m, give).finally(give));
    }
  }

  private async runBatches(messages: AsyncIterable<JsMsg>): Promise<void> {
    const slots = new Slots(this.o.batchConcurrency);
    /** A batch the linger handed over that waits for a slot. */
    let waiting: Promise<void> | undefined;
    const flush = () => {
      clearTimeout(this.batchTimer);
      this.batchTimer = undefined;
      const batch = this.batchBuffer;
      this.batchBuffer = [];
      this.batchBytes = 0;
      if (batch.length === 0) return Promise.resolve();
      const handed = (async () => {
        await this.stepAside();
        await slots.take();
        const give = once(() => slots.give());
        this.track(this.handleBatch(batch, give).finally(give));
      })();
      waiting = handed;
      const done = () => { if (waiting === handed) waiting = undefined; };
      handed.then(done, done);
      return handed;
    };
    for await (const m of messages) {
      if (!this.admit(m)) continue;
      // No new batch while one waits for a slot: lingered batches queued without bound, and a
      // status tracker behind a marketing blast held 10,000 messages (and the socket buffers they
      // are views of: 160 MB) instead of leaving them in JetStream.
      if (waiting) await waiting;
      this.batchBuffer.push(m);
      this.batchBytes += m.data.length;
      if (this.batchBuffer.length >= this.o.maxBatch || this.batchBytes >= this.o.maxBatchBytes) await flush();
      else if (!this.batchTimer) this.batchTimer = setTimeout(() => void flush(), this.o.lingerMs);
    }
    await flush();
  }

  private decode(m: JsMsg): { ok: true; value: unknown } | { ok: false; problems: string[] } {
    let raw: unknown;
    try {
      raw = JSON.parse(utf8.decode(m.data));
    } catch (err) {
      return { ok: false, problems: [`(message): not UTF-8 JSON: ${errorMessage(err)}`] };
    }
    const def = this.parts.flow.root.node.def;
    const fast = def.decode?.(raw);
    if (fast !== undefined) return { ok: true, value: fast };
    const parsed = def.input.safeParse(raw);
    if (!parsed.success) return { ok: false, problems: describeIssues(parsed.error.issues) };
    return { ok: true, value: parsed.data };
  }

  private attemptId(m: JsMsg): string {
    return `${this.parts.durable}:${m.info.streamSequence}`;
  }

  /** What the flow may do for this message; dead letters it writes are awaited before the ack. */
  private env(m: JsMsg, outputs: Outputs, deadLetters: Promise<void>[], attempt: number, firstError?: string): FlowEnv {
    return {
      attempt,
      firstError,
      redrive: m.headers?.has(REDRIVE_HEADER) ?? false,
      replay: this.parts.window?.replayId,
      storedAt: Math.floor(m.info.timestampNanos / 1_000_000),
      claimedTenant: this.parts.tenantOf?.(m.subject),
      signal: this.abort.signal,
      receipt: (r) => this.parts.receipts.add(r),
      afterOutputs: (fn) => outputs.after(fn),
      publish: (subject, data, id) => outputs.publish(subject, data, id),
      deadLetter: (letter) => {
        const p = this.parts.deadLetters.write(this.origin(m), letter);
        deadLetters.push(p);
        return p;
      },
      idRoot: this.parts.durable,
      progress: m.info.deliveryCount > 1 ? once(() => this.attempts.settled(this.attemptId(m))) : undefined,
    };
  }

  private origin(m: JsMsg) {
    return { stream: m.info.stream, seq: m.info.streamSequence, deliveryCount: m.info.deliveryCount, consumer: this.parts.durable };
  }

  /** A redelivery the process died under too often is refused before it is handled again. */
  private async checkPoison(m: JsMsg): Promise<void> {
    if (m.info.deliveryCount === 1) return;
    const unsettled = await this.attempts.started(this.attemptId(m));
    if (unsettled >= POISON_STARTS) throw new PoisonError(unsettled, m.info.deliveryCount);
  }

  /**
   * Handles one message. `processed` may be called once its outputs and dead letters are stored:
   * its slot goes to the next message while it waits for its receipts (the ack still waits for
   * them), so the receipts' linger costs an urgent tier no throughput.
   */
  private async handleOne(m: JsMsg, processed: () => void): Promise<void> {
    const started = performance.now();
    const deadLetters: Promise<void>[] = [];
    const decoded = this.decode(m);
    let value: unknown;
    try {
      if (!decoded.ok) throw new PermanentError(`invalid ${this.node} input`, decoded.problems);
      value = decoded.value;
      await this.checkPoison(m);
      const { attempt, firstError } = await this.attempts.current(this.attemptId(m), m.info.deliveryCount);
      const outputs = new Outputs(this.parts.publish);
      const env = this.env(m, outputs, deadLetters, attempt, firstError);
      // A redelivery whose outputs get stored is making progress (a long fan-out resumed after a
      // crash), not a poison pill: its unsettled starts are forgotten.
      const progressed = m.info.deliveryCount > 1 ? () => this.attempts.settled(this.attemptId(m)) : undefined;
      await this.publishAll(this.parts.flow.run(value, env, `${this.parts.durable}:${m.info.streamSequence}`), outputs, progressed);
      await Promise.all(deadLetters);
      if (this.handsSlotOnEarly) processed();
      await this.parts.receipts.flush(!this.handsSlotOnEarly);
      m.ack();
      if (m.info.deliveryCount > 1) this.attempts.clear(this.attemptId(m));
      this.parts.metrics.processed(this.node, 'ok', performance.now() - started);
    } catch (err) {
      await this.settle(m, err, value, deadLetters);
      this.parts.metrics.processed(this.node, err instanceof DeferError ? 'deferred' : 'failed', performance.now() - started);
    } finally {
      this.release([m]);
    }
  }

  /** Handles a batch of messages; `processed` as for handleOne. */
  private async handleBatch(msgs: JsMsg[], processed: () => void): Promise<void> {
    const started = performance.now();
    const good: { m: JsMsg; value: unknown }[] = [];
    try {
      for (const m of msgs) {
        const decoded = this.decode(m);
        if (!decoded.ok) {
          await this.settle(m, new PermanentError(`invalid ${this.node} input`, decoded.problems), undefined, []);
          continue;
        }
        const poison = await this.checkPoison(m).then(() => undefined, (err: unknown) => err);
        if (poison) await this.settle(m, poison, decoded.value, []);
        else good.push({ m, value: decoded.value });
      }
      if (good.length === 0) return;
      const deadLetters: Promise<void>[] = [];
      const first = good[0].m;
      try {
        const outputs = new Outputs(this.parts.publish);
        const env = this.env(first, outputs, deadLetters, first.info.deliveryCount);
        const seqs = good.map((g) => g.m.info.streamSequence);
        const idBase = `${this.parts.durable}:${seqs[0]}-${seqs.at(-1)}x${seqs.length}`;
        await this.publishAll(this.parts.flow.runBatch(good.map((g) => g.value), env, idBase), outputs);
        await Promise.all(deadLetters);
        if (this.handsSlotOnEarly) processed();
        await this.parts.receipts.flush(!this.handsSlotOnEarly);
        for (const g of good) g.m.ack();
        this.parts.metrics.processed(this.node, 'ok', performance.now() - started, good.length);
      } catch (err) {
        for (const g of good) await this.settle(g.m, err, g.value, deadLetters);
        this.parts.metrics.processed(this.node, err instanceof DeferError ? 'deferred' : 'failed', performance.now() - started, good.length);
      }
    } finally {
      this.release(msgs);
    }
  }

  /** Publishes outputs pipelined (bounded) and waits for every PubAck. */
  private async publishAll(flowOutput: Promise<FlowOutput>, outputs: Outputs, progressed?: () => void): Promise<void> {
    const produced = await flowOutput;
    if (Symbol.asyncIterator in produced) {
      let first = true;
      for await (const out of produced) {
        if (outputs.failure) throw outputs.failure;
        outputs.publish(out.subject, out.data, out.id);
        if (first && progressed) outputs.after(async () => progressed());
        first = false;
        const aside = this.stepAside();
        if (aside) await aside;
        if (outputs.pending.size >= this.o.maxPublishesInFlight) await Promise.race(outputs.pending);
      }
    } else {
      const list = produced;
      for (const out of list) outputs.publish(out.subject, out.data, out.id);
      if (progressed && list.length) outputs.after(async () => progressed());
    }
    await outputs.settled();
  }

  /**
   * Decides the fate of a message whose handling threw. Never leaves it unsettled. A failure of an
   * in-process node is retried as a whole: that node gives up on its own input at its last attempt.
   */
  private async settle(m: JsMsg, err: unknown, value: unknown, deadLetters: Promise<void>[]): Promise<void> {
    try {
      await Promise.allSettled(deadLetters);
      // A redelivery that ends in a nak ended well: its start does not count toward poison.
      if (m.info.deliveryCount > 1 && !(err instanceof PoisonError)) this.attempts.settled(this.attemptId(m));
      if (err instanceof DeferError) {
        m.nak(Math.max(0, err.untilMs - Date.now()));
        return;
      }
      const cause = err instanceof InlineFailure ? err.cause : err;
      if (isBackpressure(cause)) {
        // A full stream downstream: wait, without spending an attempt (and never blame the sender).
        const delay = backoffMs(Math.min(m.info.deliveryCount, 6), BACKPRESSURE_BASE_MS, BACKPRESSURE_CAP_MS);
        this.log.warn({ err: cause, delayMs: delay, seq: m.info.streamSequence }, 'downstream full: waiting');
        m.nak(Math.max(BACKPRESSURE_BASE_MS, delay));
        return;
      }
      const permanent = !(err instanceof InlineFailure) && (err instanceof PermanentError || err instanceof PoisonError);
      const { attempt, firstError } = permanent
        ? { attempt: m.info.deliveryCount, firstError: undefined }
        : await this.attempts.failed(this.attemptId(m), m.info.deliveryCount, errorMessage(cause));
      if (err instanceof InlineFailure || (!permanent && attempt < this.o.maxAttempts)) {
        const retryAfter = cause instanceof RetryableError ? cause.retryAfterMs : undefined;
        const delay = retryAfter ?? backoffMs(attempt, this.o.backoffBaseMs, this.o.backoffCapMs);
        this.log.warn({ err: cause, node: err instanceof InlineFailure ? err.node : this.node, attempt, delayMs: delay, seq: m.info.streamSequence }, 'retrying');
        m.nak(delay);
        return;
      }
      await this.giveUp(m, err, value, attempt, firstError);
      this.attempts.clear(this.attemptId(m));
      // No reason: NATS 2.9 ignores a "+TERM <reason>" ack, leaving the message pending.
      m.term();
    } catch (settleErr) {
      // Could not record the failure (JetStream unavailable?): leave it to redelivery, never drop it.
      this.log.error({ err: settleErr }, 'could not dead-letter; will be redelivered');
      try { m.nak(backoffMs(m.info.deliveryCount, 1_000, 60_000)); } catch { /* connection gone: ack_wait redelivers */ }
    }
  }

  /** The first node gives up: receipts for whom the input is about, then the message itself to the DLQ. */
  private async giveUp(m: JsMsg, err: unknown, value: unknown, attempt: number, firstError?: string): Promise<void> {
    const { reason, problems } = failureOf(err, attempt);
    const def = this.parts.flow.root.node.def;
    // Undecodable internal input names nobody for sure: no receipt guesses at it (the DLQ keeps it
    // whole). A producer's request is named as far as its fields go, even when it is not JSON.
    const root = this.parts.flow.root;
    const named = value === undefined && root.node.reads !== 'requests' ? [] : identitiesOf(root.node, value);
    // A request published on a tenant's subject is that tenant's, whatever its body claims: a
    // rejection never lands in another tenant's receipts.
    const claimed = this.parts.tenantOf?.(m.subject);
    const identities = named.map((who) => ({ ...who, tier: who.tier || (root.tier ?? ''), tenant: claimed ?? who.tenant }));
    // Only a permanent failure is the input's fault (validate's `rejected`); running out of attempts is Herald's.
    const status = err instanceof PermanentError ? def.giveUpStatus ?? 'dead_lettered' : 'dead_lettered';
    for (const r of giveUpReceipts(this.node, status, identities, `${reason}: ${problems.join('; ')}`, attempt, `msg:${m.info.stream}:${m.info.streamSequence}`)) {
      this.parts.receipts.add(r);
    }
    await this.parts.deadLetters.write(this.origin(m), {
      node: this.node, subject: m.subject, reason, problems, payload: m.data, attempts: attempt, firstError, identities, key: 'all',
    });
    // The message's slot is still held.
    await this.parts.receipts.flush(true);
    this.log.warn({ seq: m.info.streamSequence, reason, problems: problems.slice(0, 20) }, 'dead-lettered');
  }

  /** Stops pulling, lets in-flight work settle, then closes the stages. Idempotent. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      const steps: [string, () => Promise<unknown>][] = [
        ['stop pulling', async () => { await this.messages?.close(); }],
        ['finish in-flight', async () => { await this.loop; await Promise.allSettled([...this.inFlight]); }],
        ['close stages', async () => {
          clearInterval(this.workingTimer);
          clearTimeout(this.batchTimer);
          for (let s: typeof this.parts.flow.root | undefined = this.parts.flow.root; s; s = s.next?.step) await s.stage.close?.();
        }],
      ];
      for (const [what, step] of steps) {
        try { await step(); } catch (err) { this.log.error({ err }, `close: ${what} failed`); }
      }
      this.abort.abort();
    })();
    return this.closing;
  }
}
