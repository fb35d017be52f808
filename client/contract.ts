import type { z } from 'zod';
import type * as api from '../schemas/api.js';
import type { components, operations } from './openapi.js';

/*
 * Type-level proof that the client's generated types and the zod schemas describe the same JSON:
 * each pair below must be assignable both ways, or this file does not compile (`npx tsc -p .`, and
 * test/unit/openapi.test.ts compiles it on its own). A body is compared with what zod accepts
 * (`z.input`), an answer with what zod produces (`z.output`). Nothing here runs.
 */

type Schemas = components['schemas'];

/** Compiles only when A and B are assignable to each other. */
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
const same = <A, B>(check: Same<A, B>, _a?: (a: A) => B, _b?: (b: B) => A) => check;

type JsonBody<Op extends keyof operations> = operations[Op] extends { requestBody?: { content: { 'application/json': infer B } } } ? B : never;

export const checks = [
  // The producer's body, and the operation's body as openapi-fetch takes it.
  same<z.input<typeof api.notificationBodySchema>, Schemas['NotificationBody']>(true, (a) => a, (b) => b),
  same<z.input<typeof api.notificationBodySchema>, JsonBody<'sendNotification'>>(true, (a) => a, (b) => b),
  same<z.input<typeof api.cancelBodySchema>, Schemas['CancelBody']>(true, (a) => a, (b) => b),
  same<z.input<typeof api.userBodySchema>, Schemas['UserBody']>(true, (a) => a, (b) => b),
  same<z.input<typeof api.deviceBodySchema>, Schemas['DeviceBody']>(true, (a) => a, (b) => b),
  same<z.input<typeof api.preferencesBodySchema>, Schemas['PreferencesBody']>(true, (a) => a, (b) => b),
  same<z.input<typeof api.topicMembersBodySchema>, Schemas['TopicMembersBody']>(true, (a) => a, (b) => b),
  same<z.input<typeof api.deliveriesQuerySchema>, NonNullable<operations['listDeliveries']['parameters']['query']>>(true, (a) => a, (b) => b),
  // The answers.
  same<z.output<typeof api.notificationAcceptedSchema>, Schemas['NotificationAccepted']>(true, (a) => a, (b) => b),
  same<z.output<typeof api.notificationStatusSchema>, Schemas['NotificationStatus']>(true, (a) => a, (b) => b),
  same<z.output<typeof api.deliveriesPageSchema>, Schemas['DeliveriesPage']>(true, (a) => a, (b) => b),
  same<z.output<typeof api.cancelAcceptedSchema>, Schemas['CancelAccepted']>(true, (a) => a, (b) => b),
  same<z.output<typeof api.userViewSchema>, Schemas['UserView']>(true, (a) => a, (b) => b),
  same<z.output<typeof api.userUpsertedSchema>, Schemas['UserUpserted']>(true, (a) => a, (b) => b),
  same<z.output<typeof api.erasureAcceptedSchema>, Schemas['ErasureAccepted']>(true, (a) => a, (b) => b),
  same<z.output<typeof api.deviceRegisteredSchema>, Schemas['DeviceRegistered']>(true, (a) => a, (b) => b),
  same<z.output<typeof api.preferencesViewSchema>, Schemas['PreferencesView']>(true, (a) => a, (b) => b),
  same<z.output<typeof api.topicMembersChangedSchema>, Schemas['TopicMembersChanged']>(true, (a) => a, (b) => b),
  same<z.output<typeof api.problemSchema>, Schemas['Problem']>(true, (a) => a, (b) => b),
  same<z.output<typeof api.conflictProblemSchema>, Schemas['ConflictProblem']>(true, (a) => a, (b) => b),
];
