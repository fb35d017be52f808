import type { Consumer, ConsumerMessages, JetStreamClient, JsMsg } from '@nats-io/jetstream';
import type { Logger } from 'pino';
import { requestIdFor } from '../runtime/ids.js';
import { backoffMs, DeferError, errorMessage, PermanentError, RetryableError } from '../runtime/errors.js';
import { describeIssues, type DeadLetter, type Receipt, type ReceiptStatus, type ResolvedChunk } from '../schemas/index.js';
import type { Topology } from '../streams/topology.js';
import { REDRIVE_HEADER } from '../streams/dead-letters.js';
import type { ReceiptPublisher } from './receipt-publisher.js';
import type { Stage, StageContext, StageDefinition } from './stage.js';
import type { Metrics } from './metrics.js';
import type { AttemptLog } from '../stores/attempts.js';
import type { TierGate } from './tier-gate.js';

/** How one runner pulls and bounds its work. */
export interface RunnerOptions {
  /** Messages asked for per pull. @default 100 */
  pullBatch?: number;
  /** Messages handled at once (per-message stages) in this process. @default 32 */
  concurrency?: number;
  /** For batch stages: inputs handed over at once. @default pullBatch */
  maxBatch?: number;
  /** For batch stages: longest an input waits for companions. @default 5 */
  lingerMs?: number;
  /** Batches processed at once (batch stages). @default 4 */
  batchConcurrency?: number;
  /** Attempts before a retryable failure is dead-lettered. @default 8 */
  maxAttempts?: number;
  /** Backoff base and cap for naks. @default 250 / 300000 */
  backoffBaseMs?: number;
  backoffCapMs?: number;
  /** The consumer's ack_wait; `working()` is sent at a third of it. @default 30000 */
  ackWaitMs?: number;
  /** Publishes in flight at once while streaming a large output. @default 512 */
  maxPublishesInFlight?: number;
  /** Replay: messages after this stream sequence are left alone, and `passedEnd` turns true. */
  lastSequence?: number;
  /** Counts real failures per message (deferrals are not attempts); without it, JetStream's delivery count. */
  attemptLog?: AttemptLog;
  /** This runner replays a stream for an operator: stages see `ctx.replay`. */
  replayId?: string;
  /** A stable id per output (a chain's outputs are its last stage's); overrides the definition's. */
  outputId?: (output: any) => string;
  /** Where work handed back with `ctx.later` goes (the wiring's choice, like `route`). */
  laterRoute?: (work: ResolvedChunk) => string;
  /** Priority within the process: urgent runners (transactional) make bulk ones step aside. */
  priority?: { gate: TierGate; urgent: boolean };
}

/** Where outputs go: the wiring maps each output to its subject. */
export type Route<O> = (output: O) => string;

interface Settings extends Required<Omit<RunnerOptions, 'lastSequence' | 'attemptLog' | 'replayId' | 'outputId' | 'priority' | 'laterRoute'>> { lastSequence?: number; attemptLog?: AttemptLog; replayId?: string }

function settingsFrom(opts: RunnerOptions): Settings {
  const pullBatch = opts.pullBatch ?? 100;
  return {
    pullBatch,
    concurrency: opts.concurrency ?? 32,
    maxBatch: opts.maxBatch ?? pullBatch,
    lingerMs: opts.lingerMs ?? 5,
    batchConcurrency: opts.batchConcurrency ?? 4,
    maxAttempts: opts.maxAttempts ?? 8,
    backoffBaseMs: opts.backoffBaseMs ?? 250,
    backoffCapMs: opts.backoffCapMs ?? 300_000,
    ackWaitMs: opts.ackWaitMs ?? 30_000,
    maxPublishesInFlight: opts.maxPublishesInFlight ?? 512,
    lastSequence: opts.lastSequence,
    attemptLog: opts.attemptLog,
    replayId: opts.replayId,
  };
}

const utf8 = new TextDecoder('utf-8', { fatal: true });



/** Counting semaphore: bounds work in flight without blocking the event loop. */
class Slots {
  private waiting: (() => void)[] = [];
  private used = 0;
  constructor(private readonly size: number) {}
  async take(): Promise<void> {
    if (this.used < this.size) { this.used++; return; }
    await new Promise<void>((resolve) => this.waiting.push(resolve));
  }
  give(): void {
    const next = this.waiting.shift();
    if (next) next();
    else this.used--;
  }
  get busy(): number { return this.used; }
}

