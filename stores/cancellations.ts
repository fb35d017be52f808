import { tenantSchema } from '../schemas/index.js';
import type { KV, KvEntry } from '@nats-io/kv';
import { kvToken } from '../runtime/ids.js';

/**
 * Cancelled requests, in the `cancellations` KV bucket. Each process keeps the set in memory from
 * a KV watch, so checking a delivery costs no round trip.
 */
export class Cancellations {
  private readonly cancelled = new Set<string>();
  private watcher?: { stop(): void };
  private ready?: Promise<void>;

  constructor(private readonly kv: KV) {}

  static key(tenant: string, requestId: string): string {
    return `${kvToken(tenant)}.${kvToken(requestId)}`;
  }

  async start(): Promise<void> {
    const watcher = await this.kv.watch();
    this.watcher = watcher as unknown as { stop(): void };
    let markReady!: () => void;
    this.ready = new Promise((resolve) => { markReady = resolve; });
    if (((await this.kv.status()).values ?? 0) === 0) markReady();
    void (async () => {
      for await (const e of watcher as AsyncIterable<KvEntry>) {
        if (e.operation === 'PUT') this.cancelled.add(e.key);
        else this.cancelled.delete(e.key);
        if (e.delta === 0) markReady();
      }
    })().catch(() => undefined);
    await Promise.race([this.ready, new Promise((r) => setTimeout(r, 2_000))]);
  }

  stop(): void {
    this.watcher?.stop();
  }

  isCancelled(tenant: string, requestId: string): boolean {
    return this.cancelled.has(Cancellations.key(tenant, requestId));
  }

  /** Records a cancellation. Anyone on the cancel subject can call this: the input is checked and bounded here. */
  async cancel(tenant: string, requestId: string, reason = ''): Promise<void> {
    if (!tenantSchema.safeParse(tenant).success) throw new Error(`"${tenant.slice(0, 64)}" is not a tenant name (1-64 of letters, digits, _ and -)`);
    if (requestId.length === 0 || requestId.length > 128) throw new Error('a request id is 1-128 characters');
    await this.kv.put(Cancellations.key(tenant, requestId), JSON.stringify({ at: Date.now(), reason: reason.slice(0, 500) }));
    this.cancelled.add(Cancellations.key(tenant, requestId));
  }
}
