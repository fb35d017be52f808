import type { NatsConnection, Subscription } from '@nats-io/transport-node';
import type { Logger } from 'pino';
import { tiers } from '../schemas/index.js';
import type { Topology } from '../streams/topology.js';

/**
 * Answers a publish to `notify.request.<not a tier>` with an error naming the tiers. No stream takes
 * such a subject, so the producer would otherwise hear only "no responders" (which the JetStream
 * client reports as "jetstream is not enabled"). The reply has the shape of a JetStream API error,
 * so `js.publish` throws with this description. Publishes to real tiers are left to their streams:
 * this subscriber sees them (one process of the queue group) and does nothing but read the subject.
 */
export function answerUnknownTiers(nc: NatsConnection, topology: Topology, log: Logger): Subscription {
  const known = new Set(tiers.map((t) => topology.request(t)));
  const valid = tiers.map((t) => topology.request(t)).join(', ');
  // A producer stuck on a wrong subject must not fill the logs: one line a minute, with a count.
  let refused = 0;
  let loggedAt = 0;
  return nc.subscribe(topology.request('*'), {
    queue: 'herald-unknown-tiers',
    callback: (err, m) => {
      if (err || known.has(m.subject) || !m.reply) return;
      const tier = m.subject.slice(m.subject.lastIndexOf('.') + 1);
      const description = `no tier "${tier}" (${m.subject}): publish to one of ${valid}`;
      refused++;
      if (Date.now() - loggedAt >= 60_000) {
        log.warn({ subject: m.subject.slice(0, 200), refused }, 'publishes to an unknown tier refused');
        loggedAt = Date.now();
        refused = 0;
      }
      m.respond(JSON.stringify({ type: 'io.nats.jetstream.api.v1.pub_ack_response', error: { code: 400, err_code: 10_400, description } }));
    },
  });
}
