import { describe, expect, it } from 'vitest';
import { ROW_COLUMNS, rowsText, toRows } from '../../processors/receipt-loader.js';
import { receiptSchema } from '../../schemas/index.js';

const UNESCAPE: Record<string, string> = { '\\': '\\', t: '\t', n: '\n', r: '\r', 0: '\0' };

/** One TabSeparated line back into its fields, as ClickHouse reads them. */
function fields(line: string): string[] {
  return line.split('\t').map((f) => f.replace(/\\(.)/g, (_, c: string) => UNESCAPE[c] ?? c));
}

describe('receipt loader rows', () => {
  it('writes as TabSeparated text exactly the rows toRows makes, one line each, in ROW_COLUMNS order', () => {
    const receipts = [
      { ts: 1_780_000_000_123, stage: 'dispatch', status: 'delivered', request_id: 'r1', tenant: 'acme', tier: 'transactional', category: 'otp', channel: 'email', provider: 'smtp', user_id: 'u"1', latency_ms: 12 },
      { ts: 1_780_000_000_999, stage: 'dispatch', status: 'delivered', request_id: 'r2', tenant: 'acme', tier: 'marketing', category: 'launch', channel: 'inapp', user_ids: ['a', 'b\\c', 'ü\n', '😀', 't\tab\r\0'] },
      { ts: 1_780_000_001_000, stage: 'resolve', status: 'resolved', request_id: 'r3', tenant: 't', tier: 'social', category: 'x', unit: 'chunk:3', count: 500, reason: 'said "no"\n\ttwice \\ back', attempt: 70_000 },
      // Either side of midnight UTC, then back: each row has its own day.
      { ts: Date.UTC(2026, 11, 3, 23, 59, 59, 999), stage: 'st\tage', status: 'seen', request_id: 'r\n4', tenant: 'a\\b', tier: 't\tr', category: 'c\0\n', user_id: 'u' },
      { ts: Date.UTC(2026, 11, 4), stage: 'validate', status: 'accepted', request_id: 'r5', tenant: 'a', tier: 'social', category: 'c', channel: 'ch\tx', provider: 'p\n' },
      { ts: Date.UTC(2026, 11, 3, 12), stage: 'validate', status: 'accepted', request_id: 'r6', tenant: 'a', tier: 'social', category: 'c' },
    ].map((r) => receiptSchema.parse(r));
    for (const r of receipts) {
      const text = rowsText(r);
      expect(text.endsWith('\n')).toBe(true);
      const rows = text.slice(0, -1).split('\n').map((line) => Object.fromEntries(fields(line).map((v, i) => [ROW_COLUMNS[i], v])));
      const expected = toRows(r).map((row) => Object.fromEntries(Object.entries(row).map(([k, v]) => [k, String(v)])));
      expect(rows).toEqual(expected);
    }
    expect(rowsText(receipts[1]).split('\n')).toHaveLength(6);
    expect(new Set(ROW_COLUMNS)).toEqual(new Set(Object.keys(toRows(receipts[0])[0])));
  });
});
