import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { z } from 'zod';
import {
  describeIssues, feedQuerySchema, itemPatchSchema, markAllSchema, notificationIdSchema, streamQuerySchema, userIdSchema, userTokenBodySchema,
  type Receipt,
} from '../schemas/index.js';
import { decodeInboxCursor, itemJson, type DirectoryView, type Engagement, type InboxStore, type InboxView } from '../stores/inbox.js';
import { allows } from '../stores/api-keys.js';
import type { UserTokens } from '../stores/user-tokens.js';
import type { InboxStreams } from './inbox-stream.js';

/** What the inbox routes need. */
export interface InboxRouteParts {
  inbox: InboxStore;
  streams: InboxStreams;
  userTokens: UserTokens;
  /** The user's view of the moment (topics, locale, which categories they may see). */
  viewOf: (tenant: string, userId: string) => Promise<InboxView>;
  /** The same view, for the feed read to take from the directory in its one Redis call. */
  directoryViewOf: (tenant: string, userId: string) => DirectoryView;
  /** Engagement receipts: published, and stored before the answer. */
  receipt: (receipts: Receipt[]) => Promise<void>;
  problem: (reply: FastifyReply, status: number, title: string, detail: string, errors?: string[]) => FastifyReply;
  now: () => number;
}

type UserParams = { Params: { userId: string } };
type ItemParams = { Params: { userId: string; id: string } };

/**
 * The in-app inbox for apps (`/v1/users/{user_id}/notifications…`): the feed with counts and read
 * state, changes of state, mark-all, clicks, and the live stream; plus minting user tokens. A user
 * token reaches its own user's inbox only (the API's auth hook refuses anything else); a tenant key
 * with the `read` scope reaches any of its tenant's users.
 */
