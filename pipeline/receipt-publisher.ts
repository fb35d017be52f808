import type { JetStreamClient } from '@nats-io/jetstream';
import { nuid } from '@nats-io/nuid';
import type { Receipt } from '../schemas/index.js';
import type { Topology } from '../streams/topology.js';

/** Options for batching receipts. */
export interface ReceiptPublisherOptions {
  /** Longest a receipt waits for companions. @default 5 */
  lingerMs?: number;
  /** Receipts per published message. @default 500 */
  maxBatch?: number;
}

/**
 * Collects receipts from every in-flight message of a process and publishes them in batches,
 * one message per status (`notify.receipt.<status>`). `flush()` resolves once everything added
 * before the call has a PubAck, which is what lets the runner ack inputs only after their receipts.
 */
export class ReceiptPublisher {
  private pending: Receipt[] = [];
  private pendingDone: { resolve: () => void; reject: (e: unknown) => void }[] = [];
  private timer?: NodeJS.Timeout;
  private readonly prefix = nuid.next();
  private counter = 0;
  private readonly lingerMs: number;
  private readonly maxBatch: number;
  private inFlight = new Set<Promise<void>>();

  constructor(private readonly js: JetStreamClient, private readonly topology: Topology, opts: ReceiptPublisherOptions = {}) {
    this.lingerMs = opts.lingerMs ?? 5;
    this.maxBatch = opts.maxBatch ?? 500;
  }

  add(receipt: Receipt): void {
    this.pending.push({ ...receipt, ts: receipt.ts ?? Date.now() });
    if (this.pending.length >= this.maxBatch) this.publishPending();
    else if (!this.timer) this.timer = setTimeout(() => this.publishPending(), this.lingerMs);
  }

  /** Resolves when every receipt added so far is stored in RECEIPTS. */
  flush(): Promise<void> {
    if (this.pending.length === 0) return Promise.all([...this.inFlight]).then(() => undefined);
    return new Promise<void>((resolve, reject) => this.pendingDone.push({ resolve, reject }));
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
    const byStatus = new Map<string, Receipt[]>();
    for (const r of receipts) {
      const list = byStatus.get(r.status);
      if (list) list.push(r);
      else byStatus.set(r.status, [r]);
    }
    const publishes = [...byStatus].map(([status, list]) =>
      this.js.publish(this.topology.receipt(status), JSON.stringify({ receipts: list }), {
        msgID: `${this.prefix}.${this.counter++}`,
      }),
    );
    const done = Promise.all(publishes).then(() => undefined);
    this.inFlight.add(done);
    done.then(
      () => { this.inFlight.delete(done); waiters.forEach((w) => w.resolve()); },
      () => {
        // JetStream unavailable: keep the receipts (and whoever waits on them) for the next try.
        // Their inputs stay unacked meanwhile, so nothing moves on without its receipts.
        this.inFlight.delete(done);
        this.pending.unshift(...receipts);
        this.pendingDone.unshift(...waiters);
        if (!this.timer) this.timer = setTimeout(() => this.publishPending(), 500);
      },
    );
  }

  /** Publishes what is pending now and waits for it. */
  async close(): Promise<void> {
    if (this.pending.length) this.publishPending();
    await Promise.allSettled([...this.inFlight]);
  }
}
