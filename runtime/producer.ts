import type { JetStreamClient, PubAck } from '@nats-io/jetstream';
import { tenantSchema, type NotificationRequest, type Tier } from '../schemas/index.js';
import { MAX_REQUEST_BYTES, type Topology } from '../streams/topology.js';

/**
 * Publishes a request the way producers must: to `notify.request.<tier>.<tenant>` with
 * `Nats-Msg-Id: <tenant>:<idempotency_key>`, so JetStream drops a repeated publish. A tenant that is
 * no tenant name goes to the tenantless subject, where validate rejects it saying why.
 */
export function publishRequest(js: JetStreamClient, topology: Topology, request: NotificationRequest): Promise<PubAck> {
  const body = JSON.stringify(request);
  const bytes = Buffer.byteLength(body);
  if (bytes > MAX_REQUEST_BYTES) return Promise.reject(new Error(`request is ${bytes} bytes; at most ${MAX_REQUEST_BYTES}`));
  const tenant = tenantSchema.safeParse(request.tenant).success ? request.tenant : undefined;
  return js.publish(topology.request(request.tier, tenant), body, {
    msgID: `${request.tenant}:${request.idempotency_key}`,
  });
}

/**
 * Publishes raw bytes to a tier's request subject (for tools and tests that send malformed input):
 * a tenant's, or without one the deprecated tenantless subject.
 */
export function publishRaw(js: JetStreamClient, topology: Topology, tier: Tier, body: string | Uint8Array, msgID?: string, tenant?: string): Promise<PubAck> {
  return js.publish(topology.request(tier, tenant), body, msgID ? { msgID } : undefined);
}
