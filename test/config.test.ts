import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../runtime/config.js';
import { ApnsSink } from '../sinks/apns.js';
import { certDir, fakeTls } from '../sinks/fakes/script.js';
import { ApnsFake } from '../sinks/fakes/apns-fake.js';
import { eventually, Harness } from './harness.js';

describe('configuration', () => {
  it('reports every problem together', () => {
    let err: unknown;
    try {
      loadConfig({
        CLICKHOUSE_URL: 'not a url', HERALD_NAMESPACE: 'Bad-NS', SMTP_URL: 'http://x', APNS_KEY_FILE: '/nope.p8',
        TWILIO_ACCOUNT_SID: 'AC1', HERALD_DEFAULT_CHANNELS: 'email,fax',
      });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    const text = (err as ConfigError).problems.join('\n');
    for (const where of ['CLICKHOUSE_URL', 'HERALD_NAMESPACE', 'SMTP_URL', 'HERALD_DEFAULT_CHANNELS']) expect(text).toContain(where);
  });

  it('checks provider credentials as sets, and reads secrets from files', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cfg-'));
    fs.writeFileSync(path.join(dir, 'token'), 'from-file\n');
    expect(() => loadConfig({ APNS_KEY_FILE: path.join(certDir, 'fake-apns-auth-key.p8'), TWILIO_ACCOUNT_SID: 'AC1' }))
      .toThrow(/APNs token auth needs APNS_KEY_FILE, APNS_KEY_ID, APNS_TEAM_ID and APNS_TOPIC together[\s\S]*TWILIO: needs/);
    const cfg = loadConfig({ TWILIO_ACCOUNT_SID: 'AC1', TWILIO_AUTH_TOKEN_FILE: path.join(dir, 'token'), TWILIO_FROM: '+15550000', SMTP_URL: 'smtp://a:25,smtp://b:25' });
    expect(cfg.providers.twilio).toEqual([{ accountSid: 'AC1', authToken: 'from-file', from: '+15550000' }]);
    expect(cfg.providers.smtpUrls).toEqual(['smtp://a:25', 'smtp://b:25']);
  });
});

describe('APNs certificate auth', () => {
  const fake = new ApnsFake();
  beforeAll(async () => { await fake.start(); });
  afterAll(async () => fake.stop());

  it('delivers with a client certificate instead of a token', async () => {
    const sink = new ApnsSink({
      auth: { kind: 'certificate', cert: path.join(certDir, 'fake-apns-client.crt'), key: path.join(certDir, 'fake-apns-client.key') },
      topic: 'com.example.herald', address: '127.0.0.1', port: fake.port, ca: [fakeTls.cert],
    });
    const token = 'cd'.repeat(32);
    const [outcome] = await sink.send([{
      request: { id: 'r', tenant: 't', idempotency_key: 'k', tier: 'social', category: 'c', channels: ['push'], accepted_at: Date.now() },
      recipient: { user_id: 'u', locale: 'en', to: [token], platforms: ['ios'] }, content: { title: 't', body: 'b' },
    }]);
    await sink.close();
    expect(outcome.kind).toBe('delivered');
    expect(fake.script.delivered(token)[0].headers['apns-priority']).toBe('5');
  });
});

describe('a channel without credentials when the sandbox is off', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await Harness.create('nosandbox', { HERALD_SANDBOX: 'off' });
    await h.load([{ type: 'user', tenant: 'acme', id: 'dee', phone: '+15550111', locale: 'en', timezone: 'UTC' }]);
    await h.start();
  });
  afterAll(async () => h?.close());

  it('is disabled, and its deliveries get a failed receipt saying so', async () => {
    expect(h.pipeline!.providers!.fakes).toEqual({});
    await h.publish({
      tenant: 'acme', idempotency_key: 'no-sms', tier: 'transactional', category: 'otp',
      content: { title: 'Code', body: '1234' }, recipients: { user_ids: ['dee'] }, channels: ['sms'],
    });
    const [row] = await eventually(async () => {
      const r = await h.receipts("status = 'failed'");
      return r.length ? r : null;
    }, 'the failed receipt');
    expect(row).toMatchObject({ channel: 'sms', user_id: 'dee', reason: 'channel sms is not configured' });
  });
});
