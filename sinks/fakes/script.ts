import fs from 'node:fs';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import type { IncomingMessage, ServerResponse } from 'node:http';
import path from 'node:path';
import { projectRoot } from '../../runtime/root.js';

export const certDir = path.join(projectRoot, 'sinks', 'fakes', 'certs');
/** The fakes' TLS certificate and key, and the CA clients must trust to reach them. */
export const fakeTls = {
  cert: fs.readFileSync(path.join(certDir, 'fake-tls.crt')),
  key: fs.readFileSync(path.join(certDir, 'fake-tls.key')),
};

/** One scripted answer, in provider terms (each fake turns it into its own wire format). */
export interface ScriptedFailure {
  /** invalid: the token/address is dead; permanent: refused for good; retry: try later; throttle: 429. */
  kind: 'invalid' | 'bad_token' | 'permanent' | 'retry' | 'throttle' | 'unsubscribed' | 'not_mobile';
  /** Seconds for Retry-After (throttle). */
  retryAfterSec?: number;
  /** How many times to answer so, then succeed. @default Infinity */
  times?: number;
}

/** What one fake received and answered. */
export interface FakeRecord {
  target: string;
  status: number;
  body: unknown;
  headers: Record<string, string>;
  at: number;
}

/**
 * Per-target scripting shared by the fakes: fail a token or address in one of the provider's ways,
 * answer slowly, or be down. `'*'` scripts every target.
 */
export class FakeScript {
  private readonly rules = new Map<string, ScriptedFailure & { times: number }>();
  readonly records: FakeRecord[] = [];
  delayMs = 0;
  private log?: string;

  /** Appends every answer to a JSONL file (sandbox mode, so people can look). */
  recordTo(file: string): void {
    fs.mkdirSync(path.dirname(file), { recursive: true });
    this.log = file;
  }

  fail(target: string, failure: ScriptedFailure): void {
    this.rules.set(target, { ...failure, times: failure.times ?? Infinity });
  }

  clear(): void {
    this.rules.clear();
    this.delayMs = 0;
  }

  /** The failure to answer for this target now, if any (consumes one of its `times`). */
  take(target: string): ScriptedFailure | undefined {
    const rule = this.rules.get(target) ?? this.rules.get('*');
    if (!rule || rule.times <= 0) return undefined;
    rule.times--;
    return rule;
  }

  record(r: Omit<FakeRecord, 'at'>): void {
    const entry = { ...r, at: Date.now() };
    this.records.push(entry);
    if (this.records.length > 2_000_000) this.records.splice(0, 1_000_000);
    if (this.log) fs.appendFileSync(this.log, `${JSON.stringify(entry)}\n`);
  }

  /** Successful deliveries to `target`. */
  delivered(target?: string): FakeRecord[] {
    return this.records.filter((r) => r.status < 300 && (target === undefined || r.target === target));
  }

  async pause(): Promise<void> {
    if (this.delayMs > 0) await new Promise((r) => setTimeout(r, this.delayMs));
  }
}

/**
 * A provider fake over HTTPS on loopback: reads each request body, applies the script's delay, and
 * hands the request to `answer`. `stop()` drops every connection (the provider going down).
 */
export abstract class HttpsFake {
  readonly script = new FakeScript();
  private server?: https.Server;
  port = 0;

  protected abstract answer(req: IncomingMessage, res: ServerResponse, body: Buffer): void;

  async start(port = 0): Promise<number> {
    this.server = https.createServer({ ...fakeTls, keepAlive: true }, (req, res) => void this.receive(req, res));
    this.server.keepAliveTimeout = 60_000;
    await new Promise<void>((resolve) => this.server!.listen(port, '127.0.0.1', () => resolve()));
    this.port = (this.server.address() as AddressInfo).port;
    return this.port;
  }

  private async receive(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    await this.script.pause();
    this.answer(req, res, Buffer.concat(chunks));
  }

  async stop(): Promise<void> {
    if (!this.server) return;
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server!.close(() => resolve()));
    this.server = undefined;
  }
}
