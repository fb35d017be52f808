import { describe, expect, it } from 'vitest';
import { decodedReceiptKeys, decodeReceiptBatch, receiptBatchSchema, receiptSchema, receiptStatuses } from '../../schemas/index.js';

/** A small seeded PRNG (mulberry32): the same cases on every run. */
function prng(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const random = prng(13);
const pick = <T>(xs: readonly T[]): T => xs[Math.floor(random() * xs.length)];

/** A receipt as Herald writes one: required fields, and some of the optional ones. */
function validReceipt(): Record<string, unknown> {
  const r: Record<string, unknown> = {
    ts: 1_800_000_000_000 + Math.floor(random() * 1e6), stage: pick(['validate', 'resolve', 'dispatch']),
    status: pick(receiptStatuses), request_id: `r${Math.floor(random() * 1e6)}`, tenant: 'acme', tier: 'social', category: 'news',
  };
  if (random() < 0.5) r.channel = pick(['inapp', 'push', '']);
  if (random() < 0.3) r.provider = 'fcm';
  if (random() < 0.5) r.user_id = `u${Math.floor(random() * 100)}`;
  if (random() < 0.2) r.reason = 'quiet hours';
  if (random() < 0.3) r.attempt = 1 + Math.floor(random() * 5);
  if (random() < 0.5) r.latency_ms = Math.floor(random() * 500);
  if (random() < 0.3) r.count = Math.floor(random() * 500);
  if (random() < 0.2) r.user_ids = ['u1', 'u2', 'u3'];
  if (random() < 0.2) r.unit = 'chunk:3';
  if (random() < 0.1) r.channels = ['inapp', 'email'];
  return r;
}

/** One way a receipt can be wrong, or nearly wrong (edges the schema still accepts). */
const mutations: ((r: Record<string, unknown>) => void)[] = [
  (r) => { delete r[pick(['ts', 'stage', 'status', 'request_id', 'tenant', 'tier', 'category'])]; },
  (r) => { r[pick(['ts', 'attempt', 'latency_ms', 'count'])] = pick(['1', null, true, [], {}, 1.5, -1, 0, 2 ** 53, -(2 ** 53)]); },
  (r) => { r[pick(['stage', 'status', 'request_id', 'tenant', 'tier', 'category', 'channel', 'provider', 'user_id', 'reason', 'unit'])] = pick([1, null, false, ['x'], {}, '']); },
  (r) => { r.status = pick(['delivered ', 'DELIVERED', 'sent', '', 'seen']); },
  (r) => { r[pick(['extra', '__proto__', 'constructor', 'id'])] = 'x'; },
  (r) => { r.unit = 'u'.repeat(pick([199, 200, 201])); },
  (r) => { r.channels = Array.from({ length: pick([0, 16, 17]) }, () => 'inapp'); },
  (r) => { r[pick(['user_ids', 'channels'])] = pick([[], ['a', 1], 'a', null, [null], [['a']]]); },
  (r) => { r.ts = pick([0, -5, 1.25, 1e300]); },
];

function assertAgreesWithSchema(raw: unknown): 'fast' | 'schema' {
  const fast = decodeReceiptBatch(raw);
  const parsed = receiptBatchSchema.safeParse(raw);
  if (!parsed.success) {
    expect(fast, JSON.stringify(raw)).toBeUndefined();
    return 'schema';
  }
  if (fast === undefined) return 'schema';
  expect(fast, JSON.stringify(raw)).toStrictEqual(parsed.data);
  return 'fast';
}

describe('decoding receipt batches without zod', () => {
  it('reads every key the schema has: a key it gains (with a default, say) must be read here too', () => {
    expect([...decodedReceiptKeys].sort()).toEqual(Object.keys(receiptSchema.shape).sort());
  });

  it('gives exactly what the schema gives for the batches Herald writes, and takes the fast path for them', () => {
    for (let i = 0; i < 500; i++) {
      const batch = { receipts: Array.from({ length: 1 + Math.floor(random() * 5) }, validReceipt) };
      // Through JSON, as the runner reads it.
      expect(assertAgreesWithSchema(JSON.parse(JSON.stringify(batch)))).toBe('fast');
    }
  });

  it('never accepts what the schema rejects, and agrees with it on every edge it accepts', () => {
    const outcomes = { fast: 0, schema: 0 };
    for (let i = 0; i < 3_000; i++) {
      const receipts = Array.from({ length: 1 + Math.floor(random() * 3) }, validReceipt);
      pick(mutations)(pick(receipts));
      if (random() < 0.3) pick(mutations)(pick(receipts));
      outcomes[assertAgreesWithSchema(JSON.parse(JSON.stringify({ receipts })))]++;
    }
    // Both paths were exercised: some mutations are still valid (count 0, a 200-character unit).
    expect(outcomes.fast).toBeGreaterThan(100);
    expect(outcomes.schema).toBeGreaterThan(1_000);
  });

  it('leaves malformed batches to the schema', () => {
    const one = JSON.parse(JSON.stringify({ receipts: [validReceipt()] })) as { receipts: unknown[] };
    for (const raw of [null, 'receipts', 42, [], [one], {}, { receipts: [] }, { receipts: one.receipts[0] }, { receipts: [null] },
      { receipts: one.receipts, extra: 1 }, { receipts: [[]] }, { receipts: ['x'] }]) {
      expect(assertAgreesWithSchema(raw)).toBe('schema');
      expect(decodeReceiptBatch(raw)).toBeUndefined();
    }
  });
});
