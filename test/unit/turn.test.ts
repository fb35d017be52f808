import { describe, expect, it } from 'vitest';
import { TurnGate } from '../../runtime/turn.js';

describe('TurnGate', () => {
  it('releases every caller of a turn before any of them gets a nextTick in (what makes their commands one write)', async () => {
    const gate = new TurnGate();
    const log: string[] = [];
    const first = gate.pass().then(() => {
      // ioredis's auto-pipeline and similar flushes run on nextTick: it must come after the others.
      process.nextTick(() => log.push('flush'));
      log.push('a');
    });
    const second = gate.pass().then(() => log.push('b'));
    await Promise.all([first, second]);
    await new Promise((r) => setImmediate(r));
    expect(log).toEqual(['a', 'b', 'flush']);
  });

  it('lets a caller of a later turn wait for that turn', async () => {
    const gate = new TurnGate();
    await gate.pass();
    let later = false;
    const next = gate.pass().then(() => { later = true; });
    await Promise.resolve();
    expect(later).toBe(false);
    await next;
    expect(later).toBe(true);
  });
});
