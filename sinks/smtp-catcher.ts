import fs from 'node:fs';
import path from 'node:path';
import { SMTPServer, type SMTPServerAddress } from 'smtp-server';
import { simpleParser } from 'mailparser';

/** A message the catcher accepted. */
export interface CaughtMail {
  messageId: string;
  from: string;
  to: string[];
  subject: string;
  text: string;
  html: string;
  received_at: number;
}

/** A scripted answer for one recipient address, to exercise the sink's error mapping. */
export interface SmtpFailure {
  code: number;
  message: string;
  /** How many times to answer so; then accept. @default Infinity */
  times?: number;
}

/**
 * A real SMTP server on loopback that keeps every message: in memory, and (when given a folder)
 * as .eml files plus an index `mailbox.jsonl`. Herald starts it when no SMTP_URL is configured,
 * so email works on a fresh machine; tests use it as the provider.
 */
export class SmtpCatcher {
  readonly messages: CaughtMail[] = [];
  private readonly failures = new Map<string, SmtpFailure>();
  private server?: SMTPServer;
  port = 0;

  /**
   * @param dir keep messages there as .eml plus an index
   * @param parse parse bodies (subject, text, html); off for load tests, which only count recipients
   */
  constructor(private readonly dir?: string, private readonly parse = true) {
    if (dir) fs.mkdirSync(dir, { recursive: true });
  }

  /** Answer `code message` to RCPT TO for `address` (5xx permanent, 4xx temporary). */
  failFor(address: string, failure: SmtpFailure): void {
    this.failures.set(address.toLowerCase(), { times: Infinity, ...failure });
  }

  /** Answer every recipient so (a down or throttling relay). */
  failAll(failure: SmtpFailure): void {
    this.failFor('*', failure);
  }

  clearFailures(): void {
    this.failures.clear();
  }

  async start(port = 0, host = '127.0.0.1'): Promise<number> {
    this.server = new SMTPServer({
      authOptional: true,
      disabledCommands: ['STARTTLS'],
      logger: false,
      size: 10 * 1024 * 1024,
      // Pooled clients keep connections open; do not wait for them on close.
      closeTimeout: 500,
      onRcptTo: (address: SMTPServerAddress, _session, callback) => {
        const rule = this.failures.get(address.address.toLowerCase()) ?? this.failures.get('*');
        if (rule && (rule.times ?? Infinity) > 0) {
          rule.times = (rule.times ?? Infinity) - 1;
          const err = new Error(rule.message) as Error & { responseCode: number };
          err.responseCode = rule.code;
          return callback(err);
        }
        callback();
      },
      onData: (stream, session, callback) => {
        const chunks: Buffer[] = [];
        stream.on('data', (c: Buffer) => chunks.push(c));
        stream.on('end', () => {
          const raw = Buffer.concat(chunks);
          if (!this.parse) {
            const head = raw.subarray(0, 4_096).toString('latin1');
            this.messages.push({
              messageId: /^Message-ID:\s*(\S+)/im.exec(head)?.[1] ?? '', from: session.envelope.mailFrom ? session.envelope.mailFrom.address : '',
              to: session.envelope.rcptTo.map((r) => r.address), subject: '', text: '', html: '', received_at: Date.now(),
            });
            return callback();
          }
          simpleParser(raw)
            .then((parsed) => {
              const mail: CaughtMail = {
                messageId: parsed.messageId ?? '',
                from: session.envelope.mailFrom ? session.envelope.mailFrom.address : '',
                to: session.envelope.rcptTo.map((r) => r.address),
                subject: parsed.subject ?? '',
                text: (parsed.text ?? '').trim(),
                html: typeof parsed.html === 'string' ? parsed.html : '',
                received_at: Date.now(),
              };
              this.messages.push(mail);
              if (this.dir) {
                const name = `${mail.received_at}-${this.messages.length}`;
                fs.writeFileSync(path.join(this.dir, `${name}.eml`), raw);
                fs.appendFileSync(path.join(this.dir, 'mailbox.jsonl'), `${JSON.stringify({ ...mail, file: `${name}.eml` })}\n`);
              }
              callback();
            })
            .catch((err: Error) => callback(err));
        });
      },
    });
    await new Promise<void>((resolve, reject) => {
      this.server!.once('error', reject);
      this.server!.listen(port, host, () => {
        this.server!.off('error', reject);
        // A client vanishing mid-session (ECONNRESET) is its problem, not a reason to crash.
        this.server!.on('error', () => undefined);
        resolve();
      });
    });
    this.port = (this.server.server.address() as { port: number }).port;
    return this.port;
  }

  /** Messages delivered to `address`. */
  to(address: string): CaughtMail[] {
    return this.messages.filter((m) => m.to.includes(address));
  }

  async close(): Promise<void> {
    if (!this.server) return;
    await new Promise<void>((resolve) => this.server!.close(() => resolve()));
    this.server = undefined;
  }
}

/** Reads the catcher's index from its folder (for `herald mailbox`). */
export function readMailbox(dir: string): (CaughtMail & { file: string })[] {
  const index = path.join(dir, 'mailbox.jsonl');
  if (!fs.existsSync(index)) return [];
  return fs.readFileSync(index, 'utf8').split('\n').filter(Boolean).map((line) => JSON.parse(line));
}
