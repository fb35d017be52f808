import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { validateStage } from '../../processors/validate.js';
import { resolveStage } from '../../processors/resolve.js';
import { preferenceFilterStage } from '../../processors/preference-filter.js';
import { decide } from '../../runtime/preferences.js';
import { batchStage } from '../../processors/batch.js';
import { dispatchStage } from '../../processors/dispatch.js';
import { toRows } from '../../processors/receipt-loader.js';
import { checkGraph, pipelineGraph } from '../../pipeline/graph.js';
import { TemplateStore } from '../../runtime/templates.js';
import { PermanentError, RetryableError, backoffMs } from '../../runtime/errors.js';
import type { StageDeps } from '../../pipeline/deps.js';
import type { UserProfile } from '../../stores/directory.js';
import { receiptSchema, type AcceptedRequest, type DeliveryBatch, type FilteredChunk, type Receipt } from '../../schemas/index.js';
import type { DeliveryItem, Outcome, Sink } from '../../sinks/sink.js';
import { collect, fakeContext } from '../fakes.js';

const templates = new TemplateStore(path.join(import.meta.dirname, '..', '..', 'templates'));
const NOW = Date.parse('2026-06-01T12:00:00Z');

function deps(extra: Partial<StageDeps> = {}): StageDeps {
  return { templates, defaultChannels: ['inapp', 'email'], inappBroadcastThreshold: 0, quietChannels: ['push', 'sms', 'email'], deferRecheckMs: 60_000, now: () => NOW, ...extra } as StageDeps;
}

const accepted: AcceptedRequest = {
  id: 'r1', tenant: 't', idempotency_key: 'k', tier: 'social', category: 'news',
  content: { title: 'Hi {{name}}', body: 'Body' }, data: { name: 'Ada' }, channels: ['email', 'inapp'], accepted_at: NOW - 50,
};

describe('validate', () => {
  const stage = validateStage.create({}, deps());
  const good = { tenant: 't', idempotency_key: 'k', tier: 'social', category: 'news', content: { title: 'Hi {{name}}', body: 'b' }, data: { name: 'x' }, recipients: { user_ids: ['u'] } };

  it('accepts a request, fills id and default channels, and says accepted', async () => {
    const { ctx, receipts } = fakeContext({ storedAt: NOW - 5 });
    const [out] = await collect(stage.process!(good, ctx));
    expect(out.request.id).toHaveLength(22);
    expect(out.request.channels).toEqual(['inapp', 'email']);
    expect(out.request.accepted_at).toBe(NOW - 5);
    expect(receipts.map((r) => r.status)).toEqual(['accepted']);
  });

  it('gives the same id to the same tenant and key, another to another tenant', async () => {
    const id = async (tenant: string) => (await collect(stage.process!({ ...good, tenant }, fakeContext().ctx)))[0].request.id;
    expect(await id('t')).toBe(await id('t'));
    expect(await id('t')).not.toBe(await id('u'));
  });

  it('names every problem at once', async () => {
    const bad = { tenant: '', tier: 'urgent', category: 'x', template: { id: 'nope' }, recipients: { user_ids: [] }, extra: 1 };
    const err = await Promise.resolve(stage.process!(bad, fakeContext().ctx)).catch((e) => e);
    expect(err).toBeInstanceOf(PermanentError);
    const text = (err as PermanentError).problems.join('\n');
    for (const where of ['tenant:', 'idempotency_key:', 'tier:', 'recipients.user_ids:', 'extra', 'template.id: no template "nope"']) {
      expect(text).toContain(where);
    }
  });

  it('parks a request whose send_at is ahead (accepted and deferred, once), and drops one that expired', async () => {
    const later = new Date(NOW + 60_000).toISOString();
    const parked = fakeContext({ storedAt: NOW });
    expect(await collect(stage.process!({ ...good, send_at: later }, parked.ctx))).toEqual([]);
    expect(parked.handedBack).toMatchObject([{ untilMs: NOW + 60_000, work: { request: { send_at: later }, recipients: good.recipients } }]);
    expect(parked.receipts.map((r) => r.status)).toEqual(['accepted', 'deferred']);
    const { ctx, receipts } = fakeContext();
    expect(await collect(stage.process!({ ...good, expires_at: new Date(NOW - 1).toISOString() }, ctx))).toEqual([]);
    expect(receipts[0].status).toBe('expired');
  });
});

