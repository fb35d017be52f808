import fs from 'node:fs/promises';
import path from 'node:path';
import type { ConsumerConfig, JetStreamManager, StreamConfig } from '@nats-io/jetstream';
import { Kvm } from '@nats-io/kv';
import type { ClickHouseClient } from '@clickhouse/client';
import type { Nats } from '../runtime/connections.js';
import { msToNs, type Topology } from './topology.js';
import { projectRoot } from '../runtime/root.js';

export type ApplyAction = 'created' | 'updated' | 'unchanged';
export interface ApplyResult { kind: 'stream' | 'consumer' | 'kv' | 'clickhouse'; name: string; action: ApplyAction; changed?: string[] }

/** Keys of `want` whose values differ from `have` (arrays compared as sets of values, order kept). */
function differences(want: Record<string, unknown>, have: Record<string, unknown>): string[] {
  // The server fills in fields of a source it was not given: a source is its stream's name.
  const comparable = (k: string, v: unknown) => (k === 'sources' && Array.isArray(v) ? v.map((s: { name: string }) => s.name) : v);
  return Object.keys(want).filter((k) => JSON.stringify(comparable(k, want[k])) !== JSON.stringify(comparable(k, have[k])));
}

async function applyStream(jsm: JetStreamManager, want: Partial<StreamConfig>): Promise<ApplyResult> {
  const name = want.name!;
  const info = await jsm.streams.info(name).catch((err) => {
    if (/stream not found/i.test(String(err?.message))) return null;
    throw err;
  });
  if (!info) {
    await jsm.streams.add({ ...want, name });
    return { kind: 'stream', name, action: 'created' };
  }
  const changed = differences(want as Record<string, unknown>, info.config as unknown as Record<string, unknown>);
  if (changed.length === 0) return { kind: 'stream', name, action: 'unchanged' };
  await jsm.streams.update(name, { ...info.config, ...want });
  return { kind: 'stream', name, action: 'updated', changed };
}

async function applyConsumer(jsm: JetStreamManager, stream: string, want: Partial<ConsumerConfig>): Promise<ApplyResult> {
  const name = `${stream}/${want.durable_name}`;
  const info = await jsm.consumers.info(stream, want.durable_name!).catch((err) => {
    if (/consumer not found/i.test(String(err?.message))) return null;
    throw err;
  });
  if (!info) {
    await jsm.consumers.add(stream, want);
    return { kind: 'consumer', name, action: 'created' };
  }
  const changed = differences(want as Record<string, unknown>, info.config as unknown as Record<string, unknown>);
  if (changed.length === 0) return { kind: 'consumer', name, action: 'unchanged' };
  await jsm.consumers.update(stream, want.durable_name!, want);
  return { kind: 'consumer', name, action: 'updated', changed };
}

async function applyBucket(nats: Nats, name: string, ttlMs: number, history: number, replicas: number, maxBytes: number): Promise<ApplyResult> {
  const streamName = `KV_${name}`;
  const info = await nats.jsm.streams.info(streamName).catch(() => null);
  if (!info) {
    await new Kvm(nats.js).create(name, { ttl: ttlMs, history, replicas, max_bytes: maxBytes });
    return { kind: 'kv', name, action: 'created' };
  }
  const want = { max_age: msToNs(ttlMs), max_msgs_per_subject: history, max_bytes: maxBytes };
  const changed = differences(want, info.config as unknown as Record<string, unknown>);
  if (changed.length === 0) return { kind: 'kv', name, action: 'unchanged' };
  await nats.jsm.streams.update(streamName, { ...info.config, ...want });
  return { kind: 'kv', name, action: 'updated', changed };
}

export const clickhouseSqlDir = path.join(projectRoot, 'schemas', 'clickhouse');

/** Fills `{database}` in a SQL file; the database name was checked by the config schema. */
export async function readSql(file: string, vars: Record<string, string | number>): Promise<string> {
  const text = await fs.readFile(path.join(clickhouseSqlDir, file), 'utf8');
  return text.replace(/\{(\w+)\}/g, (m, key: string) => (key in vars ? String(vars[key]) : m));
}

async function applyClickHouse(ch: ClickHouseClient, database: string): Promise<ApplyResult[]> {
  const files = (await fs.readdir(clickhouseSqlDir)).filter((f) => /^\d+_.*\.sql$/.test(f)).sort();
  const existing = new Set(
    await (await ch.query({ query: `SELECT name FROM system.tables WHERE database = '${database}'`, format: 'JSONEachRow' }))
      .json<{ name: string }>()
      .then((rows) => rows.map((r) => r.name)),
  );
  await ch.command({ query: `CREATE DATABASE IF NOT EXISTS ${database}` });
  const results: ApplyResult[] = await migrateReceiptIds(ch, database);
  for (const file of files) {
    const sql = await readSql(file, { database });
    const table = /EXISTS\s+\{?\w+\}?\.(\w+)/i.exec(sql)?.[1] ?? /EXISTS\s+\w+\.(\w+)/i.exec(sql)?.[1] ?? file;
    await ch.command({ query: sql });
    if (results.some((r) => r.name === `${database}.${table}`)) continue;
    results.push({ kind: 'clickhouse', name: `${database}.${table}`, action: existing.has(table) ? 'unchanged' : 'created' });
  }
  return results;
}

