import { CoalescingSink } from './coalescing.js';
import type { KeySpace } from '../stores/keys.js';
import fs from 'node:fs';
import path from 'node:path';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { sandboxDir, type Config } from '../runtime/config.js';
import type { Channel } from '../schemas/index.js';
import { ApnsSink } from './apns.js';
import { EmailSink } from './email.js';
import { FailoverSink } from './failover.js';
import { FcmSink } from './fcm.js';
import { InAppSink } from './inapp.js';
import { InboxStore, inboxOptions } from '../stores/inbox.js';
import { PushSink, type PushProviders } from './push.js';
import type { Sink } from './sink.js';
import { SmsSink } from './sms.js';
import { GuardedSink, type BreakerGuard, type RateGuard } from './guarded.js';
import { SmtpCatcher } from './smtp-catcher.js';

import { ApnsFake } from './fakes/apns-fake.js';
import { FcmFake, FAKE_FCM_ACCESS_TOKEN } from './fakes/fcm-fake.js';
import { TwilioFake } from './fakes/twilio-fake.js';
import { certDir, fakeTls } from './fakes/script.js';

/** The sinks a process delivers with, and the sandbox fakes it started for channels without credentials. */
export interface ProviderSet {
  sinks: Partial<Record<Channel, Sink>>;
  catcher?: SmtpCatcher;
  fakes: { apns?: ApnsFake; fcm?: FcmFake; twilio?: TwilioFake };
  close(): Promise<void>;
}

const SANDBOX_TWILIO = { sid: 'ACsandbox0000000000000000000000000', token: 'sandbox-token', from: '+15005550006' };

/**
 * Builds a sink per channel from the configured credentials. A channel without credentials gets the
 * local fake of its provider in sandbox mode (`HERALD_SANDBOX=auto`, the default), or is disabled
 * with one clear log line (`off`), in which case its deliveries get a failed receipt saying so.
 */
