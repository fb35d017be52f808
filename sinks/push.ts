import type { DeliveryItem, Outcome, Sink } from './sink.js';

/** Push providers by device platform. */
export interface PushProviders {
  ios?: Sink;
  android?: Sink;
  web?: Sink;
}

/**
 * The push channel: each item is one device (dispatch expands users into devices), routed by its
 * platform to APNs (ios) or FCM (android, web).
 */
export class PushSink implements Sink {
  readonly channel = 'push' as const;
  readonly idempotent = false;
  readonly maxBatch = 500;
  readonly provider: string;

  constructor(private readonly providers: PushProviders) {
    this.provider = [...new Set(Object.values(providers).map((p) => p.provider))].join('+') || 'none';
  }

  async send(items: DeliveryItem[], signal: AbortSignal): Promise<Outcome[]> {
    const outcomes: Outcome[] = new Array(items.length);
    const byPlatform = new Map<string, number[]>();
    items.forEach((item, i) => {
      const platform = item.recipient.platforms?.[0] ?? 'unknown';
      byPlatform.set(platform, [...(byPlatform.get(platform) ?? []), i]);
    });
    await Promise.all([...byPlatform].map(async ([platform, indexes]) => {
      const sink = this.providers[platform as keyof PushProviders];
      if (!sink) {
        for (const i of indexes) outcomes[i] = { kind: 'permanent', reason: `no push provider configured for ${platform}`, code: 'no_provider' };
        return;
      }
      const answers = await sink.send(indexes.map((i) => items[i]), signal);
      indexes.forEach((itemIndex, j) => { outcomes[itemIndex] = { ...answers[j], provider: answers[j].provider ?? sink.provider }; });
    }));
    return outcomes;
  }

  async close(): Promise<void> {
    const unique = new Set(Object.values(this.providers));
    await Promise.allSettled([...unique].map((p) => p.close()));
  }
}
