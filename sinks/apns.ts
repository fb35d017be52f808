import apn from '@parse/node-apn';
import type { DeliveryItem, Outcome, Sink } from './sink.js';
import { providerLimits, tooLarge } from './limits.js';

/** How Herald authenticates to APNs. */
export type ApnsAuth =
  | { kind: 'token'; /** the .p8 key: a path or its PEM text */ key: string | Buffer; keyId: string; teamId: string }
  | { kind: 'certificate'; cert: string | Buffer; key: string | Buffer; passphrase?: string };

/** Options for the APNs sink. */
export interface ApnsSinkOptions {
  auth: ApnsAuth;
  /** The app's bundle id, sent as `apns-topic`. */
  topic: string;
  /** Production or sandbox APNs. @default false */
  production?: boolean;
  /** Another host (the local fake); @default Apple's */
  address?: string;
  port?: number;
  /** Extra CAs to trust (the fake's certificate). */
  ca?: Buffer[];
  /** Name in receipts and breakers. @default 'apns' */
  provider?: string;
}

/** Maps one APNs failure to an outcome, in one place. */
export function apnsOutcome(failure: { device: string; status?: number | string; response?: { reason?: string }; error?: Error }): Outcome {
  const status = Number(failure.status ?? 0);
  const reason = failure.response?.reason ?? failure.error?.message ?? `status ${status}`;
  if (status === 410 || (status === 400 && (reason === 'BadDeviceToken' || reason === 'DeviceTokenNotForTopic'))) {
    return { kind: 'invalid_address', reason: `${status} ${reason}`, address: failure.device };
  }
  if (status === 429 || status >= 500 || !status) return { kind: 'retry', reason: `${status || 'connection'} ${reason}` };
  return { kind: 'permanent', reason: `${status} ${reason}`, code: String(status) };
}

/**
 * Push to iOS through APNs with @parse/node-apn over HTTP/2 (token or certificate auth). Items that
 * share content go out as one notification to many tokens; `apns-collapse-id` is the request id,
 * so a rare duplicate collapses on the device.
 */
export class ApnsSink implements Sink {
  readonly channel = 'push' as const;
  readonly idempotent = false;
  readonly maxBatch = 500;
  readonly provider: string;
  private readonly client: apn.Provider;

  constructor(private readonly opts: ApnsSinkOptions) {
    this.provider = opts.provider ?? 'apns';
    const auth = opts.auth.kind === 'token'
      ? { token: { key: opts.auth.key, keyId: opts.auth.keyId, teamId: opts.auth.teamId } }
      : { cert: opts.auth.cert, key: opts.auth.key, passphrase: opts.auth.passphrase };
    this.client = new apn.Provider({
      ...auth,
      production: opts.production ?? false,
      ...(opts.address ? { address: opts.address } : {}),
      ...(opts.port ? { port: opts.port } : {}),
      ...(opts.ca ? { ca: opts.ca } : {}),
      requestTimeout: 10_000,
      connectionRetryLimit: 2,
    } as apn.ProviderOptions);
  }

  private notification(item: DeliveryItem): apn.Notification {
    const note = new apn.Notification();
    note.topic = this.opts.topic;
    note.pushType = 'alert';
    note.priority = item.request.tier === 'transactional' ? 10 : 5;
    note.alert = { title: item.content.title, body: item.content.body };
    note.collapseId = item.request.id.slice(0, 64);
    note.expiry = item.request.expires_at ? Math.floor(Date.parse(item.request.expires_at) / 1000) : 0;
    note.payload = { request_id: item.request.id, category: item.request.category };
    return note;
  }

  async send(items: DeliveryItem[]): Promise<Outcome[]> {
    const outcomes: Outcome[] = new Array(items.length);
    // One notification per (request, locale): node-apn fans it out to every token over one connection.
    const groups = new Map<string, number[]>();
    items.forEach((item, i) => {
      const key = `${item.request.id}\u0000${item.recipient.locale}`;
      const list = groups.get(key);
      if (list) list.push(i);
      else groups.set(key, [i]);
    });
    await Promise.all([...groups.values()].map(async (indexes) => {
      const byToken = new Map<string, number[]>();
      for (const i of indexes) {
        const token = items[i].recipient.to[0];
        byToken.set(token, [...(byToken.get(token) ?? []), i]);
      }
      const note = this.notification(items[indexes[0]]);
      // length() compiles the payload once; the send reuses it.
      const bytes = (note as unknown as { length(): number }).length();
      if (bytes > providerLimits.apnsPayloadBytes) {
        for (const i of indexes) outcomes[i] = tooLarge('the APNs payload', bytes, providerLimits.apnsPayloadBytes, 'bytes');
        return;
      }
      try {
        const result = await this.client.send(note, [...byToken.keys()]);
        for (const sent of result.sent) for (const i of byToken.get(sent.device) ?? []) outcomes[i] = { kind: 'delivered' };
        for (const failed of result.failed) {
          const outcome = apnsOutcome(failed as Parameters<typeof apnsOutcome>[0]);
          for (const i of byToken.get(failed.device) ?? []) outcomes[i] = outcome;
        }
      } catch (err) {
        for (const i of indexes) outcomes[i] = { kind: 'retry', reason: `apns: ${(err as Error).message}` };
      }
    }));
    for (let i = 0; i < outcomes.length; i++) outcomes[i] ??= { kind: 'retry', reason: 'apns gave no answer for this token' };
    return outcomes;
  }

  async close(): Promise<void> {
    await this.client.shutdown();
  }
}