/**
 * The publishes one input causes: bounded in flight, the first failure kept, and callbacks that run
 * once everything before them is stored (checkpoints).
 */
class Outputs {
  readonly pending = new Set<Promise<unknown>>();
  failure: unknown;
  private afterChain: Promise<unknown> = Promise.resolve();

  constructor(private readonly js: JetStreamClient) {}

  publish(subject: string, body: string, msgID: string): void {
    this.track(this.js.publish(subject, body, { msgID }));
  }

  after(fn: () => Promise<void>): void {
    const before = [...this.pending];
    this.afterChain = this.afterChain.then(() => Promise.all(before)).then(fn);
    this.track(this.afterChain);
  }

  private track(p: Promise<unknown>): void {
    this.pending.add(p);
    p.then(() => this.pending.delete(p), (err) => { this.failure ??= err; this.pending.delete(p); });
  }

  async settled(): Promise<void> {
    await Promise.allSettled([...this.pending]);
    if (this.failure) throw this.failure;
  }
}

/** Best-effort identity of whatever a message is about, for receipts and dead letters of bad input. */
function identify(raw: unknown, subject: string): { tenant: string; request_id: string; tier: string; category: string } {
  const obj = (raw && typeof raw === 'object' ? raw : {}) as Record<string, unknown>;
  const req = (obj.request && typeof obj.request === 'object' ? obj.request : obj) as Record<string, unknown>;
  const str = (v: unknown) => (typeof v === 'string' ? v.slice(0, 128) : '');
  const tierFromSubject = subject.split('.').at(-1) ?? '';
  return {
    tenant: str(req.tenant),
    request_id: str(req.id) || (str(req.tenant) && str(req.idempotency_key) ? requestIdFor(str(req.tenant), str(req.idempotency_key)) : ''),
    tier: str(req.tier) || tierFromSubject,
    category: str(req.category),
  };
}

/**
 * Runs one stage on one durable consumer. The only code that touches a JsMsg: it decodes with the
 * stage's schema, publishes outputs with msgIDs derived from the input, acks only after every
 * output and receipt has its PubAck, naks with backoff + full jitter, and dead-letters then terms
 * what cannot succeed.
 */
export class StageRunner<I, O> {
  private readonly settings: Settings;
  private messages?: ConsumerMessages;
  private readonly inFlight = new Set<Promise<void>>();
  private readonly abort = new AbortController();
  private closing?: Promise<void>;
  private loop?: Promise<void>;
  private batchBuffer: JsMsg[] = [];
  private batchTimer?: NodeJS.Timeout;
  private readonly inHand = new Set<JsMsg>();
  private readonly inHandSeqs = new Set<number>();
  private workingTimer?: NodeJS.Timeout;
  private readonly log: Logger;
  private readonly outputId?: (output: O) => string;
  private readonly priority?: { gate: TierGate; urgent: boolean };
  private readonly laterRoute?: (work: ResolvedChunk) => string;
  /** True once a message past `lastSequence` arrived (replay is complete when also idle). */
  passedEnd = false;

  constructor(
    private readonly def: StageDefinition<I, O, unknown, unknown>,
    private readonly stage: Stage<I, O>,
    private readonly consumer: Consumer,
    private readonly durable: string,
    private readonly route: Route<O> | null,
    private readonly js: JetStreamClient,
    private readonly topology: Topology,
    private readonly receipts: ReceiptPublisher,
    log: Logger,
    private readonly metrics: Metrics,
    opts: RunnerOptions = {},
  ) {
    this.settings = settingsFrom(opts);
    this.outputId = opts.outputId;
    this.priority = opts.priority;
    this.laterRoute = opts.laterRoute;
    this.log = log.child({ stage: def.name, consumer: durable });
  }

  async start(): Promise<void> {
    this.workingTimer = setInterval(() => this.inHand.forEach((m) => m.working()), Math.max(1_000, this.settings.ackWaitMs / 3));
    this.messages = await this.consumer.consume({ max_messages: this.settings.pullBatch });
    this.loop = this.stage.processBatch ? this.runBatches(this.messages) : this.runEach(this.messages);
    this.loop.catch((err) => this.log.error({ err }, 'consume loop failed'));
  }

  private track(p: Promise<void>): void {
    this.inFlight.add(p);
    p.finally(() => this.inFlight.delete(p));
  }

