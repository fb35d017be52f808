import type { DeadLetter } from '../schemas/index.js';
import { scrub } from '../runtime/scrub.js';
import type { Topology } from '../streams/topology.js';
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

/** Payloads up to this size are copied into the dead letter; larger ones are referenced where they are stored. */
export const MAX_COPIED_BYTES = 256 * 1024;

/** Writes dead letters to `notify.dlq.<node>`: what failed, why, after how many attempts, and the payload to redrive. */
export class DeadLetterWriter {
  constructor(private readonly publish: Publish, private readonly topology: Topology, private readonly metrics: Metrics) {}

  async write(origin: Origin, letter: NodeLetter): Promise<void> {
    const who = letter.identities[0];
    const entry: DeadLetter = {
      stage: letter.node,
      reason: scrub(letter.reason.slice(0, 1_000)),
      problems: letter.problems.slice(0, 200).map((p) => scrub(p.slice(0, 1_000))),
      attempts: letter.attempts,
      first_error: letter.firstError === undefined ? undefined : scrub(letter.firstError.slice(0, 1_000)),
      last_error: scrub(letter.reason.slice(0, 1_000)),
      failed_at: Date.now(),
      subject: letter.subject,
      stream: origin.stream,
      stream_seq: origin.seq,
      tenant: who?.tenant || undefined,
      request_id: who?.request_id || undefined,
      // A copy of a large request could not be stored (base64 adds a third): point at it instead.
      // Only REQUESTS keeps a message after it is settled; work-queue messages are copied whole.
      ...(letter.payload.length <= MAX_COPIED_BYTES || !letter.stored || origin.stream !== this.topology.requestsStream
        ? { original_b64: Buffer.from(letter.payload).toString('base64') }
        : { original_ref: { stream: origin.stream, seq: origin.seq } }),
    };
    const name = letter.key ?? `part${origin.deliveryCount}:${Math.random().toString(36).slice(2, 8)}`;
    await this.publish(this.topology.dlq(letter.node), JSON.stringify(entry), `${origin.consumer}:${origin.seq}:dlq:${letter.node}:${name}`);
    this.metrics.deadLettered(letter.node);
  }
}
