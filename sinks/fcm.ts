import https from 'node:https';
import tls from 'node:tls';
import { initializeApp, deleteApp, cert, type App, type Credential } from 'firebase-admin/app';
import { getMessaging, type Messaging, type TokenMessage } from 'firebase-admin/messaging';
import type { DeliveryItem, Outcome, Sink } from './sink.js';
import { providerLimits, tooLarge } from './limits.js';

/** Options for the FCM sink. */
export interface FcmSinkOptions {
  projectId: string;
  /** A service-account JSON file, or a credential object (the sandbox's). */
  credential: string | Credential;
  /** Send to this loopback port instead of fcm.googleapis.com (the local fake), trusting `ca`. */
  endpoint?: { port: number; ca: Buffer };
  /** Name in receipts and breakers. @default 'fcm' */
  provider?: string;
  /** Concurrent HTTP connections. @default 64 */
  maxSockets?: number;
}

/** Maps one firebase-admin error to an outcome, in one place. */
export function fcmOutcome(err: { code?: string; message?: string } | undefined, token: string): Outcome {
  const code = err?.code ?? 'unknown';
  const reason = `${code}: ${err?.message ?? ''}`.slice(0, 300);
  switch (code) {
    case 'messaging/registration-token-not-registered':
    case 'messaging/invalid-registration-token':
      return { kind: 'invalid_address', reason, address: token };
    case 'messaging/invalid-argument':
      // INVALID_ARGUMENT also means "message too big" or a bad field: only a token FCM names as bad is one.
      return /registration token/i.test(err?.message ?? '')
        ? { kind: 'invalid_address', reason, address: token }
        : { kind: 'permanent', reason, code };
    case 'messaging/message-rate-exceeded':
    case 'messaging/device-message-rate-exceeded':
    case 'messaging/quota-exceeded':
      // firebase-admin does not pass FCM's Retry-After on per-message errors; FCM asks for ≥ 10 s.
      return { kind: 'retry', reason, afterMs: 10_000 };
    case 'messaging/server-unavailable':
    case 'messaging/internal-error':
    case 'messaging/unknown-error':
    case 'app/network-error':
    case 'app/network-timeout':
      return { kind: 'retry', reason };
    default:
      return { kind: 'permanent', reason, code };
  }
}

let appCounter = 0;

/**
 * Push to Android and web through FCM HTTP v1 with firebase-admin: up to 500 tokens a call
 * (sendEach), over keep-alive HTTP/1.1 so a custom agent can point it at the local fake.
 */
export class FcmSink implements Sink {
  readonly channel = 'push' as const;
  readonly idempotent = false;
  readonly maxBatch = 500;
  readonly provider: string;
  private readonly app: App;
  private readonly messaging: Messaging;
  private readonly agent: https.Agent;

  constructor(opts: FcmSinkOptions) {
    this.provider = opts.provider ?? 'fcm';
    const endpoint = opts.endpoint;
    this.agent = new https.Agent({
      keepAlive: true,
      maxSockets: opts.maxSockets ?? 64,
      ...(endpoint ? { ca: endpoint.ca } : {}),
    });
    if (endpoint) {
      // Every connection goes to the fake on loopback, whatever host firebase-admin asks for.
      (this.agent as unknown as { createConnection: typeof tls.connect }).createConnection = ((options: tls.ConnectionOptions) =>
        tls.connect({ ...options, host: '127.0.0.1', port: endpoint.port, servername: 'localhost', ca: endpoint.ca })) as typeof tls.connect;
    }
    this.app = initializeApp({
      projectId: opts.projectId,
      credential: typeof opts.credential === 'string' ? cert(opts.credential) : opts.credential,
      httpAgent: this.agent,
    }, `herald-fcm-${++appCounter}`);
    this.messaging = getMessaging(this.app);
    this.messaging.enableLegacyHttpTransport();
  }

  private message(item: DeliveryItem): TokenMessage {
    const urgent = item.request.tier === 'transactional';
    const ttlMs = item.request.expires_at ? Math.max(0, Date.parse(item.request.expires_at) - Date.now()) : undefined;
    return {
      token: item.recipient.to[0],
      notification: { title: item.content.title, body: item.content.body },
      data: { request_id: item.request.id, category: item.request.category },
      android: { priority: urgent ? 'high' : 'normal', collapseKey: item.request.id.slice(0, 64), ...(ttlMs !== undefined ? { ttl: ttlMs } : {}) },
      webpush: { headers: { Urgency: urgent ? 'high' : 'normal', ...(ttlMs !== undefined ? { TTL: String(Math.floor(ttlMs / 1000)) } : {}) } },
    };
  }

  async send(items: DeliveryItem[]): Promise<Outcome[]> {
    const outcomes: Outcome[] = [];
    for (let i = 0; i < items.length; i += 500) {
      const slice = items.slice(i, i + 500);
      const sized = slice.map((item) => {
        const message = this.message(item);
        const bytes = Buffer.byteLength(JSON.stringify({ notification: message.notification, data: message.data }));
        return { message, tooBig: bytes > providerLimits.fcmMessageBytes ? tooLarge('the FCM message', bytes, providerLimits.fcmMessageBytes, 'bytes') : undefined };
      });
      const sendable = sized.filter((s) => !s.tooBig);
      const answers: Outcome[] = [];
      try {
        if (sendable.length) {
          const result = await this.messaging.sendEach(sendable.map((s) => s.message));
          result.responses.forEach((r, j) => {
            answers.push(r.success ? { kind: 'delivered', providerId: r.messageId } : fcmOutcome(r.error, sendable[j].message.token));
          });
        }
      } catch (err) {
        for (const _ of sendable) answers.push({ kind: 'retry', reason: `fcm: ${(err as Error).message}` });
      }
      let next = 0;
      for (const s of sized) outcomes.push(s.tooBig ?? answers[next++]);
    }
    return outcomes;
  }

  async close(): Promise<void> {
    await deleteApp(this.app);
    this.agent.destroy();
  }
}
