import type { JsMsg } from '@nats-io/jetstream';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { Assembly } from '../../pipeline/assembly.js';
import type { StageDeps } from '../../pipeline/deps.js';
import type { GraphNode, PipelineGraph } from '../../pipeline/graph.js';
import { Metrics } from '../../pipeline/metrics.js';
import type { Priority } from '../../pipeline/runner.js';
import type { Stage, StageDefinition } from '../../pipeline/stage.js';
import { TierGate } from '../../pipeline/tier-gate.js';
import { PermanentError, RetryableError } from '../../runtime/errors.js';
import { createLogger } from '../../runtime/logger.js';
import type { Receipt } from '../../schemas/index.js';
import { Topology } from '../../streams/topology.js';

/** A message as JetStream hands it over, recording how it was settled. */
function fakeMessage(body: unknown, seq: number, deliveryCount = 1) {
  const settled: string[] = [];
  const m = {
    subject: 'notify.request.social',
    data: new TextEncoder().encode(typeof body === 'string' ? body : JSON.stringify(body)),
    headers: undefined,
    info: { stream: 'REQUESTS', streamSequence: seq, deliveryCount, timestampNanos: 1_000_000_000 },
    ack: () => settled.push('ack'),
    nak: (ms?: number) => settled.push(`nak ${ms}`),
    term: () => settled.push('term'),
    working: () => undefined,
  };
  return { m: m as unknown as JsMsg, settled };
}

/** A consumer that hands over these messages, then waits until closed. */
function fakeSource(msgs: JsMsg[]) {
  let close!: () => void;
  const closed = new Promise<void>((resolve) => { close = resolve; });
  return {
    consume: async () => Object.assign((async function* () {
      yield* msgs;
      await closed;
    })(), { close: async () => close() }),
  };
}

const item = z.strictObject({ tenant: z.string(), id: z.string(), tier: z.literal('social'), n: z.number() });
type Item = z.infer<typeof item>;

/** A test stage: behaviour per input from `act`. */
function stage(name: string, act: (input: Item) => Item[] | Promise<Item[]>): StageDefinition<Item, Item, Record<string, never>, StageDeps> {
  return {
    name, input: item, output: item, config: z.object({}),
    identify: (i) => [{ tenant: i.tenant, request_id: i.id, tier: i.tier, category: 'cat' }],
    tierOf: (i) => i.tier,
    create: (): Stage<Item, Item> => ({ process: async (input) => act(input) }),
  };
}

function harness(first: StageDefinition<Item, Item, any, StageDeps>, second: StageDefinition<Item, Item, any, StageDeps>, link: 'inline' | 'durable') {
  const run = () => ({ pullBatch: 10, concurrency: 4, maxAttempts: 3, backoffBaseMs: 100, backoffCapMs: 1_000, ackWaitMs: 30_000 });
  const graph: PipelineGraph = {
    nodes: [
      { name: 'first', def: first, reads: 'requests', subject: 'request', run },
      { name: 'second', def: second, reads: 'work', subject: 'seconds', run },
      { name: 'third', def: stage('third', (i) => [i]), reads: 'work', subject: 'thirds', run },
    ],
    edges: [{ from: 'first', to: 'second', link: () => link }, { from: 'second', to: 'third', link: () => 'durable' }],
  };
  const published: { subject: string; data: string; msgID: string }[] = [];
  let releasePublishes!: () => void;
  const publishesHeld = new Promise<void>((resolve) => { releasePublishes = resolve; });
  const receipts: Receipt[] = [];
  const assembly = new Assembly({
    graph, topology: new Topology(graph.nodes), deps: {} as StageDeps, metrics: new Metrics(), log: createLogger('silent'),
    settings: { ackWaitMs: 30_000, retry: { maxAttempts: 3, backoffBaseMs: 100, backoffCapMs: 1_000 } },
    publish: async (subject, data, msgID) => {
      published.push({ subject, data: String(typeof data === 'string' ? data : Buffer.from(data)), msgID });
      if (!subject.includes('dlq')) await publishesHeld;
      return {};
    },
    receipts: { add: (r) => receipts.push(r), flush: async () => undefined },
  });
  const runOn = async (msgs: JsMsg[]) => {
    const runner = assembly.runner({ node: graph.nodes[0], tier: 'social', durable: 'first_social' }, fakeSource(msgs));
    await runner.start();
    return runner;
  };
  return { published, receipts, releasePublishes, runOn };
}

