import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** Herald's version, from package.json (reported by readiness and `herald --version`). */
export const version: string = (JSON.parse(fs.readFileSync(path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'package.json'), 'utf8')) as { version: string }).version;
