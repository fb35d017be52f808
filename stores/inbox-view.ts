import { PREF, preferenceField, type Directory, type UserProfile } from './directory.js';
import type { InboxEntry, InboxStore, InboxView, InboxVisibility } from './inbox.js';

/**
 * The in-app preference decision for every category at once, in a form Redis can apply while it
 * reads a feed: the same answer `decide(profile, 'inapp', category, critical)` gives (no user or a
 * hard stop hides everything; a critical category ignores opt-outs; otherwise the most specific of
 * `inapp:<category>`, `category:<category>`, `channel:inapp`, `all` wins; none means shown).
 */
export function inappVisibility(profile: UserProfile, criticalCategories: string[] = []): InboxVisibility {
  if (!profile.exists || profile.hardStop) return { none: true, shown: false, categories: {} };
  const p = profile.preferences;
  // No prototype: a category called __proto__ is a rule like any other.
  const categories: Record<string, boolean> = Object.create(null);
  for (const key in p) {
    if (key.startsWith('inapp:')) categories[key.slice('inapp:'.length)] = p[key];
    else if (key.startsWith('category:')) {
      const category = key.slice('category:'.length);
      if (!(`inapp:${category}` in p)) categories[category] = p[key];
    }
  }
  for (const category of criticalCategories) categories[category] = true;
  return { none: false, shown: p['channel:inapp'] ?? p.all ?? true, categories };
}

/**
 * Lua: `inAppView(profileKey, topicsKey, critical)` — the same decision as `inappVisibility`, read
 * from the directory's user hash and topic set inside a feed read's one Redis call. Returns none,
 * shown, the categories' rules, the user's topics (unsorted) and locale. The two are held to each
 * other by test/inbox-snapshot.test.ts over random profiles.
 */
export const IN_APP_VIEW = `
local function inAppView(profileKey, topicsKey, critical)
  local flat = redis.call('HGETALL', profileKey)
  local p = {}
  for i = 1, #flat, 2 do p[flat[i]] = flat[i + 1] end
  local inappPrefix, categoryPrefix = '${PREF}inapp:', '${PREF}category:'
  local rules = {}
  for field, value in pairs(p) do
    if string.sub(field, 1, #inappPrefix) == inappPrefix then rules[string.sub(field, #inappPrefix + 1)] = value == '1'
    elseif string.sub(field, 1, #categoryPrefix) == categoryPrefix then
      local category = string.sub(field, #categoryPrefix + 1)
      if p[inappPrefix .. category] == nil then rules[category] = value == '1' end
    end
  end
  for _, category in ipairs(critical) do rules[category] = true end
  local default = p['${PREF}${preferenceField('inapp')}'] or p['${PREF}${preferenceField()}']
  -- A user record always sets locale; a hash holding only preferences is no user.
  local none = p['locale'] == nil or p['hard_stop'] == '1'
  return none, default == nil or default == '1', rules, redis.call('SMEMBERS', topicsKey), p['locale'] or 'en'
end
`;

/** Whether a visibility shows a category. */
export function shows(visibility: InboxVisibility, category: string): boolean {
  if (visibility.none) return false;
  return Object.hasOwn(visibility.categories, category) ? visibility.categories[category] : visibility.shown;
}

/** How one user's inbox reads topic broadcasts: their topics, their locale, and which categories they may see now. */
export async function inboxViewOf(directory: Directory, tenant: string, userId: string, criticalCategories: string[] = []): Promise<InboxView> {
  const [[profile], topics] = await Promise.all([directory.profiles(tenant, [userId], false), directory.topicsOf(tenant, userId)]);
  const visibility = inappVisibility(profile, criticalCategories);
  return { topics, locale: profile.locale, visibility, visible: (category) => shows(visibility, category) };
}

/** A user's inbox as they see it: their own entries merged with their topics' broadcasts. */
export async function readInbox(
  inbox: InboxStore, directory: Directory, tenant: string, userId: string, limit = 50, criticalCategories: string[] = [],
): Promise<InboxEntry[]> {
  return inbox.list(tenant, userId, limit, await inboxViewOf(directory, tenant, userId, criticalCategories));
}