const until = async (check: () => boolean) => {
  for (let i = 0; i < 200 && !check(); i++) await new Promise((r) => setTimeout(r, 5));
  expect(check()).toBe(true);
};

describe('the runner against fake messages', () => {
  it('publishes every output with a msgID from the input, and acks only after the PubAcks', async () => {
    const h = harness(stage('first', (i) => [{ ...i, n: 1 }, { ...i, n: 2 }]), stage('second', (i) => [i]), 'durable');
    const { m, settled } = fakeMessage({ tenant: 't', id: 'r1', tier: 'social', n: 0 }, 7);
    const runner = await h.runOn([m]);
    await until(() => h.published.length === 2);
    await new Promise((r) => setTimeout(r, 20));
    expect(settled).toEqual([]);
    h.releasePublishes();
    await until(() => settled.length === 1);
    expect(settled).toEqual(['ack']);
    expect(h.published.map((p) => [p.subject, p.msgID, JSON.parse(p.data).n])).toEqual([
      ['notify.seconds.social', 'first_social:7:0', 1],
      ['notify.seconds.social', 'first_social:7:1', 2],
    ]);
    await runner.close();
  });

  it('dead-letters a permanent failure on the node\'s DLQ subject with receipts naming whom it was about, then terms', async () => {
    const h = harness(stage('first', () => { throw new PermanentError('no good', ['n: too big']); }), stage('second', (i) => [i]), 'durable');
    const { m, settled } = fakeMessage({ tenant: 't', id: 'r1', tier: 'social', n: 0 }, 8);
    const bad = fakeMessage('{not json', 9);
    const runner = await h.runOn([m, bad.m]);
    await until(() => settled.length === 1 && bad.settled.length === 1);
    expect(settled).toEqual(['term']);
    expect(bad.settled).toEqual(['term']);
    const letters = h.published.filter((p) => p.subject === 'notify.dlq.first').map((p) => JSON.parse(p.data));
    expect(letters).toHaveLength(2);
    expect(letters[0]).toMatchObject({ stage: 'first', reason: 'no good', problems: ['n: too big'], stream_seq: 8, tenant: 't', request_id: 'r1' });
    expect(letters[1].problems[0]).toMatch(/not UTF-8 JSON/);
    expect(h.receipts.filter((r) => r.request_id === 'r1')).toMatchObject([{ stage: 'first', status: 'dead_lettered', tenant: 't', tier: 'social', category: 'cat' }]);
    await runner.close();
  });

  it('naks a retryable failure with backoff, and gives up on the last attempt', async () => {
    const h = harness(stage('first', () => { throw new RetryableError('later', 250); }), stage('second', (i) => [i]), 'durable');
    const early = fakeMessage({ tenant: 't', id: 'r1', tier: 'social', n: 0 }, 10, 1);
    const last = fakeMessage({ tenant: 't', id: 'r2', tier: 'social', n: 0 }, 11, 3);
    const runner = await h.runOn([early.m, last.m]);
    await until(() => early.settled.length === 1 && last.settled.length === 1);
    expect(early.settled).toEqual(['nak 250']);
    expect(last.settled).toEqual(['term']);
    expect(h.published.filter((p) => p.subject === 'notify.dlq.first').map((p) => JSON.parse(p.data).attempts)).toEqual([3]);
    await runner.close();
  });

  it('gives an in-process node its own identity: it dead-letters its own input and the message is acked', async () => {
    const h = harness(
      stage('first', (i) => [{ ...i, n: 1 }, { ...i, n: 2 }]),
      stage('second', (i) => { if (i.n === 2) throw new PermanentError('second refuses 2', []); return [i]; }),
      'inline',
    );
    h.releasePublishes();
    const { m, settled } = fakeMessage({ tenant: 't', id: 'r1', tier: 'social', n: 0 }, 12);
    const runner = await h.runOn([m]);
    await until(() => settled.length === 1);
    expect(settled).toEqual(['ack']);
    const outputs = h.published.filter((p) => !p.subject.includes('dlq'));
    expect(outputs.map((p) => [p.subject, JSON.parse(p.data).n])).toEqual([['notify.thirds.social', 1]]);
    const [letter] = h.published.filter((p) => p.subject === 'notify.dlq.second').map((p) => JSON.parse(p.data));
    // Named as the input it was (the first node's second output), so giving up again writes the same letter.
    expect(h.published.filter((p) => p.subject === 'notify.dlq.second').map((p) => p.msgID)).toEqual([expect.stringMatching(/:dlq:second:first_social:12:1$/)]);
    // A redrive goes to the second node's own subject (it has its own consumer).
    expect(letter).toMatchObject({ stage: 'second', subject: 'notify.seconds.social', reason: 'second refuses 2' });
    expect(h.receipts).toMatchObject([{ stage: 'second', status: 'dead_lettered', request_id: 'r1' }]);
    await runner.close();
  });

  it('retries the whole message while an in-process node fails for now, never giving up in its name', async () => {
    const h = harness(stage('first', (i) => [i]), stage('second', () => { throw new Error('redis away'); }), 'inline');
    const { m, settled } = fakeMessage({ tenant: 't', id: 'r1', tier: 'social', n: 0 }, 13, 1);
    const runner = await h.runOn([m]);
    await until(() => settled.length === 1);
    expect(settled[0]).toMatch(/^nak \d+$/);
    expect(h.receipts).toEqual([]);
    await runner.close();
  });
});

