import type { ClickHouseClient } from '@clickhouse/client';
import type { Directory } from '../stores/directory.js';
import type { TemplateStore } from '../runtime/templates.js';
import type { Channel } from '../schemas/index.js';
import type { Sink } from '../sinks/sink.js';
import type { DedupStore } from '../stores/dedup.js';
import type { Metrics } from './metrics.js';
import type { Cancellations } from '../stores/cancellations.js';
import type { Checkpoints } from '../stores/checkpoints.js';
import type { InboxStore } from '../stores/inbox.js';
import type { RequestStatuses } from '../stores/request-status.js';

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
  /** Fan-out checkpoints (absent: a restarted fan-out starts over, its repeats dropped by msgID). */
  checkpoints?: Checkpoints;
  /** The in-app inbox, for fan-out-on-read broadcast records. */
  inbox?: InboxStore;
  /** Topic size from which in-app goes out as one broadcast record (0: never). */
  inappBroadcastThreshold: number;
  /** Channels quiet hours hold back (in-app does not interrupt, so it is not held by default). */
  quietChannels: Channel[];
  /** Longest one wait for a deferred delivery lasts before the clock is read again. */
  deferRecheckMs: number;
  /** Each request's status, fed from receipts (the tracker node). */
  statuses?: RequestStatuses;
  /** The clock; tests replace it. */
  now: () => number;
}
