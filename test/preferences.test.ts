import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decide } from '../runtime/preferences.js';
import type { UserProfile } from '../stores/directory.js';
import { eventually, Harness } from './harness.js';

const base: UserProfile = { id: 'u', exists: true, email: 'u@x.test', locale: 'en', timezone: 'UTC', devices: [], preferences: {} };

describe('preferences matrix', () => {
  // [case, preferences, hard stop, critical category, channel, category, expected]
  const table: [string, Record<string, boolean>, boolean, boolean, 'email' | 'inapp', string, string][] = [
    ['no preferences', {}, false, false, 'email', 'news', 'send'],
    ['channel off', { 'channel:email': false }, false, false, 'email', 'news', 'opted_out:channel:email'],
    ['channel off, other channel', { 'channel:email': false }, false, false, 'inapp', 'news', 'send'],
    ['category off', { 'category:news': false }, false, false, 'inapp', 'news', 'opted_out:category:news'],
    ['category off, other category', { 'category:news': false }, false, false, 'inapp', 'promo', 'send'],
    ['channel × category off', { 'email:news': false }, false, false, 'email', 'news', 'opted_out:email:news'],
    ['channel × category on beats channel off', { 'channel:email': false, 'email:news': true }, false, false, 'email', 'news', 'send'],
    ['category on beats all off', { all: false, 'category:news': true }, false, false, 'inapp', 'news', 'send'],
    ['all off', { all: false }, false, false, 'inapp', 'news', 'opted_out:all'],
    ['critical ignores channel off', { 'channel:email': false }, false, true, 'email', 'security', 'send'],
    ['critical ignores all off', { all: false }, false, true, 'inapp', 'security', 'send'],
    ['hard stop', {}, true, false, 'inapp', 'news', 'hard_stop'],
    ['hard stop beats critical', {}, true, true, 'email', 'security', 'hard_stop'],
    ['hard stop beats explicit opt-in', { 'email:news': true }, true, false, 'email', 'news', 'hard_stop'],
  ];
  it.each(table)('%s', (_name, preferences, hardStop, critical, channel, category, expected) => {
    const d = decide({ ...base, preferences, hardStop }, channel, category, critical);
    expect('send' in d ? 'send' : d.suppress).toBe(expected);
  });
});

describe('hard stop and frequency caps in the pipeline', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await Harness.create('caps', { HERALD_FREQUENCY_CAPS: 'promo=3', HERALD_CRITICAL_CATEGORIES: 'security' });
    await h.load([
      { type: 'user', tenant: 'acme', id: 'fan', locale: 'en', timezone: 'America/Los_Angeles' },
      { type: 'user', tenant: 'acme', id: 'gone', locale: 'en', timezone: 'UTC' },
      { type: 'hard_stop', tenant: 'acme', user_id: 'gone' },
      { type: 'preference', tenant: 'acme', user_id: 'fan', channel: 'inapp', enabled: false },
    ]);
    await h.start();
  });
  afterAll(async () => h?.close());

  it('suppresses the fourth promo of the day, lets critical through opt-outs, and never reaches a hard stop', async () => {
    for (let i = 1; i <= 4; i++) {
      await h.publish({
        tenant: 'acme', idempotency_key: `promo-${i}`, tier: 'marketing', category: 'promo',
        content: { title: `Promo ${i}`, body: 'b' }, recipients: { user_ids: ['fan', 'gone'] }, channels: ['email', 'inapp'],
      });
    }
    await h.publish({
      tenant: 'acme', idempotency_key: 'alert', tier: 'transactional', category: 'security',
      content: { title: 'New sign-in', body: 'b' }, recipients: { user_ids: ['fan', 'gone'] }, channels: ['inapp'],
    });
    const rows = await eventually(async () => {
      const r = await h.receipts("status IN ('suppressed', 'delivered')");
      return r.filter((x) => x.status === 'suppressed').length >= 1 + 4 * 2 + 1 + 1 ? r : null;
    }, 'the suppressions', 30_000);
    const reasons = (user: string) => rows.filter((r) => r.user_id === user && r.status === 'suppressed').map((r) => String(r.reason));
    // fan has no email address and turned in-app off: promos 1-3 are opted out, the 4th is capped.
    expect(reasons('fan').filter((r) => r === 'frequency_cap')).toHaveLength(2);
    expect(reasons('fan').filter((r) => r === 'opted_out:channel:inapp')).toHaveLength(3);
    expect(reasons('gone').every((r) => r === 'hard_stop')).toBe(true);
    expect(reasons('gone')).toHaveLength(4 * 2 + 1);
    // The critical alert reaches fan's inbox despite the in-app opt-out.
    expect((await h.inbox.list('acme', 'fan')).map((e) => e.title)).toEqual(['New sign-in']);
    expect(await h.inbox.list('acme', 'gone')).toEqual([]);
  });
});
