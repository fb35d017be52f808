// Whether dist/ (npm run build) was compiled from the sources as they are now. bin/herald.js runs
// dist/ only then, so an edited source is never shadowed by an older build.
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';

/** The folders compiled to dist/: tsconfig.build.json's include. */
export function sourceDirs(root) {
  return JSON.parse(fs.readFileSync(path.join(root, 'tsconfig.build.json'), 'utf8')).include;
}
/** Written last by the build: the digest of the sources it compiled. */
export const STAMP = path.join('dist', '.sources-digest');

/** Every TypeScript source of the build, relative to the project, in a fixed order. */
function sourceFiles(root) {
  const files = [];
  const walk = (dir) => {
    for (const entry of fs.readdirSync(path.join(root, dir), { withFileTypes: true })) {
      const rel = path.join(dir, entry.name);
      if (entry.isDirectory()) walk(rel);
      else if (entry.name.endsWith('.ts') && !entry.name.endsWith('.d.ts')) files.push(rel);
    }
  };
  for (const dir of sourceDirs(root)) walk(dir);
  return files.sort();
}

/** A digest of the sources' names and contents (and the compiler settings). */
export function sourcesDigest(root) {
  const hash = createHash('sha256');
  for (const file of ['tsconfig.json', 'tsconfig.build.json', ...sourceFiles(root)]) {
    hash.update(file).update('\0').update(fs.readFileSync(path.join(root, file))).update('\0');
  }
  return hash.digest('hex');
}

/** `fresh`: dist/ matches the sources; `stale`: it was built from other sources; `none`: no complete build. */
export function buildState(root) {
  let stamp;
  try {
    stamp = fs.readFileSync(path.join(root, STAMP), 'utf8').trim();
  } catch {
    return 'none';
  }
  try {
    return stamp === sourcesDigest(root) ? 'fresh' : 'stale';
  } catch {
    return 'stale';
  }
}
