import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { pipelineGraph, type PipelineGraph } from '../pipeline/graph.js';
import { requestIdentity, type StageDefinition } from '../pipeline/stage.js';
import type { StageDeps } from '../pipeline/deps.js';
import { PermanentError } from '../runtime/errors.js';
import { filteredChunkSchema, type FilteredChunk } from '../schemas/index.js';
import type { DeliveryItem, Outcome, Sink } from '../sinks/sink.js';
import { listDeadLetters } from '../streams/dead-letters.js';
import { runHerald } from './child.js';
import { eventually, Harness } from './harness.js';

/** A throw-away stage: passes chunks on, refuses the category "poison" for good. */
const tapStage: StageDefinition<FilteredChunk, FilteredChunk, Record<string, never>, StageDeps> = {
  name: 'tap',
  input: filteredChunkSchema,
  output: filteredChunkSchema,
  config: z.object({}),
  identify: (c) => [requestIdentity(c.request)],
  tierOf: (c) => c.request.tier,
  create: () => ({
    async process(chunk) {
      if (chunk.request.category === 'poison') throw new PermanentError('tap refuses poison', ['category: poison']);
      return [chunk];
    },
  }),
};

/** Herald's graph with the tap between filter and batch: one node, two edges, nothing else edited. */
function graphWithTap(): PipelineGraph {
  const graph = pipelineGraph('chained');
  const filter = graph.nodes.find((n) => n.name === 'filter')!;
  return {
    nodes: [...graph.nodes, { name: 'tap', def: tapStage as never, reads: 'work', subject: 'tapped', run: filter.run }],
    edges: [
      ...graph.edges.filter((e) => !(e.from === 'filter' && e.to === 'batch')),
      { from: 'filter', to: 'tap', link: () => 'durable' },
      { from: 'tap', to: 'batch', link: () => 'durable' },
    ],
  };
}

describe('the pipeline graph', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await Harness.create('graph', {}, graphWithTap());
    await h.load([{ type: 'user', tenant: 'acme', id: 'g1', email: 'g1@acme.test', locale: 'en', timezone: 'UTC' }]);
    await h.start();
  });
  afterAll(async () => h?.close());

  it('derives a new stage\'s subject, consumer, metrics label and DLQ subject from one graph entry', async () => {
    const ns = h.config.namespace;
    const work = await h.nats.jsm.streams.info(h.topology.workStream('social'));
    expect(work.config.subjects).toContain(`${ns}.notify.tapped.social`);
    const consumer = await h.nats.jsm.consumers.info(h.topology.workStream('social'), 'tap_social');
    expect(consumer.config.filter_subject).toBe(`${ns}.notify.tapped.social`);

    await h.publish({
      tenant: 'acme', idempotency_key: 'tap-ok', tier: 'social', category: 'news',
      content: { title: 'Through the tap', body: 'b' }, recipients: { user_ids: ['g1'] }, channels: ['inapp'],
    });
    await eventually(async () => (await h.inbox.list('acme', 'g1')).some((e) => e.title === 'Through the tap'), 'delivered through the tap');
    await h.publish({
      tenant: 'acme', idempotency_key: 'tap-poison', tier: 'social', category: 'poison',
      content: { title: 'Poison', body: 'b' }, recipients: { user_ids: ['g1'] }, channels: ['inapp'],
    });
    const [letter] = await eventually(async () => {
      const d = await listDeadLetters(h.nats.jsm, h.topology, { stage: 'tap' });
      return d.length ? d : null;
    }, 'a dead letter from the tap');
    expect(letter.stage).toBe('tap');
    expect(letter.subject).toBe(`${ns}.notify.tapped.social`);
    expect(letter.tenant).toBe('acme');
    const dlqMessage = await h.nats.jsm.streams.getMessage(h.topology.dlqStream, { seq: letter.dlq_seq });
    expect(dlqMessage?.subject).toBe(`${ns}.notify.dlq.tap`);
    const metrics = await h.pipeline!.metrics.registry.metrics();
    expect(metrics).toMatch(/herald_stage_messages_total\{stage="tap",outcome="ok"\} [1-9]/);
    expect(metrics).toMatch(/herald_dead_letters_total\{stage="tap"\} 1/);
    const receipts = await eventually(async () => {
      const r = await h.receipts("status = 'dead_lettered'");
      return r.length ? r : null;
    }, 'the dead_lettered receipt');
    expect(receipts).toMatchObject([{ stage: 'tap', tenant: 'acme', category: 'poison', tier: 'social' }]);
    expect(await h.receipts("status = 'rejected'")).toEqual([]);
    expect((await h.inbox.list('acme', 'g1')).map((e) => e.title)).toEqual(['Through the tap']);
  });
});

