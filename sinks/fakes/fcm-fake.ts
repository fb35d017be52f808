import crypto from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { HttpsFake } from './script.js';

/** The bearer token the fake accepts (the sandbox credential hands it out). */
export const FAKE_FCM_ACCESS_TOKEN = 'herald-fake-fcm-access-token';

function fcmError(res: ServerResponse, http: number, status: string, errorCode: string, message: string, headers: Record<string, string> = {}) {
  res.writeHead(http, { 'content-type': 'application/json; charset=UTF-8', ...headers });
  res.end(JSON.stringify({
    error: {
      code: http, message, status,
      details: [{ '@type': 'type.googleapis.com/google.firebase.fcm.v1.FcmError', errorCode }],
    },
  }));
}

/**
 * A fake FCM HTTP v1 API over HTTPS: `POST /v1/projects/<id>/messages:send` with a bearer token,
 * answering `{"name": …}` or FCM's error bodies (UNREGISTERED, INVALID_ARGUMENT, QUOTA_EXCEEDED
 * with Retry-After, UNAVAILABLE, INTERNAL).
 */
export class FcmFake extends HttpsFake {
  protected answer(req: IncomingMessage, res: ServerResponse, received: Buffer): void {
    const match = /^\/v1\/projects\/([^/]+)\/messages:send$/.exec(req.url ?? '');
    let body: { message?: { token?: string; notification?: unknown; apns?: unknown; android?: unknown; webpush?: unknown; data?: unknown } } = {};
    try { body = JSON.parse(received.toString('utf8')); } catch { /* checked below */ }
    const token = body.message?.token ?? '';
    const record = (status: number) => this.script.record({ target: token, status, body: body.message ?? null, headers: { project: match?.[1] ?? '' } });
    if (req.method !== 'POST' || !match) { record(404); return fcmError(res, 404, 'NOT_FOUND', 'UNSPECIFIED_ERROR', 'Not found'); }
    if (req.headers.authorization !== `Bearer ${FAKE_FCM_ACCESS_TOKEN}`) {
      record(401);
      return fcmError(res, 401, 'UNAUTHENTICATED', 'THIRD_PARTY_AUTH_ERROR', 'Request had invalid authentication credentials.');
    }
    if (!token) { record(400); return fcmError(res, 400, 'INVALID_ARGUMENT', 'INVALID_ARGUMENT', 'The message has no token.'); }
    // FCM refuses a message whose notification and data exceed 4 KB, with INVALID_ARGUMENT.
    const size = Buffer.byteLength(JSON.stringify({ notification: body.message?.notification, data: body.message?.data }));
    if (size > 4_096) { record(400); return fcmError(res, 400, 'INVALID_ARGUMENT', 'INVALID_ARGUMENT', `Message is too big: ${size} bytes`); }
    const failure = this.script.take(token);
    if (failure) {
      switch (failure.kind) {
        case 'invalid': record(404); return fcmError(res, 404, 'NOT_FOUND', 'UNREGISTERED', 'Requested entity was not found.');
        case 'bad_token': record(400); return fcmError(res, 400, 'INVALID_ARGUMENT', 'INVALID_ARGUMENT', 'The registration token is not a valid FCM registration token');
        case 'throttle': record(429); return fcmError(res, 429, 'RESOURCE_EXHAUSTED', 'QUOTA_EXCEEDED', 'Quota exceeded.', { 'retry-after': String(failure.retryAfterSec ?? 1) });
        case 'retry': record(500); return fcmError(res, 500, 'INTERNAL', 'INTERNAL', 'Internal error encountered.');
        default: record(403); return fcmError(res, 403, 'PERMISSION_DENIED', 'SENDER_ID_MISMATCH', 'SenderId mismatch');
      }
    }
    record(200);
    res.writeHead(200, { 'content-type': 'application/json; charset=UTF-8' });
    res.end(JSON.stringify({ name: `projects/${match[1]}/messages/${crypto.randomUUID()}` }));
  }

}
