import type { DeadLetter } from '../schemas/index.js';
import { scrub } from '../runtime/scrub.js';
import { DEAD_LETTER_OVERHEAD_BYTES, type Topology } from '../streams/topology.js';
import type { NodeLetter } from './flow.js';
import type { Metrics } from './metrics.js';
import type { Publish } from './outputs.js';

/** The stored message a dead letter came from. */
export interface Origin {
  stream: string;
  seq: number;
  deliveryCount: number;
  /** The durable (or replay consumer) that read it. */
  consumer: string;
}

/** Writes dead letters to `notify.dlq.<node>`: what failed, why, after how many attempts, and the payload to redrive. */
export class DeadLetterWriter {
  constructor(private readonly publish: Publish, private readonly topology: Topology, private readonly metrics: Metrics) {}

  async write(origin: Origin, letter: NodeLetter): Promise<void> {
    const who = letter.identities[0];
    const entry: DeadLetter = {
      stage: letter.node,
      reason: scrub(letter.reason.slice(0, 1_000)),
      problems: fitted(letter.problems.slice(0, 200).map((p) => scrub(p.slice(0, 1_000))), DEAD_LETTER_OVERHEAD_BYTES / 2),
      attempts: letter.attempts,
      first_error: letter.firstError === undefined ? undefined : scrub(letter.firstError.slice(0, 1_000)),
      last_error: scrub(letter.reason.slice(0, 1_000)),
      failed_at: Date.now(),
      subject: letter.subject,
      stream: origin.stream,
      stream_seq: origin.seq,
      tenant: who?.tenant || undefined,
      request_id: who?.request_id || undefined,
      // Copied whole: intake and work streams delete a message once it is settled. Requests are
      // capped (maxRequestBytes) so that the copy of the largest still fits in a message.
      original_b64: Buffer.from(letter.payload).toString('base64'),
    };
    const name = letter.key ?? `part${origin.deliveryCount}:${Math.random().toString(36).slice(2, 8)}`;
    await this.publish(this.topology.dlq(letter.node), JSON.stringify(entry), `${origin.consumer}:${origin.seq}:dlq:${letter.node}:${name}`);
    this.metrics.deadLettered(letter.node);
  }
}

/** The first problems whose JSON fits in `bytes` (escaping can make text several times longer). */
function fitted(problems: string[], bytes: number): string[] {
  let size = 2;
  for (let i = 0; i < problems.length; i++) {
    size += Buffer.byteLength(JSON.stringify(problems[i])) + 1;
    if (size > bytes) return problems.slice(0, i);
  }
  return problems;
}
