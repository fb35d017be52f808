import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { createLogger } from '../../runtime/logger.js';

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
