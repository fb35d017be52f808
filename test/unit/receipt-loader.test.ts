import { describe, expect, it } from 'vitest';
import { rowsText, toRows } from '../../processors/receipt-loader.js';
import { receiptSchema } from '../../schemas/index.js';

describe('receipt loader rows', () => {
  it('writes as JSONEachRow text exactly the rows toRows makes, one line each', () => {
    const receipts = [
      { ts: 1_780_000_000_123, stage: 'dispatch', status: 'delivered', request_id: 'r1', tenant: 'acme', tier: 'transactional', category: 'otp', channel: 'email', provider: 'smtp', user_id: 'u"1', latency_ms: 12 },
      { ts: 1_780_000_000_999, stage: 'dispatch', status: 'delivered', request_id: 'r2', tenant: 'acme', tier: 'marketing', category: 'launch', channel: 'inapp', user_ids: ['a', 'b\\c', 'ü\n', '😀'] },
      { ts: 1_780_000_001_000, stage: 'resolve', status: 'resolved', request_id: 'r3', tenant: 't', tier: 'social', category: 'x', unit: 'chunk:3', count: 500, reason: 'said "no"\n\ttwice', attempt: 70_000 },
    ].map((r) => receiptSchema.parse(r));
    for (const r of receipts) {
      const text = rowsText(r);
      expect(text.endsWith('\n')).toBe(true);
      const lines = text.slice(0, -1).split('\n').map((line) => JSON.parse(line));
      expect(lines).toEqual(toRows(r));
    }
    expect(rowsText(receipts[1]).split('\n')).toHaveLength(5);
  });
});
