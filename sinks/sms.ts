import { AsyncLocalStorage } from 'node:async_hooks';
import twilio from 'twilio';
import type { DeliveryItem, Outcome, Sink } from './sink.js';
import { providerLimits, tooLarge } from './limits.js';

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

/** The twilio client drops response headers from its errors; each request records Retry-After here. */
const responseHeaders = new AsyncLocalStorage<{ retryAfterMs?: number }>();

function retryAfterMs(value: unknown): number | undefined {
  if (value === undefined) return undefined;
  const seconds = Number(value);
  if (Number.isFinite(seconds)) return Math.max(0, seconds * 1000);
  const at = Date.parse(String(value));
  return Number.isNaN(at) ? undefined : Math.max(0, at - Date.now());
}

/** Maps one Twilio error to an outcome, in one place. */
export function twilioOutcome(err: unknown, retryAfter?: number): Outcome {
  const e = err as { status?: number; code?: number; message?: string };
  const reason = `${e.code ?? e.status ?? 'error'}: ${e.message ?? String(err)}`.slice(0, 300);
  if (e.code === 21610) return { kind: 'permanent', reason, code: '21610', optOut: true };
  if (e.code === 21211 || e.code === 21614) return { kind: 'permanent', reason, code: String(e.code) };
  if (e.code === 20429 || e.status === 429) return { kind: 'retry', reason, afterMs: retryAfter ?? 1_000 };
  if (e.status === undefined || e.status >= 500) return { kind: 'retry', reason };
  return { kind: 'permanent', reason, code: String(e.code ?? e.status) };
}

/** SMS through Twilio's Messages API with the twilio client; numbers are checked for E.164 first. */
export class SmsSink implements Sink {
  readonly channel = 'sms' as const;
  readonly idempotent = false;
  readonly maxBatch = 50;
  readonly callSize = 1;
  readonly provider: string;
  private readonly client: twilio.Twilio;
  private inFlight = 0;
  private readonly waiting: (() => void)[] = [];

  constructor(private readonly opts: SmsSinkOptions) {
    this.provider = opts.provider ?? 'twilio';
    const endpoint = opts.endpoint;
    // The twilio client takes a custom HTTP client: this one keeps Retry-After, and in tests and
    // the sandbox sends to the fake on loopback.
    class HeraldClient extends twilio.RequestClient {
      override async request<T>(o: Parameters<twilio.RequestClient['request']>[0]) {
        const uri = endpoint ? o.uri.replace(/^https:\/\/[^/]+/, endpoint.baseUrl) : o.uri;
        const res = await super.request<T>({ ...o, uri } as never);
        const store = responseHeaders.getStore();
        if (store && res.statusCode === 429) store.retryAfterMs = retryAfterMs((res.headers as Record<string, unknown>)['retry-after']);
        return res;
      }
    }
    this.client = twilio(opts.accountSid, opts.authToken, { httpClient: new HeraldClient({ keepAlive: true, ...(endpoint ? { ca: endpoint.ca } : {}) }) });
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
      const body = `${content.title}\n${content.body}`;
      // Never cut a message short in silence: too long for Twilio is a failed delivery that says so.
      if (body.length > providerLimits.smsChars) return tooLarge('the SMS body', body.length, providerLimits.smsChars, 'characters');
      const seen: { retryAfterMs?: number } = {};
      try {
        const msg = await this.slot(() => responseHeaders.run(seen, () => this.client.messages.create({
          to,
          body,
          ...(this.opts.from.startsWith('MG') ? { messagingServiceSid: this.opts.from } : { from: this.opts.from }),
        })));
        return { kind: 'delivered', providerId: msg.sid };
      } catch (err) {
        return twilioOutcome(err, seen.retryAfterMs);
      }
    }));
  }

  async close(): Promise<void> {}
}

