import { describe, expect, it } from 'vitest';
import { CoalescingSink } from '../../sinks/coalescing.js';
import type { DeliveryItem, Outcome, Sink } from '../../sinks/sink.js';

/** A provider that records each call and answers per recipient (user "bad" is refused). */
class RecordingSink implements Sink {
  readonly channel = 'inapp' as const;
  readonly provider = 'rec';
  readonly idempotent = true;
  calls: string[][] = [];
  fail?: Error;
  constructor(readonly maxBatch: number, readonly callSize?: number) {}
  async send(items: DeliveryItem[]): Promise<Outcome[]> {
    this.calls.push(items.map((i) => i.recipient.user_id));
    if (this.fail) throw this.fail;
    return items.map((i) => (i.recipient.user_id === 'bad' ? { kind: 'permanent', reason: 'no' } : { kind: 'delivered', providerId: i.recipient.user_id }));
  }
  async close(): Promise<void> {}
}

const item = (user: string) => ({ recipient: { user_id: user, locale: 'en', to: [user] }, request: {}, content: {} }) as unknown as DeliveryItem;
const signal = new AbortController().signal;

describe('coalescing sink', () => {
  it('sends the calls of one turn as one provider call, each caller getting its own outcomes in order', async () => {
    const inner = new RecordingSink(10);
    const sink = new CoalescingSink(inner);
    const [a, b, c] = await Promise.all([
      sink.send([item('a1'), item('a2')], signal), sink.send([item('bad')], signal), sink.send([item('c1')], signal),
    ]);
    expect(inner.calls).toEqual([['a1', 'a2', 'bad', 'c1']]);
    expect(a).toEqual([{ kind: 'delivered', providerId: 'a1' }, { kind: 'delivered', providerId: 'a2' }]);
    expect(b).toEqual([{ kind: 'permanent', reason: 'no' }]);
    expect(c).toEqual([{ kind: 'delivered', providerId: 'c1' }]);
  });

  it('never makes a call larger than the provider takes, and passes full calls and one-per-call providers straight through', async () => {
    const inner = new RecordingSink(3);
    const sink = new CoalescingSink(inner);
    await Promise.all([sink.send([item('1'), item('2')], signal), sink.send([item('3'), item('4')], signal), sink.send([item('5'), item('6'), item('7')], signal)]);
    // The second call would overfill the first: that one goes at once; the full third goes straight through.
    expect(inner.calls).toEqual([['1', '2'], ['5', '6', '7'], ['3', '4']]);
    const single = new RecordingSink(50, 1);
    const email = new CoalescingSink(single);
    await Promise.all([email.send([item('x')], signal), email.send([item('y')], signal)]);
    expect(single.calls).toEqual([['x'], ['y']]);
  });

  it('fails every caller of a call that failed', async () => {
    const inner = new RecordingSink(10);
    inner.fail = new Error('redis down');
    const sink = new CoalescingSink(inner);
    const results = await Promise.allSettled([sink.send([item('a')], signal), sink.send([item('b')], signal)]);
    expect(results.map((r) => r.status === 'rejected' && (r.reason as Error).message)).toEqual(['redis down', 'redis down']);
    expect(inner.calls).toEqual([['a', 'b']]);
  });
});
