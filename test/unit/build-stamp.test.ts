import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { buildState, SOURCE_DIRS, sourcesDigest, STAMP } from '../../bin/build-stamp.js';

const repo = path.join(import.meta.dirname, '..', '..');

/** A project with one source per folder and a build stamped from it. */
function project(): string {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'herald-build-'));
  for (const file of ['tsconfig.json', 'tsconfig.build.json']) fs.writeFileSync(path.join(root, file), '{}');
  for (const dir of SOURCE_DIRS) {
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
  });

  it('runs the sources when no build finished (no stamp), and ignores what is not a source', () => {
    const root = project();
    fs.writeFileSync(path.join(root, 'runtime', 'notes.md'), 'not compiled');
    expect(buildState(root)).toBe('fresh');
    fs.rmSync(path.join(root, STAMP));
    expect(buildState(root)).toBe('none');
  });

  it('compiles exactly the folders it stamps', () => {
    const build = JSON.parse(fs.readFileSync(path.join(repo, 'tsconfig.build.json'), 'utf8')) as { include: string[] };
    expect([...build.include].sort()).toEqual([...SOURCE_DIRS].sort());
  });
});
