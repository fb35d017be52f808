import type { KV } from '@nats-io/kv';
import { kvToken } from '../runtime/ids.js';
import type { Channel } from '../schemas/index.js';

/** The recipients of one (request, chunk, part, channel) already sent, with the KV revision read. */
export interface DoneSet {
  key: string;
  users: Set<string>;
  revision: number;
}

/**
 * Dedup keys in JetStream KV: per recipient in meaning, per delivery group in writes. One entry per
 * tenant + request + channel + chunk + part lists the recipients already sent, so a million-recipient
 * fan-out costs one KV write per provider batch, not one per recipient. Updated by compare-and-set.
 */
export class DedupStore {
  constructor(private readonly kv: KV) {}

  key(tenant: string, requestId: string, channel: Channel, chunk: number, part: number): string {
    return `${kvToken(tenant)}.${kvToken(requestId)}.${channel}.${chunk}.${part}`;
  }

  async read(key: string): Promise<DoneSet> {
    const entry = await this.kv.get(key);
    if (!entry || entry.operation !== 'PUT' || entry.length === 0) return { key, users: new Set(), revision: entry?.revision ?? 0 };
    return { key, users: new Set(entry.json<string[]>()), revision: entry.revision };
  }

  /** Adds `users` to the entry; on a concurrent writer, re-reads and merges. */
  async add(done: DoneSet, users: string[]): Promise<void> {
    let current = done;
    for (let attempt = 0; attempt < 5; attempt++) {
      const merged = [...new Set([...current.users, ...users])];
      const value = JSON.stringify(merged);
      try {
        if (current.revision === 0) await this.kv.create(current.key, value);
        else await this.kv.update(current.key, value, current.revision);
        return;
      } catch (err) {
        if (!/wrong last sequence|key exists/i.test(String((err as Error).message))) throw err;
        current = await this.read(current.key);
      }
    }
    throw new Error(`dedup key ${current.key}: too many concurrent writers`);
  }
}
