// `npm run bench:sinks`: deliveries/s of each Herald sink against its fake, beside the bare client
// library sending in a loop to the same fake, measured in the same run. Prints figures only.
import { printTable } from './servers.js';
import { spawn } from 'node:child_process';
import https from 'node:https';
import tls from 'node:tls';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import readline from 'node:readline';
import apn from '@parse/node-apn';
import twilio from 'twilio';
import nodemailer from 'nodemailer';
import { initializeApp, deleteApp } from 'firebase-admin/app';
import { getMessaging } from 'firebase-admin/messaging';
import { ApnsSink } from '../sinks/apns.js';
import { FcmSink } from '../sinks/fcm.js';
import { SmsSink } from '../sinks/sms.js';
import { EmailSink } from '../sinks/email.js';
import type { DeliveryItem, Sink } from '../sinks/sink.js';
import { certDir, fakeTls } from '../sinks/fakes/script.js';
import { FAKE_FCM_ACCESS_TOKEN } from '../sinks/fakes/fcm-fake.js';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const N = { fcm: Number(process.env.BENCH_FCM ?? 20_000), apns: Number(process.env.BENCH_APNS ?? 20_000), twilio: Number(process.env.BENCH_TWILIO ?? 5_000), smtp: Number(process.env.BENCH_SMTP ?? 3_000) };
const credential = { getAccessToken: async () => ({ access_token: FAKE_FCM_ACCESS_TOKEN, expires_in: 3600 }) };
const tokenAuth = { key: path.join(certDir, 'fake-apns-auth-key.p8'), keyId: 'BENCHKEY', teamId: 'BENCHTEAM' };

const server = spawn(process.execPath, ['--import', 'tsx', 'bench/fake-server.ts'], { cwd: root, stdio: ['ignore', 'pipe', 'inherit'] });
const ports = await new Promise<{ apns: number; fcm: number; twilio: number; smtp: number }>((resolve) => {
  readline.createInterface({ input: server.stdout! }).once('line', (line) => resolve(JSON.parse(line)));
});

const item = (i: number, to: string, platform?: string): DeliveryItem => ({
  request: { id: `bench-${Math.floor(i / 500)}`, tenant: 'bench', idempotency_key: 'k', tier: 'social', category: 'c', channels: ['push'], accepted_at: Date.now() },
  recipient: { user_id: `u${i}`, locale: 'en', to: [to], ...(platform ? { platforms: [platform] } : {}) },
  content: { title: 'Hello', body: 'A benchmark notification' },
});

async function rate(n: number, run: () => Promise<number>): Promise<number> {
  const t0 = performance.now();
  const done = await run();
  if (done !== n) process.stderr.write(`warning: ${done} of ${n} succeeded\n`);
  return n / ((performance.now() - t0) / 1000);
}

/** Runs `worker` in `parallel` loops over batches of `batch` until `n` are done; returns successes. */
async function loops(n: number, batch: number, parallel: number, send: (start: number, size: number) => Promise<number>): Promise<number> {
  let ok = 0;
  let next = 0;
  await Promise.all(Array.from({ length: parallel }, async () => {
    while (next < n) {
      const start = next;
      next += batch;
      const sent = await send(start, Math.min(batch, n - start));
      ok += sent; // (not `ok += await …`: that reads ok before the await and loses updates)
    }
  }));
  return ok;
}

const PARALLEL = 4;

let reported = 0;

async function viaSink(sink: Sink, n: number, make: (i: number) => DeliveryItem, batch: number, parallel = 1): Promise<number> {
  let ok = 0;
  let next = 0;
  const signal = new AbortController().signal;
  const worker = async () => {
    while (next < n) {
      const start = next;
      next += batch;
      const items = Array.from({ length: Math.min(batch, n - start) }, (_, j) => make(start + j));
      const outcomes = await sink.send(items, signal);
      const bad = outcomes.find((o) => o.kind !== 'delivered');
      if (bad && !reported++) process.stderr.write(`first failure: ${JSON.stringify(bad)}\n`);
      ok += outcomes.filter((o) => o.kind === 'delivered').length;
    }
  };
  await Promise.all(Array.from({ length: parallel }, worker));
  await sink.close();
  return ok;
}

const results: [string, number, number, string][] = [];
const log = (s: string) => process.stderr.write(`${s}\n`);

// FCM: bare firebase-admin sendEach (500 a call) vs FcmSink.
{
  log('fcm …');
  const agent = new https.Agent({ keepAlive: true, maxSockets: 64, ca: fakeTls.cert });
  (agent as unknown as { createConnection: unknown }).createConnection = (o: tls.ConnectionOptions) =>
    tls.connect({ ...o, host: '127.0.0.1', port: ports.fcm, servername: 'localhost', ca: fakeTls.cert });
  const app = initializeApp({ projectId: 'bench', credential, httpAgent: agent }, 'bare-fcm');
  const messaging = getMessaging(app);
  messaging.enableLegacyHttpTransport();
  const bare = await rate(N.fcm, () => loops(N.fcm, 500, PARALLEL, async (i, size) => (await messaging.sendEach(
    Array.from({ length: size }, (_, j) => ({ token: `t${i + j}`, notification: { title: 'Hello', body: 'A benchmark notification' } })))).successCount));
  await deleteApp(app);
  agent.destroy();
  const sink = new FcmSink({ projectId: 'bench', credential, endpoint: { port: ports.fcm, ca: fakeTls.cert } });
  const herald = await rate(N.fcm, () => viaSink(sink, N.fcm, (i) => item(i, `t${i}`, 'android'), 500, PARALLEL));
  results.push(['FCM (firebase-admin, HTTP v1)', bare, herald, '≥ 20,000/s']);
}

