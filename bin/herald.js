#!/usr/bin/env -S node --max-old-space-size=256 --max-semi-space-size=32
// The heap cap keeps a busy process near its working set instead of letting garbage pile up:
// every stage bounds what it holds, so the working set is far below it. A larger young generation
// takes the short-lived garbage of each message (parsed JSON, receipts) in fewer, cheaper scavenges.
// Runs dist/ (npm run build) when it was compiled from the sources as they are, and the TypeScript
// sources through tsx otherwise (or with HERALD_FROM_SOURCES=1): an edit is never shadowed by an old build.
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildState } from './build-stamp.js';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const state = process.env.HERALD_FROM_SOURCES === '1' ? 'skipped' : buildState(root);
if (state === 'fresh') {
  await import('../dist/cli/main.js');
} else {
  if (state === 'stale' && process.stderr.isTTY) process.stderr.write('herald: dist/ is older than the sources, so they run through tsx (npm run build compiles them again)\n');
  const { register } = await import('tsx/esm/api');
  register();
  await import('../cli/main.ts');
}