describe('resolve', () => {
  it('chunks user ids by 500, dropping repeats, in request order', async () => {
    const stage = resolveStage.create(resolveStage.config.parse({}), deps());
    const ids = Array.from({ length: 1_201 }, (_, i) => `u${i}`);
    const { ctx, receipts } = fakeContext();
    const out = await collect(stage.process!({ request: accepted, recipients: { user_ids: [...ids, 'u0'] } }, ctx));
    expect(out.map((c) => c.user_ids.length)).toEqual([500, 500, 201]);
    expect(out.map((c) => c.chunk)).toEqual([0, 1, 2]);
    expect(out[2].user_ids.at(-1)).toBe('u1200');
    expect(receipts).toMatchObject([{ status: 'resolved', count: 1_201 }]);
  });

  it('pages a topic and numbers its chunks', async () => {
    const members = Array.from({ length: 1_100 }, (_, i) => `m${String(i).padStart(4, '0')}`);
    const directory = {
      topicPage: async (_t: string, _topic: string, after: string | undefined, limit: number) =>
        members.filter((m) => after === undefined || m > after).slice(0, limit),
      topicSize: async () => members.length,
    };
    const stage = resolveStage.create(resolveStage.config.parse({}), deps({ directory: directory as never }));
    const out = await collect(stage.process!({ request: accepted, recipients: { topic: 'x' } }, fakeContext().ctx));
    expect(out.map((c) => c.user_ids.length)).toEqual([500, 500, 100]);
    expect(out.flatMap((c) => c.user_ids)).toEqual(members);
  });

  it('reads the next page of a topic while the current chunk is handed on', async () => {
    const members = Array.from({ length: 1_100 }, (_, i) => `m${String(i).padStart(4, '0')}`);
    const reads: (string | undefined)[] = [];
    const directory = {
      topicPage: async (_t: string, _topic: string, after: string | undefined, limit: number) => {
        reads.push(after);
        return members.filter((m) => after === undefined || m > after).slice(0, limit);
      },
      topicSize: async () => members.length,
    };
    const stage = resolveStage.create(resolveStage.config.parse({}), deps({ directory: directory as never }));
    const { ctx } = fakeContext();
    const chunks = (stage.process!({ request: accepted, recipients: { topic: 'x' } }, ctx) as AsyncIterable<{ chunk: number }>)[Symbol.asyncIterator]();
    expect((await chunks.next()).value).toMatchObject({ chunk: 0 });
    // Chunk 0 is out and not yet done with: the second page is already on its way.
    expect(reads).toEqual([undefined, 'm0499']);
  });

  it('stops paging a topic once its request is cancelled, saying how far it got', async () => {
    const members = Array.from({ length: 1_100 }, (_, i) => `m${String(i).padStart(4, '0')}`);
    let pages = 0;
    const directory = {
      topicPage: async (_t: string, _topic: string, after: string | undefined, limit: number) => {
        pages++;
        return members.filter((m) => after === undefined || m > after).slice(0, limit);
      },
      topicSize: async () => members.length,
    };
    const cancellations = { isCancelled: () => pages >= 1 };
    const stage = resolveStage.create(resolveStage.config.parse({}), deps({ directory: directory as never, cancellations: cancellations as never }));
    const { ctx, receipts } = fakeContext();
    const out = await collect(stage.process!({ request: accepted, recipients: { topic: 'x' } }, ctx));
    expect(out.map((c) => c.chunk)).toEqual([0]);
    expect(receipts.at(-1)).toMatchObject({ status: 'cancelled', count: 600, reason: 'request cancelled after 500 of 1100 members' });
  });
});

describe('preference-filter', () => {
  const profile = (p: Partial<UserProfile>): UserProfile => ({ id: 'u', exists: true, locale: 'en', timezone: 'UTC', devices: [], preferences: {}, ...p });

  it('lets the most specific preference win', () => {
    const p = profile({ email: 'u@x', preferences: { 'channel:email': false, 'email:news': true } });
    expect(decide(p, 'email', 'news')).toEqual({ send: { user_id: 'u', locale: 'en', to: ['u@x'] } });
    expect(decide(p, 'email', 'promo')).toEqual({ suppress: 'opted_out:channel:email' });
    expect(decide(profile({ preferences: { all: false } }), 'inapp', 'news')).toEqual({ suppress: 'opted_out:all' });
  });

  it('suppresses unknown users and missing addresses with a reason', () => {
    expect(decide(profile({ exists: false }), 'inapp', 'n')).toEqual({ suppress: 'unknown_user' });
    expect(decide(profile({}), 'email', 'n')).toEqual({ suppress: 'no_address:email' });
    expect(decide(profile({}), 'sms', 'n')).toEqual({ suppress: 'no_address:phone' });
    expect(decide(profile({}), 'push', 'n')).toEqual({ suppress: 'no_address:device' });
  });

  it('splits a chunk per channel and receipts each suppression', async () => {
    const directory = {
      profiles: async () => [profile({ id: 'a', email: 'a@x' }), profile({ id: 'b' }), profile({ id: 'c', exists: false })],
    };
    const stage = preferenceFilterStage.create({}, deps({ directory: directory as never }));
    const { ctx, receipts } = fakeContext();
    const [out] = await collect(stage.process!({ request: accepted, chunk: 3, user_ids: ['a', 'b', 'c'] }, ctx));
    expect(out.chunk).toBe(3);
    expect(out.deliveries.map((d) => [d.channel, d.recipients.map((r) => r.user_id)])).toEqual([['email', ['a']], ['inapp', ['a', 'b']]]);
    expect(receipts.map((r) => `${r.user_ids}:${r.channel}:${r.reason}`).sort()).toEqual(['b:email:no_address:email', 'c:email:unknown_user', 'c:inapp:unknown_user']);
  });
});

