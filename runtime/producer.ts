import type { JetStreamClient, PubAck } from '@nats-io/jetstream';
import type { NotificationRequest, Tier } from '../schemas/index.js';
import { MAX_REQUEST_BYTES, type Topology } from '../streams/topology.js';

/**
 * Publishes a request the way producers must: to `notify.request.<tier>` with
 * `Nats-Msg-Id: <tenant>:<idempotency_key>`, so JetStream drops a repeated publish.
 */
export function publishRequest(js: JetStreamClient, topology: Topology, request: NotificationRequest): Promise<PubAck> {
  const body = JSON.stringify(request);
  const bytes = Buffer.byteLength(body);
  if (bytes > MAX_REQUEST_BYTES) return Promise.reject(new Error(`request is ${bytes} bytes; at most ${MAX_REQUEST_BYTES}`));
  return js.publish(topology.request(request.tier), body, {
    msgID: `${request.tenant}:${request.idempotency_key}`,
  });
}

/** Publishes raw bytes to a tier's request subject (for tools and tests that send malformed input). */
export function publishRaw(js: JetStreamClient, topology: Topology, tier: Tier, body: string | Uint8Array, msgID?: string): Promise<PubAck> {
  return js.publish(topology.request(tier), body, msgID ? { msgID } : undefined);
}
