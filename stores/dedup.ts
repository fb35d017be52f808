import type { KV } from '@nats-io/kv';
import { kvToken } from '../runtime/ids.js';
import type { Channel } from '../schemas/index.js';

/** The recipients of one (request, chunk, part, channel) already sent, with the KV revision read. */
export interface DoneSet {
  key: string;
  /** Sent: never sent again, not even on redrive. */
  users: Set<string>;
  /** Failed for good: skipped on retries of the batch, tried again on a redrive. */
  failed: Set<string>;
  revision: number;
}

/**
 * Dedup keys in JetStream KV: per recipient in meaning, per delivery group in writes. One entry per
 * tenant + request + channel + chunk + part lists the recipients already sent, so a million-recipient
 * fan-out costs one KV write per provider batch, not one per recipient. Updated by compare-and-set.
 */
export class DedupStore {
  /**
   * Sent here but not yet stored in KV (JetStream unavailable): still counted as sent, so a
   * redelivery to this process during a NATS outage does not send again. Bounded.
   */
  private readonly unpersisted = new Map<string, Set<string>>();
  private unpersistedCount = 0;

  constructor(private readonly kv: KV, private readonly maxUnpersisted = 200_000) {}

  key(tenant: string, requestId: string, channel: Channel, chunk: number, part: number): string {
    return `${kvToken(tenant)}.${kvToken(requestId)}.${channel}.${chunk}.${part}`;
  }

  async read(key: string): Promise<DoneSet> {
    const entry = await this.kv.get(key);
    const local = this.unpersisted.get(key) ?? [];
    if (!entry || entry.operation !== 'PUT' || entry.length === 0) return { key, users: new Set(local), failed: new Set(), revision: entry?.revision ?? 0 };
    const value = entry.json<{ s: string[]; f?: string[] }>();
    return { key, users: new Set([...value.s, ...local]), failed: new Set(value.f ?? []), revision: entry.revision };
  }

  private remember(key: string, ids: string[]): void {
    if (this.unpersistedCount + ids.length > this.maxUnpersisted) {
      this.unpersisted.clear();
      this.unpersistedCount = 0;
    }
    let set = this.unpersisted.get(key);
    if (!set) this.unpersisted.set(key, (set = new Set()));
    for (const id of ids) if (!set.has(id)) { set.add(id); this.unpersistedCount++; }
  }

  private forget(key: string): void {
    this.unpersistedCount -= this.unpersisted.get(key)?.size ?? 0;
    this.unpersisted.delete(key);
  }

  /** Adds sent and failed ids to the entry; on a concurrent writer, re-reads and merges. */
  async add(done: DoneSet, sent: string[], failed: string[] = []): Promise<void> {
    if (sent.length === 0 && failed.length === 0) return;
    this.remember(done.key, sent);
    let current = done;
    for (let attempt = 0; attempt < 5; attempt++) {
      const s = [...new Set([...current.users, ...sent])];
      const sentSet = new Set(s);
      const f = [...new Set([...current.failed, ...failed])].filter((id) => !sentSet.has(id));
      const value = JSON.stringify(f.length ? { s, f } : { s });
      try {
        const revision = current.revision === 0 ? await this.kv.create(current.key, value) : await this.kv.update(current.key, value, current.revision);
        // Keep the caller's view current, so its next add needs no read.
        done.users = sentSet;
        done.failed = new Set(f);
        done.revision = revision;
        this.forget(done.key);
        return;
      } catch (err) {
        if (!/wrong last sequence|key exists/i.test(String((err as Error).message))) throw err;
        current = await this.read(current.key);
      }
    }
    throw new Error(`dedup key ${current.key}: too many concurrent writers`);
  }
}