/**
 * Tables made before receipts had ids get the column, each old row an id of its own content (two
 * identical old rows were one receipt loaded twice); the funnel view is made anew to count ids once.
 * ClickHouse 18.16 has neither `ADD COLUMN IF NOT EXISTS` nor `DROP VIEW`, hence the checks.
 */
async function migrateReceiptIds(ch: ClickHouseClient, database: string): Promise<ApplyResult[]> {
  const tables = await (await ch.query({
    query: `SELECT name, create_table_query AS sql FROM system.tables WHERE database = ${sqlString(database)} AND name IN ('receipts', 'funnel_daily')`,
    format: 'JSONEachRow',
  })).json<{ name: string; sql: string }>();
  const results: ApplyResult[] = [];
  const receipts = tables.find((t) => t.name === 'receipts');
  if (receipts && !receipts.sql.includes('receipt_id')) {
    await ch.command({
      query: `ALTER TABLE ${database}.receipts ADD COLUMN receipt_id String DEFAULT concat('legacy:', toString(cityHash64(` +
        `stage, status, request_id, tenant, channel, provider, user_id, reason, toString(event_time), toString(event_ms), toString(attempt), toString(count))))`,
    });
    results.push({ kind: 'clickhouse', name: `${database}.receipts`, action: 'updated', changed: ['receipt_id'] });
  }
  const view = tables.find((t) => t.name === 'funnel_daily');
  // Made anew when it predates counting ids once, or engagement (seen → clicked) and categories.
  if (view && (!view.sql.includes('receipt_id') || !view.sql.includes('clicked'))) {
    await ch.command({ query: `DROP TABLE IF EXISTS ${database}.funnel_daily` });
    results.push({ kind: 'clickhouse', name: `${database}.funnel_daily`, action: 'updated', changed: ['counts each receipt id once, engagement, by category'] });
  }
  return results;
}

/**
 * Before intake was split per tier, REQUESTS took the producers' subjects itself and validate read
 * it. It becomes the replayable log of the new intake streams; its consumers go. Refused while it
 * still holds requests not yet validated: they would be left behind.
 */
async function splitIntake(jsm: JetStreamManager, topology: Topology, log: Partial<StreamConfig>): Promise<ApplyResult[]> {
  const info = await jsm.streams.info(topology.requestsStream).catch(() => null);
  if (!info?.config.subjects?.length) return [];
  const consumers = [];
  for await (const ci of jsm.consumers.list(topology.requestsStream)) consumers.push(ci);
  const waiting = consumers.reduce((n, ci) => n + ci.num_pending + ci.num_ack_pending, 0);
  if (waiting > 0) {
    throw new Error(`${topology.requestsStream} still holds ${waiting} requests not yet validated, from before intake was split per tier: ` +
      'let the running herald handle them (or stop producers until it has), then apply again');
  }
  for (const ci of consumers) await jsm.consumers.delete(topology.requestsStream, ci.name);
  await jsm.streams.update(topology.requestsStream, { ...info.config, ...log, subjects: [] });
  return [{ kind: 'stream', name: topology.requestsStream, action: 'updated', changed: ['subjects (now the log of the per-tier intake streams)'] }];
}

/** Creates or updates every stream, consumer, KV bucket and ClickHouse table. Idempotent. */
export async function applyAll(nats: Nats, topology: Topology, ch?: ClickHouseClient, database?: string): Promise<ApplyResult[]> {
  const streams = topology.streams(nats.nc.info?.max_payload);
  const results: ApplyResult[] = await splitIntake(nats.jsm, topology, streams.find((s) => s.name === topology.requestsStream)!);
  for (const stream of streams) {
    if (results.some((r) => r.name === stream.name)) continue;
    results.push(await applyStream(nats.jsm, stream));
  }
  for (const { stream, config } of topology.consumers()) results.push(await applyConsumer(nats.jsm, stream, config));
  for (const bucket of topology.buckets()) results.push(await applyBucket(nats, bucket.name, bucket.ttlMs, bucket.history, bucket.replicas, bucket.maxBytes));
  if (ch && database) results.push(...(await applyClickHouse(ch, database)));
  return results;
}

/**
 * A string as a ClickHouse SQL literal. ClickHouse 18.16 has no query parameters, so values that
 * come from operators or producers are quoted here, the one place that does it.
 */
export function sqlString(value: string): string {
  return `'${value.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;
}
