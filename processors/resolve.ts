import { z } from 'zod';
import { resolvedChunkSchema, validatedSchema, type ResolvedChunk, type Validated, LAST_CHUNK_REASON } from '../schemas/index.js';
import type { InboxContent } from '../stores/inbox.js';
import { keyPart } from '../stores/keys.js';
import type { FanoutCheckpoint } from '../stores/checkpoints.js';
import { requestIdentity, type StageDefinition, type StageContext } from '../pipeline/stage.js';
import type { StageDeps } from '../pipeline/deps.js';

export const resolveConfig = z.object({
  /** Users per chunk message. */
  chunkSize: z.number().int().min(1).max(500).default(500),
});

type Request = Validated['request'];

/**
 * A request's chunk is named by its number, not by its position in one delivery's outputs: a
 * fan-out resumed from its checkpoint starts at a later chunk, and must not reuse earlier msgIDs.
 */
export const chunkId = (o: ResolvedChunk) => `${o.request.tenant}:${keyPart(o.request.id)}:${o.request.replay ?? ''}:${o.chunk}`;

/**
 * resolve: expands user ids or a topic into chunks of at most `chunkSize` users. Chunks are
 * numbered deterministically (user ids in request order, topic members in id order), so the same
 * request always yields the same chunks: the chunk number is part of every dedup key downstream.
 * A topic larger than two chunks is checkpointed in KV after each chunk is stored, so a crash
 * resumes after the last stored chunk; a topic at or above the broadcast threshold gets its
 * in-app notification as one fan-out-on-read record.
 */
