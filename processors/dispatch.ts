import { z } from 'zod';
import { ContentError, type RenderedContent } from '../runtime/templates.js';
import { DeferError, RetryableError } from '../runtime/errors.js';
import { deviceUnit } from '../runtime/ids.js';
import { deliveryBatchSchema, type DeliveryBatch, type DeliveryGroup, type Receipt, type Recipient } from '../schemas/index.js';
import type { DeliveryItem, Outcome } from '../sinks/sink.js';
import type { DoneSet } from '../stores/dedup.js';
import { requestIdentity, type StageDefinition, type StageContext } from '../pipeline/stage.js';
import type { StageDeps } from '../pipeline/deps.js';

export const dispatchConfig = z.object({});

/** One delivery: a user on email/sms/inapp, or one device of a user on push. */
interface Unit {
  group: DeliveryGroup;
  recipient: Recipient;
  /** What the dedup entry records: the user, or `user|token` for a device. */
  dedupId: string;
  /** What its receipts count when not just the user: a device. */
  receiptUnit?: string;
}

function unitsOf(group: DeliveryGroup, channel: DeliveryBatch['channel']): Unit[] {
  if (channel !== 'push') return group.recipients.map((recipient) => ({ group, recipient, dedupId: recipient.user_id }));
  return group.recipients.flatMap((r) => r.to.map((token, i) => ({
    group,
    recipient: { ...r, to: [token], platforms: [r.platforms?.[i] ?? 'unknown'] },
    dedupId: `${r.user_id}|${token}`,
    receiptUnit: deviceUnit(r.user_id, token),
  })));
}

/** A delivery group's own name in receipts that count the group as a whole. */
const groupUnit = (group: DeliveryGroup) => `group:${group.chunk}.${group.part}`;

const pushTo = <K, V>(map: Map<K, V[]>, key: K, value: V) => {
  const list = map.get(key);
  if (list) list.push(value);
  else map.set(key, [value]);
};

/**
 * dispatch: dedup → provider call → receipts. Deliveries already sent (per the dedup entry) are
 * skipped, and their receipts emitted again (same ids, counted once): a crash between the send and
 * its receipts must not leave the funnel short. Ones the provider refused for good are dead-lettered alone; a dead device token is
 * marked inactive at once; a recipient who unsubscribed at the provider is opted out; deliveries
 * to retry make the whole batch come back later (delayed nak), when the sent ones are skipped.
 */