export async function buildProviders(
  config: Config, redis: Redis, keys: KeySpace, log: Logger, guards: { breaker?: BreakerGuard; limiter?: RateGuard; inbox?: InboxStore } = {},
): Promise<ProviderSet> {
  // Every external provider sits behind its own breaker and rate limits (the inbox is ours: none).
  const guard = (sink: Sink): Sink => (guards.breaker || guards.limiter ? new GuardedSink(sink, guards.breaker, guards.limiter) : sink);
  const p = config.providers;
  const sandbox = p.sandbox === 'auto';
  const set: ProviderSet = { sinks: {}, fakes: {}, close: async () => undefined };
  const closers: (() => Promise<unknown>)[] = [];
  const record = (name: string) => path.join(sandboxDir(config), `${name}.jsonl`);

  set.sinks.inapp = new InAppSink(guards.inbox ?? new InboxStore(redis, keys, inboxOptions(config)));

  // Email: SMTP relays in failover order, or the local catcher.
  let smtpUrls = p.smtpUrls;
  if (smtpUrls.length === 0 && sandbox) {
    const catcher = new SmtpCatcher(path.join(config.dataDir, 'mailbox'));
    try {
      await catcher.start(config.smtpCatcherPort);
      set.catcher = catcher;
      closers.push(() => catcher.close());
      log.info({ port: catcher.port }, 'sandbox: no SMTP_URL, email goes to the local SMTP catcher (herald mailbox)');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw err;
      log.info({ port: config.smtpCatcherPort }, 'sandbox: no SMTP_URL, email goes to the SMTP catcher another Herald process runs');
    }
    smtpUrls = [`smtp://127.0.0.1:${set.catcher?.port ?? config.smtpCatcherPort}`];
  }
  if (smtpUrls.length) {
    // Mail to the local catcher is marked as sandbox in receipts, like the other fakes.
    const name = (i: number) => (set.catcher || p.smtpUrls.length === 0 ? 'smtp-sandbox' : smtpUrls.length > 1 ? `smtp${i + 1}` : 'smtp');
    const relays = smtpUrls.map((url, i) => guard(new EmailSink({ url, from: config.smtpFrom, provider: name(i) })));
    set.sinks.email = relays.length > 1 ? new FailoverSink(relays) : relays[0];
  } else {
    log.error({ channel: 'email' }, 'email DISABLED: no SMTP_URL and no sandbox; every email delivery fails with a receipt saying so');
  }

  // Push: APNs for iOS, FCM for Android and web.
  const push: PushProviders = {};
  if (p.apns) {
    push.ios = guard(new ApnsSink({
      auth: p.apns.auth.kind === 'token'
        ? { kind: 'token', key: p.apns.auth.keyFile, keyId: p.apns.auth.keyId, teamId: p.apns.auth.teamId }
        : { kind: 'certificate', cert: p.apns.auth.certFile, key: p.apns.auth.keyFile, passphrase: p.apns.auth.passphrase },
      topic: p.apns.topic, production: p.apns.production,
    }));
  } else if (sandbox) {
    const fake = (set.fakes.apns = new ApnsFake());
    fake.script.recordTo(record('apns'));
    await fake.start();
    closers.push(() => fake.stop());
    push.ios = guard(new ApnsSink({
      auth: { kind: 'token', key: path.join(certDir, 'fake-apns-auth-key.p8'), keyId: 'SANDBOXKEY', teamId: 'SANDBOXTEAM' },
      topic: 'com.example.herald', address: '127.0.0.1', port: fake.port, ca: [fakeTls.cert], provider: 'apns-sandbox',
    }));
    log.info({ port: fake.port }, 'sandbox: no APNs credentials, iOS push goes to the local APNs fake (herald sandbox apns)');
  } else {
    log.error({ channel: 'push', platform: 'ios' }, 'iOS push DISABLED: no APNS_KEY_FILE/APNS_CERT_FILE and no sandbox');
  }
  if (p.fcm) {
    const account = JSON.parse(fs.readFileSync(p.fcm.serviceAccountFile, 'utf8')) as { project_id?: string };
    push.android = push.web = guard(new FcmSink({ projectId: p.fcm.projectId ?? account.project_id ?? '', credential: p.fcm.serviceAccountFile }));
  } else if (sandbox) {
    const fake = (set.fakes.fcm = new FcmFake());
    fake.script.recordTo(record('fcm'));
    await fake.start();
    closers.push(() => fake.stop());
    push.android = push.web = guard(new FcmSink({
      projectId: 'herald-sandbox', provider: 'fcm-sandbox', endpoint: { port: fake.port, ca: fakeTls.cert },
      credential: { getAccessToken: async () => ({ access_token: FAKE_FCM_ACCESS_TOKEN, expires_in: 3600 }) },
    }));
    log.info({ port: fake.port }, 'sandbox: no FCM credentials, Android/web push goes to the local FCM fake (herald sandbox fcm)');
  } else {
    log.error({ channel: 'push', platform: 'android,web' }, 'Android/web push DISABLED: no FCM_SERVICE_ACCOUNT_FILE and no sandbox');
  }
  if (push.ios || push.android) set.sinks.push = new PushSink(push);

  // SMS: Twilio accounts in failover order.
  if (p.twilio.length) {
    const accounts = p.twilio.map((a, i) => guard(new SmsSink({ accountSid: a.accountSid, authToken: a.authToken, from: a.from, provider: i ? `twilio${i + 1}` : 'twilio' })));
    set.sinks.sms = accounts.length > 1 ? new FailoverSink(accounts) : accounts[0];
  } else if (sandbox) {
    const fake = (set.fakes.twilio = new TwilioFake({ [SANDBOX_TWILIO.sid]: SANDBOX_TWILIO.token }));
    fake.script.recordTo(record('twilio'));
    await fake.start();
    closers.push(() => fake.stop());
    set.sinks.sms = guard(new SmsSink({
      accountSid: SANDBOX_TWILIO.sid, authToken: SANDBOX_TWILIO.token, from: SANDBOX_TWILIO.from, provider: 'twilio-sandbox',
      endpoint: { baseUrl: `https://127.0.0.1:${fake.port}`, ca: fakeTls.cert },
    }));
    log.info({ port: fake.port }, 'sandbox: no Twilio credentials, SMS goes to the local Twilio fake (herald sandbox twilio)');
  } else {
    log.error({ channel: 'sms' }, 'SMS DISABLED: no TWILIO_ACCOUNT_SID and no sandbox');
  }

  // Transactional requests are dispatched one by one: those handled side by side share a call.
  for (const channel of Object.keys(set.sinks) as (keyof typeof set.sinks)[]) set.sinks[channel] = new CoalescingSink(set.sinks[channel]!);

  set.close = async () => {
    await Promise.allSettled(Object.values(set.sinks).map((s) => s?.close()));
    await Promise.allSettled(closers.map((c) => c()));
  };
  return set;
}
