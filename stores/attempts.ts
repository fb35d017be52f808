import type { KeySpace } from './keys.js';
import type { Redis } from 'ioredis';

/** How many real failures a message has had, and the first one, across processes and restarts. */
export interface AttemptRecord {
  count: number;
  firstError: string;
}

/**
 * Counts failed attempts per message in Redis. JetStream's delivery count also counts deliveries
 * that were only deferred (send_at, an open breaker, a rate limit), which are not attempts.
 */
export class AttemptLog {
  constructor(private readonly redis: Redis, private readonly keys: KeySpace, private readonly ttlSeconds = 7 * 86_400) {}

  private key(id: string): string {
    return this.keys.internal('attempts', id);
  }

  async get(id: string): Promise<AttemptRecord | undefined> {
    const [count, firstError] = await this.redis.hmget(this.key(id), 'count', 'first');
    return count ? { count: Number(count), firstError: firstError ?? '' } : undefined;
  }

  /** Records one failure; returns the count so far, this one included. */
  async fail(id: string, error: string): Promise<AttemptRecord> {
    const key = this.key(id);
    const [[, count], , [, first]] = (await this.redis.multi()
      .hincrby(key, 'count', 1)
      .hsetnx(key, 'first', error.slice(0, 1_000))
      .hget(key, 'first')
      .expire(key, this.ttlSeconds)
      .exec()) as [Error | null, unknown][];
    return { count: Number(count), firstError: String(first ?? error) };
  }

  /** Counts one more start of a redelivered message; returns the starts before this one. */
  async started(id: string): Promise<number> {
    const key = this.key(id);
    const [[, starts]] = (await this.redis.multi().hincrby(key, 'starts', 1).expire(key, this.ttlSeconds).exec()) as [Error | null, unknown][];
    return Number(starts) - 1;
  }

  /** The message was settled (nak'd): the starts so far ended well. */
  async settled(id: string): Promise<void> {
    await this.redis.hdel(this.key(id), 'starts');
  }

  async clear(id: string): Promise<void> {
    await this.redis.del(this.key(id));
  }
}
