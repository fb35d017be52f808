import type { FastifyInstance } from 'fastify';

/** Serves the OpenAPI document and its page (filled in by the OpenAPI work of issue 11). */
export function registerOpenApi(_app: FastifyInstance): void {}
