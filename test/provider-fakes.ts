import path from 'node:path';
import { ApnsFake } from '../sinks/fakes/apns-fake.js';
import { FcmFake, FAKE_FCM_ACCESS_TOKEN } from '../sinks/fakes/fcm-fake.js';
import { TwilioFake } from '../sinks/fakes/twilio-fake.js';
import { certDir, fakeTls } from '../sinks/fakes/script.js';
import { SmtpCatcher } from '../sinks/smtp-catcher.js';
import { ApnsSink } from '../sinks/apns.js';
import { FcmSink } from '../sinks/fcm.js';
import { SmsSink } from '../sinks/sms.js';
import { EmailSink } from '../sinks/email.js';

export const fakeFcmCredential = {
  getAccessToken: async () => ({ access_token: FAKE_FCM_ACCESS_TOKEN, expires_in: 3600 }),
};

export const apnsTokenAuth = {
  kind: 'token' as const, key: path.join(certDir, 'fake-apns-auth-key.p8'), keyId: 'FAKEKEY123', teamId: 'FAKETEAM12',
};

export function apnsSinkFor(fake: ApnsFake, topic = 'com.example.herald'): ApnsSink {
  return new ApnsSink({ auth: apnsTokenAuth, topic, address: '127.0.0.1', port: fake.port, ca: [fakeTls.cert] });
}

export function fcmSinkFor(fake: FcmFake): FcmSink {
  return new FcmSink({ projectId: 'herald-test', credential: fakeFcmCredential, endpoint: { port: fake.port, ca: fakeTls.cert } });
}

export function smsSinkFor(fake: TwilioFake, sid = 'ACfake', token = 'secret', from = '+15550009999'): SmsSink {
  return new SmsSink({ accountSid: sid, authToken: token, from, endpoint: { baseUrl: `https://127.0.0.1:${fake.port}`, ca: fakeTls.cert } });
}

export function emailSinkFor(catcher: SmtpCatcher, provider = 'smtp'): EmailSink {
  return new EmailSink({ url: `smtp://127.0.0.1:${catcher.port}`, from: 'Herald <herald@test>', provider });
}

export { ApnsFake, FcmFake, TwilioFake, SmtpCatcher };