export const dispatchStage: StageDefinition<DeliveryBatch, never, z.infer<typeof dispatchConfig>, StageDeps> = {
  name: 'dispatch',
  input: deliveryBatchSchema,
  output: null,
  config: dispatchConfig,
  identify: (b) => b.groups.map((g) => requestIdentity(g.request, { channel: b.channel, user_ids: g.recipients.map((r) => r.user_id) })),
  tierOf: (b) => b.tier,
  partitionOf: (b) => b.channel,
  create(_config, deps) {
    return {
      async process(batch, ctx) {
        const channel = batch.channel;
        const sink = deps.sinks[channel];
        const now = deps.now();
        const receiptOf = (group: DeliveryGroup, extra: Partial<Receipt> & Pick<Receipt, 'status'>): Receipt => ({
          ts: deps.now(), stage: 'dispatch', request_id: group.request.id, tenant: group.request.tenant,
          tier: group.request.tier, category: group.request.category, channel,
          provider: sink?.provider ?? '', attempt: ctx.attempt, latency_ms: Math.max(0, deps.now() - group.request.accepted_at),
          ...extra,
        });
        /** Receipts for units of one group: one listing the users, or one per device on push. */
        const unitReceipts = (group: DeliveryGroup, units: Unit[], extra: Partial<Receipt> & Pick<Receipt, 'status'>) => {
          if (units.length === 0) return;
          if (channel !== 'push') {
            ctx.receipt(receiptOf(group, { ...extra, user_ids: units.map((u) => u.recipient.user_id) }));
            return;
          }
          for (const u of units) ctx.receipt(receiptOf(group, { ...extra, user_id: u.recipient.user_id, unit: u.receiptUnit }));
        };

        if (!sink) {
          for (const group of batch.groups) {
            ctx.receipt(receiptOf(group, { status: 'failed', user_ids: group.recipients.map((r) => r.user_id), reason: `channel ${channel} is not configured` }));
          }
          await ctx.deadLetter(`channel ${channel} is not configured`, [], batch);
          return [];
        }

        // Expired or cancelled work is dropped with a receipt saying so.
        const live = batch.groups.filter((group) => {
          if (deps.cancellations?.isCancelled(group.request.tenant, group.request.id)) {
            ctx.receipt(receiptOf(group, { status: 'cancelled', count: group.recipients.length, unit: groupUnit(group), reason: 'request cancelled' }));
            return false;
          }
          const expires = group.request.expires_at ? Date.parse(group.request.expires_at) : Infinity;
          if (expires > now) return true;
          ctx.receipt(receiptOf(group, { status: 'expired', count: group.recipients.length, unit: groupUnit(group), reason: `expires_at ${group.request.expires_at} has passed` }));
          return false;
        });

        const doneSets = new Map<DeliveryGroup, DoneSet>();
        const dedup = !sink.idempotent && deps.dedupEnabled !== false;
        // A group whose dedup entry cannot be read is not sent (it might repeat), and is the only
        // one held back: the batch carries other tenants' groups, which go on.
        const unreadable: { group: DeliveryGroup; reason: string }[] = [];
        if (dedup) {
          const reads = await Promise.allSettled(live.map((g) =>
            deps.dedup.read(deps.dedup.key(g.request.tenant, g.request.id, channel, g.chunk, g.part))));
          live.forEach((g, i) => {
            const read = reads[i];
            if (read.status === 'fulfilled') doneSets.set(g, read.value);
            else unreadable.push({ group: g, reason: `its dedup entry could not be read: ${(read.reason as Error)?.message ?? read.reason}` });
          });
        }
        const held = new Set(unreadable.map((u) => u.group));

        const pending: { unit: Unit; item: DeliveryItem }[] = [];
        const rendered = new Map<string, RenderedContent>();
        const giveUp: GiveUp[] = [];
        for (const group of live) {
          if (held.has(group)) continue;
          const done = doneSets.get(group);
          const sentBefore: Unit[] = [];
          const failedBefore: Unit[] = [];
          for (const unit of unitsOf(group, channel)) {
            // Sent is never sent again; failed for good is skipped on retries but tried on a redrive.
            if (done?.users.has(unit.dedupId)) {
              sentBefore.push(unit);
              continue;
            }
            if (done?.failed.has(unit.dedupId) && !ctx.redrive) {
              failedBefore.push(unit);
              continue;
            }
            const cacheKey = `${group.request.id}\u0000${unit.recipient.locale}`;
            let content = rendered.get(cacheKey);
            if (!content) {
              try {
                content = deps.templates.render(group.request, unit.recipient.locale);
              } catch (err) {
                if (!(err instanceof ContentError)) throw err;
                giveUp.push({ unit, provider: sink.provider, reason: err.message });
                continue;
              }
              rendered.set(cacheKey, content);
            }
            pending.push({ unit, item: { request: group.request, recipient: unit.recipient, content } });
          }
          // The first try's receipts may have died with its process: say again what happened (same
          // ids, so counted once), and that a repeat was caught.
          unitReceipts(group, sentBefore, { status: 'dispatched' });
          unitReceipts(group, sentBefore, { status: 'delivered', reason: 'sent by an earlier attempt' });
          unitReceipts(group, failedBefore, { status: 'failed', reason: 'failed for good on an earlier attempt' });
          unitReceipts(group, [...sentBefore, ...failedBefore], { status: 'deduplicated', reason: 'already sent' });
        }

        // Provider calls run a few at a time; after each, what it sent is added to the dedup entry
        // (one write per call, queued per group), so a crash repeats at most the calls in flight.
        const outcomes: Outcome[] = new Array(pending.length);
        // Group commit per dedup entry: while one write is out, later sends wait and go in the next one.
        const writes = new Map<DeliveryGroup, { done: DoneSet; waiting: string[]; running?: Promise<void>; error?: unknown }>();
        const record = (group: DeliveryGroup, ids: string[]) => {
          const done = doneSets.get(group);
          if (!done || ids.length === 0) return;
          let w = writes.get(group);
          if (!w) writes.set(group, (w = { done, waiting: [] }));
          w.waiting.push(...ids);
          const entry = w;
          const drain = async (): Promise<void> => {
            while (entry.waiting.length) await deps.dedup.add(done, entry.waiting.splice(0));
          };
          // Never left rejecting with no one listening: the error is kept and thrown at the end.
          entry.running ??= drain().catch((err) => { entry.error ??= err; }).finally(() => { entry.running = undefined; });
        };
        const callSize = Math.max(1, sink.callSize ?? sink.maxBatch);
        let nextCall = 0;
        const caller = async () => {
          while (nextCall < pending.length) {
            const start = nextCall;
            nextCall += callSize;
            const call = pending.slice(start, start + callSize);
            const answers = await sink.send(call.map((p) => p.item), ctx.signal);
            const sentNow = new Map<DeliveryGroup, string[]>();
            answers.forEach((outcome, j) => {
              outcomes[start + j] = outcome;
              if (outcome.kind === 'delivered') pushTo(sentNow, call[j].unit.group, call[j].unit.dedupId);
            });
            if (dedup) for (const [group, ids] of sentNow) record(group, ids);
            if (sentNow.size) ctx.progress?.();
          }
        };
        await Promise.all(Array.from({ length: Math.min(16, Math.ceil(pending.length / callSize)) }, caller));
        // A write that ended just as more ids arrived leaves them waiting: one last pass takes them.
        // A group whose sends could not be recorded makes the batch come back (what the others sent
        // is recorded and skipped then); on the last attempt its sends stand, unrecorded.
        const unrecorded: string[] = [];
        for (const w of writes.values()) {
          await w.running;
          try {
            if (w.error) throw w.error;
            while (w.waiting.length) await deps.dedup.add(w.done, w.waiting.splice(0));
          } catch (err) {
            unrecorded.push((err as Error)?.message ?? String(err));
          }
        }
        if (unrecorded.length && ctx.isLastAttempt) ctx.log.warn({ groups: unrecorded.length, err: unrecorded[0] }, 'sends made but not recorded in dedup');
        // One pass, not a scan of every delivery per group: a coalesced batch holds a thousand groups.
        const dispatched = new Map<DeliveryGroup, Unit[]>();
        for (const p of pending) pushTo(dispatched, p.unit.group, p.unit);
        for (const [group, units] of dispatched) unitReceipts(group, units, { status: 'dispatched' });

        const failedForGood = new Map<DeliveryGroup, string[]>();
        const plainDelivered = new Map<string, { group: DeliveryGroup; provider: string; units: Unit[]; duplicate: boolean }>();
        const retry: { unit: Unit; outcome: Outcome & { kind: 'retry' } }[] = [];
        const sideEffects: Promise<unknown>[] = [];
        pending.forEach(({ unit }, i) => {
          const outcome: Outcome = outcomes[i] ?? { kind: 'retry', reason: 'sink returned no outcome' };
          const provider = outcome.provider ?? sink.provider;
          deps.metrics.deliveries.inc({ channel, status: outcome.kind });
          switch (outcome.kind) {
            case 'delivered':
              if (outcome.providerId === undefined) {
                // Outcomes without a provider id are receipted per group (one receipt listing the users).
                const key = `${unit.group.request.id}\u0000${unit.group.chunk}\u0000${unit.group.part}\u0000${provider}\u0000${outcome.duplicate}`;
                const entry = plainDelivered.get(key);
                if (entry) entry.units.push(unit);
                else plainDelivered.set(key, { group: unit.group, provider, units: [unit], duplicate: !!outcome.duplicate });
              } else {
                ctx.receipt(receiptOf(unit.group, { status: 'delivered', provider, user_id: unit.recipient.user_id, unit: unit.receiptUnit, reason: outcome.providerId }));
                if (outcome.duplicate) ctx.receipt(receiptOf(unit.group, { status: 'deduplicated', provider, user_id: unit.recipient.user_id, unit: unit.receiptUnit, reason: outcome.providerId }));
              }
              break;
            case 'retry':
              retry.push({ unit, outcome });
              break;
            case 'permanent':
              if (outcome.optOut) {
                // The recipient told the provider to stop: record it as their preference.
                sideEffects.push(deps.directory.setPreference(unit.group.request.tenant, unit.recipient.user_id, { channel, enabled: false }));
                ctx.receipt(receiptOf(unit.group, { status: 'failed', provider, user_id: unit.recipient.user_id, unit: unit.receiptUnit, reason: `opted_out_at_provider: ${outcome.reason}` }));
              } else {
                giveUp.push({ unit, provider, reason: `${outcome.reason}${outcome.code ? ` (${outcome.code})` : ''}` });
              }
              pushTo(failedForGood, unit.group, unit.dedupId);
              break;
            case 'invalid_address':
              // A dead token is marked inactive at once so no later send uses it; nothing to redrive.
              if (channel === 'push') sideEffects.push(deps.directory.deactivateDevice(unit.group.request.tenant, unit.recipient.user_id, outcome.address));
              ctx.receipt(receiptOf(unit.group, { status: 'failed', provider, user_id: unit.recipient.user_id, unit: unit.receiptUnit, reason: `token_invalid: ${outcome.reason}` }));
              pushTo(failedForGood, unit.group, unit.dedupId);
              break;
          }
        });
        for (const { group, provider, units, duplicate } of plainDelivered.values()) {
          // Already there (the inbox): delivered by an earlier attempt whose receipt may be lost.
          unitReceipts(group, units, { status: 'delivered', provider, reason: duplicate ? 'already in inbox' : '' });
          if (duplicate) unitReceipts(group, units, { status: 'deduplicated', provider, reason: 'already in inbox' });
        }
        await Promise.all(sideEffects);
        if (dedup) {
          const records = await Promise.allSettled([...failedForGood].map(([group, ids]) => deps.dedup.add(doneSets.get(group)!, [], ids)));
          for (const r of records) if (r.status === 'rejected') unrecorded.push((r.reason as Error)?.message ?? String(r.reason));
        }
        const comeBack = [...unreadable.map((u) => u.reason), ...(ctx.isLastAttempt ? [] : unrecorded)];

        // Only waiting (breaker open, rate limit): come back then, and it is not an attempt.
        if (retry.length && retry.every((r) => r.outcome.deferred) && comeBack.length === 0) {
          const afterMs = Math.max(...retry.map((r) => r.outcome.afterMs ?? 1_000));
          throw new DeferError(deps.now() + afterMs, retry[0].outcome.reason);
        }
        if (ctx.isLastAttempt) {
          for (const r of retry) giveUp.push({ unit: r.unit, provider: r.outcome.provider ?? sink.provider, reason: `retries exhausted: ${r.outcome.reason}` });
          for (const u of unreadable) for (const unit of unitsOf(u.group, channel)) giveUp.push({ unit, provider: sink.provider, reason: u.reason });
        }
        await deadLetter(giveUp, batch, pending.length, ctx, (g) => receiptOf(g.unit.group, { status: 'failed', provider: g.provider, user_id: g.unit.recipient.user_id, unit: g.unit.receiptUnit, reason: g.reason.slice(0, 500) }));
        if ((retry.length || comeBack.length) && !ctx.isLastAttempt) {
          const afterMs = Math.max(0, ...retry.map((r) => r.outcome.afterMs ?? 0)) || undefined;
          const why = retry.length ? `${retry.length} deliveries to retry: ${retry[0].outcome.reason}` : `${comeBack.length} groups to retry: ${comeBack[0]}`;
          throw new RetryableError(why, afterMs);
        }
        return [];
      },
    };
  },
};

/** A delivery given up on: whom, through which provider, and why. */
interface GiveUp {
  unit: Unit;
  provider: string;
  reason: string;
}

/** Dead-letters the deliveries given up on, as a batch of just them (what a redrive sends again). */
async function deadLetter(
  giveUp: GiveUp[], batch: DeliveryBatch, attempted: number, ctx: StageContext,
  receipt: (g: GiveUp) => Receipt,
): Promise<void> {
  if (giveUp.length === 0) return;
  const byGroup = new Map<DeliveryGroup, Recipient[]>();
  for (const g of giveUp) {
    ctx.receipt(receipt(g));
    pushTo(byGroup, g.unit.group, g.unit.recipient);
  }
  const failed: DeliveryBatch = {
    channel: batch.channel, tier: batch.tier,
    groups: [...byGroup].map(([group, recipients]) => ({ ...group, recipients })),
  };
  await ctx.deadLetter(`${giveUp.length} of ${attempted} deliveries failed`, giveUp.map((g) => `${g.unit.recipient.user_id}: ${g.reason}`), failed);
}
