// Raw JetStream on the same server: publish (pipelined) then consume + ack, no Herald code.
// Run as a child process so its peak RSS is its own. Prints one JSON line.
import { connect } from '@nats-io/transport-node';
import { AckPolicy, jetstream, jetstreamManager, RetentionPolicy } from '@nats-io/jetstream';
import { peakRssMb, percentile } from './servers.js';

const url = process.env.NATS_URL!;
const count = Number(process.env.BASELINE_COUNT ?? 100_000);
const nc = await connect({ servers: url.replace('nats://', '') });
const jsm = await jetstreamManager(nc);
const js = jetstream(nc);
await jsm.streams.add({ name: 'BASELINE', subjects: ['baseline.>'], retention: RetentionPolicy.Workqueue });
await jsm.consumers.add('BASELINE', { durable_name: 'b', ack_policy: AckPolicy.Explicit, max_ack_pending: 10_000 });
const payload = JSON.stringify({ request: { id: 'x'.repeat(22), tenant: 'bench', tier: 'transactional', body: 'y'.repeat(150) } });

// Throughput: a backlog of `count` messages, consumed and acked.
const inFlight = new Set<Promise<unknown>>();
for (let i = 0; i < count; i++) {
  const p = js.publish('baseline.t', payload);
  inFlight.add(p);
  p.finally(() => inFlight.delete(p));
  if (inFlight.size >= 2_000) await Promise.race(inFlight);
}
await Promise.all(inFlight);
const consumer = await js.consumers.get('BASELINE', 'b');
const started = performance.now();
let seen = 0;
const messages = await consumer.consume({ max_messages: 1_000 });
for await (const m of messages) {
  m.ack();
  if (++seen === count) break;
}
const consumeAckPerSec = count / ((performance.now() - started) / 1000);

// Latency at a fixed rate: publish → consume, 500 msg/s for 5 s.
const latencies: number[] = [];
const rate = Number(process.env.BASELINE_RATE ?? 500);
const total = rate * 5;
const sentAt = new Map<number, number>();
const latencyMessages = await consumer.consume({ max_messages: 100 });
const done = (async () => {
  for await (const m of latencyMessages) {
    const n = Number(m.headers?.get('n'));
    latencies.push(performance.now() - sentAt.get(n)!);
    m.ack();
    if (latencies.length === total) break;
  }
})();
const { headers } = await import('@nats-io/transport-node');
const t0 = performance.now();
for (let i = 0; i < total; i++) {
  const due = t0 + (i * 1000) / rate;
  const wait = due - performance.now();
  if (wait > 0) await new Promise((r) => setTimeout(r, wait));
  const h = headers();
  h.set('n', String(i));
  sentAt.set(i, performance.now());
  void js.publish('baseline.t', payload, { headers: h });
}
await done;
latencies.sort((a, b) => a - b);
console.log(JSON.stringify({
  consumeAckPerSec, p50Ms: percentile(latencies, 50), p99Ms: percentile(latencies, 99), peakRssMb: peakRssMb(process.pid),
}));
await nc.drain();
