import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import openapiTS, { astToString, COMMENT_HEADER, type OpenAPI3 } from 'openapi-typescript';
import { openApiDocument } from '../http/openapi.js';

/** Where the generated types are committed. */
export const clientTypesFile = path.join(path.dirname(fileURLToPath(import.meta.url)), 'openapi.d.ts');

/**
 * The client's types as openapi-typescript writes them from the document the API serves now.
 * `npm run client:generate` writes them to client/openapi.d.ts; a unit test fails when that file is stale.
 */
export async function generateClientTypes(): Promise<string> {
  const ast = await openapiTS(openApiDocument() as unknown as OpenAPI3, { silent: true });
  return `${COMMENT_HEADER}// From http/openapi.ts (the zod schemas of schemas/api.ts): npm run client:generate\n\n${astToString(ast)}`;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  fs.writeFileSync(clientTypesFile, await generateClientTypes());
  console.log(`wrote ${path.relative(process.cwd(), clientTypesFile)}`);
}
