import { createLogger } from '../runtime/logger.js';
import type { StageContext } from '../pipeline/stage.js';
import type { Receipt, ResolvedChunk } from '../schemas/index.js';

/** A StageContext that records what the stage did, for unit tests of process(). */
export function fakeContext(overrides: Partial<StageContext> = {}) {
  const receipts: Receipt[] = [];
  const deadLetters: { reason: string; problems: string[]; payload: unknown }[] = [];
  const handedBack: { work: ResolvedChunk; untilMs: number; id: string }[] = [];
  const ctx: StageContext = {
    log: createLogger('silent'),
    attempt: 1,
    redrive: false,
    isLastAttempt: false,
    storedAt: 1_000,
    signal: new AbortController().signal,
    receipt: (r) => receipts.push(r),
    deadLetter: async (reason, problems, payload) => { deadLetters.push({ reason, problems, payload }); },
    afterOutputs: (fn) => { void fn(); },
    later: (work, untilMs, id) => handedBack.push({ work: work as ResolvedChunk, untilMs, id }),
    ...overrides,
  };
  return { ctx, receipts, deadLetters, handedBack };
}

export async function collect<T>(out: T[] | Promise<T[]> | AsyncIterable<T>): Promise<T[]> {
  if (Symbol.asyncIterator in (out as object)) {
    const items: T[] = [];
    for await (const x of out as AsyncIterable<T>) items.push(x);
    return items;
  }
  return out as Promise<T[]>;
}
