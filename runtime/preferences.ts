import type { UserProfile } from '../stores/directory.js';
import type { Channel, Recipient } from '../schemas/index.js';

export type Decision = { send: Recipient } | { suppress: string };

/**
 * The most specific preference wins: channel × category, then category, then channel, then a global
 * switch. No preference means opted in.
 */
export function optedOut(profile: UserProfile, channel: Channel, category: string): string | null {
  const p = profile.preferences;
  // Most users have no preferences at all: skip building keys for them.
  for (const _ in p) {
    for (const key of preferenceKeys(channel, category)) {
      if (key in p) return p[key] ? null : `opted_out:${key}`;
    }
    break;
  }
  return null;
}

const keyCache = new Map<string, string[]>();
function preferenceKeys(channel: Channel, category: string): string[] {
  const id = `${channel}\u0000${category}`;
  let keys = keyCache.get(id);
  if (!keys) {
    keys = [`${channel}:${category}`, `category:${category}`, `channel:${channel}`, 'all'];
    if (keyCache.size > 10_000) keyCache.clear();
    keyCache.set(id, keys);
  }
  return keys;
}

/**
 * What one user gets on one channel: an address to send to, or the reason for not sending.
 * The hard stop is never bypassed; a critical category ignores every other opt-out.
 */
export function decide(profile: UserProfile, channel: Channel, category: string, critical = false): Decision {
  if (!profile.exists) return { suppress: 'unknown_user' };
  if (profile.hardStop) return { suppress: 'hard_stop' };
  const out = critical ? null : optedOut(profile, channel, category);
  if (out) return { suppress: out };
  const base = { user_id: profile.id, locale: profile.locale };
  switch (channel) {
    case 'inapp':
      return { send: { ...base, to: [] } };
    case 'email':
      return profile.email ? { send: { ...base, to: [profile.email] } } : { suppress: 'no_address:email' };
    case 'sms':
      return profile.phone ? { send: { ...base, to: [profile.phone] } } : { suppress: 'no_address:phone' };
    case 'push':
      return profile.devices.length > 0
        ? { send: { ...base, to: profile.devices.map((d) => d.token), platforms: profile.devices.map((d) => d.platform) } }
        : { suppress: 'no_address:device' };
  }
}

