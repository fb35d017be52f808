import type { Stage, StageContext } from './stage.js';

type Produced<O> = O[] | Promise<O[]> | AsyncIterable<O>;

async function toArray<O>(produced: Produced<O>): Promise<O[]> {
  if (Symbol.asyncIterator in (produced as object)) {
    const out: O[] = [];
    for await (const x of produced as AsyncIterable<O>) out.push(x);
    return out;
  }
  return produced as Promise<O[]>;
}

async function* iterate<O>(produced: Produced<O>): AsyncIterable<O> {
  if (Symbol.asyncIterator in (produced as object)) yield* produced as AsyncIterable<O>;
  else yield* await (produced as Promise<O[]>);
}

const nothing = Promise.resolve({ ok: true as const, value: [] as never[] });

type Settled<T> = { ok: true; value: T } | { ok: false; error: unknown };
const settle = <T>(p: Promise<T>): Promise<Settled<T>> => p.then((value) => ({ ok: true as const, value }), (error) => ({ ok: false as const, error }));

/**
 * Runs two per-message stages as one, in this process: every output of `first` goes straight into
 * `second` (up to `concurrency` at once, outputs kept in order), with no JetStream hop between.
 * The wiring uses it where a durable boundary buys nothing but latency.
 */
export function chain<A, B, C>(first: Stage<A, B>, second: Stage<B, C>, concurrency = 8): Stage<A, C> {
  if (!first.process || !second.process) throw new Error('chain: only per-message stages can be chained');
  return {
    process(input: A, ctx: StageContext): AsyncIterable<C> {
      // One at a time: stream the second stage's outputs as they come (a fan-out stays flat in memory).
      if (concurrency === 1) {
        return (async function* () {
          for await (const middle of iterate(first.process!(input, ctx))) yield* iterate(second.process!(middle, ctx));
        })();
      }
      return (async function* () {
        // In output order: the second stage's work on each middle value, and the first stage's
        // afterOutputs callbacks, handed on only once everything before them has been yielded.
        const window: { done: Promise<Settled<C[]>>; after?: () => Promise<void> }[] = [];
        const firstCtx: StageContext = { ...ctx, afterOutputs: (fn) => { window.push({ done: nothing, after: fn }); } };
        const next = async function* () {
          const head = window.shift()!;
          const done = await head.done;
          if (!done.ok) throw done.error;
          if (head.after) ctx.afterOutputs(head.after);
          yield* done.value;
        };
        try {
          for await (const middle of iterate(first.process!(input, firstCtx))) {
            window.push({ done: settle(Promise.resolve().then(() => toArray(second.process!(middle, ctx)))) });
            while (window.length >= concurrency || (window.length > 0 && window[0].after)) yield* next();
          }
          while (window.length) yield* next();
        } finally {
          // On an error, let the calls already started finish before the message is settled.
          await Promise.all(window.map((w) => w.done));
        }
      })();
    },
    async close() {
      await Promise.allSettled([first.close?.(), second.close?.()]);
    },
  };
}
