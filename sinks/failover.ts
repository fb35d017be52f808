import type { DeliveryItem, Outcome, Sink } from './sink.js';

/** Tries providers in order: a retryable failure or an unavailable provider moves a delivery on. */
export class FailoverSink implements Sink {
  readonly channel;
  readonly idempotent: boolean;
  readonly maxBatch: number;
  readonly callSize?: number;
  readonly provider: string;

  constructor(private readonly providers: Sink[]) {
    if (providers.length === 0) throw new Error('failover needs at least one provider');
    this.channel = providers[0].channel;
    this.idempotent = providers.every((p) => p.idempotent);
    this.maxBatch = Math.min(...providers.map((p) => p.maxBatch));
    this.callSize = Math.min(...providers.map((p) => p.callSize ?? p.maxBatch));
    this.provider = providers.map((p) => p.provider).join('>');
  }

  async send(items: DeliveryItem[], signal: AbortSignal): Promise<Outcome[]> {
    const outcomes: Outcome[] = new Array(items.length);
    let pending = items.map((_, i) => i);
    for (const [n, provider] of this.providers.entries()) {
      const answers = await provider.send(pending.map((i) => items[i]), signal);
      const retry: number[] = [];
      pending.forEach((itemIndex, j) => {
        const outcome = { ...answers[j], provider: answers[j].provider ?? provider.provider };
        outcomes[itemIndex] = outcome;
        if (outcome.kind === 'retry' && n < this.providers.length - 1) retry.push(itemIndex);
      });
      pending = retry;
      if (pending.length === 0) break;
    }
    return outcomes;
  }

  async close(): Promise<void> {
    await Promise.allSettled(this.providers.map((p) => p.close()));
  }
}