// APNs: bare node-apn Provider.send (one note to 500 tokens) vs ApnsSink.
{
  log('apns …');
  const opts = { token: tokenAuth, address: '127.0.0.1', port: ports.apns, ca: [fakeTls.cert], production: false } as apn.ProviderOptions;
  const provider = new apn.Provider(opts);
  const token = (i: number) => i.toString(16).padStart(64, '0');
  const bare = await rate(N.apns, () => loops(N.apns, 500, PARALLEL, async (i, size) => {
    const note = new apn.Notification({ alert: { title: 'Hello', body: 'A benchmark notification' }, topic: 'com.example.herald' });
    return (await provider.send(note, Array.from({ length: size }, (_, j) => token(i + j)))).sent.length;
  }));
  await provider.shutdown();
  const sink = new ApnsSink({ auth: { kind: 'token', ...tokenAuth }, topic: 'com.example.herald', address: '127.0.0.1', port: ports.apns, ca: [fakeTls.cert] });
  const herald = await rate(N.apns, () => viaSink(sink, N.apns, (i) => item(i, token(i), 'ios'), 500, PARALLEL));
  results.push(['APNs (node-apn, HTTP/2)', bare, herald, '≥ 10,000/s']);
}

// Twilio: bare client, 32 requests in flight, vs SmsSink (32 in flight per batch of 50).
{
  log('twilio …');
  class Loopback extends twilio.RequestClient {
    override request<T>(o: Parameters<twilio.RequestClient['request']>[0]) {
      return super.request<T>({ ...o, uri: o.uri.replace(/^https:\/\/[^/]+/, `https://127.0.0.1:${ports.twilio}`) } as never);
    }
  }
  const client = twilio('ACbench', 'secret', { httpClient: new Loopback({ keepAlive: true, ca: fakeTls.cert }) });
  const phone = (i: number) => `+1555${String(i).padStart(7, '0')}`;
  const bare = await rate(N.twilio, async () => {
    let ok = 0;
    let next = 0;
    await Promise.all(Array.from({ length: 32 }, async () => {
      while (next < N.twilio) {
        const i = next++;
        await client.messages.create({ to: phone(i), from: '+15550000000', body: 'Hello\nA benchmark notification' });
        ok++;
      }
    }));
    return ok;
  });
  const sink = new SmsSink({ accountSid: 'ACbench', authToken: 'secret', from: '+15550000000', endpoint: { baseUrl: `https://127.0.0.1:${ports.twilio}`, ca: fakeTls.cert } });
  // Same 32 requests in flight as the bare loop: the sink bounds them across its concurrent batches.
  const herald = await rate(N.twilio, () => viaSink(sink, N.twilio, (i) => item(i, phone(i)), 50, PARALLEL));
  results.push(['SMS (twilio)', bare, herald, '≥ 0.8 of bare']);
}

// SMTP: bare nodemailer pool (5 connections) vs EmailSink (same pool).
{
  log('smtp …');
  const transport = nodemailer.createTransport({ url: `smtp://127.0.0.1:${ports.smtp}`, pool: true, maxConnections: 5, maxMessages: Infinity } as Parameters<typeof nodemailer.createTransport>[0]);
  const bare = await rate(N.smtp, () => loops(N.smtp, 50, PARALLEL, async (start, size) => {
    const sent = await Promise.all(Array.from({ length: size }, (_, j) =>
      transport.sendMail({ from: 'bench@herald', to: `u${start + j}@example.com`, subject: 'Hello', text: 'A benchmark notification' }).then(() => 1, (err) => { if (!reported++) process.stderr.write(`bare failure: ${err}\n`); return 0; })));
    return sent.reduce<number>((a, b) => a + b, 0);
  }));
  transport.close();
  const sink = new EmailSink({ url: `smtp://127.0.0.1:${ports.smtp}`, from: 'bench@herald' });
  const herald = await rate(N.smtp, () => viaSink(sink, N.smtp, (i) => item(i, `u${i}@example.com`), 50, PARALLEL));
  results.push(['email (nodemailer, SMTP pool of 5)', bare, herald, '≥ 0.8 of bare']);
}

server.kill();
const f = (n: number) => Math.round(n).toLocaleString('en-US');
const rows = results.map(([name, bare, herald, target]) => [name, `${f(bare)}/s`, `${f(herald)}/s`, (herald / bare).toFixed(2), target]);
const head = ['sink', 'bare library', 'Herald sink', 'ratio', 'target'];
printTable(head, rows);
process.exit(0);
