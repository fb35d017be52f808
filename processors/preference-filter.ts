import { z } from 'zod';
import { decide, type Decision } from '../runtime/preferences.js';
import type { UserProfile } from '../stores/directory.js';
import {
  deferredWorkSchema, filteredChunkSchema, resolvedChunkSchema, type Channel, type FilteredChunk, type Recipient, type ResolvedChunk,
} from '../schemas/index.js';
import { sha256 } from '../runtime/ids.js';
import { requestIdentity, type StageDefinition } from '../pipeline/stage.js';
import type { StageDeps } from '../pipeline/deps.js';
import { parseQuietHours, quietUntil } from '../runtime/quiet-hours.js';

export const preferenceFilterConfig = z.object({});

/** preference-filter: per recipient × channel, send or suppress (with the reason in a receipt). */
export const preferenceFilterStage: StageDefinition<ResolvedChunk, FilteredChunk, z.infer<typeof preferenceFilterConfig>, StageDeps> = {
  name: 'filter',
  input: resolvedChunkSchema,
  output: filteredChunkSchema,
  later: deferredWorkSchema,
  config: preferenceFilterConfig,
  identify: (c) => [requestIdentity(c.request, { user_ids: c.user_ids })],
  tierOf: (c) => c.request.tier,
  create(_config, deps) {
    const quietChannels = deps.quietChannels;
    /** Users over the category's daily cap with this request counted (critical categories are never capped). */
    async function overCap(profiles: UserProfile[], request: FilteredChunk['request'], critical: boolean): Promise<Set<string>> {
      const cap = deps.frequencyCaps?.[request.category];
      if (cap === undefined || critical) return new Set();
      const eligible = profiles.filter((p) => p.exists && !p.hardStop);
      const now = new Date(deps.now());
      const counts = await deps.directory.countTowardCap(request.tenant, request.category, request.id,
        eligible.map((p) => ({ id: p.id, day: dayIn(p.timezone, now) })));
      return new Set(eligible.filter((_, i) => counts[i] > cap).map((p) => p.id));
    }
    return {
      async process(chunk, ctx) {
        const { request } = chunk;
        const profiles = await deps.directory.profiles(request.tenant, chunk.user_ids, request.channels.includes('push'));
        const critical = deps.criticalCategories?.includes(request.category) ?? false;
        const capped = chunk.cap_counted ? new Set<string>() : await overCap(profiles, request, critical);
        const byChannel = new Map<Channel, Recipient[]>();
        const suppressed = new Map<string, { channel: Channel; reason: string; users: string[] }>();
        // Quiet hours hold back interrupting channels of non-transactional, non-critical work.
        const holdable = request.tier === 'transactional' || critical ? [] : request.channels.filter((c) => quietChannels.includes(c));
        const held = new Map<number, Map<Channel, string[]>>();
        const now = deps.now();
        for (const profile of profiles) {
          const quiet = holdable.length ? parseQuietHours(profile.quietHours) : undefined;
          const until = quiet ? quietUntil(quiet, profile.timezone, now) : null;
          for (const channel of request.channels) {
            const decision: Decision = capped.has(profile.id) ? { suppress: 'frequency_cap' } : decide(profile, channel, request.category, critical);
            if ('send' in decision && until !== null && holdable.includes(channel)) {
              let byHeldChannel = held.get(until);
              if (!byHeldChannel) held.set(until, (byHeldChannel = new Map()));
              const users = byHeldChannel.get(channel);
              if (users) users.push(profile.id);
              else byHeldChannel.set(channel, [profile.id]);
            } else if ('send' in decision) {
              const list = byChannel.get(channel);
              if (list) list.push(decision.send);
              else byChannel.set(channel, [decision.send]);
            } else {
              const key = `${channel}\u0000${decision.suppress}`;
              const entry = suppressed.get(key);
              if (entry) entry.users.push(profile.id);
              else suppressed.set(key, { channel, reason: decision.suppress, users: [profile.id] });
            }
          }
        }
        for (const { channel, reason, users } of suppressed.values()) {
          ctx.receipt({
            ts: now, stage: 'filter', status: 'suppressed', request_id: request.id, tenant: request.tenant,
            tier: request.tier, category: request.category, channel, user_ids: users,
            reason, attempt: ctx.attempt, latency_ms: Math.max(0, now - request.accepted_at),
          });
        }
        for (const [until, byHeldChannel] of held) {
          const users = [...new Set([...byHeldChannel.values()].flat())];
          // Filtered again when due: an opt-out or a hard stop set during the night still counts.
          const later: ResolvedChunk = { request: { ...request, channels: [...byHeldChannel.keys()] }, chunk: chunk.chunk, user_ids: users, cap_counted: true };
          const id = sha256(`${request.tenant}\u0000${request.id}\u0000${request.replay ?? ''}\u0000${chunk.chunk}\u0000${until}\u0000${users.join(',')}`).slice(0, 32);
          ctx.later(later, until, id);
          for (const [channel, channelUsers] of byHeldChannel) {
            ctx.receipt({
              ts: now, stage: 'filter', status: 'deferred', request_id: request.id, tenant: request.tenant,
              tier: request.tier, category: request.category, channel, user_ids: channelUsers,
              reason: `quiet_hours until ${new Date(until).toISOString()}`, attempt: ctx.attempt, latency_ms: Math.max(0, now - request.accepted_at),
            });
          }
        }
        if (byChannel.size === 0) return [];
        return [{ request, chunk: chunk.chunk, deliveries: [...byChannel].map(([channel, recipients]) => ({ channel, recipients })) }];
      },
    };
  },
};

const dayFormats = new Map<string, Intl.DateTimeFormat>();
/** The calendar day (YYYY-MM-DD) it is for someone in `timeZone`. */
export function dayIn(timeZone: string, at: Date): string {
  let f = dayFormats.get(timeZone);
  if (!f) {
    try {
      f = new Intl.DateTimeFormat('en-CA', { timeZone, year: 'numeric', month: '2-digit', day: '2-digit' });
    } catch {
      f = new Intl.DateTimeFormat('en-CA', { timeZone: 'UTC', year: 'numeric', month: '2-digit', day: '2-digit' });
    }
    dayFormats.set(timeZone, f);
  }
  return f.format(at);
}
