import { describe, expect, it } from 'vitest';
import { decide } from '../../runtime/preferences.js';
import { inappVisibility, shows } from '../../stores/inbox-view.js';
import type { UserProfile } from '../../stores/directory.js';
import type { Channel } from '../../schemas/index.js';

const CATEGORIES = ['otp', 'social', 'promo', 'news', 'a:b', ''];
const CHANNELS: Channel[] = ['inapp', 'email', 'push', 'sms'];

/** A small deterministic generator, so a failure names a profile that can be re-made. */
function random(seed: number) {
  let x = seed;
  return () => {
    x = (x * 1_103_515_245 + 12_345) % 2_147_483_648;
    return x / 2_147_483_648;
  };
}

describe('the in-app visibility Redis applies to broadcasts while reading a feed', () => {
  it('says exactly what the preference decision says, for every category, over many random profiles', () => {
    const next = random(7);
    const pick = <T>(list: T[]) => list[Math.floor(next() * list.length)];
    let hidden = 0;
    let shownCount = 0;
    for (let n = 0; n < 2_000; n++) {
      const preferences: Record<string, boolean> = {};
      const rules = Math.floor(next() * 5);
      for (let r = 0; r < rules; r++) {
        const kind = pick(['channel', 'category', 'pair', 'all']);
        const key = kind === 'all' ? 'all' : kind === 'channel' ? `channel:${pick(CHANNELS)}` : kind === 'category' ? `category:${pick(CATEGORIES)}` : `${pick(CHANNELS)}:${pick(CATEGORIES)}`;
        preferences[key] = next() < 0.5;
      }
      const profile: UserProfile = {
        id: `u${n}`, exists: next() > 0.05, locale: 'en', timezone: 'UTC', devices: [], preferences, hardStop: next() < 0.05,
      };
      const critical = next() < 0.3 ? [pick(CATEGORIES)] : [];
      const visibility = inappVisibility(profile, critical);
      for (const category of [...CATEGORIES, 'unseen-before']) {
        const expected = 'send' in decide(profile, 'inapp', category, critical.includes(category));
        expect(shows(visibility, category), `${JSON.stringify({ preferences, exists: profile.exists, hardStop: profile.hardStop, critical })} → ${category}`).toBe(expected);
        if (expected) shownCount++; else hidden++;
      }
    }
    // Both answers occur often: the comparison is not one-sided.
    expect(hidden).toBeGreaterThan(1_000);
    expect(shownCount).toBeGreaterThan(1_000);
  });

  it('keeps a category named like an object property a plain rule', () => {
    const profile: UserProfile = { id: 'u', exists: true, locale: 'en', timezone: 'UTC', devices: [], preferences: { 'channel:inapp': false, 'inapp:__proto__': true } };
    const visibility = inappVisibility(profile);
    expect(shows(visibility, 'constructor')).toBe(false);
    expect(shows(visibility, 'toString')).toBe(false);
    expect(shows(visibility, '__proto__')).toBe(true);
    expect(Object.keys(visibility.categories)).toEqual(['__proto__']);
  });
});
