import type { JetStreamClient } from '@nats-io/jetstream';
import { nuid } from '@nats-io/nuid';
import type { Logger } from 'pino';
import type { Receipt } from '../schemas/index.js';
import { scrub } from '../runtime/scrub.js';
import type { Topology } from '../streams/topology.js';

/** Options for batching receipts. */
export interface ReceiptPublisherOptions {
  /**
   * Longest a receipt waits for companions while nobody is held up by it. Fewer, larger messages:
   * at 1,000 password resets a second, 20 ms instead of 5 cut NATS messages from 5.0 to 3.6 per
   * request and the pipeline's CPU by about 5 % (BENCH_COST_SPLIT=1 npm run bench:cost). @default 20
   */
  lingerMs?: number;
  /** Longest it waits once a `flush(true)` caller holds work back until it is stored (a bulk tier's slot, an HTTP answer). @default 5 */
  promptLingerMs?: number;
  /** Receipts per published message. @default 500 */
  maxBatch?: number;
  /** Bytes per published message, well under the server's max_payload. @default 256 KiB */
  maxBytes?: number;
  /** Wait before a failed publish is tried again. @default 500 */
  retryMs?: number;
  log?: Logger;
}

/** One message of receipts, named once: a retry republishes it under the same msgID. */
interface Chunk {
  subject: string;
  body: string;
  msgID: string;
}

/** What one flush produced, and who waits for all of it to be stored. */
interface Flush {
  chunks: Chunk[];
  waiters: { resolve: () => void; reject: (e: unknown) => void }[];
}

/**
 * Collects receipts from every in-flight message of a process and publishes them in batches, one
 * message per status (`notify.receipt.<status>`), each cut to at most `maxBytes`. `flush()`
 * resolves once everything added before the call has a PubAck, which is what lets the runner ack
 * inputs only after their receipts. A message JetStream did not take is retried alone, under its
 * first msgID, so what was stored is never stored twice; failures are logged.
 */
export class ReceiptPublisher {
  private pending: Receipt[] = [];
  private pendingDone: Flush['waiters'] = [];
  private timer?: NodeJS.Timeout;
  /** When the timer fires (performance.now()). */
  private dueAt = 0;
  private readonly prefix = nuid.next();
  private counter = 0;
  private readonly lingerMs: number;
  private readonly promptLingerMs: number;
  private readonly maxBatch: number;
  private readonly maxBytes: number;
  private readonly retryMs: number;
  private readonly inFlight = new Set<Promise<void>>();
  private closed = false;

  constructor(private readonly js: JetStreamClient, private readonly topology: Topology, private readonly opts: ReceiptPublisherOptions = {}) {
    this.lingerMs = opts.lingerMs ?? 20;
    this.promptLingerMs = Math.min(this.lingerMs, opts.promptLingerMs ?? 5);
    this.maxBatch = opts.maxBatch ?? 500;
    this.maxBytes = opts.maxBytes ?? 256 * 1024;
    this.retryMs = opts.retryMs ?? 500;
  }

  /** Queues a receipt, taking it over: callers build one per call, so it is completed in place, not copied. */
  add(receipt: Receipt): void {
    receipt.ts ??= Date.now();
    // Reasons often quote a provider's error, which may name an address or a token.
    if (receipt.reason) receipt.reason = scrub(receipt.reason);
    this.pending.push(receipt);
    if (this.pending.length >= this.maxBatch) this.publishPending();
    else if (!this.timer) this.publishIn(this.lingerMs);
  }

  /**
   * Resolves when every receipt added so far is stored in RECEIPTS. `promptly`: the caller holds
   * work back meanwhile, so what is pending goes within `promptLingerMs`.
   */
  flush(promptly = false): Promise<void> {
    if (this.pending.length === 0) return Promise.all([...this.inFlight]).then(() => undefined);
    if (promptly && this.dueAt > performance.now() + this.promptLingerMs) this.publishIn(this.promptLingerMs);
    return new Promise<void>((resolve, reject) => this.pendingDone.push({ resolve, reject }));
  }

  private publishIn(ms: number): void {
    clearTimeout(this.timer);
    this.dueAt = performance.now() + ms;
    this.timer = setTimeout(() => this.publishPending(), ms);
  }

  /** Receipts per status, cut so that no message exceeds `maxBytes`. */
  private chunksOf(receipts: Receipt[]): Chunk[] {
    const byStatus = new Map<string, string[]>();
    for (const r of receipts) {
      const list = byStatus.get(r.status);
      const json = JSON.stringify(r);
      if (list) list.push(json);
      else byStatus.set(r.status, [json]);
    }
    const chunks: Chunk[] = [];
    for (const [status, list] of byStatus) {
      let part: string[] = [];
      let bytes = 0;
      const cut = () => {
        chunks.push({ subject: this.topology.receipt(status), body: `{"receipts":[${part.join(',')}]}`, msgID: `${this.prefix}.${this.counter++}` });
        part = [];
        bytes = 0;
      };
      for (const json of list) {
        const size = Buffer.byteLength(json) + 1;
        if (part.length && bytes + size > this.maxBytes) cut();
        part.push(json);
        bytes += size;
      }
      if (part.length) cut();
    }
    return chunks;
  }

  private publishPending(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    const receipts = this.pending;
    const waiters = this.pendingDone;
    this.pending = [];
    this.pendingDone = [];
    if (receipts.length === 0) {
      waiters.forEach((w) => w.resolve());
      return;
    }
    this.send({ chunks: this.chunksOf(receipts), waiters });
  }

  /** Publishes the chunks not yet stored; retries only those that failed, until all are stored. */
  private send(flush: Flush): void {
    const done = (async () => {
      const results = await Promise.allSettled(flush.chunks.map((c) => this.js.publish(c.subject, c.body, { msgID: c.msgID })));
      const failed = flush.chunks.filter((_, i) => results[i].status === 'rejected');
      if (failed.length === 0) {
        flush.waiters.forEach((w) => w.resolve());
        return;
      }
      const first = results.find((r) => r.status === 'rejected') as PromiseRejectedResult;
      this.opts.log?.warn({ err: first.reason, failed: failed.length, of: flush.chunks.length }, 'receipts not stored; retrying those');
      if (this.closed) {
        flush.waiters.forEach((w) => w.reject(first.reason));
        return;
      }
      // Their inputs stay unacked meanwhile, so nothing moves on without its receipts.
      await new Promise((r) => setTimeout(r, this.retryMs));
      this.send({ chunks: failed, waiters: flush.waiters });
    })();
    this.inFlight.add(done);
    void done.finally(() => this.inFlight.delete(done));
  }

  /** Publishes what is pending now and waits for it (a publish that keeps failing is given up on, its inputs unacked). */
  async close(): Promise<void> {
    if (this.pending.length) this.publishPending();
    this.closed = true;
    while (this.inFlight.size) await Promise.allSettled([...this.inFlight]);
  }
}
