import { z } from 'zod';
import { PermanentError } from '../runtime/errors.js';
import { requestIdFor } from '../runtime/ids.js';
import { describeIssues, jsonShapeProblems, requestSchema, scheduledRequestSchema, validatedSchema, type Validated } from '../schemas/index.js';
import type { Identity, StageDefinition } from '../pipeline/stage.js';
import type { StageDeps } from '../pipeline/deps.js';
import { MAX_SCHEDULE_AHEAD_MS } from '../streams/topology.js';

export const validateConfig = z.object({
  /** The tier of the subject this instance consumes: a body naming another tier is rejected. */
  tier: z.enum(['transactional', 'social', 'marketing']).optional(),
});


/** The template or content fields, if they are shaped well enough to check rendering. */
function renderable(raw: unknown): Parameters<StageDeps['templates']['check']>[0] | null {
  if (!raw || typeof raw !== 'object') return null;
  const r = raw as Record<string, unknown>;
  const data = r.data && typeof r.data === 'object' && !Array.isArray(r.data) ? (r.data as Record<string, unknown>) : {};
  const t = r.template as Record<string, unknown> | undefined;
  if (t && typeof t === 'object' && typeof t.id === 'string') {
    return { template: { id: t.id, locale: typeof t.locale === 'string' ? t.locale : undefined }, data };
  }
  const c = r.content as Record<string, unknown> | undefined;
  if (c && typeof c.title === 'string' && typeof c.body === 'string') {
    return { content: { title: c.title, body: c.body, html: typeof c.html === 'string' ? c.html : undefined }, data };
  }
  return null;
}

/**
 * Every problem of a request, as validate sees it: the wire contract, a `send_at` it could not
 * honour, content that does not render within its limits. The HTTP edge checks with it too, so
 * nothing invalid is published.
 */
export function checkRequest(raw: unknown, templates: StageDeps['templates'], arrivedAt: number) {
  const parsed = requestSchema.safeParse(raw);
  const problems = parsed.success ? [] : describeIssues(parsed.error.issues);
  if (parsed.success && parsed.data.send_at && Date.parse(parsed.data.send_at) > arrivedAt + MAX_SCHEDULE_AHEAD_MS) {
    // A later time could not be honoured: the streams would drop the request before it came due.
    problems.push(`send_at: ${parsed.data.send_at} is more than ${Math.floor(MAX_SCHEDULE_AHEAD_MS / 3_600_000)} hours after the request arrived; schedule it later, closer to its time`);
  }
  // A parsed request is checked as its own objects, which go on to dispatch: its render is remembered for them.
  const content = parsed.success ? parsed.data : renderable(raw);
  // Data too deep or too large is reported by the schema (so a parsed request's data is fine); rendering it is not tried.
  if (content && (parsed.success || jsonShapeProblems(content.data).length === 0)) problems.push(...templates.check(content));
  return { parsed, problems };
}

/** Who a request that may be malformed is about, as far as its fields say (strings only, bounded). */
function identifyRaw(raw: unknown): Identity {
  const req = (raw && typeof raw === 'object' ? raw : {}) as Record<string, unknown>;
  const str = (v: unknown) => (typeof v === 'string' ? v.slice(0, 128) : '');
  const tenant = str(req.tenant);
  const key = str(req.idempotency_key);
  return {
    tenant,
    request_id: str(req.id) || (tenant && key ? requestIdFor(tenant, key) : ''),
    tier: str(req.tier),
    category: str(req.category),
  };
}

/**
 * validate: checks a request against the wire contract and its content against the templates,
 * reporting every problem at once. A bad request is the sender's fault: rejected, never retried.
 */
export const validateStage: StageDefinition<unknown, Validated, z.infer<typeof validateConfig>, StageDeps> = {
  name: 'validate',
  input: z.unknown(),
  output: validatedSchema,
  config: validateConfig,
  giveUpStatus: 'rejected',
  later: scheduledRequestSchema,
  identify: (raw) => [identifyRaw(raw)],
  create(config, deps) {
    return {
      async process(raw, ctx) {
        const { parsed, problems } = checkRequest(raw, deps.templates, ctx.storedAt);
        if (parsed.success && config.tier && parsed.data.tier !== config.tier) {
          problems.push(`tier: "${parsed.data.tier}" published to the ${config.tier} subject; publish to notify.request.${parsed.data.tier}.${parsed.data.tenant}`);
        }
        // A producer's NATS user may be allowed one tenant's subjects: its body cannot name another.
        const named = (raw as { tenant?: unknown } | null)?.tenant;
        if (ctx.claimedTenant !== undefined && typeof named === 'string' && named !== ctx.claimedTenant) {
          const tier = parsed.success ? parsed.data.tier : config.tier ?? '<tier>';
          problems.push(`tenant: "${named.slice(0, 64)}" published on tenant ${ctx.claimedTenant}'s subject notify.request.${config.tier ?? tier}.${ctx.claimedTenant}; ` +
            `a request goes to its own tenant's subject (notify.request.${tier}.${parsed.success ? named : '<tenant>'})`);
        }
        if (!parsed.success || problems.length > 0) {
          throw new PermanentError(`request rejected (${problems.length} problem${problems.length === 1 ? '' : 's'})`, problems);
        }
        const req = parsed.data;
        const request = {
          id: req.id ?? requestIdFor(req.tenant, req.idempotency_key),
          tenant: req.tenant,
          idempotency_key: req.idempotency_key,
          tier: req.tier,
          category: req.category,
          content: req.content,
          template: req.template,
          data: req.data,
          channels: req.channels ?? deps.defaultChannels,
          send_at: req.send_at,
          expires_at: req.expires_at,
          accepted_at: ctx.storedAt,
          ...(ctx.replay ? { replay: ctx.replay } : {}),
        };
        const base = {
          stage: 'validate', request_id: request.id, tenant: request.tenant, tier: request.tier,
          category: request.category, attempt: ctx.attempt,
        };
        const now = deps.now();
        if (request.expires_at && Date.parse(request.expires_at) <= now) {
          ctx.receipt({ ...base, ts: now, status: 'expired', reason: `expires_at ${request.expires_at} has passed`, latency_ms: now - ctx.storedAt });
          return [];
        }
        // Said on every try, not only the first: the first one's receipts may have died with its
        // process. The receipt id is the same each time, so it is counted once.
        ctx.receipt({ ...base, ts: now, status: 'accepted', latency_ms: Math.max(0, now - ctx.storedAt), channels: request.channels });
        if (request.send_at && Date.parse(request.send_at) > now) {
          ctx.receipt({ ...base, ts: now, status: 'deferred', reason: `send_at ${request.send_at}` });
          // Parked on the schedule subject and acked here: a scheduled request never holds a place
          // among the requests that are due, and is not validated (nor accepted) again.
          ctx.later({ request, recipients: req.recipients }, Date.parse(request.send_at), `send_at:${request.id}:${request.replay ?? ''}`);
          return [];
        }
        return [{ request, recipients: req.recipients }];
      },
    };
  },
};
