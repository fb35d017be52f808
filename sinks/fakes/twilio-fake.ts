import crypto from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { HttpsFake } from './script.js';

const twilioErrors = {
  invalid: { status: 400, code: 21211, message: "The 'To' number is not a valid phone number." },
  not_mobile: { status: 400, code: 21614, message: "'To' number is not a valid mobile number" },
  unsubscribed: { status: 400, code: 21610, message: 'Attempt to send to unsubscribed recipient' },
  throttle: { status: 429, code: 20429, message: 'Too Many Requests' },
  retry: { status: 503, code: 20503, message: 'Service Unavailable' },
  permanent: { status: 400, code: 21408, message: 'Permission to send an SMS has not been enabled for the region' },
  bad_token: { status: 400, code: 21211, message: "The 'To' number is not a valid phone number." },
} as const;

/**
 * A fake Twilio Messages API over HTTPS: `POST /2010-04-01/Accounts/<sid>/Messages.json` with
 * basic auth and a form body; answers 201 with a message resource or Twilio's error JSON.
 * `accounts` maps account SID → auth token.
 */
export class TwilioFake extends HttpsFake {
  constructor(private readonly accounts: Record<string, string>) {
    super();
  }

  protected answer(req: IncomingMessage, res: ServerResponse, received: Buffer): void {
    const form = new URLSearchParams(received.toString('utf8'));
    const to = form.get('To') ?? '';
    const json = (status: number, body: unknown, extra: Record<string, string> = {}) => {
      this.script.record({ target: to, status, body: Object.fromEntries(form), headers: {} });
      res.writeHead(status, { 'content-type': 'application/json', ...extra });
      res.end(JSON.stringify(body));
    };
    const match = /^\/2010-04-01\/Accounts\/([^/]+)\/Messages\.json$/.exec(req.url ?? '');
    if (req.method !== 'POST' || !match) return json(404, { code: 20404, message: 'The requested resource was not found', status: 404 });
    const [user, pass] = Buffer.from(String(req.headers.authorization ?? '').replace(/^Basic /, ''), 'base64').toString().split(':');
    if (user !== match[1] || this.accounts[user] === undefined || this.accounts[user] !== pass) {
      return json(401, { code: 20003, message: 'Authenticate', status: 401 });
    }
    if (!to || !form.get('Body') || !(form.get('From') || form.get('MessagingServiceSid'))) {
      return json(400, { code: 21604, message: "A 'To' phone number, 'From' and 'Body' are required.", status: 400 });
    }
    const failure = this.script.take(to);
    if (failure) {
      const e = twilioErrors[failure.kind];
      return json(e.status, { code: e.code, message: e.message, more_info: `https://www.twilio.com/docs/errors/${e.code}`, status: e.status },
        failure.kind === 'throttle' ? { 'retry-after': String(failure.retryAfterSec ?? 1) } : {});
    }
    const sid = `SM${crypto.randomBytes(16).toString('hex')}`;
    json(201, {
      sid, account_sid: match[1], to, from: form.get('From'), body: form.get('Body'), status: 'queued',
      date_created: new Date().toUTCString(), uri: `/2010-04-01/Accounts/${match[1]}/Messages/${sid}.json`,
    });
  }

}
