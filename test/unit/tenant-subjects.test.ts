import path from 'node:path';
import type { JsMsg } from '@nats-io/jetstream';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { Assembly } from '../../pipeline/assembly.js';
import type { StageDeps } from '../../pipeline/deps.js';
import { pipelineGraph, topologyOf, type PipelineGraph } from '../../pipeline/graph.js';
import { Metrics } from '../../pipeline/metrics.js';
import type { StageDefinition } from '../../pipeline/stage.js';
import { validateStage } from '../../processors/validate.js';
import { PermanentError } from '../../runtime/errors.js';
import { createLogger } from '../../runtime/logger.js';
import { TemplateStore } from '../../runtime/templates.js';
import { validatedSchema, type Receipt } from '../../schemas/index.js';
import { Topology } from '../../streams/topology.js';
import { collect, fakeContext } from '../fakes.js';

const templates = new TemplateStore(path.join(import.meta.dirname, '..', '..', 'templates'));
const deps = { templates, defaultChannels: ['inapp'], now: () => 2_000 } as unknown as StageDeps;
const request = (tenant: unknown) => ({
  tenant, idempotency_key: 'k', tier: 'social', category: 'news', content: { title: 'Hi', body: 'b' }, recipients: { user_ids: ['u'] },
});

describe('request subjects carry the tenant', () => {
  const plain = topologyOf({ namespace: '', storageBudgetBytes: 1024 ** 3, replicas: 1, ackWaitMs: 30_000 });
  const spaced = topologyOf({ namespace: 'ns1', storageBudgetBytes: 1024 ** 3, replicas: 1, ackWaitMs: 30_000 });

  it('builds the tenant form, the deprecated tenantless one, and both for an intake', () => {
    expect(plain.request('transactional', 'acme')).toBe('notify.request.transactional.acme');
    expect(plain.request('transactional')).toBe('notify.request.transactional');
    expect(spaced.request('social', 'acme')).toBe('ns1.notify.request.social.acme');
    expect(plain.requestSubjects('marketing')).toEqual(['notify.request.marketing', 'notify.request.marketing.*']);
    expect(plain.anyRequest).toBe('notify.request.>');
    expect(spaced.anyRequest).toBe('ns1.notify.request.>');
  });

  it('reads the tier and tenant back from a subject, and nothing from a subject that is no request subject', () => {
    expect(plain.requestOf('notify.request.transactional.acme')).toEqual({ tier: 'transactional', tenant: 'acme' });
    expect(plain.requestOf('notify.request.transactional')).toEqual({ tier: 'transactional' });
    expect(plain.requestOf('notify.request.urgent.acme')).toEqual({ tier: 'urgent', tenant: 'acme' });
    expect(spaced.requestOf('ns1.notify.request.social.globex')).toEqual({ tier: 'social', tenant: 'globex' });
    expect(spaced.requestOf('notify.request.social.globex')).toBeNull();
    expect(plain.requestOf('notify.request.social.acme.extra')).toBeNull();
    expect(plain.requestOf('notify.validated.social')).toBeNull();
    expect(plain.requestOf('ns1.notify.request.social')).toBeNull();
  });

  it('has each intake take both forms of its tier only, and validate read its intake whole (no filter)', () => {
    const intakes = plain.streams().filter((s) => /^REQUESTS_/.test(s.name!));
    expect(intakes.map((s) => [s.name, s.subjects])).toEqual([
      ['REQUESTS_TRANSACTIONAL', ['notify.request.transactional', 'notify.request.transactional.*']],
      ['REQUESTS_SOCIAL', ['notify.request.social', 'notify.request.social.*']],
      ['REQUESTS_MARKETING', ['notify.request.marketing', 'notify.request.marketing.*']],
    ]);
    const validate = plain.consumers().filter((c) => c.config.durable_name?.startsWith('validate_'));
    expect(validate.map((c) => [c.stream, c.config.filter_subject])).toEqual([
      ['REQUESTS_TRANSACTIONAL', undefined], ['REQUESTS_SOCIAL', undefined], ['REQUESTS_MARKETING', undefined],
    ]);
  });
});

describe('validate holds the body to the tenant of its subject', () => {
  const stage = validateStage.create({ tier: 'social' }, deps);

  it('accepts a body of the subject\'s tenant, and one on the tenantless subject', async () => {
    const [own] = await collect(stage.process!(request('acme'), fakeContext({ claimedTenant: 'acme' }).ctx));
    expect(own.request.tenant).toBe('acme');
    const [old] = await collect(stage.process!(request('acme'), fakeContext().ctx));
    expect(old.request.tenant).toBe('acme');
  });

  it('rejects a body naming another tenant, naming both tenants and the subject to use', async () => {
    const err = await Promise.resolve(stage.process!(request('globex'), fakeContext({ claimedTenant: 'acme' }).ctx)).catch((e) => e);
    expect(err).toBeInstanceOf(PermanentError);
    expect((err as PermanentError).problems).toEqual([
      'tenant: "globex" published on tenant acme\'s subject notify.request.social.acme; a request goes to its own tenant\'s subject (notify.request.social.globex)',
    ]);
  });

  it('reports the crossing beside the body\'s other problems', async () => {
    const err = await Promise.resolve(stage.process!({ ...request('globex'), recipients: {} }, fakeContext({ claimedTenant: 'acme' }).ctx)).catch((e) => e);
    expect(err).toBeInstanceOf(PermanentError);
    const problems = (err as PermanentError).problems;
    expect(problems.some((p) => p.startsWith('recipients'))).toBe(true);
    expect(problems).toContain('tenant: "globex" published on tenant acme\'s subject notify.request.social.acme; a request goes to its own tenant\'s subject (notify.request.social.<tenant>)');
  });
});

