import { sha256 } from '../runtime/ids.js';
import nodemailer, { type Transporter } from 'nodemailer';
import type { DeliveryItem, Outcome, Sink } from './sink.js';
import { providerLimits, tooLarge } from './limits.js';

/** Options for the SMTP sink. */
export interface EmailSinkOptions {
  /** smtp://user:pass@host:port (smtps:// for implicit TLS). */
  url: string;
  from: string;
  /** Name in receipts and breakers. @default 'smtp' */
  provider?: string;
  /** Pooled connections. @default 5 */
  maxConnections?: number;
}

/** A stable Message-ID per (tenant, request, recipient): a rare duplicate is recognisable as one. */
export function messageIdFor(tenant: string, requestId: string, userId: string): string {
  const h = sha256(`${tenant}\u0000${requestId}\u0000${userId}`).slice(0, 32);
  return `<${h}@herald>`;
}

/** Maps an SMTP or connection error to an outcome, in one place. */
export function smtpOutcome(err: unknown): Outcome {
  const e = err as { responseCode?: number; code?: string; message?: string };
  const reason = (e.message ?? String(err)).slice(0, 300);
  if (typeof e.responseCode === 'number') {
    if (e.responseCode >= 500) return { kind: 'permanent', reason, code: String(e.responseCode) };
    return { kind: 'retry', reason, afterMs: undefined };
  }
  return { kind: 'retry', reason: `${e.code ?? 'error'}: ${reason}` };
}

/** Email over SMTP with nodemailer's pooled transport; one message per recipient. */
export class EmailSink implements Sink {
  readonly channel = 'email' as const;
  readonly idempotent = false;
  readonly maxBatch = 50;
  readonly callSize = 1;
  readonly provider: string;
  private readonly transport: Transporter;

  constructor(private readonly opts: EmailSinkOptions) {
    this.provider = opts.provider ?? 'smtp';
    this.transport = nodemailer.createTransport({
      url: opts.url,
      pool: true,
      maxConnections: opts.maxConnections ?? 5,
      maxMessages: Infinity,
      connectionTimeout: 10_000,
      greetingTimeout: 10_000,
      socketTimeout: 30_000,
    } as Parameters<typeof nodemailer.createTransport>[0]);
  }

  async send(items: DeliveryItem[]): Promise<Outcome[]> {
    return Promise.all(items.map(async ({ request, recipient, content }): Promise<Outcome> => {
      if (content.title.length > providerLimits.emailSubjectChars) {
        return tooLarge('the subject', content.title.length, providerLimits.emailSubjectChars, 'characters');
      }
      try {
        const info = await this.transport.sendMail({
          from: this.opts.from,
          to: recipient.to[0],
          subject: content.title,
          text: content.body,
          html: content.html,
          messageId: messageIdFor(request.tenant, request.id, recipient.user_id),
          headers: { 'X-Herald-Request': request.id, 'X-Herald-Category': request.category },
        });
        return { kind: 'delivered', providerId: info.messageId };
      } catch (err) {
        return smtpOutcome(err);
      }
    }));
  }

  async close(): Promise<void> {
    this.transport.close();
  }
}
