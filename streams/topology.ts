import { AckPolicy, DeliverPolicy, DiscardPolicy, RetentionPolicy, StorageType } from '@nats-io/jetstream';
import type { ConsumerConfig, StreamConfig } from '@nats-io/jetstream';
import { tiers, type Tier } from '../schemas/common.js';
import { kvToken } from '../runtime/ids.js';
import { KeySpace } from '../stores/keys.js';

/** A free-form id as one subject token: a KV key token is one (itself when plainly safe, else a hash of it). */
const subjectToken = kvToken;

/** JetStream speaks nanoseconds; Herald speaks milliseconds. This is the one conversion. */
export const msToNs = (ms: number): number => ms * 1_000_000;
export const nsToMs = (ns: number): number => Math.round(ns / 1_000_000);

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;
const GiB = 1024 ** 3;

/** How long the intake and work streams keep a message: a scheduled request must come due well inside it. */
export const REQUESTS_RETENTION_MS = 7 * 24 * 60 * 60 * 1000;
/** The latest `send_at` Herald accepts, ahead of the request's arrival. */
export const MAX_SCHEDULE_AHEAD_MS = REQUESTS_RETENTION_MS - 60 * 60 * 1000;

/** The largest request Herald stores (10,000 user ids of 128 characters fit): a producer gets an error at publish time for a larger one. */
export const MAX_REQUEST_BYTES = 2 * 1024 * 1024;

/** Room a dead letter keeps for everything but the copied message (reasons are cut to fit it). */
export const DEAD_LETTER_OVERHEAD_BYTES = 256 * 1024;

/**
 * The largest request a server with this max_payload may take: one whose dead letter (base64, a
 * third more, plus its reasons) still fits in a message, so nothing stored can become impossible
 * to dead-letter. 2 MiB with the shipped nats.conf (4 MB), 576 KiB with NATS's default 1 MB.
 */
export function maxRequestBytes(maxPayload: number): number {
  return Math.min(MAX_REQUEST_BYTES, Math.floor(((maxPayload - DEAD_LETTER_OVERHEAD_BYTES) * 3) / 4));
}

/**
 * Where one node of the pipeline graph reads. The graph says it; the topology turns it into a
 * stream, a subject per tier (and partition) and a durable consumer each.
 */
export interface NodePlacement {
  name: string;
  /** The request log (the entry node), its tier's work stream, or the receipts log (untiered). */
  reads: 'requests' | 'work' | 'receipts';
  /** Its input subject is notify.<subject>[.<partition>].<tier>. */
  subject: string;
  /** Read per partition, a consumer each (dispatch: one per channel). */
  partitions?: readonly string[];
  /** Unacknowledged messages its consumer allows. @default the tier's maxAckPending */
  maxAckPending?: number;
}

/** Per-tier worker settings: the isolation between tiers lives here, not in code paths. */
export interface TierLimits {
  /** Consumer max_ack_pending: messages one tier may hold unacknowledged. */
  maxAckPending: number;
  /** Messages a pull asks for at once. */
  pullBatch: number;
  /** Messages one stage handles at once in one process. */
  concurrency: number;
  /** Share of the storage budget for this tier's work stream: one tier's backlog cannot fill another's. */
  storageShare: number;
  /** Share for this tier's intake (requests not yet validated): a flood of one tier leaves the others their room. */
  intakeShare: number;
}

export const tierLimits: Record<Tier, TierLimits> = {
  transactional: { maxAckPending: 2_000, pullBatch: 200, concurrency: 256, storageShare: 0.1, intakeShare: 0.04 },
  social: { maxAckPending: 2_000, pullBatch: 200, concurrency: 32, storageShare: 0.1, intakeShare: 0.04 },
  marketing: { maxAckPending: 1_000, pullBatch: 100, concurrency: 16, storageShare: 0.2, intakeShare: 0.08 },
};

/**
 * Shares of the storage budget for what is not per tier: the replayable request log, receipts, the
 * DLQ and the KV buckets. With the tiers' shares they add up to the whole budget.
 */
