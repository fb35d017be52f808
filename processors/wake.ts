import { z } from 'zod';
import { DeferError } from '../runtime/errors.js';
import { deferredWorkSchema, resolvedChunkSchema, type DeferredWork, type ResolvedChunk } from '../schemas/index.js';
import { requestIdentity, type StageDefinition } from '../pipeline/stage.js';
import type { StageDeps } from '../pipeline/deps.js';

export const wakeConfig = z.object({});

/**
 * wake: holds deferred recipients until their time, then hands them to the preference filter again
 * (chained), which sees the preferences of that moment. The wait is a delayed nak, so it survives
 * restarts; long waits are cut into rechecks of the clock.
 */
export const wakeStage: StageDefinition<DeferredWork, ResolvedChunk, z.infer<typeof wakeConfig>, StageDeps> = {
  name: 'wake',
  input: deferredWorkSchema,
  output: resolvedChunkSchema,
  config: wakeConfig,
  identify: (d) => [requestIdentity(d.work.request, { user_ids: d.work.user_ids })],
  tierOf: (d) => d.work.request.tier,
  create(_config, deps) {
    const recheckMs = deps.deferRecheckMs;
    return {
      async process(deferred) {
        const waitMs = deferred.until - deps.now();
        if (waitMs > 0) throw new DeferError(Date.now() + Math.min(waitMs, recheckMs), 'deferred');
        // Expired or cancelled meanwhile: dispatch says so in a receipt.
        return [deferred.work];
      },
    };
  },
};
