import { z } from 'zod';
import { DeferError } from '../runtime/errors.js';
import {
  deferredWorkSchema, resolvedChunkSchema, scheduledRequestSchema, validatedSchema,
  type DeferredWork, type ResolvedChunk, type ScheduledRequest, type Validated,
} from '../schemas/index.js';
import { requestIdentity, type Identity, type StageDefinition } from '../pipeline/stage.js';
import type { StageDeps } from '../pipeline/deps.js';
import type { Tier } from '../schemas/common.js';

export const wakeConfig = z.object({});

/**
 * A stage that holds work until its time and then hands it on unchanged. The wait is a delayed nak
 * on a consumer of its own with no cap on pending messages, so held work survives restarts and any
 * amount of it never stands in the way of work that is due; long waits are cut into rechecks of
 * the clock.
 */
function holdUntilDue<W>(
  name: string,
  input: z.ZodType<{ until: number; work: W }>,
  output: z.ZodType<W>,
  about: (work: W) => { identity: Identity; tier: Tier },
): StageDefinition<{ until: number; work: W }, W, z.infer<typeof wakeConfig>, StageDeps> {
  return {
    name,
    input,
    output,
    config: wakeConfig,
    identify: (held) => [about(held.work).identity],
    tierOf: (held) => about(held.work).tier,
    create(_config, deps) {
      return {
        async process(held) {
          const waitMs = held.until - deps.now();
          if (waitMs > 0) throw new DeferError(Date.now() + Math.min(waitMs, deps.deferRecheckMs), 'not yet due');
          // Expired or cancelled meanwhile: dispatch says so in a receipt.
          return [held.work];
        },
      };
    },
  };
}

/** wake: recipients held back by quiet hours, handed to the preference filter again (which sees the preferences of that moment). */
export const wakeStage = holdUntilDue<ResolvedChunk>('wake', deferredWorkSchema as z.ZodType<DeferredWork>, resolvedChunkSchema, (w) => ({
  identity: requestIdentity(w.request, { user_ids: w.user_ids }), tier: w.request.tier,
}));

/** schedule: a validated request held until its `send_at`, then resolved (accepted once, at validation). */
export const scheduleStage = holdUntilDue<Validated>('schedule', scheduledRequestSchema as z.ZodType<ScheduledRequest>, validatedSchema, (v) => ({
  identity: requestIdentity(v.request), tier: v.request.tier,
}));
