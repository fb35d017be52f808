import type { ClickHouseClient } from '@clickhouse/client';
import { readSql } from '../streams/apply.js';

export const funnelColumns = ['accepted', 'rejected', 'resolved', 'suppressed', 'deferred', 'dispatched', 'delivered', 'deduplicated', 'failed', 'dead_lettered', 'expired', 'cancelled'] as const;
/** One row of the funnel; `sandbox` rows count deliveries to local fakes, never to real recipients. */
export type FunnelRow = { tier: string; channel: string; sandbox: boolean } & Record<(typeof funnelColumns)[number], number>;

/** The funnel since `sinceMs`, by tier and channel, from the receipts table. */
export async function queryFunnel(ch: ClickHouseClient, database: string, sinceMs: number): Promise<FunnelRow[]> {
  const query = await readSql('funnel.sql', { database, since: Math.floor(sinceMs / 1000) });
  const rows = await (await ch.query({ query, format: 'JSONEachRow' })).json<Record<string, string>>();
  return rows.map((r) => {
    const out: Record<string, string | number | boolean> = { tier: r.tier, channel: r.channel, sandbox: Number(r.sandbox) === 1 };
    for (const c of funnelColumns) out[c] = Number(r[c]);
    return out as FunnelRow;
  });
}

/** A plain-text table; request-level rows (no channel) show as "(request)". */
export function formatFunnel(rows: FunnelRow[]): string {
  const header = ['tier', 'channel', ...funnelColumns];
  const body = rows.map((r) => [r.tier, `${r.channel || '(request)'}${r.sandbox ? ' (sandbox)' : ''}`, ...funnelColumns.map((c) => String(r[c]))]);
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)));
  const line = (cells: string[]) => cells.map((c, i) => (i < 2 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ');
  return [line(header), ...body.map(line)].join('\n');
}
