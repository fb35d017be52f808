import type { JetStreamClient, JetStreamManager } from '@nats-io/jetstream';
import { headers } from '@nats-io/transport-node';
import { deadLetterSchema, type DeadLetter } from '../schemas/index.js';
import type { Topology } from './topology.js';

/** Header set on a message sent back from the DLQ: deliveries that failed for good are tried again. */
export const REDRIVE_HEADER = 'Herald-Redrive';

/** Filters for reading the DLQ. */
export interface DeadLetterQuery {
  stage?: string;
  /** ms since epoch */
  since?: number;
  /** substring of the reason */
  reason?: string;
  /** @default every one */
  limit?: number;
}

/** Reads dead letters from the DLQ stream, oldest first, with their DLQ sequence. */
export async function listDeadLetters(jsm: JetStreamManager, topology: Topology, q: DeadLetterQuery = {}): Promise<(DeadLetter & { dlq_seq: number })[]> {
  const info = await jsm.streams.info(topology.dlqStream);
  const out: (DeadLetter & { dlq_seq: number })[] = [];
  for (let seq = info.state.first_seq; seq <= info.state.last_seq && out.length < (q.limit ?? Infinity); seq++) {
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

/** One dead letter by its DLQ sequence, or undefined when there is none. */
export async function readDeadLetter(jsm: JetStreamManager, topology: Topology, seq: number): Promise<(DeadLetter & { dlq_seq: number }) | undefined> {
  const msg = await jsm.streams.getMessage(topology.dlqStream, { seq }).catch(() => null);
  const parsed = msg ? deadLetterSchema.safeParse(msg.json()) : undefined;
  return parsed?.success ? { ...parsed.data, dlq_seq: seq } : undefined;
}

/** The message a dead letter stands for: its copy, or the stored message it points at. */
export async function originalOf(jsm: JetStreamManager, d: DeadLetter): Promise<Uint8Array> {
  if (d.original_b64 !== undefined) return Buffer.from(d.original_b64, 'base64');
  if (!d.original_ref) throw new Error(`dead letter of ${d.stage} holds no original`);
  const msg = await jsm.streams.getMessage(d.original_ref.stream, { seq: d.original_ref.seq }).catch(() => null);
  if (!msg) throw new Error(`the original of this dead letter (${d.original_ref.stream} #${d.original_ref.seq}) is no longer stored`);
  return msg.data;
}

/**
 * Sends dead letters back to the subject they failed on, marked as a redrive (so deliveries that
 * failed for good are tried again, while the dedup entry still stops anything already sent), then
 * removes them from the DLQ. Returns how many went back.
 */
export async function redriveDeadLetters(
  nats: { js: JetStreamClient; jsm: JetStreamManager }, topology: Topology, q: DeadLetterQuery & { seq?: number } = {},
  onProgress?: (done: number, total: number) => void,
): Promise<number> {
  const one = q.seq === undefined ? undefined : await readDeadLetter(nats.jsm, topology, q.seq);
  if (q.seq !== undefined && !one) throw new Error(`no dead letter #${q.seq}`);
  const letters = one ? [one] : await listDeadLetters(nats.jsm, topology, q);
  let sent = 0;
  onProgress?.(0, letters.length);
  for (const d of letters) {
    const h = headers();
    h.set(REDRIVE_HEADER, String(d.dlq_seq));
    await nats.js.publish(d.subject, await originalOf(nats.jsm, d), { headers: h, msgID: `redrive:${topology.dlqStream}:${d.dlq_seq}` });
    await nats.jsm.streams.deleteMessage(topology.dlqStream, d.dlq_seq, false);
    sent++;
    onProgress?.(sent, letters.length);
  }
  return sent;
}
