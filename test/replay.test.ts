import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { replay } from '../pipeline/replay.js';
import { Directory } from '../stores/directory.js';
import { eventually, Harness } from './harness.js';

describe('replay and the directory import', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await Harness.create('replay');
    await h.load(['r1', 'r2', 'r3'].map((id) => ({ type: 'user' as const, tenant: 'acme', id, email: `${id}@acme.test`, locale: 'en', timezone: 'UTC' })));
    await h.start();
  });
  afterAll(async () => h?.close());

  const dedupHits = async () => (await h.receipts("status = 'deduplicated' AND channel = 'email'")).length;

  it('replays an already delivered range without new deliveries, and delivers again once dedup is purged', async () => {
    for (const n of [1, 2]) {
      await h.publish({
        tenant: 'acme', idempotency_key: `replay-${n}`, tier: 'transactional', category: 'account',
        content: { title: `Replay ${n}`, body: 'b' }, recipients: { user_ids: ['r1', 'r2', 'r3'] }, channels: ['email', 'inapp'],
      });
    }
    await eventually(() => h.smtp.messages.length === 6, 'six emails');
    const stream = await h.nats.jsm.streams.info(h.topology.requestsStream);
    expect(stream.state.last_seq).toBe(2);

    const first = await replay(h.nats, h.topology, h.config, await h.deps(), h.log, { fromSeq: 1 });
    expect(first).toEqual({ fed: 2, lastSequence: 2 });
    // The replayed requests flow all the way to dispatch, which finds every recipient already sent.
    await eventually(async () => (await dedupHits()) === 6, 'six deduplicated receipts', 30_000, 250);
    expect(h.smtp.messages).toHaveLength(6);
    expect((await h.inbox.list('acme', 'r1')).map((e) => e.title).sort()).toEqual(['Replay 1', 'Replay 2']);

    await h.nats.jsm.streams.purge(`KV_${h.topology.kvBucket('dedup')}`);
    const second = await replay(h.nats, h.topology, h.config, await h.deps(), h.log, { fromSeq: 2, toSeq: 2 });
    expect(second).toEqual({ fed: 1, lastSequence: 2 });
    await eventually(() => h.smtp.messages.length === 9, 'three more emails after the purge');
    expect(h.smtp.messages.filter((m) => m.subject === 'Replay 2')).toHaveLength(6);
    expect(h.smtp.messages.filter((m) => m.subject === 'Replay 1')).toHaveLength(3);
    // The inbox is idempotent by itself: still one entry per request.
    expect(await h.inbox.list('acme', 'r2')).toHaveLength(2);
  });

  it('imports a JSONL directory, reporting bad lines by number while loading the good ones', async () => {
    const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'dir-')), 'directory.jsonl');
    fs.writeFileSync(file, [
      '{"type":"user","tenant":"imp","id":"u1","email":"u1@imp.test","locale":"en","timezone":"Europe/Paris"}',
      '{"type":"user","tenant":"imp","id":"u2","email":"not-an-email","timezone":"Mars/Olympus"}',
      '{"type":"device","tenant":"imp","user_id":"u1","platform":"ios","token":"tok-1"}',
      'this is not json',
      '',
      '{"type":"preference","tenant":"imp","user_id":"u1","channel":"sms","enabled":false}',
      '{"type":"topic_member","tenant":"imp","topic":"t","user_id":"u1"}',
      '{"type":"spaceship","tenant":"imp"}',
    ].join('\n'));
    const directory = new Directory(h.redis, h.topology.keys);
    const report = await directory.importFile(file);
    expect(report.loaded).toBe(4);
    expect(report.errors.map((e) => e.line)).toEqual([2, 4, 8]);
    expect(report.errors[0].problems.join(' ')).toMatch(/email/);
    expect(report.errors[0].problems.join(' ')).toMatch(/timezone: unknown IANA time zone/);
    expect(report.errors[1].problems[0]).toMatch(/not JSON/);
    const [u1] = await directory.profiles('imp', ['u1'], true);
    expect(u1).toMatchObject({ exists: true, email: 'u1@imp.test', timezone: 'Europe/Paris', preferences: { 'channel:sms': false } });
    expect(u1.devices).toEqual([{ token: 'tok-1', platform: 'ios' }]);
    expect(await directory.topicPage('imp', 't', undefined, 10)).toEqual(['u1']);
  });
});
