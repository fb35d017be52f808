import type { ClickHouseClient } from '@clickhouse/client';
import { readSql } from '../streams/apply.js';

export const funnelColumns = ['accepted', 'rejected', 'resolved', 'suppressed', 'deferred', 'dispatched', 'delivered', 'deduplicated', 'failed', 'dead_lettered', 'expired', 'cancelled', 'seen', 'read', 'clicked', 'archived'] as const;
/** One row of the funnel; `sandbox` rows count deliveries to local fakes, never to real recipients. */
export type FunnelRow = { tier: string; channel: string; category?: string; sandbox: boolean } & Record<(typeof funnelColumns)[number], number>;

/** The funnel since `sinceMs`, by tier and channel (and category, when asked), from the receipts table. */
export async function queryFunnel(ch: ClickHouseClient, database: string, sinceMs: number, byCategory = false): Promise<FunnelRow[]> {
  const query = await readSql('funnel.sql', { database, since: Math.floor(sinceMs / 1000) });
  const rows = await (await ch.query({ query, format: 'JSONEachRow' })).json<Record<string, string>>();
  // The query is by category; rows of one tier and channel are summed unless categories were asked for.
  const merged = new Map<string, FunnelRow>();
  for (const r of rows) {
    const sandbox = Number(r.sandbox) === 1;
    const key = [r.tier, r.channel, byCategory ? r.category : '', sandbox].join('\u0000');
    let out = merged.get(key);
    if (!out) {
      out = { tier: r.tier, channel: r.channel, ...(byCategory ? { category: r.category } : {}), sandbox } as FunnelRow;
      for (const c of funnelColumns) out[c] = 0;
      merged.set(key, out);
    }
    for (const c of funnelColumns) out[c] += Number(r[c]);
  }
  return [...merged.values()];
}

/** A plain-text table; request-level rows (no channel) show as "(request)". */
export function formatFunnel(rows: FunnelRow[]): string {
  const byCategory = rows.some((r) => r.category !== undefined);
  const labels = byCategory ? ['tier', 'channel', 'category'] : ['tier', 'channel'];
  const header = [...labels, ...funnelColumns];
  const body = rows.map((r) => [r.tier, `${r.channel || '(request)'}${r.sandbox ? ' (sandbox)' : ''}`, ...(byCategory ? [r.category ?? ''] : []), ...funnelColumns.map((c) => String(r[c]))]);
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)));
  const line = (cells: string[]) => cells.map((c, i) => (i < labels.length ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ');
  return [line(header), ...body.map(line)].join('\n');
}
