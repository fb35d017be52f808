import { z } from 'zod';
import { decodeReceiptBatch, receiptBatchSchema, type ReceiptBatch } from '../schemas/index.js';
import type { StageDefinition } from '../pipeline/stage.js';
import type { StageDeps } from '../pipeline/deps.js';

export const statusTrackerConfig = z.object({});

/**
 * tracker: RECEIPTS → each request's status in Redis, within a second of each step (ClickHouse
 * holds the history; this is where `GET /v1/notifications/{id}` reads where a request stands).
 * Idempotent: each receipt id is counted once, so a redelivered batch changes nothing.
 */
export const statusTrackerStage: StageDefinition<ReceiptBatch, never, z.infer<typeof statusTrackerConfig>, StageDeps> = {
  name: 'tracker',
  input: receiptBatchSchema,
  decode: decodeReceiptBatch,
  output: null,
  config: statusTrackerConfig,
  // Receipts about receipts would loop: a tracker failure is in its logs, metrics and the DLQ.
  identify: () => [],
  create(_config, deps) {
    return {
      async processBatch(batches) {
        if (!deps.statuses) throw new Error('tracker: no status store');
        await deps.statuses.record(batches.flatMap((b) => b.receipts));
        return [];
      },
    };
  },
};
