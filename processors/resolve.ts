import { z } from 'zod';
import { resolvedChunkSchema, validatedSchema, type ResolvedChunk, type Validated } from '../schemas/index.js';
import type { StageDefinition, StageContext } from './stage.js';
import type { StageDeps } from './deps.js';

export const resolveConfig = z.object({
  /** Users per chunk message. */
  chunkSize: z.number().int().min(1).max(500).default(500),
});

/**
 * resolve: expands user ids or a topic into chunks of at most `chunkSize` users. Chunks are
 * numbered deterministically (user ids in request order, topic members in id order), so the same
 * request always yields the same chunks: the chunk number is part of every dedup key downstream.
 */
export const resolveStage: StageDefinition<Validated, ResolvedChunk, z.infer<typeof resolveConfig>, StageDeps> = {
  name: 'resolve',
  input: validatedSchema,
  output: resolvedChunkSchema,
  config: resolveConfig,
  create(config, deps) {
    const receipt = (v: Validated, ctx: StageContext, count: number, reason = '') =>
      ctx.receipt({
        ts: deps.now(), stage: 'resolve', status: 'resolved', request_id: v.request.id, tenant: v.request.tenant,
        tier: v.request.tier, category: v.request.category, count, reason, attempt: ctx.attempt,
        latency_ms: Math.max(0, deps.now() - v.request.accepted_at),
      });

    async function* fromTopic(v: Validated, topic: string, ctx: StageContext): AsyncIterable<ResolvedChunk> {
      let after: string | undefined;
      let chunk = 0;
      for (;;) {
        const page = await deps.directory.topicPage(v.request.tenant, topic, after, config.chunkSize);
        if (page.length === 0) break;
        receipt(v, ctx, page.length);
        yield { request: v.request, chunk: chunk++, user_ids: page };
        after = page[page.length - 1];
        if (page.length < config.chunkSize) break;
      }
      if (chunk === 0) receipt(v, ctx, 0, `topic "${topic}" has no members`);
    }

    return {
      process(v, ctx) {
        if (v.recipients.topic !== undefined) return fromTopic(v, v.recipients.topic, ctx);
        const ids = [...new Set(v.recipients.user_ids)];
        const chunks: ResolvedChunk[] = [];
        for (let i = 0; i < ids.length; i += config.chunkSize) {
          const user_ids = ids.slice(i, i + config.chunkSize);
          chunks.push({ request: v.request, chunk: chunks.length, user_ids });
        }
        receipt(v, ctx, ids.length);
        return Promise.resolve(chunks);
      },
    };
  },
};