export const storageShares = { requestLog: 0.14, receipts: 0.2, dlq: 0.04, dedup: 0.03, breakers: 0.005, checkpoints: 0.01, cancellations: 0.015 };

/** Subject and resource names for one namespace; the only place subject strings are built. */
export class Topology {
  /**
   * @param namespace prefix for every name (empty in production)
   * @param storageBudgetBytes what all of Herald's streams may reserve together; JetStream reserves
   *   each stream's max_bytes against the server's max_file_store, so this must fit in it.
   */
  constructor(
    readonly nodes: readonly NodePlacement[],
    readonly namespace = '',
    readonly storageBudgetBytes = 16 * GiB,
    readonly replicas = 1,
    readonly ackWaitMs = 30_000,
  ) {
    const entries = nodes.filter((n) => n.reads === 'requests');
    if (entries.length !== 1) throw new Error(`topology: the graph needs exactly one node reading requests, not ${entries.length}`);
    this.entry = entries[0];
  }

  private readonly entry: NodePlacement;

  /** The placement of a node of the graph. */
  node(name: string): NodePlacement {
    const node = this.nodes.find((n) => n.name === name);
    if (!node) throw new Error(`topology: no node "${name}" in the graph`);
    return node;
  }

  private bytes(share: number): number {
    return Math.floor(this.storageBudgetBytes * share);
  }

  private subj(rest: string): string {
    return this.namespace ? `${this.namespace}.notify.${rest}` : `notify.${rest}`;
  }
  private name(base: string): string {
    return this.namespace ? `${this.namespace.toUpperCase()}_${base}` : base;
  }

  /**
   * Where producers publish a tier's requests for a tenant: `notify.request.<tier>.<tenant>`, so a
   * producer's NATS user can be allowed one tenant's subjects only (validate rejects a body naming
   * another). Without a tenant, the tenantless subject of before: deprecated, still taken.
   */
  request(tier: Tier | '*', tenant?: string): string {
    const subject = this.subj(`${this.entry.subject}.${tier}`);
    return tenant === undefined ? subject : `${subject}.${tenant}`;
  }
  /** Both forms of a tier's request subject, as its intake takes them: tenantless (deprecated), and per tenant. */
  requestSubjects(tier: Tier | '*'): [tenantless: string, perTenant: string] {
    return [this.request(tier), this.request(tier, '*')];
  }
  /** Every subject under the request prefix, a tier's or not (a wildcard, for a subscriber). */
  get anyRequest(): string { return this.subj(`${this.entry.subject}.>`); }
  /**
   * What a subject names as a request subject: its tier, and its tenant in the tenant form; null when
   * it is not shaped like one (another prefix, more tokens, an empty token). The tier may be no tier.
   */
  requestOf(subject: string): { tier: string; tenant?: string } | null {
    const prefix = this.subj(`${this.entry.subject}.`);
    if (!subject.startsWith(prefix)) return null;
    const [tier, tenant, ...more] = subject.slice(prefix.length).split('.');
    if (!tier || tenant === '' || more.length) return null;
    return tenant === undefined ? { tier } : { tier, tenant };
  }
  /** A node's input subject for a tier (and partition): where a durable edge into it publishes. */
  input(node: string, tier: Tier | '*', partition?: string): string {
    const n = this.node(node);
    if (n.reads === 'receipts') return this.receipt('*');
    return this.subj(partition === undefined ? `${n.subject}.${tier}` : `${n.subject}.${partition}.${tier}`);
  }
  receipt(status: string): string { return this.subj(`receipt.${status}`); }
  dlq(stage: string): string { return this.subj(`dlq.${stage}`); }
  /** Core NATS subject (not a stream) where `{tenant, id}` cancels a request. */
  get cancel(): string { return this.subj('cancel'); }
  /**
   * Core NATS subjects (not streams) for live inbox updates: one per user and one per topic, so any
   * API replica can hold any user's stream. Ids are hashed into one subject token.
   */
  inboxUser(tenant: string, userId: string): string { return this.subj(`inbox.${tenant}.u.${subjectToken(userId)}`); }
  inboxTopic(tenant: string, topic: string): string { return this.subj(`inbox.${tenant}.t.${subjectToken(topic)}`); }
  /**
   * Core NATS subject where one delivery to many users is said once, for every tenant: every API
   * replica reads all of it, so the tenant travels in the message alone.
   */
  get inboxBatches(): string { return this.subj('inbox.batch'); }