/** A message as JetStream hands it over on `subject`, recording how it was settled. */
function fakeMessage(subject: string, body: unknown, seq: number) {
  const settled: string[] = [];
  const m = {
    subject, data: new TextEncoder().encode(JSON.stringify(body)), headers: undefined,
    info: { stream: 'REQUESTS_SOCIAL', streamSequence: seq, deliveryCount: 1, timestampNanos: 1_000_000_000 },
    ack: () => settled.push('ack'), nak: (ms?: number) => settled.push(`nak ${ms}`), term: () => settled.push('term'), working: () => undefined,
  };
  return { m: m as unknown as JsMsg, settled };
}

describe('the runner hands validate the tenant of the subject', () => {
  const sink: StageDefinition<unknown, never, Record<string, never>, StageDeps> = {
    name: 'resolve', input: validatedSchema, output: null, config: z.object({}), tierOf: () => 'social',
    identify: () => [], create: () => ({ process: async () => [] }),
  };
  const run = () => ({ pullBatch: 10, concurrency: 4, maxAttempts: 3, backoffBaseMs: 100, backoffCapMs: 1_000, ackWaitMs: 30_000 });
  const entry = pipelineGraph().nodes.find((n) => n.name === 'validate')!;
  const graph: PipelineGraph = {
    nodes: [{ ...entry, run }, { name: 'resolve', def: sink, reads: 'work', subject: 'validated', run }],
    edges: [{ from: 'validate', to: 'resolve', link: () => 'durable' }],
  };

  it('delivers its own tenant\'s and the tenantless subject\'s requests, and rejects a crossing in the sender\'s name', async () => {
    const published: { subject: string; data: string }[] = [];
    const receipts: Receipt[] = [];
    const assembly = new Assembly({
      graph, topology: new Topology(graph.nodes), deps, metrics: new Metrics(), log: createLogger('silent'),
      settings: { ackWaitMs: 30_000, retry: { maxAttempts: 3, backoffBaseMs: 100, backoffCapMs: 1_000 } },
      publish: async (subject, data) => { published.push({ subject, data: String(data) }); return {}; },
      receipts: { add: (r) => receipts.push(r), flush: async () => undefined },
    });
    const own = fakeMessage('notify.request.social.acme', { ...request('acme'), idempotency_key: 'own' }, 1);
    const old = fakeMessage('notify.request.social', { ...request('acme'), idempotency_key: 'old' }, 2);
    const crossing = fakeMessage('notify.request.social.acme', { ...request('globex'), idempotency_key: 'cross' }, 3);
    const msgs = [own, old, crossing];
    let close!: () => void;
    const closed = new Promise<void>((resolve) => { close = resolve; });
    const source = { consume: async () => Object.assign((async function* () { yield* msgs.map((x) => x.m); await closed; })(), { close: async () => close() }) };
    const runner = assembly.runner({ node: graph.nodes[0], tier: 'social', durable: 'validate_social' }, source);
    await runner.start();
    for (let i = 0; i < 200 && !msgs.every((x) => x.settled.length); i++) await new Promise((r) => setTimeout(r, 5));
    await runner.close();

    expect(msgs.map((x) => x.settled)).toEqual([['ack'], ['ack'], ['term']]);
    expect(published.filter((p) => p.subject === 'notify.validated.social').map((p) => JSON.parse(p.data).request.idempotency_key)).toEqual(['own', 'old']);
    const [letter] = published.filter((p) => p.subject === 'notify.dlq.validate').map((p) => JSON.parse(p.data));
    expect(letter).toMatchObject({ subject: 'notify.request.social.acme', stream_seq: 3, tenant: 'acme' });
    expect(letter.problems).toEqual([
      'tenant: "globex" published on tenant acme\'s subject notify.request.social.acme; a request goes to its own tenant\'s subject (notify.request.social.globex)',
    ]);
    // The rejection is the sender's (acme's): nothing lands in globex's receipts.
    expect(receipts.filter((r) => r.status === 'rejected').map((r) => [r.tenant, r.stage])).toEqual([['acme', 'validate']]);
    expect(receipts.filter((r) => r.tenant === 'globex')).toEqual([]);
  });
});