describe('the runner under backpressure and giving up', () => {
  it('waits out a full stream downstream without spending attempts, however often it is redelivered', async () => {
    const run = () => ({ pullBatch: 10, concurrency: 4, maxAttempts: 3, backoffBaseMs: 100, backoffCapMs: 1_000, ackWaitMs: 30_000 });
    const graph: PipelineGraph = {
      nodes: [
        { name: 'first', def: stage('first', (i) => [i]), reads: 'requests', subject: 'request', run },
        { name: 'second', def: stage('second', (i) => [i]), reads: 'work', subject: 'seconds', run },
      ],
      edges: [{ from: 'first', to: 'second', link: () => 'durable' }],
    };
    const published: string[] = [];
    let failures = 0;
    const assembly = new Assembly({
      graph, topology: new Topology(graph.nodes), deps: {} as StageDeps, metrics: new Metrics(), log: createLogger('silent'),
      settings: { ackWaitMs: 30_000, retry: { maxAttempts: 3, backoffBaseMs: 100, backoffCapMs: 1_000 } },
      publish: async (subject) => {
        published.push(subject);
        if (!subject.includes('dlq')) throw new Error('maximum bytes exceeded');
        return {};
      },
      receipts: { add: () => undefined, flush: async () => undefined },
      attempts: {
        current: async (_id, n) => ({ attempt: n }), failed: async (_id, n) => { failures++; return { attempt: n }; },
        started: async () => 0, settled: () => undefined, clear: () => undefined,
      },
    });
    const msgs = [fakeMessage({ tenant: 't', id: 'r1', tier: 'social', n: 0 }, 20, 1), fakeMessage({ tenant: 't', id: 'r2', tier: 'social', n: 0 }, 21, 99)];
    const runner = assembly.runner({ node: graph.nodes[0], tier: 'social', durable: 'first_social' }, fakeSource(msgs.map((x) => x.m)));
    await runner.start();
    await until(() => msgs.every((x) => x.settled.length === 1));
    for (const x of msgs) expect(x.settled[0]).toMatch(/^nak \d+$/);
    expect(Number(msgs[0].settled[0].slice(4))).toBeGreaterThanOrEqual(1_000);
    expect(failures).toBe(0);
    expect(published.some((s) => s.includes('dlq'))).toBe(false);
    await runner.close();
  });

  it('says "rejected" only when the input is at fault: a stage that ran out of attempts dead-letters', async () => {
    const rejecting = { ...stage('first', () => { throw new RetryableError('redis away'); }), giveUpStatus: 'rejected' as const };
    const h = harness(rejecting, stage('second', (i) => [i]), 'durable');
    const { m, settled } = fakeMessage({ tenant: 't', id: 'r1', tier: 'social', n: 0 }, 30, 3);
    const runner = await h.runOn([m]);
    await until(() => settled.length === 1);
    expect(settled).toEqual(['term']);
    expect(h.receipts.map((r) => r.status)).toEqual(['dead_lettered']);
    await runner.close();
  });

  it('sets a message aside unprocessed once the process has died under it again and again', async () => {
    let handled = 0;
    const first = stage('first', (i) => { handled++; return [i]; });
    const run = () => ({ pullBatch: 10, concurrency: 4, maxAttempts: 12, backoffBaseMs: 100, backoffCapMs: 1_000, ackWaitMs: 30_000 });
    const graph: PipelineGraph = {
      nodes: [
        { name: 'first', def: first, reads: 'requests', subject: 'request', run },
        { name: 'second', def: stage('second', (i) => [i]), reads: 'work', subject: 'seconds', run },
      ],
      edges: [{ from: 'first', to: 'second', link: () => 'durable' }],
    };
    // Starts per message that never settled, as the attempt log would hold them after crashes.
    const starts = new Map<string, number>([['first_social:41', 3], ['first_social:42', 2]]);
    const settledIds: string[] = [];
    const published: { subject: string; data: string }[] = [];
    const receipts: Receipt[] = [];
    const assembly = new Assembly({
      graph, topology: new Topology(graph.nodes), deps: {} as StageDeps, metrics: new Metrics(), log: createLogger('silent'),
      settings: { ackWaitMs: 30_000, retry: { maxAttempts: 12, backoffBaseMs: 100, backoffCapMs: 1_000 } },
      publish: async (subject, data) => { published.push({ subject, data: String(data) }); return {}; },
      receipts: { add: (r) => receipts.push(r), flush: async () => undefined },
      attempts: {
        current: async (_id, n) => ({ attempt: 1 }), failed: async (_id, n) => ({ attempt: n }), clear: () => undefined,
        started: async (id) => { const n = starts.get(id) ?? 0; starts.set(id, n + 1); return n; },
        settled: (id) => settledIds.push(id),
      },
    });
    const poison = fakeMessage({ tenant: 't', id: 'pill', tier: 'social', n: 0 }, 41, 5);
    const survivor = fakeMessage({ tenant: 't', id: 'ok', tier: 'social', n: 0 }, 42, 3);
    const runner = assembly.runner({ node: graph.nodes[0], tier: 'social', durable: 'first_social' }, fakeSource([poison.m, survivor.m]));
    await runner.start();
    await until(() => poison.settled.length === 1 && survivor.settled.length === 1);
    expect(poison.settled).toEqual(['term']);
    expect(survivor.settled).toEqual(['ack']);
    expect(handled).toBe(1);
    // The survivor's output was stored: progress, so its unsettled starts are forgotten.
    expect(settledIds).toEqual(['first_social:42']);
    const [letter] = published.filter((p) => p.subject === 'notify.dlq.first').map((p) => JSON.parse(p.data));
    expect(letter.reason).toMatch(/delivered 5 times and never settled \(4 starts\)/);
    expect(receipts.filter((r) => r.request_id === 'pill').map((r) => r.status)).toEqual(['dead_lettered']);
    await runner.close();
  });
});


