import type { DeliveryItem, Outcome, Sink } from './sink.js';

interface Waiting {
  items: DeliveryItem[];
  signal: AbortSignal;
  resolve: (outcomes: Outcome[]) => void;
  reject: (err: unknown) => void;
}

/**
 * Sends made in the same turn of the event loop go to the provider as one call, up to its call
 * size. A transactional request is dispatched on its own (no batch stage gathers it with others),
 * so without this every password reset would be its own Redis pipeline or FCM call; with it, the
 * requests handled side by side share one, and each caller still gets its own outcomes, in order,
 * before it records or acks anything. A full call, or a provider taking one recipient per call
 * (email, SMS), goes straight through.
 */
export class CoalescingSink implements Sink {
  readonly channel;
  readonly provider;
  readonly idempotent;
  readonly maxBatch;
  readonly callSize;
  private readonly limit: number;
  private waiting: Waiting[] = [];
  private waitingItems = 0;
  private scheduled = false;

  constructor(private readonly inner: Sink) {
    this.channel = inner.channel;
    this.provider = inner.provider;
    this.idempotent = inner.idempotent;
    this.maxBatch = inner.maxBatch;
    this.callSize = inner.callSize;
    this.limit = Math.max(1, inner.callSize ?? inner.maxBatch);
  }

  send(items: DeliveryItem[], signal: AbortSignal): Promise<Outcome[]> {
    if (this.limit <= 1 || items.length >= this.limit) return this.inner.send(items, signal);
    return new Promise((resolve, reject) => {
      if (this.waitingItems + items.length > this.limit) this.flush();
      this.waiting.push({ items, signal, resolve, reject });
      this.waitingItems += items.length;
      if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(() => {
          this.scheduled = false;
          this.flush();
        });
      }
    });
  }

  private flush(): void {
    const calls = this.waiting;
    this.waiting = [];
    this.waitingItems = 0;
    if (calls.length === 0) return;
    if (calls.length === 1) {
      const [only] = calls;
      this.inner.send(only.items, only.signal).then(only.resolve, only.reject);
      return;
    }
    const signals = [...new Set(calls.map((c) => c.signal))];
    const signal = signals.length === 1 ? signals[0] : AbortSignal.any(signals);
    this.inner.send(calls.flatMap((c) => c.items), signal).then((outcomes) => {
      let at = 0;
      for (const c of calls) {
        c.resolve(outcomes.slice(at, at + c.items.length));
        at += c.items.length;
      }
    }, (err: unknown) => {
      for (const c of calls) c.reject(err);
    });
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}
