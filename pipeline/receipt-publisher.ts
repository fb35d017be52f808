import type { JetStreamClient } from '@nats-io/jetstream';
import { nuid } from '@nats-io/nuid';
import { ReplyError } from 'ioredis';
import type { Logger } from 'pino';
import { withReceiptDefaults, type Receipt, type StoredReceipt } from '../schemas/index.js';
import { scrub } from '../runtime/scrub.js';
import type { Topology } from '../streams/topology.js';

/** Options for batching receipts. */
export interface ReceiptPublisherOptions {
  /** Longest a receipt waits for companions. @default 5 */
  lingerMs?: number;
  /** Receipts per published message. @default 500 */
  maxBatch?: number;
  /** Bytes per published message, well under the server's max_payload. @default 256 KiB */
  maxBytes?: number;
  /** Wait before a failed publish is tried again. @default 500 */
  retryMs?: number;
  /**
   * Where each request's status is kept (stores/request-status.ts): the receipts are recorded there
   * as they are published, and `flush()` waits for both, so a status is fresh when its step is done.
   */
  statuses?: StatusRecorder;
  log?: Logger;
}

/** Records receipts into request statuses; idempotent per receipt id (a retry counts nothing twice). */
export interface StatusRecorder {
  record(receipts: StoredReceipt[]): Promise<void>;
}

/** Tries of a status record that Redis refused (a script error, not an outage) before it is given up on. */
const REFUSED_RECORD_TRIES = 3;

/** One message of receipts, named once: a retry republishes it under the same msgID. */
interface Chunk {
  subject: string;
  body: string;
  msgID: string;
}

/** What one flush produced, and who waits for all of it to be stored. */
interface Flush {
  chunks: Chunk[];
  /** Receipts still to record in request statuses (none once recorded). */
  statuses?: StoredReceipt[];
  /** Tries of that record Redis refused so far. */
  refused?: number;
  waiters: { resolve: () => void; reject: (e: unknown) => void }[];
}

/**
 * Collects receipts from every in-flight message of a process and publishes them in batches, one
 * message per status (`notify.receipt.<status>`), each cut to at most `maxBytes`, and records them
 * in request statuses when given a store. `flush()` resolves once everything added before the call
 * has a PubAck (and is recorded), which is what lets the runner ack inputs only after their receipts. A message JetStream did not take is retried alone, under its
 * first msgID, so what was stored is never stored twice; failures are logged.
 */
export class ReceiptPublisher {
  private pending: Receipt[] = [];
  private pendingDone: Flush['waiters'] = [];
  private timer?: NodeJS.Timeout;
  private readonly prefix = nuid.next();
  private counter = 0;
  private readonly lingerMs: number;
  private readonly maxBatch: number;
  private readonly maxBytes: number;
  private readonly retryMs: number;
  private readonly inFlight = new Set<Promise<void>>();
  private closed = false;

  constructor(private readonly js: JetStreamClient, private readonly topology: Topology, private readonly opts: ReceiptPublisherOptions = {}) {
    this.lingerMs = opts.lingerMs ?? 5;
    this.maxBatch = opts.maxBatch ?? 500;
    this.maxBytes = opts.maxBytes ?? 256 * 1024;
    this.retryMs = opts.retryMs ?? 500;
  }

  add(receipt: Receipt): void {
    // Reasons often quote a provider's error, which may name an address or a token.
    this.pending.push({ ...receipt, ts: receipt.ts ?? Date.now(), ...(receipt.reason ? { reason: scrub(receipt.reason) } : {}) });
    if (this.pending.length >= this.maxBatch) this.publishPending();
    else if (!this.timer) this.timer = setTimeout(() => this.publishPending(), this.lingerMs);
  }

  /** Resolves when every receipt added so far is stored in RECEIPTS. */
  flush(): Promise<void> {
    if (this.pending.length === 0) return Promise.all([...this.inFlight]).then(() => undefined);
    return new Promise<void>((resolve, reject) => this.pendingDone.push({ resolve, reject }));
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
    this.send({ chunks: this.chunksOf(receipts), statuses: this.opts.statuses && receipts.map(withReceiptDefaults), waiters });
  }

  /**
   * Publishes the chunks not yet stored and records the statuses not yet recorded, side by side;
   * retries only what failed, until all is done.
   */
  private send(flush: Flush): void {
    const done = (async () => {
      const [results, recordError] = await Promise.all([
        Promise.allSettled(flush.chunks.map((c) => this.js.publish(c.subject, c.body, { msgID: c.msgID }))),
        flush.statuses && this.opts.statuses!.record(flush.statuses).then(() => undefined, (err: unknown) => err ?? new Error('status record failed')),
      ]);
      const failed = flush.chunks.filter((_, i) => results[i].status === 'rejected');
      let statuses = recordError ? flush.statuses : undefined;
      const refused = (flush.refused ?? 0) + (recordError instanceof ReplyError ? 1 : 0);
      if (statuses && refused >= REFUSED_RECORD_TRIES) {
        // A script error repeats however often it is tried: holding the pipeline for it would stop
        // every delivery. The receipts themselves are stored; only GET status misses these steps.
        this.opts.log?.error({ err: recordError, receipts: statuses.length }, 'request statuses not recorded: Redis refused them');
        statuses = undefined;
      }
      if (failed.length === 0 && !statuses) {
        flush.waiters.forEach((w) => w.resolve());
        return;
      }
      const firstFailed = results.find((r) => r.status === 'rejected') as PromiseRejectedResult | undefined;
      const err = firstFailed?.reason ?? recordError;
      this.opts.log?.warn({ err, failed: failed.length, of: flush.chunks.length, statusesRecorded: !statuses }, 'receipts not stored or statuses not recorded; retrying those');
      if (this.closed) {
        flush.waiters.forEach((w) => w.reject(err));
        return;
      }
      // Their inputs stay unacked meanwhile, so nothing moves on without its receipts.
      await new Promise((r) => setTimeout(r, this.retryMs));
      this.send({ chunks: failed, statuses, refused, waiters: flush.waiters });
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