describe('the runner waiting for receipts', () => {
  /** One slot, three messages, receipts stored only when the test says so. */
  const setUp = (priority?: Priority) => {
    const seen: number[] = [];
    const run = () => ({ pullBatch: 10, concurrency: 1, maxAttempts: 3, backoffBaseMs: 100, backoffCapMs: 1_000, ackWaitMs: 30_000 });
    const graph: PipelineGraph = { nodes: [{ name: 'first', def: stage('first', (i) => { seen.push(i.n); return []; }), reads: 'requests', subject: 'request', run }], edges: [] };
    let storeReceipts!: () => void;
    const stored = new Promise<void>((resolve) => { storeReceipts = resolve; });
    const prompt: boolean[] = [];
    const assembly = new Assembly({
      graph, topology: new Topology(graph.nodes), deps: {} as StageDeps, metrics: new Metrics(), log: createLogger('silent'),
      settings: { ackWaitMs: 30_000, retry: { maxAttempts: 3, backoffBaseMs: 100, backoffCapMs: 1_000 } },
      publish: async () => ({}),
      receipts: { add: () => undefined, flush: (promptly) => { prompt.push(promptly ?? false); return stored; } },
      priority: () => priority,
    });
    const msgs = Array.from({ length: 3 }, (_, n) => fakeMessage({ tenant: 't', id: `r${n}`, tier: 'social', n }, n + 1));
    const runner = assembly.runner({ node: graph.nodes[0], tier: 'social', durable: 'first_social' }, fakeSource(msgs.map((x) => x.m)));
    return { seen, msgs, runner, storeReceipts, prompt };
  };

  it('hands a message\'s slot on once it is processed, and acks it only once its receipts are stored', async () => {
    const { seen, msgs, runner, storeReceipts, prompt } = setUp();
    await runner.start();
    // One slot, yet all three are processed while the first one's receipts are still in flight.
    await until(() => seen.length === 3);
    expect(msgs.map((x) => x.settled.join())).toEqual(['', '', '']);
    // Nothing waits on them but the acks: the receipts may wait for companions.
    expect(prompt).toEqual([false, false, false]);
    expect(runner.idle).toBe(false);
    storeReceipts();
    await until(() => msgs.every((x) => x.settled.length === 1));
    expect(msgs.map((x) => x.settled.join())).toEqual(['ack', 'ack', 'ack']);
    await runner.close();
  });

  it('keeps a bulk tier\'s slot until the ack, so its share of the process stays what it was given', async () => {
    const bulk = new TierGate().priority(false);
    const { seen, msgs, runner, storeReceipts, prompt } = setUp(bulk);
    await runner.start();
    await until(() => seen.length === 1);
    await new Promise((r) => setTimeout(r, 50));
    expect(seen).toEqual([0]);
    // The slot waits on them: they go promptly.
    expect(prompt).toEqual([true]);
    storeReceipts();
    await until(() => msgs.every((x) => x.settled.length === 1));
    expect(seen).toEqual([0, 1, 2]);
    expect(msgs.map((x) => x.settled.join())).toEqual(['ack', 'ack', 'ack']);
    await runner.close();
  });
});

