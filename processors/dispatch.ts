import { z } from 'zod';
import { ContentError, type RenderedContent } from '../runtime/templates.js';
import { RetryableError } from '../runtime/errors.js';
import { deliveryBatchSchema, type DeliveryBatch, type DeliveryGroup, type Receipt, type Recipient } from '../schemas/index.js';
import type { DeliveryItem, Outcome } from '../sinks/sink.js';
import type { DoneSet } from './dedup.js';
import type { StageDefinition } from './stage.js';
import type { StageDeps } from './deps.js';

export const dispatchConfig = z.object({});

interface Pending { group: DeliveryGroup; recipient: Recipient; item: DeliveryItem; done?: DoneSet }

/**
 * dispatch: dedup → provider call → receipts. Recipients already sent (per the dedup entry) are
 * skipped; recipients the provider refused for good are dead-lettered alone; recipients to retry
 * make the whole batch come back later (delayed nak), when the ones already sent are skipped.
 */
export const dispatchStage: StageDefinition<DeliveryBatch, never, z.infer<typeof dispatchConfig>, StageDeps> = {
  name: 'dispatch',
  input: deliveryBatchSchema,
  output: null,
  config: dispatchConfig,
  create(_config, deps) {
    return {
      async process(batch, ctx) {
        const sink = deps.sinks[batch.channel];
        const now = deps.now();
        const receiptOf = (group: DeliveryGroup, extra: Partial<Receipt> & Pick<Receipt, 'status'>): Receipt => ({
          ts: deps.now(), stage: 'dispatch', request_id: group.request.id, tenant: group.request.tenant,
          tier: group.request.tier, category: group.request.category, channel: batch.channel,
          provider: sink?.provider ?? '', attempt: ctx.attempt, latency_ms: Math.max(0, deps.now() - group.request.accepted_at),
          ...extra,
        });

        if (!sink) {
          for (const group of batch.groups) {
            for (const r of group.recipients) {
              ctx.receipt(receiptOf(group, { status: 'failed', user_id: r.user_id, reason: `channel ${batch.channel} is not configured` }));
            }
          }
          await ctx.deadLetter(`channel ${batch.channel} is not configured`, [], batch);
          return [];
        }

        // Expired work is dropped with a receipt saying so.
        const live = batch.groups.filter((group) => {
          const expires = group.request.expires_at ? Date.parse(group.request.expires_at) : Infinity;
          if (expires > now) return true;
          ctx.receipt(receiptOf(group, { status: 'expired', count: group.recipients.length, reason: `expires_at ${group.request.expires_at} has passed` }));
          return false;
        });

        const doneSets = new Map<DeliveryGroup, DoneSet>();
        if (!sink.idempotent) {
          const reads = await Promise.all(live.map((g) =>
            deps.dedup.read(deps.dedup.key(g.request.tenant, g.request.id, batch.channel, g.chunk, g.part))));
          live.forEach((g, i) => doneSets.set(g, reads[i]));
        }

        const pending: Pending[] = [];
        const rendered = new Map<string, RenderedContent>();
        const problems: { group: DeliveryGroup; recipient: Recipient; reason: string }[] = [];
        for (const group of live) {
          const done = doneSets.get(group);
          const skipped: string[] = [];
          for (const recipient of group.recipients) {
            if (done?.users.has(recipient.user_id)) {
              skipped.push(recipient.user_id);
              continue;
            }
            const cacheKey = `${group.request.id}\u0000${recipient.locale}`;
            let content = rendered.get(cacheKey);
            if (!content) {
              try {
                content = deps.templates.render(group.request, recipient.locale);
              } catch (err) {
                if (!(err instanceof ContentError)) throw err;
                problems.push({ group, recipient, reason: err.message });
                continue;
              }
              rendered.set(cacheKey, content);
            }
            pending.push({ group, recipient, item: { request: group.request, recipient, content }, done });
          }
          if (skipped.length) ctx.receipt(receiptOf(group, { status: 'deduplicated', user_ids: skipped, reason: 'already sent' }));
        }

        const outcomes: Outcome[] = pending.length ? await sink.send(pending.map((p) => p.item), ctx.signal) : [];
        const sent = new Map<DeliveryGroup, string[]>();
        // Outcomes without a provider id are receipted per group (one receipt listing the users).
        const plainDelivered = new Map<DeliveryGroup, { delivered: string[]; duplicate: string[] }>();
        const retry: { afterMs?: number; reason: string }[] = [];
        const retryGroups = new Map<DeliveryGroup, Recipient[]>();
        for (const group of live) {
          const count = pending.filter((p) => p.group === group).length;
          if (count) ctx.receipt(receiptOf(group, { status: 'dispatched', count }));
        }
        pending.forEach((p, i) => {
          const outcome = outcomes[i] ?? { kind: 'retry', reason: 'sink returned no outcome' };
          deps.metrics.deliveries.inc({ channel: batch.channel, status: outcome.kind });
          switch (outcome.kind) {
            case 'delivered': {
              if (outcome.providerId === undefined) {
                let lists = plainDelivered.get(p.group);
                if (!lists) plainDelivered.set(p.group, (lists = { delivered: [], duplicate: [] }));
                (outcome.duplicate ? lists.duplicate : lists.delivered).push(p.recipient.user_id);
              } else {
                const status = outcome.duplicate ? 'deduplicated' : 'delivered';
                ctx.receipt(receiptOf(p.group, { status, user_id: p.recipient.user_id, reason: outcome.providerId }));
              }
              const list = sent.get(p.group);
              if (list) list.push(p.recipient.user_id);
              else sent.set(p.group, [p.recipient.user_id]);
              break;
            }
            case 'retry':
              retry.push(outcome);
              retryGroups.set(p.group, [...(retryGroups.get(p.group) ?? []), p.recipient]);
              break;
            case 'permanent':
              problems.push({ group: p.group, recipient: p.recipient, reason: `${outcome.reason}${outcome.code ? ` (${outcome.code})` : ''}` });
              break;
            case 'invalid_address':
              problems.push({ group: p.group, recipient: p.recipient, reason: `invalid address: ${outcome.reason}` });
              if (batch.channel === 'push') void deps.directory.deactivateDevice(p.group.request.tenant, p.recipient.user_id, outcome.address);
              break;
          }
        });

        for (const [group, lists] of plainDelivered) {
          if (lists.delivered.length) ctx.receipt(receiptOf(group, { status: 'delivered', user_ids: lists.delivered }));
          if (lists.duplicate.length) ctx.receipt(receiptOf(group, { status: 'deduplicated', user_ids: lists.duplicate, reason: 'already in inbox' }));
        }
        if (!sink.idempotent) {
          await Promise.all([...sent].map(([group, users]) => deps.dedup.add(doneSets.get(group)!, users)));
        }

        const giveUp = [...problems];
        if (retry.length && ctx.isLastAttempt) {
          for (const [group, recipients] of retryGroups) {
            for (const recipient of recipients) giveUp.push({ group, recipient, reason: `retries exhausted: ${retry[0].reason}` });
          }
        }
        if (giveUp.length) {
          for (const g of giveUp) {
            ctx.receipt(receiptOf(g.group, { status: 'failed', user_id: g.recipient.user_id, reason: g.reason.slice(0, 500) }));
          }
          const groups = new Map<DeliveryGroup, Recipient[]>();
          for (const g of giveUp) groups.set(g.group, [...(groups.get(g.group) ?? []), g.recipient]);
          const failedBatch: DeliveryBatch = {
            channel: batch.channel, tier: batch.tier,
            groups: [...groups].map(([group, recipients]) => ({ ...group, recipients })),
          };
          await ctx.deadLetter(`${giveUp.length} of ${pending.length + problems.length} deliveries failed`, giveUp.map((g) => `${g.recipient.user_id}: ${g.reason}`), failedBatch);
        }
        if (retry.length && !ctx.isLastAttempt) {
          const afterMs = Math.max(0, ...retry.map((r) => r.afterMs ?? 0)) || undefined;
          throw new RetryableError(`${retry.length} deliveries to retry: ${retry[0].reason}`, afterMs);
        }
        return [];
      },
    };
  },
};