export const resolveStage: StageDefinition<Validated, ResolvedChunk, z.infer<typeof resolveConfig>, StageDeps> = {
  name: 'resolve',
  input: validatedSchema,
  output: resolvedChunkSchema,
  config: resolveConfig,
  identify: (v) => [requestIdentity(v.request)],
  tierOf: (v) => v.request.tier,
  outputId: chunkId,
  create(config, deps) {
    // `unit` names the chunk a topic's receipt counts, so a chunk resolved again after a crash is counted once.
    const receipt = (v: Validated, ctx: StageContext, count: number, reason = '', unit = '') =>
      ctx.receipt({
        ts: deps.now(), stage: 'resolve', status: 'resolved', request_id: v.request.id, tenant: v.request.tenant,
        tier: v.request.tier, category: v.request.category, count, reason, unit, attempt: ctx.attempt,
        latency_ms: Math.max(0, deps.now() - v.request.accepted_at),
      });

    /** Writes the in-app broadcast record (once) and says so in a receipt. */
    async function broadcast(request: Request, topic: string, members: number, ctx: StageContext): Promise<void> {
      const locales = request.template ? deps.templates.locales(request.template.id) : [];
      const contents = ['*', ...locales].map((locale) => {
        const rendered = deps.templates.render(request, locale === '*' ? 'en' : locale);
        const content: InboxContent = {
          id: request.id, category: request.category, tier: request.tier, title: rendered.title, body: rendered.body, created_at: request.accepted_at,
          ...(request.content?.action_url ? { action_url: request.content.action_url } : {}),
          ...(request.data ? { data: request.data } : {}),
        };
        return { locale, content };
      });
      // Filed at arrival, as own entries are: a scheduled or late broadcast shows as new, and a stream resumes past it.
      const fresh = await deps.inbox!.writeBroadcast(request.tenant, topic, request.id, contents, deps.now());
      const now = deps.now();
      ctx.receipt({
        ts: now, stage: 'resolve', status: fresh ? 'delivered' : 'deduplicated', request_id: request.id, tenant: request.tenant,
        tier: request.tier, category: request.category, channel: 'inapp', provider: 'broadcast', count: members, unit: `topic:${topic}`,
        reason: `fan-out on read: topic "${topic}", ${members} members`, attempt: ctx.attempt, latency_ms: Math.max(0, now - request.accepted_at),
      });
    }

    async function* fromTopic(v: Validated, topic: string, ctx: StageContext): AsyncIterable<ResolvedChunk> {
      const { tenant } = v.request;
      const size = await deps.directory.topicSize(tenant, topic);
      if (size === 0) {
        receipt(v, ctx, 0, `topic "${topic}" has no members`);
        return;
      }
      const checkpoints = size > 2 * config.chunkSize ? deps.checkpoints : undefined;
      const key = checkpoints?.key(tenant, v.request.id, v.request.replay);
      const saved = key ? await checkpoints!.read(key) : undefined;
      if (saved?.done) return;
      const threshold = deps.inappBroadcastThreshold;
      const broadcasting = saved?.broadcast
        ?? (threshold > 0 && size >= threshold && v.request.channels.includes('inapp') && deps.inbox !== undefined);
      if (broadcasting && !saved) await broadcast(v.request, topic, size, ctx);
      const request: Request = broadcasting ? { ...v.request, channels: v.request.channels.filter((c) => c !== 'inapp') } : v.request;
      if (request.channels.length === 0) {
        receipt(v, ctx, size, 'every channel fans out on read');
        return;
      }
      const at: FanoutCheckpoint = saved
        ? { ...saved, resumed_from: [...saved.resumed_from, saved.chunk] }
        : { chunk: 0, members: 0, broadcast: broadcasting, done: false, resumed_from: [] };
      if (saved) {
        ctx.log.info({ request: v.request.id, chunk: saved.chunk, members: saved.members }, 'resuming fan-out from its checkpoint');
        receipt(v, ctx, 0, `resumed at chunk ${saved.chunk} after ${saved.members} members`, `resume:${saved.chunk}`);
      }
      let lastSaid = false;
      let cancelled = false;
      const pageAfter = (after: string | undefined) => {
        const read = deps.directory.topicPage(tenant, topic, after, config.chunkSize);
        // A read ahead that is never used (cancelled, or an error further on) must not go unhandled.
        read.catch(() => undefined);
        return read;
      };
      // The next page is read while this one is filtered: a page read waits behind whatever Redis is
      // busy with, and a fan-out is only as fast as its pages come.
      let nextPage: Promise<string[]> | undefined;
      for (;;) {
        // A cancelled fan-out stops paging: what is already out is dropped at dispatch.
        if (deps.cancellations?.isCancelled(tenant, v.request.id)) {
          ctx.receipt({
            ts: deps.now(), stage: 'resolve', status: 'cancelled', request_id: v.request.id, tenant, tier: v.request.tier,
            category: v.request.category, count: size - at.members, reason: `request cancelled after ${at.members} of ${size} members`,
            attempt: ctx.attempt, latency_ms: Math.max(0, deps.now() - v.request.accepted_at),
          });
          cancelled = true;
          break;
        }
        const page = await (nextPage ?? pageAfter(at.after));
        if (page.length === 0) break;
        nextPage = page.length === config.chunkSize ? pageAfter(page[page.length - 1]) : undefined;
        lastSaid = page.length < config.chunkSize || at.members + page.length >= size;
        receipt(v, ctx, page.length, lastSaid ? LAST_CHUNK_REASON : '', `chunk:${at.chunk}`);
        yield { request, chunk: at.chunk, user_ids: page };
        at.chunk++;
        at.members += page.length;
        at.after = page[page.length - 1];
        if (key) {
          const snapshot = { ...at };
          ctx.afterOutputs(() => checkpoints!.save(key, snapshot));
        }
        if (page.length < config.chunkSize) break;
      }
      // The status tracker ends a request's fan-out at its last chunk; a topic that shrank while
      // being paged never reached "last", so it says so in a row of its own (count 0).
      if (!lastSaid && !cancelled) receipt(v, ctx, 0, `fan-out complete: ${at.members} members`, 'end');
      if (key) {
        const final = { ...at, done: true };
        ctx.afterOutputs(() => checkpoints!.save(key, final));
      }
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
