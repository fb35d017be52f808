import type { NatsConnection, Subscription } from '@nats-io/transport-node';
import type { Logger } from 'pino';
import { tiers } from '../schemas/index.js';
import type { Topology } from '../streams/topology.js';

/** Says something one line a minute at most, with how many times it happened since the last line, and the latest subject. */
function everyMinute(say: (count: number, subject: string) => void): (subject: string) => void {
  let count = 0;
  let saidAt = 0;
  return (subject) => {
    count++;
    if (Date.now() - saidAt < 60_000) return;
    say(count, subject.slice(0, 200));
    saidAt = Date.now();
    count = 0;
  };
}

/**
 * Answers a publish to `notify.request.<not a tier>` (or `.<tenant>` after it, or a subject with
 * more tokens) with an error naming the subjects that exist. No stream takes such a subject, so the
 * producer would otherwise hear only "no responders" (which the JetStream client reports as
 * "jetstream is not enabled"). The reply has the shape of a JetStream API error, so `js.publish`
 * throws with this description. Publishes to real tiers are left to their streams: this subscriber
 * sees them (one process of the queue group) and only reads the subject, counting those on the
 * deprecated tenantless subject for a warning.
 */
export function answerUnknownTiers(nc: NatsConnection, topology: Topology, log: Logger): Subscription {
  const known = new Set<string>(tiers);
  const valid = (tenant?: string) => tiers.map((t) => topology.request(t, tenant)).join(', ');
  // A producer stuck on a wrong subject must not fill the logs: one line a minute, with a count.
  const refused = everyMinute((count, subject) => log.warn({ subject, refused: count }, 'publishes to an unknown tier refused'));
  // Nor one still on the tenantless subject (taken for now): the operator hears of it, once a minute.
  const tenantless = everyMinute((count, subject) => log.warn(
    { subject, requests: count, use: topology.request('*', '<tenant>') },
    'requests published to a deprecated tenantless subject: publish to notify.request.<tier>.<tenant> instead',
  ));
  return nc.subscribe(topology.anyRequest, {
    queue: 'herald-unknown-tiers',
    callback: (err, m) => {
      if (err) return;
      const request = topology.requestOf(m.subject);
      if (request && known.has(request.tier)) {
        if (request.tenant === undefined) tenantless(m.subject);
        return;
      }
      if (!m.reply) return;
      const description = request
        ? `no tier "${request.tier}" (${m.subject}): publish to one of ${valid(request.tenant)}`
        : `no such request subject (${m.subject}): publish to one of ${valid('<tenant>')}`;
      refused(m.subject);
      m.respond(JSON.stringify({ type: 'io.nats.jetstream.api.v1.pub_ack_response', error: { code: 400, err_code: 10_400, description } }));
    },
  });
}
