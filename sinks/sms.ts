import twilio from 'twilio';
import type { DeliveryItem, Outcome, Sink } from './sink.js';

/** Options for the Twilio SMS sink. */
export interface SmsSinkOptions {
  accountSid: string;
  authToken: string;
  /** Sender number (E.164) or a Messaging Service SID (MG…). */
  from: string;
  /** Send to this base URL instead of https://api.twilio.com (the local fake), trusting `ca`. */
  endpoint?: { baseUrl: string; ca: Buffer };
  /** Name in receipts and breakers. @default 'twilio' */
  provider?: string;
  /** Messages in flight at once, across every batch this sink is sending. @default 32 */
  concurrency?: number;
}

export const E164 = /^\+[1-9]\d{6,14}$/;

/** Maps one Twilio error to an outcome, in one place. */
export function twilioOutcome(err: unknown): Outcome {
  const e = err as { status?: number; code?: number; message?: string };
  const reason = `${e.code ?? e.status ?? 'error'}: ${e.message ?? String(err)}`.slice(0, 300);
  if (e.code === 21610) return { kind: 'permanent', reason, code: '21610', optOut: true };
  if (e.code === 21211 || e.code === 21614) return { kind: 'permanent', reason, code: String(e.code) };
  if (e.code === 20429 || e.status === 429) return { kind: 'retry', reason, afterMs: 1_000 };
  if (e.status === undefined || e.status >= 500) return { kind: 'retry', reason };
  return { kind: 'permanent', reason, code: String(e.code ?? e.status) };
}

/** SMS through Twilio's Messages API with the twilio client; numbers are checked for E.164 first. */
export class SmsSink implements Sink {
  readonly channel = 'sms' as const;
  readonly idempotent = false;
  readonly maxBatch = 50;
  readonly provider: string;
  private readonly client: twilio.Twilio;
  private inFlight = 0;
  private readonly waiting: (() => void)[] = [];

  constructor(private readonly opts: SmsSinkOptions) {
    this.provider = opts.provider ?? 'twilio';
    const endpoint = opts.endpoint;
    let httpClient: twilio.RequestClient | undefined;
    if (endpoint) {
      // The twilio client takes a custom HTTP client: this one sends to the fake on loopback.
      class LoopbackClient extends twilio.RequestClient {
        override request<T>(o: Parameters<twilio.RequestClient['request']>[0]) {
          return super.request<T>({ ...o, uri: o.uri.replace(/^https:\/\/[^/]+/, endpoint!.baseUrl) } as Parameters<twilio.RequestClient['request']>[0] as never);
        }
      }
      httpClient = new LoopbackClient({ keepAlive: true, ca: endpoint.ca });
    } else {
      httpClient = new twilio.RequestClient({ keepAlive: true });
    }
    this.client = twilio(opts.accountSid, opts.authToken, { httpClient });
  }

  /** One slot of the sink-wide bound on requests in flight (shared by concurrent batches). */
  private async slot<T>(fn: () => Promise<T>): Promise<T> {
    if (this.inFlight >= (this.opts.concurrency ?? 32)) await new Promise<void>((resolve) => this.waiting.push(resolve));
    else this.inFlight++;
    try {
      return await fn();
    } finally {
      const next = this.waiting.shift();
      if (next) next();
      else this.inFlight--;
    }
  }

  async send(items: DeliveryItem[]): Promise<Outcome[]> {
    return Promise.all(items.map(async ({ recipient, content }): Promise<Outcome> => {
      const to = recipient.to[0];
      if (!E164.test(to ?? '')) return { kind: 'permanent', reason: `"${to}" is not an E.164 phone number`, code: 'E164' };
      try {
        const msg = await this.slot(() => this.client.messages.create({
          to,
          body: `${content.title}\n${content.body}`.slice(0, 1_600),
          ...(this.opts.from.startsWith('MG') ? { messagingServiceSid: this.opts.from } : { from: this.opts.from }),
        }));
        return { kind: 'delivered', providerId: msg.sid };
      } catch (err) {
        return twilioOutcome(err);
      }
    }));
  }

  async close(): Promise<void> {}
}

