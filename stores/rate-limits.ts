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
return 0`);

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

export class RateLimiter {
  constructor(
    private readonly redis: Redis,
    private readonly keys: KeySpace,
    private readonly providerRates: Record<string, Rate>,
    private readonly tenantRate?: Rate,
    private readonly now: () => number = Date.now,
  ) {}

  /** Tokens taken ahead from Redis and not used yet, per provider+tenant (spent within a second). */
  private readonly credit = new Map<string, { tokens: number; until: number }>();

  /**
   * Takes `count` tokens for a provider and a tenant; returns 0, or the ms to wait before trying
   * again. Small takes (one email) draw on tokens taken ahead in blocks, so Redis sees one call per
   * block rather than one per message.
   */
  async take(provider: string, tenant: string, count: number): Promise<number> {
    const key = `${provider}\u0000${tenant}`;
    const now = this.now();
    const c = this.credit.get(key);
    if (c && c.until > now && c.tokens >= count) {
      c.tokens -= count;
      return 0;
    }
    const block = Math.max(count, Math.min(20, Math.floor(this.blockLimit(provider) / 10)));
    const wait = await this.takeFromRedis(provider, tenant, block);
    if (wait > 0) return block > count ? this.takeFromRedis(provider, tenant, count) : wait;
    this.credit.set(key, { tokens: block - count, until: now + 1_000 });
    return 0;
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
