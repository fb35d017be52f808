import { createHash } from 'node:crypto';

/** A stable id for a request that came without one, so a replay yields the same id. */
export function requestIdFor(tenant: string, idempotencyKey: string): string {
  return createHash('sha256').update(`${tenant}\u0000${idempotencyKey}`).digest('base64url').slice(0, 22);
}

/** KV keys allow [-/_=.a-zA-Z0-9]; tenant and ids may hold anything, so they are encoded. */
export function kvToken(value: string): string {
  return /^[A-Za-z0-9_-]{1,64}$/.test(value) ? value : `=${createHash('sha256').update(value).digest('base64url').slice(0, 22)}`;
}
