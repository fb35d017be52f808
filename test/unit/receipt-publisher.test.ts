import type { JetStreamClient } from '@nats-io/jetstream';
import { describe, expect, it } from 'vitest';
import { pipelineGraph } from '../../pipeline/graph.js';
import { ReceiptPublisher } from '../../pipeline/receipt-publisher.js';
import { DeadLetterWriter } from '../../pipeline/dead-letters.js';
import { Metrics } from '../../pipeline/metrics.js';
import type { Receipt } from '../../schemas/index.js';
import { maxRequestBytes, Topology } from '../../streams/topology.js';

const receipt = (i: number, status: Receipt['status'] = 'suppressed'): Receipt => ({
  ts: 1, stage: 'filter', status, request_id: `r${i}`, tenant: 't', tier: 'social', category: 'c',
  user_ids: Array.from({ length: 500 }, (_, j) => `unknown-user-${i}-${j}`),
});

/** A JetStream that refuses messages over `maxPayload` and fails the first try of the chosen msgIDs. */
function fakeJetStream(maxPayload: number, failOnce: (msgID: string, n: number) => boolean) {
  const stored = new Map<string, string>();
  const tries: string[] = [];
  const js = {
    publish: async (subject: string, body: string, opts: { msgID: string }) => {
      tries.push(opts.msgID);
      if (Buffer.byteLength(body) > maxPayload) throw new Error('maximum payload exceeded');
      if (failOnce(opts.msgID, tries.length)) throw new Error('timeout');
      stored.set(opts.msgID, `${subject} ${body}`);
      return { seq: stored.size };
    },
  };
  return { js: js as unknown as JetStreamClient, stored, tries };
}

describe('the receipts publisher', () => {
  it('cuts a flush into messages under the size limit, and waits for all of them', async () => {
    const fake = fakeJetStream(64 * 1024, () => false);
    const publisher = new ReceiptPublisher(fake.js, new Topology(pipelineGraph().nodes), { maxBytes: 60 * 1024, lingerMs: 1 });
    for (let i = 0; i < 40; i++) publisher.add(receipt(i));
    publisher.add(receipt(99, 'resolved'));
    await publisher.flush();
    const bodies = [...fake.stored.values()];
    expect(bodies.length).toBeGreaterThan(5);
    for (const b of bodies) expect(Buffer.byteLength(b)).toBeLessThan(64 * 1024);
    const all = bodies.flatMap((b) => JSON.parse(b.slice(b.indexOf(' ') + 1)).receipts as Receipt[]);
    expect(all.map((r) => r.request_id).sort()).toEqual([...Array.from({ length: 40 }, (_, i) => `r${i}`), 'r99'].sort());
    expect(bodies.filter((b) => b.startsWith('notify.receipt.resolved '))).toHaveLength(1);
  });

  it('lets receipts wait for companions, unless a caller holds work back until they are stored', async () => {
    const fake = fakeJetStream(1024 * 1024, () => false);
    const publisher = new ReceiptPublisher(fake.js, new Topology(pipelineGraph().nodes), { lingerMs: 400, promptLingerMs: 5 });
    const stored = () => [...fake.stored.values()].flatMap((b) => (JSON.parse(b.slice(b.indexOf(' ') + 1)).receipts as Receipt[]).map((r) => r.request_id));
    publisher.add(receipt(1));
    let unhurriedDone = false;
    void publisher.flush().then(() => { unhurriedDone = true; });
    await new Promise((r) => setTimeout(r, 60));
    // Nobody in a hurry: still waiting for companions.
    expect(stored()).toEqual([]);
    publisher.add(receipt(2));
    const t0 = performance.now();
    await publisher.flush(true);
    expect(performance.now() - t0).toBeLessThan(200);
    // Everything pending went together, and the unhurried caller was answered too.
    expect(stored().sort()).toEqual(['r1', 'r2']);
    expect(fake.tries).toHaveLength(1);
    await new Promise((r) => setImmediate(r));
    expect(unhurriedDone).toBe(true);
    // With nobody in a hurry, the linger is what sends them.
    publisher.add(receipt(3));
    await publisher.flush();
    expect(stored().sort()).toEqual(['r1', 'r2', 'r3']);
  });

  it('retries only the message that failed, under its first msgID', async () => {
    let failed = '';
    const fake = fakeJetStream(1024 * 1024, (msgID) => {
      if (failed || !msgID.endsWith('.1')) return false;
      failed = msgID;
      return true;
    });
    const publisher = new ReceiptPublisher(fake.js, new Topology(pipelineGraph().nodes), { maxBytes: 30 * 1024, lingerMs: 1, retryMs: 10 });
    for (let i = 0; i < 6; i++) publisher.add(receipt(i));
    await publisher.flush();
    expect(failed).not.toBe('');
    // Each message was tried once, but the failed one twice, under the same msgID.
    const counts = new Map<string, number>();
    for (const id of fake.tries) counts.set(id, (counts.get(id) ?? 0) + 1);
    expect([...counts.entries()].filter(([, n]) => n > 1)).toEqual([[failed, 2]]);
    expect(fake.stored.size).toBe(counts.size);
    await publisher.close();
  });
});

describe('dead letters of large messages', () => {
  it('copy the largest request a server takes whole, and still fit in one of its messages', async () => {
    for (const maxPayload of [1024 * 1024, 4 * 1024 * 1024, 8 * 1024 * 1024]) {
      const topology = new Topology(pipelineGraph().nodes);
      const largest = topology.streams(maxPayload).find((s) => s.name === topology.intakeStream('social'))!.max_msg_size!;
      expect(largest).toBe(maxRequestBytes(maxPayload));
      const written: string[] = [];
      const writer = new DeadLetterWriter(async (_subject, data) => { written.push(String(data)); return {}; }, topology, new Metrics());
      const payload = Buffer.alloc(largest, 'x');
      const reasons = Array.from({ length: 200 }, () => 'p'.repeat(1_000));
      await writer.write({ stream: topology.intakeStream('social'), seq: 7, deliveryCount: 1, consumer: 'c' },
        { node: 'validate', subject: 's', reason: 'r'.repeat(1_000), problems: reasons, payload, attempts: 1, identities: [], key: 'all' });
      expect(Buffer.from(JSON.parse(written[0]).original_b64, 'base64').length).toBe(largest);
      expect(Buffer.byteLength(written[0])).toBeLessThanOrEqual(maxPayload);
    }
  });
});
