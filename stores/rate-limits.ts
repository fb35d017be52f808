import type { KeySpace } from './keys.js';
import type { Redis } from 'ioredis';
import { RedisScript } from './scripts.js';

/**
 * Token buckets in Redis, taken atomically by one script for several buckets at once (provider and
 * tenant): either every bucket has the tokens and all are taken, or none is and the script says how
 * long to wait. A provider's Retry-After pauses its bucket for everyone.
 * KEYS: bucket keys, then the pause key. ARGV: now ms, tokens wanted, then rate/s and burst per bucket.
 */
const TAKE = new RedisScript(`
local now = tonumber(ARGV[1])
local want = tonumber(ARGV[2])
local n = #KEYS - 1
local paused = tonumber(redis.call('GET', KEYS[#KEYS]) or '0')
if paused > now then return paused - now end
local wait = 0
local levels = {}
for i = 1, n do
  local rate = tonumber(ARGV[1 + i * 2])
  local burst = tonumber(ARGV[2 + i * 2])
  local b = redis.call('HMGET', KEYS[i], 'tokens', 'at')
  local tokens = tonumber(b[1]) or burst
  local at = tonumber(b[2]) or now
  tokens = math.min(burst, tokens + (now - at) * rate / 1000)
  levels[i] = tokens
  local need = math.min(want, burst)
  if tokens < need then wait = math.max(wait, math.ceil((need - tokens) * 1000 / rate)) end
end
if wait > 0 then return wait end
for i = 1, n do
  local burst = tonumber(ARGV[2 + i * 2])
  redis.call('HSET', KEYS[i], 'tokens', levels[i] - math.min(want, burst), 'at', now)
  redis.call('PEXPIRE', KEYS[i], 3600000)
end
return 0`, 'TAKE');

/** A rate in deliveries per second, with the burst a bucket holds. */
export interface Rate {
  perSecond: number;
  burst?: number;
}

/**
 * Takes `count` tokens from every bucket at once, or from none; returns 0 or the ms to wait. Buckets
 * live in Redis, so every process and replica shares them.
 */
export async function takeTokens(redis: Redis, buckets: [string, Rate][], pauseKey: string, now: number, count: number): Promise<number> {
  const args: (string | number)[] = [now, count];
  for (const [, r] of buckets) args.push(r.perSecond, r.burst ?? Math.max(1, r.perSecond));
  return Number(await TAKE.run(redis, [...buckets.map(([k]) => k), pauseKey], args));
}

/**
 * Tokens taken ahead from a shared bucket in blocks and spent in this process within a second, so
 * Redis sees one call per block instead of one per take. A block is at most a tenth of the bucket's
 * rate (and 20), so what a process holds back from the others is small; more than the shared limit
 * is never spent. One block is fetched at a time per bucket: concurrent takes wait for it rather
 * than each taking a block of their own.
 */
export class TokenCredit {
  private readonly credit = new Map<string, { tokens: number; until: number }>();
  private readonly fetching = new Map<string, Promise<number>>();

  constructor(private readonly now: () => number = Date.now) {}

  /**
   * Takes `count` tokens of bucket `key` (rate `perSecond`): from credit when there is enough, else
   * a block from `fromRedis(n)` (which takes n tokens from the shared bucket: 0, or the ms to wait).
   * Returns 0 or the ms to wait.
   */
  async take(key: string, count: number, perSecond: number, fromRedis: (n: number) => Promise<number>): Promise<number> {
    for (;;) {
      if (this.spend(key, count)) return 0;
      const inFlight = this.fetching.get(key);
      if (!inFlight) break;
      // Someone is fetching a block for this bucket: it may cover this take too. If the bucket had
      // no block to give, ask for just this take.
      if ((await inFlight.catch(() => 1)) > 0) return fromRedis(count);
    }
    const block = Math.max(count, Math.min(20, Math.floor(perSecond / 10)));
    const taking = fromRedis(block).then((wait) => {
      if (wait === 0) {
        const held = this.credit.get(key);
        const now = this.now();
        // Deleted first, so the bucket moves to the newest end and the oldest is what gets evicted.
        this.credit.delete(key);
        this.credit.set(key, { tokens: (held && held.until > now ? held.tokens : 0) + block, until: now + 1_000 });
        if (this.credit.size > 10_000) this.credit.delete(this.credit.keys().next().value!);
      }
      return wait;
    });
    this.fetching.set(key, taking);
    let wait: number;
    try {
      wait = await taking;
    } finally {
      if (this.fetching.get(key) === taking) this.fetching.delete(key);
    }
    if (wait > 0) return block > count ? fromRedis(count) : wait;
    return this.spend(key, count) ? 0 : this.take(key, count, perSecond, fromRedis);
  }

  private spend(key: string, count: number): boolean {
    const c = this.credit.get(key);
    if (!c || c.until <= this.now() || c.tokens < count) return false;
    c.tokens -= count;
    return true;
  }
}

export class RateLimiter {
  constructor(
    private readonly redis: Redis,
    private readonly keys: KeySpace,
    private readonly providerRates: Record<string, Rate>,
    private readonly tenantRate?: Rate,
    private readonly now: () => number = Date.now,
  ) {
    this.credit = new TokenCredit(now);
  }

  /** Tokens taken ahead from Redis and not used yet, per provider+tenant (spent within a second). */
  private readonly credit: TokenCredit;

  /**
   * Takes `count` tokens for a provider and a tenant; returns 0, or the ms to wait before trying
   * again. Small takes (one email) draw on tokens taken ahead in blocks, so Redis sees one call per
   * block rather than one per message.
   */
  async take(provider: string, tenant: string, count: number): Promise<number> {
    return this.credit.take(`${provider}\u0000${tenant}`, count, this.blockLimit(provider), (n) => this.takeFromRedis(provider, tenant, n));
  }

  /** A provider's configured rate; `twilio2` and `twilio-sandbox` use `twilio`'s. */
  private rateFor(provider: string): Rate | undefined {
    return this.providerRates[provider] ?? this.providerRates[provider.replace(/-sandbox$|\d+$/, '')];
  }

  private blockLimit(provider: string): number {
    const rates = [this.rateFor(provider)?.perSecond, this.tenantRate?.perSecond];
    return Math.min(...rates.filter((r): r is number => r !== undefined), 1_000);
  }

  private async takeFromRedis(provider: string, tenant: string, count: number): Promise<number> {
    const buckets: [string, Rate][] = [];
    const providerRate = this.rateFor(provider);
    if (providerRate) buckets.push([this.keys.internal('rate', 'p', provider), providerRate]);
    if (this.tenantRate) buckets.push([this.keys.internal('rate', 't', tenant, provider), this.tenantRate]);
    return takeTokens(this.redis, buckets, this.keys.internal('rate', 'pause', provider), this.now(), count);
  }

  /** The provider said "slow down until then" (429 Retry-After): every process waits. */
  async pause(provider: string, untilMs: number): Promise<void> {
    const ms = untilMs - this.now();
    if (ms > 0) await this.redis.set(this.keys.internal('rate', 'pause', provider), String(untilMs), 'PX', ms);
  }
}
