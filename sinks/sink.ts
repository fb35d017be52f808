import type { AcceptedRequest, Channel, Recipient } from '../schemas/index.js';
import type { RenderedContent } from '../runtime/templates.js';

/** One recipient's delivery, content already rendered for their locale. */
export interface DeliveryItem {
  request: AcceptedRequest;
  recipient: Recipient;
  content: RenderedContent;
}

/** What happened to one delivery. Each sink maps its provider's answers to these in one place. */
export type Outcome = (
  | { kind: 'delivered'; providerId?: string; /** already there (idempotent sink) */ duplicate?: boolean }
  | { kind: 'retry'; reason: string; afterMs?: number; /** waiting on a breaker or rate limit: not a failed attempt */ deferred?: boolean }
  | { kind: 'permanent'; reason: string; code?: string; /** the recipient asked the provider to stop (Twilio 21610) */ optOut?: boolean }
  | { kind: 'invalid_address'; reason: string; /** the device token or address to deactivate */ address: string }
) & {
  /** Which provider answered, when a sink spans several (failover, push by platform). */
  provider?: string;
};

/** A channel adapter: send a batch, get one outcome per item, in order. */
export interface Sink {
  readonly channel: Channel;
  /** Provider name for receipts and breakers. */
  readonly provider: string;
  /** True when a repeated send has no visible effect (the inbox): no dedup key needed. */
  readonly idempotent: boolean;
  /** Most recipients one call takes. */
  readonly maxBatch: number;
  /**
   * Recipients per provider call (one email, one SMS, 500 FCM tokens). Dispatch records what was
   * sent after each call, so a crash repeats at most the calls in flight. @default maxBatch
   */
  readonly callSize?: number;
  send(items: DeliveryItem[], signal: AbortSignal): Promise<Outcome[]>;
  close(): Promise<void>;
}
