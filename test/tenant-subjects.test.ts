import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, createInbox, nkeyAuthenticator } from '@nats-io/transport-node';
import { jetstream } from '@nats-io/jetstream';
import { createUser } from '@nats-io/nkeys';
import { Pipeline } from '../pipeline/host.js';
import { topologyOf } from '../pipeline/graph.js';
import { replay } from '../pipeline/replay.js';
import { createLogger } from '../runtime/logger.js';
import { publishRaw } from '../runtime/producer.js';
import { freePort, startServer, stopAttached, type RunningServer } from '../servers/local-servers.js';
import { applyAll } from '../streams/apply.js';
import { listDeadLetters } from '../streams/dead-letters.js';
import { tiers } from '../schemas/index.js';
import { eventually, Harness, uniqueNamespace } from './harness.js';

const composeDir = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'compose');

const crossing = 'tenant: "globex" published on tenant acme\'s subject notify.request.transactional.acme; ' +
  'a request goes to its own tenant\'s subject (notify.request.transactional.globex)';

describe('request subjects carry the tenant', () => {
  let h: Harness;
  const logged: { msg: string; [k: string]: unknown }[] = [];
  const body = (tenant: string, key: string) => ({
    tenant, idempotency_key: key, tier: 'transactional' as const, category: 'account',
    content: { title: key, body: 'b' }, recipients: { user_ids: ['u1'] }, channels: ['email' as const],
  });
  beforeAll(async () => {
    h = await Harness.create('tsubj', { HERALD_HOUSEKEEPING_MS: '200' });
    await h.load([
      { type: 'user', tenant: 'acme', id: 'u1', email: 'u1@acme.test', locale: 'en', timezone: 'UTC' },
      { type: 'user', tenant: 'globex', id: 'u1', email: 'u1@globex.test', locale: 'en', timezone: 'UTC' },
    ]);
    // The pipeline's own log lines, to see the deprecation warning.
    h.pipeline = await Pipeline.start(h.config, createLogger('warn', { write: (line: string) => { logged.push(JSON.parse(line)); } }));
  });
  afterAll(async () => h?.close());

  it('delivers a request published on its tenant\'s subject', async () => {
    const ack = await h.publish(body('acme', 'own'));
    expect(ack.stream).toBe(h.topology.intakeStream('transactional'));
    const stored = await h.nats.jsm.streams.getMessage(h.topology.intakeStream('transactional'), { seq: ack.seq });
    expect(stored?.subject).toBe(h.topology.request('transactional', 'acme'));
    await eventually(() => h.smtp.to('u1@acme.test').some((m) => m.subject === 'own'), 'acme\'s email');
  });

  it('rejects a body naming another tenant than its subject, in the sender\'s name, and delivers nothing to the other', async () => {
    const ack = await publishRaw(h.nats.js, h.topology, 'transactional', JSON.stringify(body('globex', 'cross')), 'acme:cross', 'acme');
    const [letter] = await eventually(async () => {
      const d = await listDeadLetters(h.nats.jsm, h.topology, { stage: 'validate' });
      return d.length ? d : null;
    }, 'the dead letter');
    expect(letter).toMatchObject({
      stage: 'validate', reason: 'request rejected (1 problem)', problems: [crossing],
      subject: h.topology.request('transactional', 'acme'), stream: h.topology.intakeStream('transactional'), stream_seq: ack.seq, tenant: 'acme',
    });
    const rejected = await eventually(async () => {
      const r = await h.receipts("status = 'rejected'");
      return r.length ? r : null;
    }, 'the rejected receipt');
    expect(rejected.map((r) => [r.tenant, r.stage, r.tier, r.reason])).toEqual([['acme', 'validate', 'transactional', `request rejected (1 problem): ${crossing}`]]);
    // Every receipt of the request is there (the rejection was loaded): none is globex's, no email went to globex.
    expect(await h.receipts("tenant = 'globex'")).toEqual([]);
    expect(h.smtp.to('u1@globex.test')).toEqual([]);
  });

  it('still delivers a request on the tenantless subject, with a warning that it is deprecated', async () => {
    const ack = await publishRaw(h.nats.js, h.topology, 'transactional', JSON.stringify(body('acme', 'old')), 'acme:old');
    const stored = await h.nats.jsm.streams.getMessage(h.topology.intakeStream('transactional'), { seq: ack.seq });
    expect(stored?.subject).toBe(h.topology.request('transactional'));
    await eventually(() => h.smtp.to('u1@acme.test').some((m) => m.subject === 'old'), 'the email of the tenantless request');
    const warnings = logged.filter((l) => /deprecated tenantless subject/.test(l.msg));
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatchObject({ requests: 1, subject: h.topology.request('transactional'), use: h.topology.request('*', '<tenant>') });
  });

  it('answers a publish to an unknown tier in both forms with the subjects that exist, and leaves the real ones alone', async () => {
    const refusal = (subject: string) => h.nats.js.publish(subject, '{}').then(() => null, (err: Error) => err.message);
    const urgent = h.topology.request('urgent' as 'social', 'acme');
    expect(await refusal(urgent)).toBe(`no tier "urgent" (${urgent}): publish to one of ${tiers.map((t) => h.topology.request(t, 'acme')).join(', ')}`);
    const bare = h.topology.request('urgent' as 'social');
    expect(await refusal(bare)).toBe(`no tier "urgent" (${bare}): publish to one of ${tiers.map((t) => h.topology.request(t)).join(', ')}`);
    const deeper = `${h.topology.request('social', 'acme')}.more`;
    expect(await refusal(deeper)).toBe(`no such request subject (${deeper}): publish to one of ${tiers.map((t) => h.topology.request(t, '<tenant>')).join(', ')}`);
    // A known subject in either form: only its stream answers.
    for (const subject of [h.topology.request('social', 'acme'), h.topology.request('social')]) {
      const replies: unknown[] = [];
      const inbox = h.nats.nc.subscribe(createInbox(), { callback: (_err, m) => { replies.push(m.json()); } });
      h.nats.nc.publish(subject, '{}', { reply: inbox.getSubject() });
      await eventually(() => replies.length > 0, `the PubAck of ${subject}`);
      await new Promise((r) => setTimeout(r, 300));
      inbox.unsubscribe();
      expect(replies, subject).toMatchObject([{ stream: h.topology.intakeStream('social') }]);
      expect(replies[0], subject).not.toHaveProperty('error');
    }
  });

  it('replays both forms of a tier\'s requests from the log, and trims both from the intake once handled', async () => {
    const log = await h.nats.jsm.streams.info(h.topology.requestsStream);
    const first = await replay(h.nats, h.topology, h.config, await h.deps(), h.log, { fromSeq: 1, tier: 'transactional' });
    // own and cross on acme's subject, old on the tenantless one.
    expect(first).toEqual({ fed: 3, lastSequence: log.state.last_seq });
    await eventually(async () => (await h.receipts("status = 'deduplicated' AND channel = 'email'")).length === 2, 'both deliveries found already made', 30_000, 250);
    expect(h.smtp.to('u1@acme.test').map((m) => m.subject).sort()).toEqual(['old', 'own']);
    await eventually(async () => (await h.nats.jsm.streams.info(h.topology.intakeStream('transactional'))).state.messages === 0, 'the intake trimmed', 30_000, 250);
    const intake = await h.nats.jsm.streams.info(h.topology.intakeStream('transactional'));
    expect(intake.state.last_seq).toBe(3);
  });
});

