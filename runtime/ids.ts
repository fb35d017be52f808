import { createHash } from 'node:crypto';

/** A stable id for a request that came without one, so a replay yields the same id. */
export function requestIdFor(tenant: string, idempotencyKey: string): string {
  return createHash('sha256').update(`${tenant}\u0000${idempotencyKey}`).digest('base64url').slice(0, 22);
}

/** KV keys allow [-/_=.a-zA-Z0-9]; tenant and ids may hold anything, so they are encoded. */
export function kvToken(value: string): string {
  return /^[A-Za-z0-9_-]{1,64}$/.test(value) ? value : `=${createHash('sha256').update(value).digest('base64url').slice(0, 22)}`;
}

/** The fields that name a receipt's step; with the unit they counted, they are its identity. */
export interface ReceiptKey {
  tenant: string;
  request_id: string;
  stage: string;
  status: string;
  channel: string;
}

/**
 * A receipt's deterministic id: the same step of the same delivery (request, recipient or chunk,
 * channel, status) always gets the same id, however often a crash makes Herald emit it again, so
 * the funnel counts each id once.
 */
export function receiptId(r: ReceiptKey, unit: string): string {
  return createHash('sha256')
    .update(`${r.tenant}\u0000${r.request_id}\u0000${r.stage}\u0000${r.status}\u0000${r.channel}\u0000${unit}`)
    .digest('base64url')
    .slice(0, 22);
}

/** The unit a push receipt counts: one device of a user, named without its token. */
export function deviceUnit(userId: string, token: string): string {
  return `${userId}#${createHash('sha256').update(token).digest('base64url').slice(0, 12)}`;
}
