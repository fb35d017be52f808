import { describe, expect, it } from 'vitest';
import { formatFunnel, type FunnelRow } from '../../cli/funnel.js';
import { ConfigError, loadConfig } from '../../runtime/config.js';
import { fcmOutcome } from '../../sinks/fcm.js';

describe('production never delivers to a sandbox', () => {
  it('turns the sandbox off under NODE_ENV=production, and refuses HERALD_SANDBOX=auto there', () => {
    expect(loadConfig({ NODE_ENV: 'production' }).providers.sandbox).toBe('off');
    expect(loadConfig({}).providers.sandbox).toBe('auto');
    expect(loadConfig({ NODE_ENV: 'production', HERALD_SANDBOX: 'off' }).providers.sandbox).toBe('off');
    expect(() => loadConfig({ NODE_ENV: 'production', HERALD_SANDBOX: 'auto' })).toThrow(ConfigError);
    expect(() => loadConfig({ NODE_ENV: 'production', HERALD_SANDBOX: 'auto' })).toThrow(/HERALD_SANDBOX: "auto" .* not allowed with NODE_ENV=production/);
  });

  it('shows sandbox deliveries apart in the funnel', () => {
    const zero = { accepted: 0, rejected: 0, resolved: 0, suppressed: 0, deferred: 0, dispatched: 0, delivered: 0, deduplicated: 0, failed: 0, dead_lettered: 0, expired: 0, cancelled: 0, seen: 0, read: 0, clicked: 0, archived: 0 };
    const rows: FunnelRow[] = [
      { tier: 'social', channel: 'sms', sandbox: false, ...zero, delivered: 2 },
      { tier: 'social', channel: 'sms', sandbox: true, ...zero, delivered: 5 },
    ];
    const lines = formatFunnel(rows).split('\n');
    expect(lines[1]).toMatch(/^social\s+sms\s+.*\b2\b/);
    expect(lines[2]).toMatch(/^social\s+sms \(sandbox\)\s+.*\b5\b/);
  });
});

describe('FCM errors', () => {
  it('treats INVALID_ARGUMENT as a bad token only when FCM says the token is bad', () => {
    const tooBig = fcmOutcome({ code: 'messaging/invalid-argument', message: 'Message is too big: 5123 bytes' }, 'tok');
    expect(tooBig.kind).toBe('permanent');
    const badToken = fcmOutcome({ code: 'messaging/invalid-argument', message: 'The registration token is not a valid FCM registration token' }, 'tok');
    expect(badToken).toMatchObject({ kind: 'invalid_address', address: 'tok' });
  });
});
