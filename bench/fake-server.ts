// The provider fakes in a process of their own, so a benchmark's client and server do not share a thread.
import { ApnsFake } from '../sinks/fakes/apns-fake.js';
import { FcmFake } from '../sinks/fakes/fcm-fake.js';
import { TwilioFake } from '../sinks/fakes/twilio-fake.js';
import { SmtpCatcher } from '../sinks/smtp-catcher.js';

const apns = new ApnsFake();
const fcm = new FcmFake();
const twilio = new TwilioFake({ ACbench: 'secret' });
const smtp = new SmtpCatcher(undefined, false);
const ports = { apns: await apns.start(), fcm: await fcm.start(), twilio: await twilio.start(), smtp: await smtp.start() };
// Keep memory flat over long runs: the benchmark counts on the client side.
setInterval(() => {
  for (const s of [apns.script, fcm.script, twilio.script]) s.records.length = 0;
  smtp.messages.length = 0;
}, 1_000);
let smtpDelivered = 0;
const counted = smtp.messages.push.bind(smtp.messages);
smtp.messages.push = (...m) => { smtpDelivered += m.length; return counted(...m); };
// Commands on stdin, answered on stdout: `down` (SMTP answers 451), `up`, `count` (emails so far).
import('node:readline').then(({ createInterface }) => {
  createInterface({ input: process.stdin }).on('line', (line) => {
    if (line === 'down') smtp.failAll({ code: 451, message: 'Service unavailable' });
    if (line === 'up') smtp.clearFailures();
    process.stdout.write(`${JSON.stringify({ ok: line, smtpDelivered })}\n`);
  });
});
process.stdout.write(`${JSON.stringify(ports)}\n`);