describe('herald apply moves an existing install to the tenant subjects', () => {
  it('adds the tenant form to each intake and widens validate\'s consumer, keeping what waits there; a second apply changes nothing', async () => {
    const h = await Harness.create('tsubj_apply');
    try {
      const topology = topologyOf({ ...h.config, namespace: uniqueNamespace('tsubj_old') });
      await applyAll(h.nats, topology);
      // As an install made before: intakes with the tenantless subject only, read by a consumer filtered on it.
      for (const tier of tiers) {
        const info = await h.nats.jsm.streams.info(topology.intakeStream(tier));
        await h.nats.jsm.streams.update(topology.intakeStream(tier), { ...info.config, subjects: [topology.request(tier)] });
        await h.nats.jsm.consumers.update(topology.intakeStream(tier), `validate_${tier}`, { filter_subject: topology.request(tier) });
      }
      await publishRaw(h.nats.js, topology, 'social', '{"waiting":1}');
      const results = await applyAll(h.nats, topology);
      const changed = results.filter((r) => r.action !== 'unchanged').map((r) => [r.name, r.action, r.changed]);
      expect(changed).toEqual([
        ...tiers.map((tier) => [topology.intakeStream(tier), 'updated', ['subjects']]),
        ...tiers.map((tier) => [`${topology.intakeStream(tier)}/validate_${tier}`, 'updated', ['filter_subject']]),
      ]);
      expect((await h.nats.jsm.streams.info(topology.intakeStream('social'))).config.subjects).toEqual(topology.requestSubjects('social'));
      const validate = await h.nats.jsm.consumers.info(topology.intakeStream('social'), 'validate_social');
      expect([validate.config.filter_subject, validate.num_pending]).toEqual([undefined, 1]);
      await publishRaw(h.nats.js, topology, 'social', '{"waiting":2}', undefined, 'acme');
      expect((await h.nats.jsm.consumers.info(topology.intakeStream('social'), 'validate_social')).num_pending).toBe(2);
      expect((await applyAll(h.nats, topology)).filter((r) => r.action !== 'unchanged')).toEqual([]);
      for (const s of topology.streams()) await h.nats.jsm.streams.delete(s.name!);
      for (const b of topology.buckets()) await h.nats.jsm.streams.delete(`KV_${b.name}`);
    } finally {
      await h.close();
    }
  });
});

