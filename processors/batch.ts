import { createHash } from 'node:crypto';
import { z } from 'zod';
import {
  deliveryBatchSchema, filteredChunkSchema, type DeliveryBatch, type DeliveryGroup, type FilteredChunk,
} from '../schemas/index.js';
import { requestIdentity, type StageDefinition } from '../pipeline/stage.js';
import type { StageDeps } from '../pipeline/deps.js';

export const batchConfig = z.object({
  /** Most recipients in one delivery batch, per channel (FCM takes 500 tokens a call). */
  maxRecipients: z
    .object({
      email: z.number().int().min(1).default(50),
      inapp: z.number().int().min(1).default(1_000),
      push: z.number().int().min(1).max(500).default(500),
      sms: z.number().int().min(1).default(50),
    })
    .prefault({}),
  /** Most bytes in one delivery batch: every group carries its request, and a message must fit max_payload. */
  maxBytes: z.number().int().min(64 * 1024).default(1024 * 1024),
});

/** About how many bytes a group adds to a batch as JSON (its request counted once per group). */
function groupBytes(requestBytes: number, recipients: DeliveryGroup['recipients']): number {
  let n = requestBytes + 64;
  for (const r of recipients) {
    n += r.user_id.length + r.locale.length + 48;
    for (const to of r.to) n += to.length + 3;
    if (r.platforms) for (const p of r.platforms) n += p.length + 3;
  }
  return n;
}

/**
 * batch: regroups the deliveries of many chunks (and many requests, gathered over a short linger)
 * into provider-sized batches per channel, so single-recipient requests share provider calls.
 */
export const batchStage: StageDefinition<FilteredChunk, DeliveryBatch, z.infer<typeof batchConfig>, StageDeps> = {
  name: 'batch',
  input: filteredChunkSchema,
  output: deliveryBatchSchema,
  config: batchConfig,
  identify: (c) => c.deliveries.map((d) => requestIdentity(c.request, { channel: d.channel, user_ids: d.recipients.map((r) => r.user_id) })),
  tierOf: (c) => c.request.tier,
  // The groups a batch carries name it: a batch rebuilt the same way after a crash is the same message.
  // Recipients are part of the name: the same chunk filtered again later (quiet hours) carries others.
  outputId(batch) {
    const h = createHash('sha256').update(batch.channel);
    for (const g of batch.groups) {
      h.update(`\u0000${g.request.tenant}\u0000${g.request.id}\u0000${g.request.replay ?? ''}\u0000${g.chunk}\u0000${g.part}`);
      for (const r of g.recipients) h.update(`\u0001${r.user_id}`);
    }
    return h.digest('base64url').slice(0, 32);
  },
  create(config) {
    return {
      async processBatch(chunks) {
        const open = new Map<string, { batch: DeliveryBatch; size: number; bytes: number }>();
        const done: DeliveryBatch[] = [];
        for (const chunk of chunks) {
          const requestBytes = JSON.stringify(chunk.request).length;
          for (const { channel, recipients } of chunk.deliveries) {
            const limit = config.maxRecipients[channel];
            for (let i = 0, part = 0; i < recipients.length; i += limit, part++) {
              const group: DeliveryGroup = { request: chunk.request, chunk: chunk.chunk, part, recipients: recipients.slice(i, i + limit) };
              const key = `${channel}.${chunk.request.tier}`;
              const bytes = groupBytes(requestBytes, group.recipients);
              let current = open.get(key);
              if (current && (current.size + group.recipients.length > limit || current.bytes + bytes > config.maxBytes)) {
                done.push(current.batch);
                current = undefined;
              }
              if (!current) {
                current = { batch: { channel, tier: chunk.request.tier, groups: [] }, size: 0, bytes: 0 };
                open.set(key, current);
              }
              current.batch.groups.push(group);
              current.size += group.recipients.length;
              current.bytes += bytes;
            }
          }
        }
        for (const { batch } of open.values()) done.push(batch);
        return done;
      },
    };
  },
};
