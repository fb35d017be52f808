import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { createLogger } from '../../runtime/logger.js';
import { scrub } from '../../runtime/scrub.js';

describe('logging', () => {
  it('redacts emails, phone numbers, device tokens and credentials', () => {
    const lines: string[] = [];
    const sink = new Writable({ write(chunk, _enc, cb) { lines.push(String(chunk)); cb(); } });
    const log = createLogger('info', sink);
    log.info({ email: 'ada@example.com', phone: '+15550100', token: 'abcd', recipient: { to: ['ada@example.com'], phone: '+1555' }, password: 'pw', user_id: 'u1' }, 'sent');
    const text = lines.join('');
    expect(text).not.toMatch(/ada@example.com|\+15550100|abcd|"pw"/);
    expect(text).toContain('[redacted]');
    expect(text).toContain('"user_id":"u1"');
  });
});

describe('scrubbing error text', () => {
  it('replaces addresses, phone numbers, tokens and URL credentials, and keeps the rest', () => {
    const text = scrub('550 5.1.1 <ada@example.com>: mailbox unavailable via smtp://herald:hunter2@mail.example.com:587; ' +
      'Twilio 21610: +15550100 unsubscribed; BadDeviceToken 8f2b1c9d4e5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c at 2026-11-24T07:00:00.000Z');
    expect(text).not.toMatch(/ada@example\.com|hunter2|\+15550100|8f2b1c9d4e5a/);
    expect(text).toContain('[email]');
    expect(text).toContain('smtp://[credentials]@mail.example.com:587');
    expect(text).toContain('[phone] unsubscribed');
    expect(text).toContain('BadDeviceToken [token]');
    expect(text).toContain('550 5.1.1');
    expect(text).toContain('2026-11-24T07:00:00.000Z');
  });

  it('scrubs error messages in logs', () => {
    const lines: string[] = [];
    const sink = new Writable({ write(chunk, _enc, cb) { lines.push(String(chunk)); cb(); } });
    createLogger('info', sink).warn({ err: new Error('550 rejected <bob@example.org>') }, 'retrying');
    expect(lines.join('')).not.toMatch(/bob@example\.org/);
    expect(lines.join('')).toContain('550 rejected <[email]>');
  });
});