describe('a tenant\'s producer user (compose/nats-secure.conf)', () => {
  let server: RunningServer;
  let port = 0;
  let h: Harness;
  const passwords = { HERALD_NATS_PASSWORD: 'herald-secret', PRODUCER_NATS_PASSWORD: 'producer-secret' };
  // The shipped config, with the placeholder key of producer_acme replaced by one whose seed this test holds.
  const acme = createUser();
  beforeAll(async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nats-tenant-'));
    const shipped = fs.readFileSync(path.join(composeDir, 'nats-secure.conf'), 'utf8');
    const placeholder = /# producer_acme\s+nkey: (U[A-Z2-7]{55})/.exec(shipped)?.[1];
    expect(placeholder).toBeDefined();
    const conf = path.join(dir, 'nats.conf');
    fs.writeFileSync(conf, shipped.replace(placeholder!, acme.getPublicKey()));
    port = await freePort();
    server = await startServer({ name: 'nats', port, sidePort: await freePort(), dataDir: dir, configFile: conf, env: passwords }, false);
    // No namespace on a server of its own: the permissions name notify.request.<tier>.acme exactly.
    h = await Harness.create('tsubj_secure', { NATS_URL: `nats://herald:${passwords.HERALD_NATS_PASSWORD}@127.0.0.1:${port}`, HERALD_NAMESPACE: '' });
  });
  afterAll(async () => {
    await h?.close();
    if (server) await stopAttached(server);
  });

  it('may publish requests for its own tenant, and is refused another tenant\'s subject and the tenantless one', async () => {
    const errors: string[] = [];
    const producer = await connect({
      servers: `127.0.0.1:${port}`, authenticator: nkeyAuthenticator(acme.getSeed()),
      inboxPrefix: '_INBOX_acme',
    });
    void (async () => { for await (const s of producer.status()) if (s.type === 'error') errors.push(String(s.error)); })();
    try {
      const js = jetstream(producer, { timeout: 2_000 });
      const request = (tenant: string) => JSON.stringify({
        tenant, idempotency_key: 'k1', tier: 'transactional', category: 'c', content: { title: 't', body: 'b' }, recipients: { user_ids: ['u1'] },
      });
      const own = await js.publish(h.topology.request('transactional', 'acme'), request('acme'), { msgID: 'acme:k1' });
      expect([own.stream, own.seq]).toEqual([h.topology.intakeStream('transactional'), 1]);
      const refused = async (subject: string) => {
        const outcome = await js.publish(subject, request('globex'), { msgID: `x:${subject}` }).then(() => 'stored', (err: Error) => err.message);
        expect(outcome, subject).not.toBe('stored');
        await eventually(() => errors.some((e) => e.includes(`Permissions Violation for Publish to "${subject}"`)), `the violation on ${subject}`, 5_000);
      };
      await refused(h.topology.request('transactional', 'globex'));
      await refused(h.topology.request('social'));
      // Nothing but acme's request was stored.
      const stored = await Promise.all(tiers.map(async (t) => (await h.nats.jsm.streams.info(h.topology.intakeStream(t))).state.messages));
      expect(stored).toEqual([1, 0, 0]);
      // Nor may it read other inboxes.
      const sub = producer.subscribe('_INBOX.>');
      const closed = await Promise.race([sub.closed.then((e) => String(e ?? 'closed')), new Promise<string>((r) => setTimeout(() => r('still open'), 2_000))]);
      expect(closed).toMatch(/permissions violation for subscription to "_INBOX\.>"/i);
    } finally {
      await producer.close();
    }
  });
});