  /** The replayable log of every tier's requests (a discard-old copy of the intake streams). */
  get requestsStream(): string { return this.name('REQUESTS'); }
  /** Where a tier's requests land and wait for validation (kept 7 days, within the tier's share). */
  intakeStream(tier: Tier): string { return this.name(`REQUESTS_${tier.toUpperCase()}`); }
  workStream(tier: Tier): string { return this.name(`WORK_${tier.toUpperCase()}`); }
  get receiptsStream(): string { return this.name('RECEIPTS'); }
  get dlqStream(): string { return this.name('DLQ'); }

  kvBucket(base: 'dedup' | 'breakers' | 'checkpoints' | 'cancellations'): string {
    return this.namespace ? `${this.namespace}_${base}` : base;
  }
  /** Redis keys for the directory, inbox and counters, in this namespace. */
  get keys(): KeySpace { return new KeySpace(this.namespace); }

  /** A node's durable consumer name: `<node>[_<partition>][_<tier>]`. */
  durable(node: string, tier?: Tier, partition?: string): string {
    return [node, partition, tier].filter(Boolean).join('_');
  }

  /** The stream a node reads for a tier. */
  streamOf(node: string, tier?: Tier): string {
    const n = this.node(node);
    if (n.reads === 'requests') {
      if (!tier) throw new Error(`topology: node "${node}" reads a tier's intake; name the tier`);
      return this.intakeStream(tier);
    }
    if (n.reads === 'receipts') return this.receiptsStream;
    if (!tier) throw new Error(`topology: node "${node}" reads a tier's work stream; name the tier`);
    return this.workStream(tier);
  }

  /** The input subjects a tier's work stream holds: one per work node (partitions by wildcard). */
  private workSubjects(tier: Tier): string[] {
    return this.nodes.filter((n) => n.reads === 'work').map((n) => this.subj(n.partitions ? `${n.subject}.*.${tier}` : `${n.subject}.${tier}`));
  }

  /**
   * Every stream. `maxPayload` is the server's: requests are capped so that each can be dead-lettered
   * whole (see maxRequestBytes).
   */
  streams(maxPayload = 4 * 1024 * 1024): Partial<StreamConfig>[] {
    const base = { storage: StorageType.File, num_replicas: this.replicas, discard: DiscardPolicy.Old };
    return [
      // Intake, one stream per tier: a marketing flood fills its own room, never the transactional one.
      ...tiers.map((tier) => ({
        ...base,
        name: this.intakeStream(tier),
        // Only the three tiers: a publish to notify.request.<anything else> fails at once for the producer.
        // Each in both forms: notify.request.<tier>.<tenant>, and the tenantless one (deprecated).
        subjects: this.requestSubjects(tier),
        // Limits, not interest or work-queue: NATS 2.9 can drop what an interest stream takes while a
        // restarting server has not yet loaded its consumers (acked to the producer all the same),
        // and the log's source would overlap validate's consumer on a work queue. So a handled
        // request keeps its room here until it ages out: a flood can fill its own tier, no other.
        retention: RetentionPolicy.Limits,
        // Full: producers get an error and retry, rather than unprocessed requests being dropped.
        discard: DiscardPolicy.New,
        max_age: msToNs(REQUESTS_RETENTION_MS),
        max_bytes: this.bytes(tierLimits[tier].intakeShare),
        max_msg_size: maxRequestBytes(maxPayload),
        // Producers set Nats-Msg-Id = tenant:idempotency_key; a repeat inside this window is dropped.
        duplicate_window: msToNs(2 * HOUR),
      })),
      {
        ...base,
        name: this.requestsStream,
        // The replayable log: a copy of every tier's intake, oldest dropped first when it is full
        // (it is history, never the only copy of unhandled work).
        sources: tiers.map((tier) => ({ name: this.intakeStream(tier) })),
        retention: RetentionPolicy.Limits,
        discard: DiscardPolicy.Old,
        max_age: msToNs(REQUESTS_RETENTION_MS),
        max_bytes: this.bytes(storageShares.requestLog),
      },
      ...tiers.map((tier) => ({
        ...base,
        name: this.workStream(tier),
        subjects: this.workSubjects(tier),
        retention: RetentionPolicy.Workqueue,
        max_age: msToNs(7 * DAY),
        max_bytes: this.bytes(tierLimits[tier].storageShare),
        // New messages are refused rather than old work silently discarded when a tier is full.
        discard: DiscardPolicy.New,
        duplicate_window: msToNs(2 * MINUTE),
      })),
      {
        ...base,
        name: this.receiptsStream,
        subjects: [this.receipt('*')],
        retention: RetentionPolicy.Limits,
        max_age: msToNs(7 * DAY),
        max_bytes: this.bytes(storageShares.receipts),
        duplicate_window: msToNs(2 * MINUTE),
      },
      {
        ...base,
        name: this.dlqStream,
        subjects: [this.subj('dlq.*')],
        retention: RetentionPolicy.Limits,
        // Full: dead-lettering fails and the work stays where it was (retried), never dropped.
        discard: DiscardPolicy.New,
        max_age: msToNs(30 * DAY),
        max_bytes: this.bytes(storageShares.dlq),
        duplicate_window: msToNs(2 * MINUTE),
      },
    ];
  }