describe('per-node identity under chained wiring', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await Harness.create('ident', { HERALD_MAX_ATTEMPTS: '3', HERALD_BACKOFF_BASE_MS: '20', HERALD_BACKOFF_CAP_MS: '100' });
    await h.load([{ type: 'user', tenant: 'acme', id: 'ok', email: 'ok@acme.test', locale: 'en', timezone: 'UTC' }]);
    // A user record that is not a hash (a damaged directory): reading this profile fails, every time.
    await h.redis.set(h.topology.keys.tenant('acme', 'u', 'corrupt'), 'not a hash');
    const explodingEmail: Sink = {
      channel: 'email', provider: 'exploding', maxBatch: 50, idempotent: false,
      send: async (_items: DeliveryItem[]): Promise<Outcome[]> => { throw new Error('provider exploded'); },
      close: async () => undefined,
    };
    await h.start({ sinks: { email: explodingEmail } });
  });
  afterAll(async () => h?.close());

  it('dead-letters a preference-filter failure as the filter\'s, after HERALD_MAX_ATTEMPTS, not as a rejection', async () => {
    await h.publish({
      tenant: 'acme', idempotency_key: 'corrupt-profile', tier: 'social', category: 'news',
      content: { title: 'Never', body: 'b' }, recipients: { user_ids: ['corrupt'] }, channels: ['inapp'],
    });
    const [letter] = await eventually(async () => {
      const d = await listDeadLetters(h.nats.jsm, h.topology, { stage: 'filter' });
      return d.length ? d : null;
    }, 'the filter\'s dead letter');
    expect(letter.stage).toBe('filter');
    expect(letter.attempts).toBe(3);
    // A redrive goes to the filter's own subject, which has a consumer in every wiring.
    expect(letter.subject).toBe(h.topology.input('filter', 'social'));
    expect(JSON.parse(Buffer.from(letter.original_b64!, 'base64').toString())).toMatchObject({ chunk: 0, user_ids: ['corrupt'] });
    expect(await listDeadLetters(h.nats.jsm, h.topology, { stage: 'validate' })).toEqual([]);
    const receipts = await eventually(async () => {
      const r = await h.receipts("status IN ('dead_lettered', 'rejected')");
      return r.length ? r : null;
    }, 'the give-up receipt');
    expect(receipts).toHaveLength(1);
    expect(receipts[0]).toMatchObject({ status: 'dead_lettered', stage: 'filter', tenant: 'acme', user_id: 'corrupt', category: 'news', attempt: 3 });
    // The request itself was settled: nothing of it is left pending.
    await eventually(async () => {
      const ci = await h.nats.jsm.consumers.info(h.topology.intakeStream('social'), 'validate_social');
      return ci.num_ack_pending === 0 && ci.num_pending === 0;
    }, 'the request acked');
  });

  it('names tenant, request, category and channel in the receipts of a dead-lettered dispatch batch', async () => {
    await h.publish({
      tenant: 'acme', idempotency_key: 'exploding-email', tier: 'transactional', category: 'account',
      content: { title: 'Boom', body: 'b' }, recipients: { user_ids: ['ok'] }, channels: ['email'],
    });
    const letters = await eventually(async () => {
      const d = await listDeadLetters(h.nats.jsm, h.topology, { stage: 'dispatch' });
      return d.length ? d : null;
    }, 'the dispatch dead letter', 60_000);
    expect(letters[0]).toMatchObject({ stage: 'dispatch', tenant: 'acme', attempts: 3 });
    const receipts = await eventually(async () => {
      const r = await h.receipts("status = 'dead_lettered' AND stage = 'dispatch'");
      return r.length ? r : null;
    }, 'the dispatch give-up receipt');
    expect(receipts).toHaveLength(1);
    expect(receipts[0]).toMatchObject({ tenant: 'acme', category: 'account', channel: 'email', tier: 'transactional', user_id: 'ok' });
    expect(String(receipts[0].request_id)).not.toBe('');
    expect(String(receipts[0].reason)).toMatch(/provider exploded/);
  });
});

describe('herald replay through the graph', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await Harness.create('replay_tiers');
    await h.load([{ type: 'user', tenant: 'acme', id: 'rt', email: 'rt@acme.test', locale: 'en', timezone: 'UTC' }]);
    await h.start();
  });
  afterAll(async () => h?.close());

  const herald = (...args: string[]) => runHerald(h.config, args);

  it('feeds each request to its own tier\'s entry without --tier: one per tier, all delivered again', async () => {
    for (const tier of ['transactional', 'social', 'marketing'] as const) {
      await h.publish({
        tenant: 'acme', idempotency_key: `replay-${tier}`, tier, category: 'news',
        content: { title: `Replayed ${tier}`, body: 'b' }, recipients: { user_ids: ['rt'] }, channels: ['email'],
      });
    }
    await eventually(() => h.smtp.to('rt@acme.test').length === 3, 'three emails');
    await herald('dedup', 'purge');
    const { stdout } = await herald('replay', '--from-seq', '1', '--json');
    expect(JSON.parse(stdout)).toEqual({ fed: 3, lastSequence: 3 });
    await eventually(() => h.smtp.to('rt@acme.test').length === 6, 'three more emails after the replay');
    for (const tier of ['transactional', 'social', 'marketing']) {
      expect(h.smtp.to('rt@acme.test').filter((m) => m.subject === `Replayed ${tier}`)).toHaveLength(2);
    }
    expect(await h.receipts("status = 'rejected'")).toEqual([]);
    expect(await listDeadLetters(h.nats.jsm, h.topology, {})).toEqual([]);
  });

  it('says what is wrong with a range, and exits non-zero', async () => {
    const past = await herald('replay', '--from-seq', '99').then(() => null, (e) => e);
    expect(past.code).toBe(1);
    expect(past.stderr).toMatch(/--from-seq 99 is past the end of .* \(last sequence 3\)/);
    const backwards = await herald('replay', '--from-seq', '3', '--to-seq', '2').then(() => null, (e) => e);
    expect(backwards.code).toBe(1);
    expect(backwards.stderr).toMatch(/--from-seq 3 is after --to-seq 2/);
  });
});
