import { describe, expect, it } from 'vitest';
import { parseQuietHours, quietUntil } from '../../runtime/quiet-hours.js';
import { Flow, type FlowEnv, type FlowStep } from '../../pipeline/flow.js';
import { Metrics } from '../../pipeline/metrics.js';
import type { GraphNode } from '../../pipeline/graph.js';
import { createLogger } from '../../runtime/logger.js';
import { TierGate } from '../../pipeline/tier-gate.js';
import { recordsFromFlags } from '../../cli/directory-set.js';
import { directoryRecordSchema } from '../../schemas/index.js';
import type { Stage } from '../../pipeline/stage.js';
import type { UserView } from '../../stores/directory.js';

const night = { start: '22:00', end: '07:00' };
const la = 'America/Los_Angeles';
const at = (iso: string) => Date.parse(iso);

describe('quiet hours in the user\'s time zone', () => {
  it.each([
    // [what, now (UTC), until (UTC) or null]
    ['23:30 PST, ordinary night', '2026-11-22T07:30:00Z', '2026-11-22T15:00:00Z'],
    ['23:30 PST before spring forward: ends 07:00 PDT, an hour sooner in UTC', '2026-03-08T07:30:00Z', '2026-03-08T14:00:00Z'],
    ['23:30 PDT before fall back: ends 07:00 PST', '2026-11-01T06:30:00Z', '2026-11-01T15:00:00Z'],
    ['06:59 PST: ends in a minute', '2026-11-22T14:59:00Z', '2026-11-22T15:00:00Z'],
    ['22:00 PST: the window opens', '2026-11-22T06:00:00Z', '2026-11-22T15:00:00Z'],
    ['07:00 PST: over', '2026-11-22T15:00:00Z', null],
    ['21:59 PST: not yet', '2026-11-22T05:59:00Z', null],
    ['noon: not quiet', '2026-11-22T20:00:00Z', null],
  ])('%s', (_what, now, until) => {
    expect(quietUntil(night, la, at(now))).toBe(until === null ? null : at(until));
  });

  it('handles a window that does not cross midnight', () => {
    const lunch = { start: '12:00', end: '13:30' };
    expect(quietUntil(lunch, 'Europe/Paris', at('2026-07-01T10:15:00Z'))).toBe(at('2026-07-01T11:30:00Z'));
    expect(quietUntil(lunch, 'Europe/Paris', at('2026-07-01T11:30:00Z'))).toBeNull();
  });

  it('moves an end that falls in the spring-forward gap to the first real minute after it', () => {
    // 02:30 does not exist in Los Angeles on 2026-03-08: the window ends at 03:30 PDT.
    const until = quietUntil({ start: '01:00', end: '02:30' }, la, at('2026-03-08T09:30:00Z'));
    expect(until).toBe(at('2026-03-08T10:30:00Z'));
  });

  it('reads only well-formed stored windows', () => {
    expect(parseQuietHours('22:00-07:00')).toEqual(night);
    expect(parseQuietHours('25:00-07:00')).toBeUndefined();
    expect(parseQuietHours('07:00-07:00')).toBeUndefined();
    expect(parseQuietHours(undefined)).toBeUndefined();
  });
});

/** A flow of two in-process nodes, the second `concurrency` at a time, its outputs on subject "out". */
function twoNodeFlow(first: Stage<number, number>, second: Stage<number, string>, concurrency: number): Flow {
  const step = (name: string, stage: Stage<any, any>): FlowStep => ({
    node: { name, def: { name, identify: () => [] } } as unknown as GraphNode, stage, log: createLogger('silent'), maxAttempts: 3, ownSubject: () => name,
  });
  const head = step('first', first);
  head.next = { step: { ...step('second', second), route: () => 'out' }, concurrency };
  return new Flow(head, new Metrics());
}

function flowEnv(afterOutputs: FlowEnv['afterOutputs']): FlowEnv {
  return {
    attempt: 1, redrive: false, storedAt: 0, signal: new AbortController().signal, receipt: () => undefined,
    afterOutputs, publish: () => undefined, deadLetter: async () => undefined, idRoot: 'test',
  };
}

describe('in-process flow afterOutputs', () => {
  it('runs a first-stage checkpoint only after the outputs before it were handed on, in order', async () => {
    const events: string[] = [];
    const first: Stage<number, number> = {
      process: (n, ctx) => (async function* () {
        for (let i = 0; i < n; i++) {
          yield i;
          ctx.afterOutputs(async () => { events.push(`checkpoint ${i}`); });
        }
      })(),
    };
    const second: Stage<number, string> = {
      // Later items finish first: the chain must still keep order.
      process: async (i) => { await new Promise((r) => setTimeout(r, (5 - i) * 5)); return [`out ${i}`]; },
    };
    const afters: (() => Promise<void>)[] = [];
    const env = flowEnv((fn) => { events.push(`after queued (${events.filter((e) => e.startsWith('out')).length} out)`); afters.push(fn); });
    for await (const out of await twoNodeFlow(first, second, 4).run(5, env, 'test:1')) events.push(JSON.parse(out.data));
    for (const fn of afters) await fn();
    // Each checkpoint i is queued only once "out i" has been handed on.
    const queued = events.filter((e) => e.startsWith('after queued')).map((e) => Number(/\((\d+) out\)/.exec(e)![1]));
    expect(queued).toEqual([1, 2, 3, 4, 5]);
    expect(events.filter((e) => e.startsWith('checkpoint'))).toEqual(['checkpoint 0', 'checkpoint 1', 'checkpoint 2', 'checkpoint 3', 'checkpoint 4']);
  });
});

