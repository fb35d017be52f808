import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DeliveryItem, Outcome, Sink } from '../sinks/sink.js';
import type { AcceptedRequest } from '../schemas/index.js';
import {
  ApnsFake, FcmFake, TwilioFake, SmtpCatcher, apnsSinkFor, fcmSinkFor, smsSinkFor, emailSinkFor,
} from './provider-fakes.js';
import type { FakeScript } from '../sinks/fakes/script.js';

type FailureKind = 'retry' | 'permanent' | 'invalid';

/** What the contract needs from each provider and its wire-level fake. */
interface SinkSpec {
  name: string;
  start(): Promise<void>;
  goDown(): Promise<void>;
  comeUp(): Promise<void>;
  stop(): Promise<void>;
  makeSink(): Sink;
  target(i: number): string;
  platform?: string;
  fail(target: string, kind: FailureKind): void;
  clear(): void;
  deliveredTo(target: string): number;
  /** What this provider's "dead address" answer maps to. */
  invalidKind: Outcome['kind'];
}

const request: AcceptedRequest = {
  id: 'req-contract', tenant: 't', idempotency_key: 'k', tier: 'transactional', category: 'security',
  channels: ['push'], accepted_at: Date.now(),
};

/** A fake scripted per target (APNs, FCM, Twilio): everything but its name, sink and addresses is the same. */
interface ScriptedFake {
  script: FakeScript;
  start(port?: number): Promise<number>;
  stop(): Promise<void>;
}

function scriptedSpec<F extends ScriptedFake>(
  fake: F, spec: Pick<SinkSpec, 'name' | 'invalidKind' | 'platform' | 'target'> & { makeSink: (fake: F) => Sink },
): SinkSpec {
  let port = 0;
  return {
    ...spec,
    start: async () => { port = await fake.start(); },
    goDown: () => fake.stop(), comeUp: async () => { await fake.start(port); }, stop: () => fake.stop(),
    makeSink: () => spec.makeSink(fake),
    fail: (t, kind) => fake.script.fail(t, { kind }),
    clear: () => fake.script.clear(),
    deliveredTo: (t) => fake.script.delivered(t).length,
  };
}

const apnsSpec = () => scriptedSpec(new ApnsFake(), {
  name: 'apns', invalidKind: 'invalid_address', platform: 'ios', makeSink: (fake) => apnsSinkFor(fake),
  target: (i) => i.toString(16).padStart(64, 'a'),
});
const fcmSpec = () => scriptedSpec(new FcmFake(), {
  name: 'fcm', invalidKind: 'invalid_address', platform: 'android', makeSink: fcmSinkFor, target: (i) => `fcm-token-${i}`,
});
const smsSpec = () => scriptedSpec(new TwilioFake({ ACfake: 'secret' }), {
  name: 'twilio', invalidKind: 'permanent', makeSink: (fake) => smsSinkFor(fake), target: (i) => `+1555${String(i).padStart(7, '0')}`,
});

function emailSpec(): SinkSpec {
  const fake = new SmtpCatcher();
  let port = 0;
  return {
    name: 'smtp', invalidKind: 'permanent',
    start: async () => { port = await fake.start(); },
    goDown: () => fake.close(), comeUp: async () => { await fake.start(port); }, stop: () => fake.close(),
    makeSink: () => emailSinkFor(fake),
    target: (i) => `user${i}@example.com`,
    fail: (t, kind) => fake.failFor(t, kind === 'retry' ? { code: 451, message: 'Try again later' } : { code: 550, message: 'No such user' }),
    clear: () => fake.clearFailures(),
    deliveredTo: (t) => fake.to(t).length,
  };
}

describe.each([apnsSpec(), fcmSpec(), smsSpec(), emailSpec()])('sink contract: $name against its wire-level fake', (spec) => {
  let sink: Sink;
  const item = (i: number): DeliveryItem => ({
    request,
    recipient: { user_id: `u${i}`, locale: 'en', to: [spec.target(i)], ...(spec.platform ? { platforms: [spec.platform] } : {}) },
    content: { title: `Title ${i}`, body: `Body ${i}` },
  });
  const send = (items: DeliveryItem[]) => sink.send(items, new AbortController().signal);

  beforeAll(async () => {
    await spec.start();
    sink = spec.makeSink();
  });
  afterAll(async () => {
    await sink.close();
    await spec.stop();
  });

  it('delivers, one outcome per item, each reaching the provider once', async () => {
    spec.clear();
    const outcomes = await send([item(1), item(2), item(3)]);
    expect(outcomes.map((o) => o.kind)).toEqual(['delivered', 'delivered', 'delivered']);
    for (const i of [1, 2, 3]) expect(spec.deliveredTo(spec.target(i))).toBe(1);
  });

  it('maps a passing failure to retry, a refusal to permanent, a dead address to its kind', async () => {
    spec.clear();
    spec.fail(spec.target(11), 'retry');
    spec.fail(spec.target(12), 'permanent');
    spec.fail(spec.target(13), 'invalid');
    const outcomes = await send([item(10), item(11), item(12), item(13)]);
    expect(outcomes.map((o) => o.kind)).toEqual(['delivered', 'retry', 'permanent', spec.invalidKind]);
    const invalid = outcomes[3];
    if (invalid.kind === 'invalid_address') expect(invalid.address).toBe(spec.target(13));
    expect(spec.deliveredTo(spec.target(11))).toBe(0);
  });

  it('fails one bad address among 500 alone', async () => {
    spec.clear();
    spec.fail(spec.target(1_250), 'invalid');
    const items = Array.from({ length: 500 }, (_, i) => item(1_000 + i));
    const outcomes = await send(items);
    expect(outcomes).toHaveLength(500);
    expect(outcomes.filter((o) => o.kind === 'delivered')).toHaveLength(499);
    expect(outcomes[250].kind).toBe(spec.invalidKind);
  });

  it('answers retry for every item while the provider is down, and delivers once it is back', async () => {
    spec.clear();
    await spec.goDown();
    try {
      const outcomes = await send([item(20), item(21)]);
      expect(outcomes.map((o) => o.kind)).toEqual(['retry', 'retry']);
    } finally {
      await spec.comeUp();
    }
    // As the pipeline would: retry what is still 'retry' (a pooled connection that died with the
    // provider fails on its first reuse), a few times.
    let pending = [item(20), item(21)];
    for (let attempt = 0; attempt < 3 && pending.length; attempt++) {
      const outcomes = await send(pending);
      pending = pending.filter((_, i) => outcomes[i].kind === 'retry');
    }
    expect(pending).toEqual([]);
    expect(spec.deliveredTo(spec.target(20))).toBe(1);
    expect(spec.deliveredTo(spec.target(21))).toBe(1);
  });
});
