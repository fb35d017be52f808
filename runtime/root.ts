import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The folder holding package.json above `from`: the project, whether running from the sources or from dist/. */
function projectRootFrom(from: string): string {
  for (let dir = from; ; dir = path.dirname(dir)) {
    if (fs.existsSync(path.join(dir, 'package.json'))) return dir;
    if (path.dirname(dir) === dir) throw new Error(`no package.json above ${from}`);
  }
}

/** Herald's project folder: where compose/, schemas/clickhouse/ and package.json are. */
export const projectRoot = projectRootFrom(path.dirname(fileURLToPath(import.meta.url)));
