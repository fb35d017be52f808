import { createHash } from 'node:crypto';
import type { ChainableCommander, Redis } from 'ioredis';

/** Keys and arguments one script call may take (well under what spreading onto the stack allows). */
export const MAX_ARGUMENTS = 50_000;

/**
 * A Lua script run by EVALSHA: its text crosses the wire only when the server does not have it yet
 * (first use, or after a restart flushed the script cache), instead of with every call — on hot
 * paths (a rate-limit check per HTTP request, a status record per receipt batch) the text was most
 * of the bytes written to Redis. (ioredis's defineCommand is not used: with auto-pipelining on it
 * can hand a reply to the wrong caller.)
 */
export class RedisScript {
  /** Scripts by SHA1, named, so a slow-call report can say which one ran (bench:blast). */
  static readonly names = new Map<string, string>();
  private readonly sha: string;

  /** @param name what reports call it (its constant's name) */
  constructor(private readonly lua: string, name: string) {
    this.sha = createHash('sha1').update(lua).digest('hex');
    RedisScript.names.set(this.sha, name);
  }

  async run(redis: Redis, keys: string[], args: (string | number)[]): Promise<unknown> {
    // Arguments are spread onto the call stack; too many overflow it inside ioredis's auto-pipeline,
    // which then hands replies to the wrong callers and crashes the process. Callers split their work.
    if (keys.length + args.length > MAX_ARGUMENTS) throw new Error(`a Redis script call takes at most ${MAX_ARGUMENTS} keys and arguments, not ${keys.length + args.length}`);
    try {
      return await redis.evalsha(this.sha, keys.length, ...keys, ...args);
    } catch (err) {
      if (!String((err as Error).message).startsWith('NOSCRIPT')) throw err;
      return redis.eval(this.lua, keys.length, ...keys, ...args);
    }
  }

  /** Queues the script on a pipeline (by its text: a pipeline cannot retry one command alone). */
  queue(pipeline: ChainableCommander, keys: string[], args: (string | number)[]): void {
    pipeline.eval(this.lua, keys.length, ...keys, ...args);
  }
}
