import { describe, expect, it } from 'vitest';
import { TokenCredit } from '../../stores/rate-limits.js';

/** A shared bucket as Redis holds it (no refill within a test): takes n, or says how long to wait. */
function bucket(tokens: number) {
  const b = { tokens, calls: 0, taken: 0 };
  const fromRedis = async (n: number) => {
    b.calls++;
    await new Promise((r) => setTimeout(r, 2));
    if (b.tokens < n) return 100;
    b.tokens -= n;
    b.taken += n;
    return 0;
  };
  return { b, fromRedis };
}

/** `n` takes of one token at once from a fresh credit on a bucket of `tokens` (rate 1,000/s: blocks of 20). */
async function concurrentTakes(tokens: number, n: number) {
  const { b, fromRedis } = bucket(tokens);
  const credit = new TokenCredit();
  const waits = await Promise.all(Array.from({ length: n }, () => credit.take('k', 1, 1_000, fromRedis)));
  return { b, waits, granted: waits.filter((w) => w === 0).length };
}

describe('rate tokens taken ahead in blocks', () => {
  it('serves concurrent takes from one block at a time, with far fewer calls than takes', async () => {
    const { b, granted } = await concurrentTakes(1_000, 200);
    expect(granted).toBe(200);
    // Blocks of 20 (a tenth of the rate, at most 20): 200 takes need 10 of them.
    expect(b.calls).toBe(10);
    expect(b.taken).toBe(200);
  });

  it('never spends more than the shared bucket gives, and says wait once it is empty', async () => {
    const { b, waits, granted } = await concurrentTakes(35, 60);
    expect(granted).toBe(35);
    expect(waits.filter((w) => w > 0).every((w) => w === 100)).toBe(true);
    expect(b.tokens).toBe(0);
  });

  it('asks for single tokens, not more blocks, once the shared bucket has no block to give', async () => {
    const { b, granted } = await concurrentTakes(5, 10);
    expect(granted).toBe(5);
    // One refused block, then one call per take.
    expect(b.calls).toBe(11);
  });

  it('takes one token at a time for a slow bucket (10/s: a block of one), so its limit is exact', async () => {
    const { b, fromRedis } = bucket(10);
    const credit = new TokenCredit();
    const waits = [];
    for (let i = 0; i < 12; i++) waits.push(await credit.take('k', 1, 10, fromRedis));
    expect(waits.filter((w) => w === 0)).toHaveLength(10);
    expect(b.calls).toBe(12);
  });

  it('lets held tokens lapse after a second, as the bucket would have refilled them for everyone', async () => {
    let now = 0;
    const { b, fromRedis } = bucket(100);
    const credit = new TokenCredit(() => now);
    await credit.take('k', 1, 1_000, fromRedis);
    now = 1_500;
    await credit.take('k', 1, 1_000, fromRedis);
    expect(b.calls).toBe(2);
  });
});
