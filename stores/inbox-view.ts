import type { Directory } from './directory.js';
import type { InboxEntry, InboxStore, InboxView } from './inbox.js';
import { decide } from '../runtime/preferences.js';

/**
 * How one user's inbox reads topic broadcasts: their topics, their locale, and the preference
 * decision of this moment (hard stop, in-app opt-outs, critical categories) for each category.
 */
export async function inboxViewOf(directory: Directory, tenant: string, userId: string, criticalCategories: string[] = []): Promise<InboxView> {
  const [[profile], topics] = await Promise.all([directory.profiles(tenant, [userId], false), directory.topicsOf(tenant, userId)]);
  return {
    topics,
    locale: profile.locale,
    visible: (category) => 'send' in decide(profile, 'inapp', category, criticalCategories.includes(category)),
  };
}

/** A user's inbox as they see it: their own entries merged with their topics' broadcasts. */
export async function readInbox(
  inbox: InboxStore, directory: Directory, tenant: string, userId: string, limit = 50, criticalCategories: string[] = [],
): Promise<InboxEntry[]> {
  return inbox.list(tenant, userId, limit, await inboxViewOf(directory, tenant, userId, criticalCategories));
}
