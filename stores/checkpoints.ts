import type { KV } from '@nats-io/kv';
import { kvToken } from '../runtime/ids.js';

/** Where a topic fan-out got to: everything before `chunk` is stored in JetStream. */
export interface FanoutCheckpoint {
  /** The next chunk number to publish. */
  chunk: number;
  /** The last member published (pages continue after it). */
  after?: string;
  /** Members published so far. */
  members: number;
  /** In-app went out as one broadcast record (fan-out on read). */
  broadcast: boolean;
  /** Every chunk published. */
  done: boolean;
  /** The chunks a restarted fan-out picked up from: proof it resumed rather than restarted. */
  resumed_from: number[];
}

/** Fan-out checkpoints in JetStream KV, one entry per request (and replay). */
export class Checkpoints {
  constructor(private readonly kv: KV) {}

  key(tenant: string, requestId: string, replay?: string): string {
    return ['resolve', kvToken(tenant), kvToken(requestId), ...(replay ? [kvToken(replay)] : [])].join('.');
  }

  async read(key: string): Promise<FanoutCheckpoint | undefined> {
    const entry = await this.kv.get(key);
    if (!entry || entry.operation !== 'PUT' || entry.length === 0) return undefined;
    return entry.json<FanoutCheckpoint>();
  }

  async save(key: string, checkpoint: FanoutCheckpoint): Promise<void> {
    await this.kv.put(key, JSON.stringify(checkpoint));
  }
}
