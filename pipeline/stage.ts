import type { z } from 'zod';
import type { Logger } from 'pino';
import type { Receipt, ReceiptStatus, Tier } from '../schemas/index.js';

/** What a stage may do besides returning outputs. It never sees a JsMsg, a subject or a connection. */
export interface StageContext {
  log: Logger;
  /** 1 on the first delivery of the input. */
  attempt: number;
  /** Set when this input is being replayed by an operator (the replay's id). */
  replay?: string;
  /** Sent back from the DLQ by an operator: what failed for good before is tried again. */
  redrive: boolean;
  /** True when a retryable failure now would be the last one allowed. */
  isLastAttempt: boolean;
  /** When JetStream stored the input message (ms since epoch). */
  storedAt: number;
  /**
   * The tenant the input's subject names (a request on `notify.request.<tier>.<tenant>`), for the
   * entry node to hold the body to; undefined when the subject names none (the deprecated
   * tenantless request subject, and every internal subject).
   */
  claimedTenant?: string;
  /** Aborted when the process shuts down. */
  signal: AbortSignal;
  /** Records a receipt; receipts are published in batches and acknowledged before the input is. The receipt is taken over: pass a fresh object. */
  receipt(receipt: Receipt): void;
  /**
   * Dead-letters part of the work (for example the recipients a provider refused for good) while
   * the rest succeeds. `payload` replaces the original message on redrive.
   */
  deadLetter(reason: string, problems: string[], payload: unknown): Promise<void>;
  /**
   * Runs `fn` once every output produced so far is stored in JetStream (in call order; the input is
   * not acked before it finishes). A long fan-out records its checkpoint here.
   */
  afterOutputs(fn: () => Promise<void>): void;
  /**
   * Hands work back to be taken up at `untilMs` (send_at, quiet hours): stored durably on the
   * subject of the node's `later` edge before the input is acked, and held there off the live
   * consumer. `id` names the hand-back, so a redo is dropped. `work` is the `work` of the stage's
   * `later` schema.
   */
  later(work: unknown, untilMs: number, id: string): void;
  /**
   * Says the input made durable progress without outputs (dispatch: a provider call recorded), so a
   * redelivery after a crash is known to be moving, not a poison pill. Cheap; call it freely.
   */
  progress?(): void;
}

/** A stage built from its definition: a function of (input, context) → outputs. */
export interface Stage<I, O> {
  /** Per-message form. Returning an async iterable streams a large fan-out with bounded memory. */
  process?(input: I, ctx: StageContext): Promise<O[]> | AsyncIterable<O>;
  /** Batch form: the runner hands over several inputs at once (after a short linger). */
  processBatch?(inputs: I[], ctx: StageContext): Promise<O[]>;
  close?(): Promise<void>;
}

/** Who a message is about: receipts and dead letters take it from the decoded input, never from a guess. */
export interface Identity {
  tenant: string;
  request_id: string;
  /** A string, not a Tier: a rejected request may name a tier that does not exist. */
  tier: string;
  category: string;
  channel?: string;
  /** The recipients the input carries, when it carries them (a delivery group). */
  user_ids?: string[];
}

/** Static description of a stage: its schemas, its config with defaults, and its constructor. */
export interface StageDefinition<I, O, C, D> {
  /** Its name in logs, metrics, receipts, consumers and its DLQ subject. */
  name: string;
  input: z.ZodType<I>;
  /**
   * A fast decoder for an input Herald writes itself: what `input` parses `raw` into, or undefined
   * to let `input` decide and say what is wrong. It must never accept what `input` rejects.
   */
  decode?(raw: unknown): I | undefined;
  /** Null for a stage that only has side effects (dispatch, loader). */
  output: z.ZodType<O> | null;
  config: z.ZodType<C>;
  /**
   * A stable id for an output, when its content says what it is better than its position does
   * (batch: the groups it carries), so a republish after a crash is dropped by JetStream.
   */
  outputId?(output: O): string;
  /** Who an input is about, one identity per request it carries (a delivery batch carries several). */
  identify(input: I): Identity[];
  /** The tier an input belongs to: a durable edge into this stage publishes to that tier's subject. */
  tierOf?(input: I): Tier;
  /** For a stage read per partition (dispatch: per channel), the partition an input goes to. */
  partitionOf?(input: I): string;
  /**
   * What this stage hands back with `ctx.later` (`{until, work}`): the node on its `later` edge
   * takes exactly this schema.
   */
  later?: z.ZodType;
  /** Receipt status when this stage gives up on an input: `rejected` at validation. */
  giveUpStatus?: ReceiptStatus;
  create(config: C, deps: D): Stage<I, O>;
}

/** The identity of one accepted request (every internal message carries its request). */
export function requestIdentity(
  request: { tenant: string; id: string; tier: string; category: string },
  extra: { channel?: string; user_ids?: string[] } = {},
): Identity {
  return { tenant: request.tenant, request_id: request.id, tier: request.tier, category: request.category, ...extra };
}
