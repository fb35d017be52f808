import type { DeliveryItem, Outcome, Sink } from './sink.js';

/** A circuit breaker, as the guarded sink needs it (processors/breaker.ts provides one). */
export interface BreakerGuard {
  allow(provider: string): Promise<{ allow: true; probe: boolean } | { allow: false; retryAtMs: number }>;
  record(provider: string, ok: boolean): Promise<void>;
}

/** A rate limiter, as the guarded sink needs it (processors/rate-limit.ts provides one). */
export interface RateGuard {
  take(provider: string, tenant: string, count: number): Promise<number>;
  pause(provider: string, untilMs: number): Promise<void>;
}

/** Longest a batch waits in-process for tokens; longer waits give the consumer slot back (delayed nak). */
const MAX_INLINE_WAIT_MS = 250;

/**
 * One provider behind its breaker and rate limits. While the breaker is open, or tokens are short,
 * items come back as `retry` marked `deferred` (waiting, not a failed attempt), so dispatch naks
 * them with the wait and failover may try the next provider.
 */
export class GuardedSink implements Sink {
  readonly channel;
  readonly idempotent;
  readonly maxBatch;
  readonly callSize;
  readonly provider;

  constructor(private readonly inner: Sink, private readonly breaker?: BreakerGuard, private readonly limiter?: RateGuard, private readonly now = Date.now) {
    this.channel = inner.channel;
    this.idempotent = inner.idempotent;
    this.maxBatch = inner.maxBatch;
    this.callSize = inner.callSize;
    this.provider = inner.provider;
  }

  async send(items: DeliveryItem[], signal: AbortSignal): Promise<Outcome[]> {
    const deferred = (retryAtMs: number, reason: string): Outcome =>
      ({ kind: 'retry', reason, afterMs: Math.max(1, retryAtMs - this.now()), deferred: true, provider: this.provider });
    let probe = false;
    if (this.breaker) {
      const decision = await this.breaker.allow(this.provider);
      if (!decision.allow) return items.map(() => deferred(decision.retryAtMs, `breaker open for ${this.provider}`));
      probe = decision.probe;
    }
    // Rate limits per tenant: a tenant over its share waits; the others go.
    const outcomes: Outcome[] = new Array(items.length);
    let allowed: number[] = items.map((_, i) => i);
    if (this.limiter) {
      const byTenant = new Map<string, number[]>();
      items.forEach((item, i) => byTenant.set(item.request.tenant, [...(byTenant.get(item.request.tenant) ?? []), i]));
      allowed = [];
      for (const [tenant, indexes] of byTenant) {
        let wait = await this.limiter.take(this.provider, tenant, indexes.length);
        if (wait > 0 && wait <= MAX_INLINE_WAIT_MS) {
          await new Promise((r) => setTimeout(r, wait));
          wait = await this.limiter.take(this.provider, tenant, indexes.length);
        }
        if (wait > 0) for (const i of indexes) outcomes[i] = deferred(this.now() + wait, `rate limit for ${this.provider}`);
        else allowed.push(...indexes);
      }
    }
    if (allowed.length === 0) return outcomes;
    const answers = await this.inner.send(allowed.map((i) => items[i]), signal);
    allowed.forEach((itemIndex, j) => { outcomes[itemIndex] = answers[j]; });

    const failedCalls = answers.filter((o) => o.kind === 'retry').length;
    // A call where nothing got through is the provider failing; a few retries in a batch are not.
    const providerFailed = failedCalls === answers.length;
    if (this.breaker && (providerFailed || probe || failedCalls === 0)) await this.breaker.record(this.provider, !providerFailed);
    const throttle = Math.max(0, ...answers.map((o) => (o.kind === 'retry' && o.afterMs ? o.afterMs : 0)));
    if (this.limiter && throttle > 0) await this.limiter.pause(this.provider, this.now() + throttle);
    return outcomes;
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}