/** A runner of a batch stage that hands each batch's inputs to `handle`, with these options, on `source`. */
function batchRunner(handle: (ns: number[]) => Promise<void> | void, run: GraphNode['run'], source: ReturnType<typeof fakeSource>) {
  const gather: StageDefinition<Item, never, Record<string, never>, StageDeps> = {
    name: 'gather', input: item, output: null, config: z.object({}), identify: () => [], tierOf: (i) => i.tier,
    create: () => ({ processBatch: async (inputs: Item[]) => { await handle(inputs.map((i) => i.n)); return []; } }),
  };
  const graph: PipelineGraph = {
    nodes: [{ name: 'first', def: stage('first', (i) => [i]), reads: 'requests', subject: 'request', run }, { name: 'gather', def: gather, reads: 'work', subject: 'gathers', run }],
    edges: [],
  };
  const assembly = new Assembly({
    graph, topology: new Topology(graph.nodes), deps: {} as StageDeps, metrics: new Metrics(), log: createLogger('silent'),
    settings: { ackWaitMs: 30_000, retry: { maxAttempts: 3, backoffBaseMs: 100, backoffCapMs: 1_000 } },
    publish: async () => ({}),
    receipts: { add: () => undefined, flush: async () => undefined },
  });
  return assembly.runner({ node: graph.nodes[1], tier: 'social', durable: 'gather_social' }, source);
}