  private async runEach(messages: ConsumerMessages): Promise<void> {
    const slots = new Slots(this.settings.concurrency);
    for await (const m of messages) {
      if (this.settings.lastSequence !== undefined && m.info.streamSequence > this.settings.lastSequence) {
        this.passedEnd = true;
        continue;
      }
      // A redelivery of a message still in hand here (ack_wait passed while it waited) is the same
      // work: handling it twice would send twice.
      if (this.inHandSeqs.has(m.info.streamSequence)) continue;
      this.hold(m);
      await this.stepAside();
      await slots.take();
      this.track(this.handleOne(m).finally(() => slots.give()));
    }
  }

  private async runBatches(messages: ConsumerMessages): Promise<void> {
    const slots = new Slots(this.settings.batchConcurrency);
    const flush = async () => {
      clearTimeout(this.batchTimer);
      this.batchTimer = undefined;
      const batch = this.batchBuffer;
      this.batchBuffer = [];
      if (batch.length === 0) return;
      await this.stepAside();
      await slots.take();
      this.track(this.handleBatch(batch).finally(() => slots.give()));
    };
    for await (const m of messages) {
      if (this.inHandSeqs.has(m.info.streamSequence)) continue;
      this.hold(m);
      this.batchBuffer.push(m);
      if (this.batchBuffer.length >= this.settings.maxBatch) await flush();
      else if (!this.batchTimer) this.batchTimer = setTimeout(() => void flush(), this.settings.lingerMs);
    }
    await flush();
  }

  private context(m: JsMsg, deadLetters: Promise<void>[], outputs: Outputs, attempt = m.info.deliveryCount, firstError?: string): StageContext {
    return {
      afterOutputs: (fn) => outputs.after(fn),
      later: (work, untilMs, id) => {
        if (!this.laterRoute) throw new Error(`stage ${this.def.name} on ${this.durable} has nowhere to hand work back to`);
        outputs.publish(this.laterRoute(work), JSON.stringify({ until: untilMs, work }), `${this.durable}:later:${id}`);
      },
      log: this.log,
      attempt,
      redrive: m.headers?.has(REDRIVE_HEADER) ?? false,
      replay: this.settings.replayId,
      isLastAttempt: attempt >= this.settings.maxAttempts,
      storedAt: Math.floor(m.info.timestampNanos / 1_000_000),
      signal: this.abort.signal,
      receipt: (r: Receipt) => this.receipts.add(r),
      deadLetter: (reason, problems, payload) => {
        const p = this.publishDeadLetter(m, reason, problems, Buffer.from(JSON.stringify(payload)), undefined, attempt, firstError);
        deadLetters.push(p);
        return p;
      },
    };
  }

  private decode(m: JsMsg): { ok: true; value: I; raw: unknown } | { ok: false; problems: string[]; raw: unknown } {
    let raw: unknown;
    try {
      raw = JSON.parse(utf8.decode(m.data));
    } catch (err) {
      return { ok: false, problems: [`(message): not UTF-8 JSON: ${errorMessage(err)}`], raw: undefined };
    }
    const parsed = this.def.input.safeParse(raw);
    if (!parsed.success) return { ok: false, problems: describeIssues(parsed.error.issues), raw };
    return { ok: true, value: parsed.data, raw };
  }

  private attemptId(m: JsMsg): string {
    return `${this.durable}:${m.info.streamSequence}`;
  }

  /** The attempt this delivery is (1 on first delivery; then failures so far + 1), and the first failure. */
  private async attemptOf(m: JsMsg): Promise<{ attempt: number; firstError?: string }> {
    if (m.info.deliveryCount === 1 || !this.settings.attemptLog) return { attempt: m.info.deliveryCount };
    try {
      const record = await this.settings.attemptLog.get(this.attemptId(m));
      return { attempt: (record?.count ?? 0) + 1, firstError: record?.firstError };
    } catch {
      return { attempt: m.info.deliveryCount };
    }
  }

  /**
   * Marks a message as in hand from the moment it arrives (not when a slot frees up): one timer per
   * runner tells JetStream it is still being worked on. The handler releases it when it settles.
   */
  private hold(m: JsMsg): void {
    this.inHand.add(m);
    this.inHandSeqs.add(m.info.streamSequence);
    if (this.priority?.urgent) this.priority.gate.hold();
  }

  private release(msgs: JsMsg[]): void {
    for (const m of msgs) {
      if (this.inHand.delete(m) && this.priority?.urgent) this.priority.gate.release();
      this.inHandSeqs.delete(m.info.streamSequence);
    }
  }

