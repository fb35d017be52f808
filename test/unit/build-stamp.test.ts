import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { buildState, sourceDirs, sourcesDigest, STAMP } from '../../bin/build-stamp.js';

const repo = path.join(import.meta.dirname, '..', '..');

/** A project with one source per folder and a build stamped from it. */
function project(): string {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'herald-build-'));
  // The folders Herald compiles, as its own build names them.
  const dirs = sourceDirs(repo);
  fs.writeFileSync(path.join(root, 'tsconfig.json'), '{}');
  fs.writeFileSync(path.join(root, 'tsconfig.build.json'), JSON.stringify({ include: dirs }));
  for (const dir of dirs) {
    fs.mkdirSync(path.join(root, dir, 'nested'), { recursive: true });
    fs.writeFileSync(path.join(root, dir, 'nested', 'a.ts'), `export const dir = '${dir}';\n`);
  }
  fs.mkdirSync(path.join(root, 'dist'));
  fs.writeFileSync(path.join(root, STAMP), `${sourcesDigest(root)}\n`);
  return root;
}

describe('which code bin/herald.js runs', () => {
  it('runs dist/ only while it was compiled from the sources as they are', () => {
    const root = project();
    expect(buildState(root)).toBe('fresh');
    fs.appendFileSync(path.join(root, 'stores', 'nested', 'a.ts'), '// edited\n');
    expect(buildState(root)).toBe('stale');
  });

  it('counts a new source, a removed one and a changed compiler setting as a change', () => {
    const added = project();
    fs.writeFileSync(path.join(added, 'pipeline', 'b.ts'), 'export {};\n');
    expect(buildState(added)).toBe('stale');
    const removed = project();
    fs.rmSync(path.join(removed, 'http', 'nested', 'a.ts'));
    expect(buildState(removed)).toBe('stale');
    const settings = project();
    fs.writeFileSync(path.join(settings, 'tsconfig.json'), '{"compilerOptions":{}}');
    expect(buildState(settings)).toBe('stale');
    // A folder the build adds is a change even before anything in it is.
    const widened = project();
    fs.mkdirSync(path.join(widened, 'extra'));
    fs.writeFileSync(path.join(widened, 'extra', 'c.ts'), 'export {};\n');
    expect(buildState(widened)).toBe('fresh');
    fs.writeFileSync(path.join(widened, 'tsconfig.build.json'), JSON.stringify({ include: [...sourceDirs(widened), 'extra'] }));
    expect(buildState(widened)).toBe('stale');
  });

  it('runs the sources when no build finished (no stamp), and ignores what is not a source', () => {
    const root = project();
    fs.writeFileSync(path.join(root, 'runtime', 'notes.md'), 'not compiled');
    expect(buildState(root)).toBe('fresh');
    fs.rmSync(path.join(root, STAMP));
    expect(buildState(root)).toBe('none');
  });
});
