import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventually, Harness } from './harness.js';
import { SmtpCatcher } from '../sinks/smtp-catcher.js';
import type { ApnsFake } from '../sinks/fakes/apns-fake.js';
import type { FcmFake } from '../sinks/fakes/fcm-fake.js';
import type { TwilioFake } from '../sinks/fakes/twilio-fake.js';

const iosToken = 'ab'.repeat(32);
const androidToken = 'android-token-1';

describe('push, SMS and email through the real provider libraries (sandbox fakes)', () => {
  let h: Harness;
  let apns: ApnsFake;
  let fcm: FcmFake;
  let twilio: TwilioFake;
  beforeAll(async () => {
    h = await Harness.create('channels');
    await h.load([
      { type: 'user', tenant: 'acme', id: 'ada', email: 'ada@acme.test', phone: '+15550100', locale: 'en', timezone: 'UTC' },
      { type: 'device', tenant: 'acme', user_id: 'ada', platform: 'ios', token: iosToken },
      { type: 'device', tenant: 'acme', user_id: 'ada', platform: 'android', token: androidToken },
    ]);
    const pipeline = await h.start();
    apns = pipeline.providers!.fakes.apns!;
    fcm = pipeline.providers!.fakes.fcm!;
    twilio = pipeline.providers!.fakes.twilio!;
  });
  afterAll(async () => h?.close());

  it('delivers one APNs push, one FCM message, one email and one SMS, each with the right content and receipts', async () => {
    await h.publish({
      tenant: 'acme', idempotency_key: 'all-channels', tier: 'transactional', category: 'security',
      content: { title: 'Sign-in from {{city}}', body: 'Was it you, {{name}}?' }, data: { city: 'Lyon', name: 'Ada' },
      recipients: { user_ids: ['ada'] }, channels: ['push', 'email', 'sms'],
      expires_at: new Date(Date.now() + 3_600_000).toISOString(),
    });
    await eventually(() => apns.script.delivered().length === 1 && fcm.script.delivered().length === 1
      && twilio.script.delivered().length === 1 && h.smtp.messages.length === 1, 'one delivery per provider');

    const push = apns.script.delivered(iosToken)[0];
    expect(push.body).toMatchObject({ aps: { alert: { title: 'Sign-in from Lyon', body: 'Was it you, Ada?' } } });
    expect(push.headers).toMatchObject({ 'apns-topic': 'com.example.herald', 'apns-push-type': 'alert', 'apns-priority': '10' });
    expect(push.headers['apns-collapse-id']).toBeTruthy();
    expect(Number(push.headers['apns-expiration'])).toBeGreaterThan(Date.now() / 1000);

    const android = fcm.script.delivered(androidToken)[0];
    expect(android.body).toMatchObject({ notification: { title: 'Sign-in from Lyon', body: 'Was it you, Ada?' }, android: { priority: 'high' } });

    const sms = twilio.script.delivered('+15550100')[0];
    expect((sms.body as Record<string, string>).Body).toBe('Sign-in from Lyon\nWas it you, Ada?');

    expect(h.smtp.messages[0]).toMatchObject({ subject: 'Sign-in from Lyon', text: 'Was it you, Ada?' });
    expect(h.smtp.messages[0].messageId).toMatch(/^<[\w-]+@herald>$/);

    const rows = await eventually(async () => {
      const r = await h.receipts("status = 'delivered'");
      return r.length >= 4 ? r : null;
    }, 'four delivered receipts');
    expect(rows.map((r) => `${r.channel}/${r.provider}`).sort()).toEqual([
      'email/smtp', 'push/apns-sandbox', 'push/fcm-sandbox', 'sms/twilio-sandbox',
    ]);
  });

  it('marks a token APNs calls Unregistered inactive, and sends it nothing next time', async () => {
    apns.script.fail(iosToken, { kind: 'invalid' });
    const send = (key: string) => h.publish({
      tenant: 'acme', idempotency_key: key, tier: 'social', category: 'social',
      content: { title: key, body: 'b' }, recipients: { user_ids: ['ada'] }, channels: ['push'],
    });
    await send('unregistered-1');
    await eventually(() => fcm.script.delivered().some((r) => (r.body as { notification: { title: string } }).notification.title === 'unregistered-1'), 'FCM copy of the first');
    const [profile] = await eventually(async () => {
      const p = await h.directory.profiles('acme', ['ada'], true);
      return p[0].devices.length === 1 ? p : null;
    }, 'the iOS device marked inactive');
    expect(profile.devices).toEqual([{ token: androidToken, platform: 'android' }]);
    const failed = await eventually(async () => {
      const r = await h.receipts("status = 'failed' AND channel = 'push'");
      return r.length ? r : null;
    }, 'a failed receipt for the dead token');
    expect(failed[0].reason).toMatch(/token_invalid: 410 Unregistered/);

    const apnsCalls = apns.script.records.length;
    await send('unregistered-2');
    await eventually(() => fcm.script.delivered().some((r) => (r.body as { notification: { title: string } }).notification.title === 'unregistered-2'), 'FCM copy of the second');
    expect(apns.script.records.length).toBe(apnsCalls);
  });

  it('records a Twilio 21610 as an opt-out', async () => {
    await h.load([{ type: 'user', tenant: 'acme', id: 'bob', phone: '+15550199', locale: 'en', timezone: 'UTC' }]);
    twilio.script.fail('+15550199', { kind: 'unsubscribed' });
    await h.publish({
      tenant: 'acme', idempotency_key: 'stop-sms', tier: 'marketing', category: 'promo',
      content: { title: 'Sale', body: 'now' }, recipients: { user_ids: ['bob'] }, channels: ['sms'],
    });
    const [bob] = await eventually(async () => {
      const p = await h.directory.profiles('acme', ['bob'], false);
      return p[0].preferences['channel:sms'] === false ? p : null;
    }, "bob's SMS opt-out");
    expect(bob.preferences).toEqual({ 'channel:sms': false });
  });

  it('fails content too large for a provider with a clear receipt, and never touches a token', async () => {
    await h.load([
      { type: 'user', tenant: 'acme', id: 'zed', email: 'zed@acme.test', phone: '+15550177', locale: 'en', timezone: 'UTC' },
      { type: 'device', tenant: 'acme', user_id: 'zed', platform: 'ios', token: 'cd'.repeat(32) },
      { type: 'device', tenant: 'acme', user_id: 'zed', platform: 'android', token: 'android-token-zed' },
    ]);
    const pushesBefore = apns.script.records.length + fcm.script.records.length;
    await h.publish({
      tenant: 'acme', idempotency_key: 'too-large', tier: 'transactional', category: 'security',
      content: { title: '{{t}}', body: '{{b}}' }, data: { t: 'T'.repeat(999), b: 'b'.repeat(5_000) },
      recipients: { user_ids: ['zed'] }, channels: ['push', 'email', 'sms'],
    });
    const failed = await eventually(async () => {
      const r = await h.receipts("status = 'failed' AND reason LIKE '%(too_large)'");
      return r.length === 4 ? r : null;
    }, 'four too_large receipts (APNs, FCM, SMS, email)');
    const reasons = failed.map((r) => `${r.provider}: ${r.reason}`).sort();
    expect(reasons[0]).toMatch(/^apns-sandbox: the APNs payload is \d+ bytes; the provider takes at most 4096 \(too_large\)$/);
    expect(reasons[1]).toMatch(/^fcm-sandbox: the FCM message is \d+ bytes; the provider takes at most 4096 \(too_large\)$/);
    expect(reasons[2]).toMatch(/^smtp: the subject is 999 characters; the provider takes at most 998 \(too_large\)$/);
    expect(reasons[3]).toMatch(/^twilio-sandbox: the SMS body is 6000 characters; the provider takes at most 1600 \(too_large\)$/);
    const zed = await h.directory.show('acme', 'zed');
    expect(zed.devices.map((d) => `${d.platform}:${d.active}`).sort()).toEqual(['android:true', 'ios:true']);
    // Refused before any call: the providers saw nothing of it.
    expect(apns.script.records.length + fcm.script.records.length).toBe(pushesBefore);
  });
});

