import type { JetStreamManager } from '@nats-io/jetstream';
import { deadLetterSchema, type DeadLetter } from '../schemas/index.js';
import type { Topology } from './topology.js';

/** Filters for reading the DLQ. */
export interface DeadLetterQuery {
  stage?: string;
  /** ms since epoch */
  since?: number;
  /** substring of the reason */
  reason?: string;
  limit?: number;
}

/** Reads dead letters from the DLQ stream, oldest first, with their DLQ sequence. */
export async function listDeadLetters(jsm: JetStreamManager, topology: Topology, q: DeadLetterQuery = {}): Promise<(DeadLetter & { dlq_seq: number })[]> {
  const info = await jsm.streams.info(topology.dlqStream);
  const out: (DeadLetter & { dlq_seq: number })[] = [];
  for (let seq = info.state.first_seq; seq <= info.state.last_seq && out.length < (q.limit ?? 1_000); seq++) {
    // A purged or deleted sequence has no message: skip it.
    const msg = await jsm.streams.getMessage(topology.dlqStream, { seq }).catch(() => null);
    if (!msg || (q.stage && msg.subject !== topology.dlq(q.stage))) continue;
    const parsed = deadLetterSchema.safeParse(msg.json());
    if (!parsed.success) continue;
    const d = parsed.data;
    if (q.since && d.failed_at < q.since) continue;
    if (q.reason && !`${d.reason} ${d.problems.join(' ')}`.includes(q.reason)) continue;
    out.push({ ...d, dlq_seq: msg.seq });
  }
  return out;
}