describe('the runner batching its inputs', () => {
  it('hands a batch over once its inputs hold maxBatchBytes, without waiting for the linger or the count', async () => {
    const batches: number[][] = [];
    const msgs = Array.from({ length: 7 }, (_, n) => fakeMessage({ tenant: 't', id: `r${n}`, tier: 'social', n }, n + 1));
    const size = msgs[0].m.data.length;
    // Three inputs fill a batch; a 60 s linger and a count of 100 would otherwise hold all seven.
    const run = () => ({ pullBatch: 10, concurrency: 1, maxBatch: 100, maxBatchBytes: 3 * size, lingerMs: 60_000, maxAttempts: 3, backoffBaseMs: 100, backoffCapMs: 1_000, ackWaitMs: 30_000 });
    const runner = batchRunner((ns) => { batches.push(ns); }, run, fakeSource(msgs.map((x) => x.m)));
    await runner.start();
    await until(() => batches.length === 2 && msgs[5].settled.length === 1);
    await new Promise((r) => setTimeout(r, 50));
    expect(batches).toEqual([[0, 1, 2], [3, 4, 5]]);
    expect(msgs.map((x) => x.settled.join())).toEqual(['ack', 'ack', 'ack', 'ack', 'ack', 'ack', '']);
    await runner.close();
    // Closing hands over what lingered.
    expect(batches).toEqual([[0, 1, 2], [3, 4, 5], [6]]);
  });
});

describe('the runner holding back while its batches wait', () => {
  it('takes no more messages in hand while a lingered batch waits for a slot, so a slow stage leaves its backlog in JetStream', async () => {
    let pulled = 0;
    const batches: number[][] = [];
    let release!: () => void;
    const stuck = new Promise<void>((resolve) => { release = resolve; });
    const msgs = Array.from({ length: 60 }, (_, n) => fakeMessage({ tenant: 't', id: `r${n}`, tier: 'social', n }, n + 1));
    // Messages come a few milliseconds apart, so the 5 ms linger hands over small batches.
    let close!: () => void;
    const closed = new Promise<void>((resolve) => { close = resolve; });
    const source = {
      consume: async () => Object.assign((async function* () {
        for (const x of msgs) {
          await new Promise((r) => setTimeout(r, 2));
          pulled++;
          yield x.m;
        }
        await closed;
      })(), { close: async () => close() }),
    };
    const run = () => ({ pullBatch: 10, concurrency: 1, maxBatch: 100, lingerMs: 5, batchConcurrency: 1, maxAttempts: 3, backoffBaseMs: 100, backoffCapMs: 1_000, ackWaitMs: 30_000 });
    const runner = batchRunner(async (ns) => { batches.push(ns); await stuck; }, run, source);
    await runner.start();
    await until(() => batches.length === 1);
    // The first batch holds the only slot; the next lingered one waits for it, and nothing more is taken.
    await new Promise((r) => setTimeout(r, 200));
    const held = pulled;
    expect(batches.length).toBe(1);
    expect(held).toBeLessThan(20);
    release();
    await until(() => msgs.every((x) => x.settled.join() === 'ack'));
    expect(batches.flat()).toEqual(msgs.map((_, n) => n));
    await runner.close();
  });
});
