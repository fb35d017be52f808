#!/usr/bin/env -S node --max-old-space-size=256 --max-semi-space-size=32
// The heap cap keeps a busy process near its working set instead of letting garbage pile up:
// every stage bounds what it holds, so the working set is far below it. A larger young generation
// takes the short-lived garbage of each message (parsed JSON, receipts) in fewer, cheaper scavenges.
// Runs the TypeScript sources directly, so there is no build step to forget.
import { register } from 'tsx/esm/api';
register();
await import('../cli/main.ts');