  /** Every durable consumer: one per node per tier (per partition where it has them); untiered nodes one. */
  consumers(): { stream: string; config: Partial<ConsumerConfig> }[] {
    const pull = (durable: string, filter: string | undefined, maxAckPending: number): Partial<ConsumerConfig> => ({
      durable_name: durable,
      filter_subject: filter,
      ack_policy: AckPolicy.Explicit,
      deliver_policy: DeliverPolicy.All,
      // How soon a crashed process's messages go to another (the runner sends working() at a third of it).
      ack_wait: msToNs(this.ackWaitMs),
      max_deliver: -1,
      max_ack_pending: maxAckPending,
    });
    const out: { stream: string; config: Partial<ConsumerConfig> }[] = [];
    for (const node of this.nodes) {
      if (node.reads === 'receipts') {
        out.push({ stream: this.receiptsStream, config: pull(this.durable(node.name), this.receipt('*'), node.maxAckPending ?? 20_000) });
        continue;
      }
      for (const tier of tiers) {
        for (const partition of node.partitions ?? [undefined]) {
          // An intake holds one tier's requests under both subject forms, and NATS 2.9 gives a
          // consumer one filter (no pattern matches notify.request.<tier> and notify.request.<tier>.*
          // alone): the entry node's consumer reads its intake whole, with no filter (not '>', which
          // 2.9 treats as a filtered consumer; with none it takes the path the one-subject filter took).
          const filter = node.reads === 'requests' ? undefined : this.input(node.name, tier, partition);
          out.push({
            stream: this.streamOf(node.name, tier),
            config: pull(this.durable(node.name, tier, partition), filter, node.maxAckPending ?? tierLimits[tier].maxAckPending),
          });
        }
      }
    }
    return out;
  }

  /** KV buckets with their history, TTL (ms) and share of the storage budget. */
  buckets(): { name: string; ttlMs: number; history: number; replicas: number; maxBytes: number }[] {
    const bucket = (base: 'dedup' | 'breakers' | 'checkpoints' | 'cancellations', ttlMs: number) =>
      ({ name: this.kvBucket(base), ttlMs, history: 1, replicas: this.replicas, maxBytes: this.bytes(storageShares[base]) });
    return [
      // Longer than the whole retry schedule, so a late retry still finds the key.
      bucket('dedup', 2 * DAY),
      bucket('breakers', 0),
      bucket('checkpoints', 7 * DAY),
      bucket('cancellations', 7 * DAY),
    ];
  }
}

