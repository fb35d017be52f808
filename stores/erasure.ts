import { createHash, randomUUID } from 'node:crypto';
import type { ClickHouseClient } from '@clickhouse/client';
import type { Redis } from 'ioredis';
import { sqlString } from '../streams/apply.js';
import { Directory } from './directory.js';
import { InboxStore } from './inbox.js';
import type { KeySpace } from './keys.js';

/** What an erasure did. */
export interface ErasureReport {
  erasure_id: string;
  user_id: string;
  /** What the user's id is replaced by in the receipts: a one-way hash, the same for each erasure of them. */
  user_hash: string;
  /** Redis keys deleted (profile, devices, memberships, inbox, counters). */
  keys_deleted: number;
  /** The ClickHouse mutation that anonymises their receipts was submitted (it runs in the background). */
  receipts: 'anonymising';
}

/** The one-way name a user's receipts carry after erasure. */
export function erasedUserId(tenant: string, userId: string): string {
  return `erased:${createHash('sha256').update(`${tenant}\u0000${userId}`).digest('base64url').slice(0, 22)}`;
}

/**
 * Erasure of one user (GDPR art. 17): everything Redis holds of them goes, and their receipts in
 * ClickHouse keep counting with the user id replaced by a one-way hash. A later request naming
 * them finds no user and is suppressed as `unknown_user`. Safe to repeat.
 */
export class Erasures {
  constructor(
    private readonly redis: Redis,
    private readonly keys: KeySpace,
    private readonly clickhouse: ClickHouseClient,
    private readonly database: string,
  ) {}

  async erase(tenant: string, userId: string): Promise<ErasureReport> {
    const directoryKeys = await new Directory(this.redis, this.keys).eraseUser(tenant, userId);
    const inboxKeys = await this.redis.del(...new InboxStore(this.redis, this.keys).userKeys(tenant, userId));
    const userHash = erasedUserId(tenant, userId);
    // user_id is not in the table's key, so a mutation may change it (18.16 and current releases).
    await this.clickhouse.command({
      query: `ALTER TABLE ${this.database}.receipts UPDATE user_id = ${sqlString(userHash)} WHERE tenant = ${sqlString(tenant)} AND user_id = ${sqlString(userId)}`,
    });
    const report: ErasureReport = {
      erasure_id: randomUUID(), user_id: userId, user_hash: userHash, keys_deleted: directoryKeys + inboxKeys, receipts: 'anonymising',
    };
    // A record that it happened, without whom: the hash is enough to prove it for an auditor who has the id.
    await this.redis.set(this.keys.internal('erasure', report.erasure_id), JSON.stringify({ tenant, user_hash: userHash, at: Date.now() }), 'EX', 400 * 86_400);
    return report;
  }
}