describe('email failover', () => {
  let h: Harness;
  const primary = new SmtpCatcher();
  const secondary = new SmtpCatcher();
  beforeAll(async () => {
    await primary.start();
    await secondary.start();
    primary.failAll({ code: 421, message: 'Service not available, closing channel' });
    h = await Harness.create('failover', { SMTP_URL: `smtp://127.0.0.1:${primary.port},smtp://127.0.0.1:${secondary.port}` });
    await h.load([{ type: 'user', tenant: 'acme', id: 'cy', email: 'cy@acme.test', locale: 'en', timezone: 'UTC' }]);
    await h.start();
  });
  afterAll(async () => {
    await h?.close();
    await secondary.close();
    await primary.close();
  });

  it('sends through the secondary relay when the primary answers 421', async () => {
    await h.publish({
      tenant: 'acme', idempotency_key: 'failover-1', tier: 'transactional', category: 'account',
      content: { title: 'Via the second relay', body: 'b' }, recipients: { user_ids: ['cy'] }, channels: ['email'],
    });
    await eventually(() => secondary.to('cy@acme.test').length === 1, 'the email at the secondary relay');
    expect(primary.messages).toHaveLength(0);
    const [row] = await eventually(async () => {
      const r = await h.receipts("status = 'delivered' AND channel = 'email'");
      return r.length ? r : null;
    }, 'the delivered receipt');
    expect(row.provider).toBe('smtp2');
  });
});
