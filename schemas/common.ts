import { z } from 'zod';

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