  /** A bulk runner lets urgent work in this process go first (a bounded wait; nothing when none is in hand). */
  private stepAside(): Promise<void> | undefined {
    return this.priority && !this.priority.urgent ? this.priority.gate.clear() : undefined;
  }

  private async handleOne(m: JsMsg): Promise<void> {
    const started = performance.now();
    const deadLetters: Promise<void>[] = [];
    const decoded = this.decode(m);
    try {
      if (!decoded.ok) throw new PermanentError(`invalid ${this.def.name} input`, decoded.problems);
      const { attempt, firstError } = await this.attemptOf(m);
      const outputs = new Outputs(this.js);
      const ctx = this.context(m, deadLetters, outputs, attempt, firstError);
      const produced = this.stage.process!(decoded.value, ctx);
      await this.publishAll(produced, `${this.durable}:${m.info.streamSequence}`, outputs);
      await Promise.all(deadLetters);
      await this.receipts.flush();
      m.ack();
      if (m.info.deliveryCount > 1) this.settings.attemptLog?.clear(this.attemptId(m)).catch(() => undefined);
      this.metrics.processed(this.def.name, 'ok', performance.now() - started);
    } catch (err) {
      await this.settle(m, err, decoded.raw, deadLetters);
      this.metrics.processed(this.def.name, err instanceof DeferError ? 'deferred' : 'failed', performance.now() - started);
    } finally {
      this.release([m]);
    }
  }

  private async handleBatch(msgs: JsMsg[]): Promise<void> {
    const started = performance.now();
    const good: { m: JsMsg; value: I }[] = [];
    try {
      for (const m of msgs) {
        const decoded = this.decode(m);
        if (decoded.ok) good.push({ m, value: decoded.value });
        else await this.settle(m, new PermanentError(`invalid ${this.def.name} input`, decoded.problems), decoded.raw, []);
      }
      if (good.length === 0) return;
      const deadLetters: Promise<void>[] = [];
      const first = good[0].m;
      try {
        const outputs = new Outputs(this.js);
        const produced = await this.stage.processBatch!(good.map((g) => g.value), this.context(first, deadLetters, outputs));
        const seqs = good.map((g) => g.m.info.streamSequence);
        await this.publishAll(produced, `${this.durable}:${seqs[0]}-${seqs.at(-1)}x${seqs.length}`, outputs);
        await Promise.all(deadLetters);
        await this.receipts.flush();
        for (const g of good) g.m.ack();
        this.metrics.processed(this.def.name, 'ok', performance.now() - started, good.length);
      } catch (err) {
        for (const g of good) await this.settle(g.m, err, g.value, deadLetters);
        this.metrics.processed(this.def.name, err instanceof DeferError ? 'deferred' : 'failed', performance.now() - started, good.length);
      }
    } finally {
      this.release(msgs);
    }
  }

  /** Publishes outputs pipelined (bounded), each with a msgID derived from the input. */
  private async publishAll(produced: O[] | Promise<O[]> | AsyncIterable<O>, idBase: string, outputs: Outputs): Promise<void> {
    let index = 0;
    const outputId = this.outputId ?? this.def.outputId;
    const publish = (out: O) => {
      if (!this.route) throw new Error(`stage ${this.def.name} has no outputs but produced one`);
      const id = outputId ? `${this.durable}:${outputId(out)}` : `${idBase}:${index}`;
      index++;
      outputs.publish(this.route(out), JSON.stringify(out), id);
    };
    if (Symbol.asyncIterator in (produced as object)) {
      for await (const out of produced as AsyncIterable<O>) {
        if (outputs.failure) throw outputs.failure;
        publish(out);
        const aside = this.stepAside();
        if (aside) await aside;
        if (outputs.pending.size >= this.settings.maxPublishesInFlight) await Promise.race(outputs.pending);
      }
    } else {
      for (const out of await (produced as Promise<O[]>)) publish(out);
    }
    await outputs.settled();
  }