describe('in-process window', () => {
  it('runs its size of inputs at once even when the producer checkpoints after each', async () => {
    const first: Stage<number, number> = {
      process: (_n, ctx) => (async function* () {
        for (let i = 0; i < 8; i++) {
          yield i;
          ctx.afterOutputs(async () => undefined);
        }
      })(),
    };
    let running = 0;
    let most = 0;
    const second: Stage<number, string> = {
      process: async (i) => {
        most = Math.max(most, ++running);
        await new Promise((r) => setTimeout(r, 10));
        running--;
        return [`out ${i}`];
      },
    };
    const outs: string[] = [];
    for await (const out of await twoNodeFlow(first, second, 4).run(0, flowEnv(() => undefined), 'test:2')) outs.push(JSON.parse(out.data));
    expect(outs).toEqual(Array.from({ length: 8 }, (_, i) => `out ${i}`));
    expect(most).toBe(4);
  });
});

describe('herald directory set', () => {
  const stored: UserView = {
    tenant: 'acme', id: 'ada', exists: true, email: 'ada@acme.test', locale: 'fr', timezone: 'Europe/Paris',
    hard_stop: false, preferences: {}, devices: [], topics: [],
  };

  it('turns flags into checked directory records, keeping the stored user fields it was not asked to change', () => {
    const records = recordsFromFlags('acme', 'ada', {
      phone: '+15550100', pref: ['email:promo=off', 'channel:sms=on', 'category:digest=off', 'all=on'],
      quietHours: '22:00-07:00', hardStop: 'off', device: ['ios:abc123', 'android:dead:inactive'], topic: ['news'],
    }, stored);
    expect(records).toEqual([
      { type: 'user', tenant: 'acme', id: 'ada', email: 'ada@acme.test', phone: '+15550100', locale: 'fr', timezone: 'Europe/Paris' },
      { type: 'preference', tenant: 'acme', user_id: 'ada', channel: 'email', category: 'promo', enabled: false },
      { type: 'preference', tenant: 'acme', user_id: 'ada', channel: 'sms', enabled: true },
      { type: 'preference', tenant: 'acme', user_id: 'ada', category: 'digest', enabled: false },
      { type: 'preference', tenant: 'acme', user_id: 'ada', enabled: true },
      { type: 'quiet_hours', tenant: 'acme', user_id: 'ada', start: '22:00', end: '07:00' },
      { type: 'hard_stop', tenant: 'acme', user_id: 'ada', enabled: false },
      { type: 'device', tenant: 'acme', user_id: 'ada', platform: 'ios', token: 'abc123', active: true },
      { type: 'device', tenant: 'acme', user_id: 'ada', platform: 'android', token: 'dead', active: false },
      { type: 'topic_member', tenant: 'acme', topic: 'news', user_id: 'ada' },
    ]);
    for (const r of records) expect(directoryRecordSchema.safeParse(r).success).toBe(true);
  });

  it('says what is wrong with a flag', () => {
    expect(() => recordsFromFlags('acme', 'ada', { pref: ['email:promo'] }, stored)).toThrow(/expected KEY=on\|off/);
    expect(() => recordsFromFlags('acme', 'ada', { pref: ['fax:promo=on'] }, stored)).toThrow(/"fax" is not a channel/);
    expect(() => recordsFromFlags('acme', 'ada', { quietHours: '22:00' }, stored)).toThrow(/HH:MM-HH:MM/);
    expect(() => recordsFromFlags('acme', 'ada', { hardStop: 'maybe' }, stored)).toThrow(/neither on nor off/);
    const [bad] = recordsFromFlags('acme', 'ada', { quietHours: '25:00-07:00' }, stored);
    expect(directoryRecordSchema.safeParse(bad).error?.issues[0].message).toMatch(/24-hour local time/);
  });
});

describe('tier gate', () => {
  it('lets bulk work through at once when nothing urgent is in hand, else after it settles or the step\'s wait', async () => {
    const gate = new TierGate(40);
    expect(gate.clear()).toBeUndefined();
    gate.hold(2);
    let passed = false;
    const waiting = gate.clear()!.then(() => { passed = true; });
    gate.release();
    await new Promise((r) => setTimeout(r, 5));
    expect(passed).toBe(false);
    gate.release();
    await waiting;
    expect(passed).toBe(true);
    gate.hold();
    const t0 = performance.now();
    await gate.clear();
    expect(performance.now() - t0).toBeGreaterThanOrEqual(35);
  });
});
