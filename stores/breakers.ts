import type { KV, KvEntry } from '@nats-io/kv';
import { kvToken } from '../runtime/ids.js';

/** When a provider's breaker opens and how it recovers. */
export interface BreakerOptions {
  /** Consecutive failed calls that open it. @default 5 */
  failureThreshold?: number;
  /** How long it stays open before letting a probe through. @default 5000 */
  coolDownMs?: number;
  /** How long a probe may take before another process may probe. @default 10000 */
  probeTimeoutMs?: number;
}

/** Breaker state for one provider, shared by every Herald process through the `breakers` KV bucket. */
export interface BreakerState {
  state: 'closed' | 'open' | 'half_open';
  failures: number;
  /** ms since epoch: when it opened, or when the current probe started */
  since: number;
}

const closed: BreakerState = { state: 'closed', failures: 0, since: 0 };

export type BreakerDecision = { allow: true; probe: boolean } | { allow: false; retryAtMs: number };

/**
 * Circuit breakers per provider: closed → open after N consecutive failed calls → half-open after
 * a cool-down, when one probe goes through → closed on its success, open again on its failure.
 * State lives in JetStream KV and every change is a compare-and-set on the entry's revision, so
 * processes agree on it; each process keeps a local view fed by a KV watch (no read per call).
 */
export class Breakers {
  private readonly view = new Map<string, { state: BreakerState; revision: number }>();
  private watcher?: AsyncIterable<KvEntry> & { stop(): void };
  private readonly failureThreshold: number;
  private readonly coolDownMs: number;
  private readonly probeTimeoutMs: number;

  constructor(private readonly kv: KV, opts: BreakerOptions = {}, private readonly now: () => number = Date.now) {
    this.failureThreshold = opts.failureThreshold ?? 5;
    this.coolDownMs = opts.coolDownMs ?? 5_000;
    this.probeTimeoutMs = opts.probeTimeoutMs ?? 10_000;
  }

  async start(): Promise<void> {
    const watcher = await this.kv.watch();
    this.watcher = watcher as unknown as AsyncIterable<KvEntry> & { stop(): void };
    void (async () => {
      for await (const e of watcher) {
        if (e.operation === 'PUT') this.view.set(e.key, { state: e.json<BreakerState>(), revision: e.revision });
        else this.view.delete(e.key);
      }
    })().catch(() => undefined);
  }

  stop(): void {
    this.watcher?.stop();
  }

  /** The state as this process last saw it. */
  state(provider: string): BreakerState {
    return this.view.get(kvToken(provider))?.state ?? closed;
  }

  /** Whether a call to `provider` may go out now (and whether it is the half-open probe). */
  async allow(provider: string): Promise<BreakerDecision> {
    const key = kvToken(provider);
    const seen = this.view.get(key);
    const s = seen?.state ?? closed;
    const now = this.now();
    if (s.state === 'closed') return { allow: true, probe: false };
    const waitUntil = s.state === 'open' ? s.since + this.coolDownMs : s.since + this.probeTimeoutMs;
    if (now < waitUntil) return { allow: false, retryAtMs: waitUntil };
    // Cool-down over (or a probe timed out): whoever wins the compare-and-set sends the probe.
    const won = await this.write(key, { state: 'half_open', failures: s.failures, since: now }, seen?.revision ?? 0);
    return won ? { allow: true, probe: true } : { allow: false, retryAtMs: now + this.coolDownMs };
  }

  /** Reports a call's result: a success closes the breaker, a provider failure counts toward opening it. */
  async record(provider: string, ok: boolean): Promise<void> {
    const key = kvToken(provider);
    for (let i = 0; i < 5; i++) {
      // The watch holds every existing entry: no entry means closed, with nothing to reset.
      const seen = this.view.get(key) ?? (ok ? undefined : await this.read(key));
      const s = seen?.state ?? closed;
      let next: BreakerState;
      if (ok) {
        if (s.state === 'closed' && s.failures === 0) return;
        next = closed;
      } else {
        const failures = s.failures + 1;
        next = s.state === 'half_open' || failures >= this.failureThreshold
          ? { state: 'open', failures, since: this.now() }
          : { state: 'closed', failures, since: s.since };
        if (s.state === 'open') return; // already open: stray results of calls started before
      }
      if (await this.write(key, next, seen?.revision ?? 0)) return;
      this.view.set(key, (await this.read(key)) ?? { state: closed, revision: 0 });
    }
  }

  private async read(key: string): Promise<{ state: BreakerState; revision: number } | undefined> {
    const e = await this.kv.get(key);
    return e && e.operation === 'PUT' ? { state: e.json<BreakerState>(), revision: e.revision } : undefined;
  }

  /** Compare-and-set; false when another process changed it first. */
  private async write(key: string, state: BreakerState, revision: number): Promise<boolean> {
    try {
      const rev = revision === 0 ? await this.kv.create(key, JSON.stringify(state)) : await this.kv.update(key, JSON.stringify(state), revision);
      this.view.set(key, { state, revision: rev });
      return true;
    } catch (err) {
      if (/wrong last sequence|key exists/i.test(String((err as Error).message))) return false;
      throw err;
    }
  }
}
