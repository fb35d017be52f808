import type { InboxContent, InboxStore } from '../stores/inbox.js';
import type { DeliveryItem, Outcome, Sink } from './sink.js';

/** The in-app channel: writes to the inbox, one Redis pipeline per batch. */
export class InAppSink implements Sink {
  readonly channel = 'inapp' as const;
  readonly provider = 'inbox';
  readonly idempotent = true;
  readonly maxBatch = 1_000;

  constructor(private readonly inbox: InboxStore, private readonly now: () => number = Date.now) {}

  async send(items: DeliveryItem[]): Promise<Outcome[]> {
    const outcomes: Outcome[] = new Array(items.length);
    // One pipeline per tenant (a batch may span requests of several tenants).
    const byTenant = new Map<string, number[]>();
    items.forEach((item, i) => {
      const list = byTenant.get(item.request.tenant);
      if (list) list.push(i);
      else byTenant.set(item.request.tenant, [i]);
    });
    await Promise.all([...byTenant].map(async ([tenant, indexes]) => {
      const contents = new Map<string, { locale: string; content: InboxContent }>();
      for (const i of indexes) {
        const { request, recipient, content } = items[i];
        const key = `${recipient.locale}\u0000${request.id}`;
        if (!contents.has(key)) {
          contents.set(key, { locale: recipient.locale, content: {
            id: request.id, category: request.category, tier: request.tier, title: content.title, body: content.body,
            created_at: request.accepted_at || this.now(),
            ...(request.content?.action_url ? { action_url: request.content.action_url } : {}),
            ...(request.data ? { data: request.data } : {}),
          } });
        }
      }
      try {
        const fresh = await this.inbox.write(tenant, [...contents.values()], indexes.map((i) => ({
          userId: items[i].recipient.user_id, locale: items[i].recipient.locale, requestId: items[i].request.id,
          // Scored by arrival: a scheduled or retried notification shows as new when it lands, and a
          // reconnecting stream resumes by arrival.
          createdAt: this.now(),
        })));
        indexes.forEach((itemIndex, j) => { outcomes[itemIndex] = { kind: 'delivered', duplicate: !fresh[j] }; });
      } catch (err) {
        for (const i of indexes) outcomes[i] = { kind: 'retry', reason: `redis: ${(err as Error).message}` };
      }
    }));
    return outcomes;
  }

  async close(): Promise<void> {}
}
