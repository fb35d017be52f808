import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { KeySpace } from './keys.js';

/** What a key may do. `admin` implies every other scope. */
export const apiScopes = ['send', 'read', 'directory', 'admin'] as const;
export type ApiScope = (typeof apiScopes)[number];

/** A key as stored (never its secret): whose it is, what it may do, how fast. */
export interface ApiKey {
  id: string;
  tenant: string;
  name: string;
  scopes: ApiScope[];
  /** Requests per second this key may make (a token bucket shared by every replica). */
  ratePerSecond: number;
  createdAt: number;
  revokedAt?: number;
}

/** Options for a new key. */
export interface NewKey {
  tenant: string;
  name?: string;
  /** @default ['send', 'read'] */
  scopes?: ApiScope[];
  /** @default 100 */
  ratePerSecond?: number;
}

const ID = /^[A-Za-z0-9]{16}$/;

const digest = (secret: string) => createHash('sha256').update(secret).digest();

/**
 * Tenant API keys in Redis: `hk_<id>_<secret>`, shown once; only a SHA-256 of the secret is kept
 * (the secret is 256 random bits, so a slow hash adds nothing). A key is looked up by its id; a
 * replica caches what it read for at most `cacheMs`, which bounds how long a revoked key still works.
 */
export class ApiKeys {
  private readonly cache = new Map<string, { key: ApiKey | null; hash?: Buffer; until: number }>();

  constructor(private readonly redis: Redis, private readonly keys: KeySpace, private readonly cacheMs = 1_000, private readonly now: () => number = Date.now) {}

  private record(id: string): string { return this.keys.internal('apikey', id); }
  private index(): string { return this.keys.internal('apikeys'); }

  /** Makes a key; the returned `secret` is the whole key, and is never retrievable again. */
  async create(opts: NewKey): Promise<{ key: ApiKey; secret: string }> {
    const id = randomBytes(12).toString('base64url').replace(/[-_]/g, 'x').slice(0, 16);
    const secret = randomBytes(32).toString('base64url');
    const key: ApiKey = {
      id, tenant: opts.tenant, name: opts.name ?? '', scopes: opts.scopes ?? ['send', 'read'],
      ratePerSecond: opts.ratePerSecond ?? 100, createdAt: this.now(),
    };
    await this.redis.multi()
      .hset(this.record(id), { json: JSON.stringify(key), hash: digest(secret).toString('hex') })
      .sadd(this.index(), id)
      .exec();
    return { key, secret: `hk_${id}_${secret}` };
  }

  /** Every key (of one tenant, when given), revoked ones included. */
  async list(tenant?: string): Promise<ApiKey[]> {
    const ids = (await this.redis.smembers(this.index())).sort();
    const out: ApiKey[] = [];
    for (const id of ids) {
      const json = await this.redis.hget(this.record(id), 'json');
      if (!json) continue;
      const key = JSON.parse(json) as ApiKey;
      if (!tenant || key.tenant === tenant) out.push(key);
    }
    return out;
  }

  /** Revokes a key (false when there is no such key). */
  async revoke(id: string): Promise<boolean> {
    if (!ID.test(id)) return false;
    const json = await this.redis.hget(this.record(id), 'json');
    if (!json) return false;
    const key = { ...(JSON.parse(json) as ApiKey), revokedAt: this.now() };
    await this.redis.hset(this.record(id), 'json', JSON.stringify(key));
    this.cache.delete(id);
    return true;
  }

  /** The live key a presented secret belongs to, or null (unknown, malformed, wrong or revoked). */
  async verify(presented: string): Promise<ApiKey | null> {
    const m = /^hk_([A-Za-z0-9]{16})_([A-Za-z0-9_-]{43})$/.exec(presented);
    if (!m) return null;
    const [, id, secret] = m;
    const now = this.now();
    let entry = this.cache.get(id);
    if (!entry || entry.until <= now) {
      const stored = await this.redis.hgetall(this.record(id));
      entry = stored.json
        ? { key: JSON.parse(stored.json) as ApiKey, hash: Buffer.from(stored.hash, 'hex'), until: now + this.cacheMs }
        : { key: null, until: now + this.cacheMs };
      this.cache.set(id, entry);
      if (this.cache.size > 10_000) this.cache.delete(this.cache.keys().next().value!);
    }
    if (!entry.key || !entry.hash || entry.key.revokedAt !== undefined) return null;
    return timingSafeEqual(entry.hash, digest(secret)) ? entry.key : null;
  }
}

/** Whether a key may act in a scope. */
export function allows(key: ApiKey, scope: ApiScope): boolean {
  return key.scopes.includes('admin') || key.scopes.includes(scope);
}