describe('preference-filter: quiet hours and caps', () => {
  const profile = (p: Partial<UserProfile>): UserProfile => ({ id: 'u', exists: true, locale: 'en', timezone: 'UTC', devices: [], preferences: {}, ...p });

  it('holds a user inside quiet hours, counts the cap once, and sends on release without counting again', async () => {
    const night = Date.parse('2026-11-22T07:30:00Z'); // 23:30 in Los Angeles
    let now = night;
    const counted: string[][] = [];
    const directory = {
      profiles: async () => [profile({ id: 'owl', email: 'owl@x', timezone: 'America/Los_Angeles', quietHours: '22:00-07:00' })],
      countTowardCap: async (_t: string, _c: string, _r: string, users: { id: string }[]) => { counted.push(users.map((u) => u.id)); return users.map(() => 1); },
    };
    const stage = preferenceFilterStage.create({}, deps({ directory: directory as never, frequencyCaps: { news: 1 }, now: () => now }));
    const held = fakeContext();
    expect(await collect(stage.process!({ request: { ...accepted, channels: ['email'] }, chunk: 0, user_ids: ['owl'] }, held.ctx))).toEqual([]);
    expect(held.handedBack).toHaveLength(1);
    expect(held.handedBack[0]).toMatchObject({ untilMs: Date.parse('2026-11-22T15:00:00Z'), work: { user_ids: ['owl'], cap_counted: true } });
    expect(held.receipts.map((r) => [r.status, r.reason])).toEqual([['deferred', 'quiet_hours until 2026-11-22T15:00:00.000Z']]);
    now = held.handedBack[0].untilMs;
    const released = fakeContext();
    const [out] = await collect(stage.process!(held.handedBack[0].work, released.ctx));
    expect(out.deliveries).toEqual([{ channel: 'email', recipients: [{ user_id: 'owl', locale: 'en', to: ['owl@x'] }] }]);
    expect(counted).toEqual([['owl']]);
  });
});

describe('batch', () => {
  it('packs many requests into provider-sized batches per channel with stable parts', async () => {
    const stage = batchStage.create(batchStage.config.parse({ maxRecipients: { email: 2 } }), deps());
    const chunk = (id: string, users: string[]): FilteredChunk => ({
      request: { ...accepted, id }, chunk: 0,
      deliveries: [{ channel: 'email', recipients: users.map((u) => ({ user_id: u, locale: 'en', to: [`${u}@x`] })) },
        { channel: 'inapp', recipients: users.map((u) => ({ user_id: u, locale: 'en', to: [] })) }],
    });
    const out = await stage.processBatch!([chunk('r1', ['a', 'b', 'c']), chunk('r2', ['d'])], fakeContext().ctx);
    const email = out.filter((b) => b.channel === 'email');
    expect(email.map((b) => b.groups.map((g) => `${g.request.id}/${g.part}:${g.recipients.map((r) => r.user_id).join('')}`))).toEqual([
      ['r1/0:ab'], ['r1/1:c', 'r2/0:d'],
    ]);
    const inapp = out.filter((b) => b.channel === 'inapp');
    expect(inapp).toHaveLength(1);
    expect(inapp[0].groups.map((g) => g.recipients.length)).toEqual([3, 1]);
  });

  it('cuts batches by bytes too: every group carries its request, and a batch must fit one message', async () => {
    const stage = batchStage.create(batchStage.config.parse({}), deps());
    // 50 single-recipient requests, each with 60 KB of data: 3 MB as one email batch.
    const chunks: FilteredChunk[] = Array.from({ length: 50 }, (_, i) => ({
      request: { ...accepted, id: `big${i}`, data: { blob: 'x'.repeat(60_000) } }, chunk: 0,
      deliveries: [{ channel: 'email', recipients: [{ user_id: `u${i}`, locale: 'en', to: [`u${i}@x`] }] }],
    }));
    const out = await stage.processBatch!(chunks, fakeContext().ctx);
    expect(out.length).toBeGreaterThan(2);
    for (const batch of out) expect(JSON.stringify(batch).length).toBeLessThan(1024 * 1024);
    expect(out.flatMap((b) => b.groups.map((g) => g.request.id))).toEqual(chunks.map((c) => c.request.id));
  });
});

