import { randomBytes } from 'node:crypto';
import { decodeJwt, errors, jwtVerify, SignJWT } from 'jose';
import type { Redis } from 'ioredis';
import type { KeySpace } from './keys.js';

/** Who a valid user token speaks for. */
export interface UserPrincipal {
  tenant: string;
  userId: string;
}

/** Why a token was refused. */
export type TokenRefusal = 'expired' | 'invalid';

const ISSUER = 'herald';
const AUDIENCE = 'herald-inbox';
/** The longest a user token may live: they are for apps, refreshed by the app's backend. */
export const MAX_USER_TOKEN_TTL_S = 7 * 86_400;

/**
 * Short-lived user tokens (JWT, HS256 with a secret per tenant kept in Redis): an app's backend
 * mints one for a signed-in user, and the app reads and changes that user's inbox with it, nothing
 * else. The secret is made on first use; a replica caches it for `cacheMs`.
 */
export class UserTokens {
  private readonly cache = new Map<string, { secret: Uint8Array; until: number }>();
  /**
   * Tokens already verified, until they expire: an app sends the same token on every call, and
   * checking its signature anew each time was a quarter of a feed read's CPU. (There is no
   * revocation of user tokens to miss: they are short-lived by design.)
   */
  private readonly verified = new Map<string, { principal: UserPrincipal; expiresAt: number }>();

  constructor(private readonly redis: Redis, private readonly keys: KeySpace, private readonly cacheMs = 1_000, private readonly now: () => number = Date.now) {}

  private async secret(tenant: string, create: boolean): Promise<Uint8Array | null> {
    const cached = this.cache.get(tenant);
    if (cached && cached.until > this.now()) return cached.secret;
    const key = this.keys.internal('user-token-secret', tenant);
    let stored = await this.redis.get(key);
    if (!stored && create) {
      await this.redis.set(key, randomBytes(32).toString('base64'), 'NX');
      stored = await this.redis.get(key);
    }
    if (!stored) return null;
    const secret = new Uint8Array(Buffer.from(stored, 'base64'));
    this.cache.set(tenant, { secret, until: this.now() + this.cacheMs });
    if (this.cache.size > 10_000) this.cache.delete(this.cache.keys().next().value!);
    return secret;
  }

  /** A token for one user of one tenant, valid `ttlSeconds`. */
  async mint(tenant: string, userId: string, ttlSeconds: number): Promise<{ token: string; expires_at: string }> {
    const secret = (await this.secret(tenant, true))!;
    const issuedAt = Math.floor(this.now() / 1000);
    const token = await new SignJWT({ tnt: tenant })
      .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
      .setIssuer(ISSUER).setAudience(AUDIENCE).setSubject(userId)
      .setIssuedAt(issuedAt).setExpirationTime(issuedAt + ttlSeconds)
      .sign(secret);
    return { token, expires_at: new Date((issuedAt + ttlSeconds) * 1000).toISOString() };
  }

  /** The user a token speaks for, or why it is refused. */
  async verify(token: string): Promise<UserPrincipal | TokenRefusal> {
    const known = this.verified.get(token);
    if (known) {
      if (known.expiresAt > this.now()) return known.principal;
      this.verified.delete(token);
      return 'expired';
    }
    let tenant: unknown;
    try {
      tenant = decodeJwt(token).tnt;
    } catch {
      return 'invalid';
    }
    if (typeof tenant !== 'string' || !/^[A-Za-z0-9_-]{1,64}$/.test(tenant)) return 'invalid';
    const secret = await this.secret(tenant, false);
    if (!secret) return 'invalid';
    try {
      const { payload } = await jwtVerify(token, secret, {
        issuer: ISSUER, audience: AUDIENCE, algorithms: ['HS256'], currentDate: new Date(this.now()), requiredClaims: ['exp', 'sub', 'tnt'],
      });
      if (payload.tnt !== tenant || typeof payload.sub !== 'string') return 'invalid';
      const principal = { tenant, userId: payload.sub };
      this.verified.set(token, { principal, expiresAt: (payload.exp ?? 0) * 1000 });
      if (this.verified.size > 20_000) this.verified.delete(this.verified.keys().next().value!);
      return principal;
    } catch (err) {
      return err instanceof errors.JWTExpired ? 'expired' : 'invalid';
    }
  }
}
