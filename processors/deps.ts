import type { ClickHouseClient } from '@clickhouse/client';
import type { Directory } from '../runtime/directory.js';
import type { TemplateStore } from '../runtime/templates.js';
import type { Channel } from '../schemas/index.js';
import type { Sink } from '../sinks/sink.js';
import type { DedupStore } from './dedup.js';
import type { Metrics } from './metrics.js';
import type { Cancellations } from './cancellations.js';

/** Everything stages may depend on; each stage takes only what it uses. */
export interface StageDeps {
  directory: Directory;
  templates: TemplateStore;
  dedup: DedupStore;
  sinks: Partial<Record<Channel, Sink>>;
  clickhouse: ClickHouseClient;
  clickhouseDatabase: string;
  defaultChannels: Channel[];
  metrics: Metrics;
  /** Categories that ignore opt-outs (not the hard stop). */
  criticalCategories?: string[];
  /** Per-category daily caps per user. */
  frequencyCaps?: Record<string, number>;
  /** Dedup keys on (the default); off only to measure their cost. */
  dedupEnabled?: boolean;
  /** Cancelled requests (absent: nothing is ever cancelled). */
  cancellations?: Cancellations;
  /** The clock; tests replace it. */
  now: () => number;
}
