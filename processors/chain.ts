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
      return (async function* () {
        const window: Promise<Settled<C[]>>[] = [];
        try {
          for await (const middle of iterate(first.process!(input, ctx))) {
            window.push(settle(Promise.resolve().then(() => toArray(second.process!(middle, ctx)))));
            if (window.length >= concurrency) {
              const done = await window.shift()!;
              if (!done.ok) throw done.error;
              yield* done.value;
            }
          }
          while (window.length) {
            const done = await window.shift()!;
            if (!done.ok) throw done.error;
            yield* done.value;
          }
        } finally {
          // On an error, let the calls already started finish before the message is settled.
          await Promise.all(window);
        }
      })();
    },
    async close() {
      await Promise.allSettled([first.close?.(), second.close?.()]);
    },
  };
}