  /** Decides the fate of a message whose processing threw. Never leaves it unsettled. */
  private async settle(m: JsMsg, err: unknown, raw: unknown, deadLetters: Promise<void>[]): Promise<void> {
    try {
      await Promise.allSettled(deadLetters);
      if (err instanceof DeferError) {
        m.nak(Math.max(0, err.untilMs - Date.now()));
        return;
      }
      const permanent = err instanceof PermanentError;
      let attempt = m.info.deliveryCount;
      let firstError: string | undefined;
      if (!permanent && this.settings.attemptLog) {
        try {
          const record = await this.settings.attemptLog.fail(this.attemptId(m), errorMessage(err));
          attempt = record.count;
          firstError = record.firstError;
        } catch { /* Redis down: fall back on JetStream's delivery count */ }
      }
      if (!permanent && attempt < this.settings.maxAttempts) {
        const retryAfter = err instanceof RetryableError ? err.retryAfterMs : undefined;
        const delay = retryAfter ?? backoffMs(attempt, this.settings.backoffBaseMs, this.settings.backoffCapMs);
        this.log.warn({ err, attempt, delayMs: delay, seq: m.info.streamSequence }, 'retrying');
        m.nak(delay);
        return;
      }
      const problems = permanent ? (err as PermanentError).problems : [errorMessage(err)];
      const reason = permanent ? (err as Error).message : `gave up after ${attempt} attempts: ${errorMessage(err)}`;
      const who = identify(raw, m.subject);
      const status: ReceiptStatus = this.def.giveUpStatus ?? 'dead_lettered';
      this.receipts.add({
        ts: Date.now(), stage: this.def.name, status, ...who, reason: `${reason}: ${problems.join('; ')}`.slice(0, 2_000),
        attempt, count: 1,
      });
      await this.publishDeadLetter(m, reason, problems, m.data, raw, attempt, firstError);
      await this.receipts.flush();
      this.settings.attemptLog?.clear(this.attemptId(m)).catch(() => undefined);
      this.log.warn({ seq: m.info.streamSequence, reason, problems: problems.slice(0, 20) }, 'dead-lettered');
      // No reason: NATS 2.9 ignores a "+TERM <reason>" ack, leaving the message pending.
      m.term();
    } catch (settleErr) {
      // Could not record the failure (JetStream unavailable?): leave it to redelivery, never drop it.
      this.log.error({ err: settleErr }, 'could not dead-letter; will be redelivered');
      try { m.nak(backoffMs(m.info.deliveryCount, 1_000, 60_000)); } catch { /* connection gone: ack_wait redelivers */ }
    }
  }

  private async publishDeadLetter(
    m: JsMsg, reason: string, problems: string[], payload: Uint8Array, raw?: unknown, attempts = m.info.deliveryCount, firstError?: string,
  ): Promise<void> {
    const who = identify(raw ?? safeJson(payload), m.subject);
    const entry: DeadLetter = {
      stage: this.def.name,
      reason: reason.slice(0, 1_000),
      problems: problems.slice(0, 200).map((p) => p.slice(0, 1_000)),
      attempts,
      first_error: firstError?.slice(0, 1_000),
      last_error: reason.slice(0, 1_000),
      failed_at: Date.now(),
      subject: m.subject,
      stream: m.info.stream,
      stream_seq: m.info.streamSequence,
      tenant: who.tenant || undefined,
      request_id: who.request_id || undefined,
      original_b64: Buffer.from(payload).toString('base64'),
    };
    const suffix = payload === m.data ? 'all' : `part${m.info.deliveryCount}:${Math.random().toString(36).slice(2, 8)}`;
    await this.js.publish(this.topology.dlq(this.def.name), JSON.stringify(entry), {
      msgID: `${this.durable}:${m.info.streamSequence}:dlq:${suffix}`,
    });
    this.metrics.deadLettered(this.def.name);
  }

  /** No message is being handled right now. */
  get idle(): boolean {
    return this.inFlight.size === 0 && this.batchBuffer.length === 0;
  }

  /** Stops pulling, lets in-flight work settle, then closes the stage. Idempotent. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      const steps: [string, () => Promise<unknown>][] = [
        ['stop pulling', async () => { await this.messages?.close(); }],
        ['finish in-flight', async () => { await this.loop; await Promise.allSettled([...this.inFlight]); }],
        ['close stage', async () => { clearInterval(this.workingTimer); await this.stage.close?.(); }],
      ];
      for (const [what, step] of steps) {
        try { await step(); } catch (err) { this.log.error({ err }, `close: ${what} failed`); }
      }
      this.abort.abort();
    })();
    return this.closing;
  }
}

function safeJson(data: Uint8Array): unknown {
  try { return JSON.parse(Buffer.from(data).toString('utf8')); } catch { return undefined; }
}
