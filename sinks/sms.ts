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
  /** Messages in flight at once. @default 32 */
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

  async send(items: DeliveryItem[]): Promise<Outcome[]> {
    const outcomes: Outcome[] = new Array(items.length);
    let next = 0;
    const worker = async () => {
      while (next < items.length) {
        const i = next++;
        const { recipient, content } = items[i];
        const to = recipient.to[0];
        if (!E164.test(to ?? '')) {
          outcomes[i] = { kind: 'permanent', reason: `"${to}" is not an E.164 phone number`, code: 'E164' };
          continue;
        }
        try {
          const msg = await this.client.messages.create({
            to,
            body: `${content.title}\n${content.body}`.slice(0, 1_600),
            ...(this.opts.from.startsWith('MG') ? { messagingServiceSid: this.opts.from } : { from: this.opts.from }),
          });
          outcomes[i] = { kind: 'delivered', providerId: msg.sid };
        } catch (err) {
          outcomes[i] = twilioOutcome(err);
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(this.opts.concurrency ?? 32, items.length) }, worker));
    return outcomes;
  }

  async close(): Promise<void> {}
}

