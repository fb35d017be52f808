import http2 from 'node:http2';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { AddressInfo } from 'node:net';
import { certDir, fakeTls, FakeScript } from './script.js';

/** The public half of the fake token-auth key (sinks/fakes/certs/fake-apns-auth-key.p8). */
const tokenKey = crypto.createPublicKey(fs.readFileSync(path.join(certDir, 'fake-apns-auth-key.pub.pem')));

// Providers reuse a token for up to an hour; like APNs, verify each one once.
const verified = new Map<string, { ok: true; kid: string; iss: string }>();

function verifyJwt(jwt: string): { ok: true; kid: string; iss: string } | { ok: false; reason: string } {
  const known = verified.get(jwt);
  if (known) return known;
  const result = checkJwt(jwt);
  if (result.ok) {
    if (verified.size > 1_000) verified.clear();
    verified.set(jwt, result);
  }
  return result;
}

function checkJwt(jwt: string): { ok: true; kid: string; iss: string } | { ok: false; reason: string } {
  const [h, p, s] = jwt.split('.');
  if (!h || !p || !s) return { ok: false, reason: 'MissingProviderToken' };
  const header = JSON.parse(Buffer.from(h, 'base64url').toString());
  const payload = JSON.parse(Buffer.from(p, 'base64url').toString());
  if (header.alg !== 'ES256' || !header.kid || !payload.iss || !payload.iat) return { ok: false, reason: 'InvalidProviderToken' };
  const valid = crypto.verify('sha256', Buffer.from(`${h}.${p}`), { key: tokenKey, dsaEncoding: 'ieee-p1363' }, Buffer.from(s, 'base64url'));
  return valid ? { ok: true, kid: header.kid, iss: payload.iss } : { ok: false, reason: 'InvalidProviderToken' };
}

/**
 * A fake APNs: HTTP/2 over TLS, `POST /3/device/<token>`, checks the provider JWT (token auth) or
 * the client certificate, the `apns-topic` and the payload, and answers like Apple: 200 with
 * `apns-id`, or a status and `{"reason": …}`.
 */
export class ApnsFake {
  readonly script = new FakeScript();
  private server?: http2.Http2SecureServer;
  private sessions = new Set<http2.ServerHttp2Session>();
  port = 0;

  async start(port = 0): Promise<number> {
    this.server = http2.createSecureServer({ ...fakeTls, allowHTTP1: false, requestCert: true, rejectUnauthorized: false });
    this.server.on('session', (session) => {
      this.sessions.add(session);
      session.on('close', () => this.sessions.delete(session));
    });
    this.server.on('stream', (stream, headers) => void this.handle(stream, headers));
    await new Promise<void>((resolve) => this.server!.listen(port, '127.0.0.1', () => resolve()));
    this.port = (this.server.address() as AddressInfo).port;
    return this.port;
  }

  private async handle(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const c of stream) chunks.push(c as Buffer);
    await this.script.pause();
    const reply = (status: number, reason?: string, extra: Record<string, string> = {}) => {
      const token = String(headers[':path'] ?? '').replace('/3/device/', '');
      const apnsId = reason ? undefined : crypto.randomUUID();
      this.script.record({
        target: token, status, body: chunks.length ? safeJson(Buffer.concat(chunks)) : null,
        headers: pick(headers, ['apns-topic', 'apns-push-type', 'apns-priority', 'apns-collapse-id', 'apns-expiration', 'apns-id']),
      });
      if (stream.destroyed) return;
      stream.respond({ ':status': status, ...(apnsId ? { 'apns-id': apnsId } : {}), ...extra, ...(reason ? { 'content-type': 'application/json' } : {}) });
      stream.end(reason ? JSON.stringify({ reason, ...(status === 410 ? { timestamp: Date.now() } : {}) }) : undefined);
    };
    const pathMatch = /^\/3\/device\/([0-9a-fA-F]+)$/.exec(String(headers[':path']));
    if (headers[':method'] !== 'POST') return reply(405, 'MethodNotAllowed');
    if (!pathMatch) return reply(400, 'BadDeviceToken');
    const auth = headers.authorization;
    if (auth) {
      const v = verifyJwt(String(auth).replace(/^bearer /i, ''));
      if (!v.ok) return reply(403, v.reason);
    } else {
      const socket = stream.session?.socket as unknown as { getPeerCertificate?: () => { subject?: unknown } } | undefined;
      const cert = socket?.getPeerCertificate?.();
      if (!cert || !cert.subject) return reply(403, 'MissingProviderToken');
    }
    if (!headers['apns-topic'] && auth) return reply(400, 'MissingTopic');
    // Apple refuses a payload over 4 KB with 413 PayloadTooLarge.
    if (Buffer.concat(chunks).length > 4_096) return reply(413, 'PayloadTooLarge');
    const body = safeJson(Buffer.concat(chunks)) as { aps?: unknown } | null;
    if (!body || typeof body !== 'object' || !body.aps) return reply(400, 'PayloadEmpty');
    const failure = this.script.take(pathMatch[1]);
    if (failure) {
      switch (failure.kind) {
        case 'invalid': return reply(410, 'Unregistered');
        case 'bad_token': return reply(400, 'BadDeviceToken');
        case 'throttle': return reply(429, 'TooManyRequests');
        case 'retry': return reply(503, 'ServiceUnavailable');
        default: return reply(400, 'BadTopic');
      }
    }
    reply(200);
  }

  /** Goes down: drops every connection and stops listening until `start(samePort)`. */
  async stop(): Promise<void> {
    for (const s of this.sessions) s.destroy();
    if (this.server) await new Promise<void>((resolve) => this.server!.close(() => resolve()));
    this.server = undefined;
  }
}

function safeJson(buf: Buffer): unknown {
  try { return JSON.parse(buf.toString('utf8')); } catch { return null; }
}

function pick(h: http2.IncomingHttpHeaders, names: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const n of names) if (h[n] !== undefined) out[n] = String(h[n]);
  return out;
}