export function registerInboxRoutes(app: FastifyInstance, parts: InboxRouteParts): void {
  const { problem } = parts;

  /**
   * The tenant and user a request may act on, or null once a 400/401/403 is sent. A user token acts
   * on its own inbox; a tenant key needs `read` to read and `directory` to change state or mint tokens.
   */
  const subject = (req: FastifyRequest<UserParams>, reply: FastifyReply, scope: 'read' | 'directory' = 'read'): { tenant: string; userId: string } | null => {
    const parsed = userIdSchema.safeParse(req.params.userId);
    if (!parsed.success) {
      problem(reply, 400, 'Bad request', 'user_id: 1 to 128 characters', ['user_id: 1 to 128 characters']);
      return null;
    }
    if (req.user) return { tenant: req.user.tenant, userId: parsed.data };
    if (!req.apiKey) {
      problem(reply, 401, 'Unauthorized', 'send a tenant key, or a user token for this user');
      return null;
    }
    if (!allows(req.apiKey, scope)) {
      problem(reply, 403, 'Forbidden', `this key lacks the "${scope}" scope`);
      return null;
    }
    return { tenant: req.apiKey.tenant, userId: parsed.data };
  };

  const parse = <S extends z.ZodType>(schema: S, value: unknown, reply: FastifyReply, what: string): z.output<S> | null => {
    const parsed = schema.safeParse(value ?? {});
    if (parsed.success) return parsed.data;
    const errors = describeIssues(parsed.error.issues);
    problem(reply, 400, `Invalid ${what}`, `${errors.length} problem${errors.length === 1 ? '' : 's'}`, errors);
    return null;
  };

  /** Receipts for what became true for the first time: each counts once in the funnel. */
  const engagement = (tenant: string, userId: string, item: { id: string; category: string; tier?: string }, firsts: Engagement): Receipt[] =>
    firsts.map((status) => ({
      ts: parts.now(), stage: 'inbox', status, request_id: item.id, tenant, tier: item.tier ?? '', category: item.category,
      channel: 'inapp', provider: 'inbox', user_id: userId,
    }));

  app.post<UserParams>('/v1/users/:userId/token', async (req, reply) => {
    if (req.user) return problem(reply, 403, 'Forbidden', 'a user token cannot mint tokens; the app\'s backend does, with a tenant key');
    const who = subject(req, reply, 'directory');
    if (!who) return reply;
    const body = parse(userTokenBodySchema, req.body, reply, 'token request');
    if (!body) return reply;
    const minted = await parts.userTokens.mint(who.tenant, who.userId, body.ttl_seconds);
    return reply.code(201).send({ token: minted.token, user_id: who.userId, expires_at: minted.expires_at });
  });

  app.get<UserParams & { Querystring: Record<string, string> }>('/v1/users/:userId/notifications', async (req, reply) => {
    const who = subject(req, reply);
    if (!who) return reply;
    const query = parse(feedQuerySchema, req.query, reply, 'query');
    if (!query) return reply;
    if (query.cursor && !decodeInboxCursor(query.cursor)) return problem(reply, 400, 'Bad request', 'cursor: not a cursor this API gave out', ['cursor: not a cursor this API gave out']);
    // The body comes ready from the store (see feedJson); Fastify sends a string as it is.
    const body = await parts.inbox.feedJson(who.tenant, who.userId, parts.directoryViewOf(who.tenant, who.userId), query);
    return reply.type('application/json; charset=utf-8').send(body);
  });

  app.get<UserParams & { Querystring: Record<string, string> }>('/v1/users/:userId/notifications/stream', async (req, reply) => {
    const who = subject(req, reply);
    if (!who) return reply;
    const query = parse(streamQuerySchema, req.query, reply, 'query');
    if (!query) return reply;
    const header = req.headers['last-event-id'];
    // The header is bounded as the query parameter is (a cursor is short).
    const lastEventId = (typeof header === 'string' && header.length <= 400 ? header : undefined) ?? query.last_event_id;
    reply.hijack();
    await parts.streams.serve(reply.raw, who.tenant, who.userId, lastEventId);
  });

  /** Applies a change to one item and answers it with the counts, saying firsts in receipts. */
  const change = async (req: FastifyRequest<ItemParams>, reply: FastifyReply, patch: Parameters<InboxStore['update']>[4]) => {
    const who = subject(req, reply, 'directory');
    if (!who) return reply;
    if (!notificationIdSchema.safeParse(req.params.id).success) return problem(reply, 400, 'Bad request', 'id: 1 to 128 characters', ['id: 1 to 128 characters']);
    const view = await parts.viewOf(who.tenant, who.userId);
    const done = await parts.inbox.update(who.tenant, who.userId, view, req.params.id, patch,
      (items) => parts.receipt(items.flatMap((i) => engagement(who.tenant, who.userId, i, i.firsts))));
    if (!done) return problem(reply, 404, 'Not found', `no notification "${req.params.id}" in this inbox`);
    return reply.send({ item: itemJson(done.item), counts: done.counts });
  };

  app.patch<ItemParams>('/v1/users/:userId/notifications/:id', async (req, reply) => {
    const body = parse(itemPatchSchema, req.body, reply, 'change');
    if (!body) return reply;
    if (Object.keys(body).length === 0) return problem(reply, 400, 'Invalid change', 'give at least one of seen, read, archived, snoozed_until', ['(body): give at least one of seen, read, archived, snoozed_until']);
    const snoozed = body.snoozed_until === undefined ? undefined : body.snoozed_until === null ? null : Date.parse(body.snoozed_until);
    return change(req, reply, { seen: body.seen, read: body.read, archived: body.archived, snoozed_until: snoozed });
  });

  app.post<ItemParams>('/v1/users/:userId/notifications/:id/click', (req, reply) => change(req, reply, { clicked: true }));

  app.post<UserParams>('/v1/users/:userId/notifications/mark-all', async (req, reply) => {
    const who = subject(req, reply, 'directory');
    if (!who) return reply;
    const body = parse(markAllSchema, req.body, reply, 'mark-all');
    if (!body) return reply;
    let beforeMs: number | undefined;
    if (body.before !== undefined) {
      const cursor = decodeInboxCursor(body.before);
      beforeMs = cursor ? cursor.score : Date.parse(body.before);
      if (!Number.isFinite(beforeMs)) return problem(reply, 400, 'Invalid mark-all', 'before: a cursor or an ISO date-time', ['before: a cursor or an ISO date-time']);
    }
    const what = body.seen ? 'seen' : body.read ? 'read' : 'archived';
    const view = await parts.viewOf(who.tenant, who.userId);
    const updated = await parts.inbox.markAll(who.tenant, who.userId, view, what, beforeMs,
      (items) => parts.receipt(items.flatMap((i) => engagement(who.tenant, who.userId, i, i.firsts))));
    const counts = await parts.inbox.counts(who.tenant, who.userId, view);
    return reply.send({ updated, counts });
  });
}