describe('dispatch', () => {
  class ScriptedSink implements Sink {
    readonly channel = 'email' as const;
    readonly provider = 'scripted';
    readonly idempotent = false;
    readonly maxBatch = 50;
    sent: DeliveryItem[] = [];
    constructor(private readonly answer: (item: DeliveryItem) => Outcome) {}
    async send(items: DeliveryItem[]) { this.sent.push(...items); return items.map(this.answer); }
    async close() {}
  }
  class MemoryDedup {
    store = new Map<string, Set<string>>();
    failed = new Map<string, Set<string>>();
    key(...parts: unknown[]) { return parts.join('.'); }
    async read(key: string) {
      return { key, users: new Set(this.store.get(key)), failed: new Set(this.failed.get(key)), revision: this.store.has(key) ? 1 : 0 };
    }
    async add(done: { key: string }, sent: string[], failed: string[] = []) {
      this.store.set(done.key, new Set([...(this.store.get(done.key) ?? []), ...sent]));
      this.failed.set(done.key, new Set([...(this.failed.get(done.key) ?? []), ...failed]));
    }
  }
  const batch: DeliveryBatch = {
    channel: 'email', tier: 'social',
    groups: [{ request: accepted, chunk: 0, part: 0, recipients: ['a', 'b', 'c'].map((u) => ({ user_id: u, locale: 'en', to: [`${u}@x`] })) }],
  };

  it('sends rendered content, records dedup, and skips what was sent on a second run', async () => {
    const sink = new ScriptedSink(() => ({ kind: 'delivered', providerId: 'id' }));
    const dedup = new MemoryDedup();
    const stage = dispatchStage.create({}, deps({ sinks: { email: sink }, dedup: dedup as never, metrics: { deliveries: { inc() {} } } as never }));
    const first = fakeContext();
    await stage.process!(batch, first.ctx);
    expect(sink.sent.map((s) => s.content.title)).toEqual(['Hi Ada', 'Hi Ada', 'Hi Ada']);
    // The sink gave provider ids, so each delivery has its own receipt carrying the id.
    expect(first.receipts.filter((r) => r.status === 'delivered').map((r) => `${r.user_id}:${r.reason}`)).toEqual(['a:id', 'b:id', 'c:id']);
    const second = fakeContext();
    await stage.process!(batch, second.ctx);
    expect(sink.sent).toHaveLength(3);
    expect(second.receipts.filter((r) => r.status === 'deduplicated')).toMatchObject([{ user_ids: ['a', 'b', 'c'] }]);
    // The first run's receipts may have been lost in a crash: the second says again what happened,
    // under the same receipt ids, so the funnel counts each delivery once either way.
    const ids = (receipts: Receipt[], status: string) =>
      receipts.filter((r) => r.status === status).flatMap((r) => toRows(receiptSchema.parse(r))).map((row) => row.receipt_id).sort();
    for (const status of ['dispatched', 'delivered']) {
      expect(ids(first.receipts, status)).toHaveLength(3);
      expect(ids(second.receipts, status)).toEqual(ids(first.receipts, status));
    }
  });

  it('dead-letters permanent failures alone and retries the rest with the provider delay', async () => {
    const sink = new ScriptedSink((item) => item.recipient.user_id === 'a' ? { kind: 'permanent', reason: 'mailbox unknown', code: '550' }
      : item.recipient.user_id === 'b' ? { kind: 'retry', reason: 'busy', afterMs: 4_000 } : { kind: 'delivered' });
    const dedup = new MemoryDedup();
    const stage = dispatchStage.create({}, deps({ sinks: { email: sink }, dedup: dedup as never, metrics: { deliveries: { inc() {} } } as never }));
    const { ctx, deadLetters, receipts } = fakeContext();
    const err = await Promise.resolve(stage.process!(batch, ctx)).catch((e) => e);
    expect(err).toBeInstanceOf(RetryableError);
    expect((err as RetryableError).retryAfterMs).toBe(4_000);
    expect(deadLetters).toHaveLength(1);
    expect((deadLetters[0].payload as DeliveryBatch).groups[0].recipients.map((r) => r.user_id)).toEqual(['a']);
    expect(deadLetters[0].problems[0]).toContain('550');
    expect(receipts.find((r) => r.status === 'failed')?.user_id).toBe('a');
    expect([...dedup.store.values()].flatMap((s) => [...s])).toEqual(['c']);
    // The refused one is skipped when the batch comes back for 'b', but tried again on a redrive.
    expect([...dedup.failed.values()].flatMap((s) => [...s])).toEqual(['a']);
    sink.sent.length = 0;
    await Promise.resolve(stage.process!(batch, fakeContext({ attempt: 2 }).ctx)).catch(() => undefined);
    expect(sink.sent.map((s) => s.recipient.user_id)).toEqual(['b']);
    sink.sent.length = 0;
    await Promise.resolve(stage.process!(batch, fakeContext({ attempt: 1, redrive: true }).ctx)).catch(() => undefined);
    expect(sink.sent.map((s) => s.recipient.user_id)).toEqual(['a', 'b']);
  });

  it('holds back only the group whose dedup entry cannot be read: the other tenant\'s group in the batch is sent', async () => {
    class BrokenForOther extends MemoryDedup {
      override async read(key: string) {
        if (key.startsWith('other.')) throw new Error('KV unavailable for this key');
        return super.read(key);
      }
    }
    const sink = new ScriptedSink(() => ({ kind: 'delivered' }));
    const stage = dispatchStage.create({}, deps({ sinks: { email: sink }, dedup: new BrokenForOther() as never, metrics: { deliveries: { inc() {} } } as never }));
    const other = { request: { ...accepted, tenant: 'other' }, chunk: 0, part: 0, recipients: [{ user_id: 'z', locale: 'en', to: ['z@x'] }] };
    const mixed: DeliveryBatch = { ...batch, groups: [...batch.groups, other] };
    const early = fakeContext();
    await expect(Promise.resolve(stage.process!(mixed, early.ctx))).rejects.toThrow(/1 groups to retry: its dedup entry could not be read: KV unavailable/);
    expect(sink.sent.map((s) => s.recipient.user_id)).toEqual(['a', 'b', 'c']);
    expect(early.deadLetters).toEqual([]);
    // On the last attempt only that group is dead-lettered; the others were sent (and are skipped now).
    const last = fakeContext({ attempt: 12, isLastAttempt: true });
    await stage.process!(mixed, last.ctx);
    expect(sink.sent.map((s) => s.recipient.user_id)).toEqual(['a', 'b', 'c']);
    expect(last.deadLetters).toHaveLength(1);
    expect((last.deadLetters[0].payload as DeliveryBatch).groups.map((g) => g.request.tenant)).toEqual(['other']);
    expect(last.receipts.filter((r) => r.status === 'failed').map((r) => `${r.tenant}:${r.user_id}`)).toEqual(['other:z']);
  });

  it('drops expired work with a receipt', async () => {
    const sink = new ScriptedSink(() => ({ kind: 'delivered' }));
    const stage = dispatchStage.create({}, deps({ sinks: { email: sink }, dedup: new MemoryDedup() as never, metrics: { deliveries: { inc() {} } } as never }));
    const { ctx, receipts } = fakeContext();
    const expired = { ...batch, groups: [{ ...batch.groups[0], request: { ...accepted, expires_at: new Date(NOW - 1).toISOString() } }] };
    await stage.process!(expired, ctx);
    expect(sink.sent).toHaveLength(0);
    expect(receipts).toMatchObject([{ status: 'expired', count: 3 }]);
  });
});

describe('wiring and backoff', () => {
  it('checks that each output schema is the next input schema', () => {
    expect(() => checkGraph(pipelineGraph('chained'))).not.toThrow();
    expect(() => checkGraph(pipelineGraph('split'))).not.toThrow();
    const graph = pipelineGraph();
    const skipping = { ...graph, edges: [...graph.edges.filter((e) => e.from !== 'validate'), { from: 'validate', to: 'filter', link: () => 'durable' as const }] };
    expect(() => checkGraph(skipping)).toThrow(/validate emits a schema that filter does not take/);
  });

  it('backs off exponentially with full jitter under a cap', () => {
    expect(backoffMs(1, 250, 300_000, () => 0.999)).toBe(249);
    expect(backoffMs(5, 250, 300_000, () => 0.5)).toBe(2_000);
    expect(backoffMs(30, 250, 300_000, () => 0.999)).toBe(299_700);
    expect(backoffMs(3, 250, 300_000, () => 0)).toBe(0);
  });
});
