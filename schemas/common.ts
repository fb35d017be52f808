import { z } from 'zod';

/**
 * A tenant name: letters, digits, `_` and `-`. No `:` or `.`: a tenant is a component of Redis keys,
 * KV keys, msgIDs and subjects, and must never be able to reach into another's.
 */
export const tenantSchema = z.string().regex(/^[A-Za-z0-9_-]{1,64}$/, 'tenant: 1-64 of letters, digits, _ and -');

export const tiers = ['transactional', 'social', 'marketing'] as const;
export const tierSchema = z.enum(tiers);
export type Tier = z.infer<typeof tierSchema>;

export const channels = ['email', 'inapp', 'push', 'sms'] as const;
export const channelSchema = z.enum(channels);
export type Channel = z.infer<typeof channelSchema>;

/** Turns zod issues into lines that say what is wrong and where (`recipients.user_ids[3]: …`). */
export function describeIssues(issues: readonly z.core.$ZodIssue[]): string[] {
  return issues.map((issue) => {
    const where = issue.path.reduce<string>(
      (acc, key) => (typeof key === 'number' ? `${acc}[${key}]` : acc ? `${acc}.${String(key)}` : String(key)),
      '',
    );
    return `${where || '(message)'}: ${issue.message}`;
  });
}
