import type { FastifyInstance } from 'fastify';

/** Serves the reference inbox page at `/demo/inbox` (filled in by the demo-page work of issue 12). */
export function registerDemoInbox(_app: FastifyInstance): void {}
