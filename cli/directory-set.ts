import { channels, type Channel } from '../schemas/index.js';
import type { DirectoryRecordInput, UserView } from '../stores/directory.js';

/** What `herald directory set` was asked to change. */
export interface DirectorySetFlags {
  email?: string;
  phone?: string;
  locale?: string;
  timezone?: string;
  /** `KEY=on|off`, KEY one of `all`, `channel:C`, `category:K`, `C:K`. */
  pref?: string[];
  /** `22:00-07:00`, or `off`. */
  quietHours?: string;
  hardStop?: string;
  /** `PLATFORM:TOKEN` (ios, android, web); add `:inactive` to record a dead token. */
  device?: string[];
  topic?: string[];
  leaveTopic?: string[];
}

const onOff = (value: string, what: string): boolean => {
  if (value === 'on' || value === 'true') return true;
  if (value === 'off' || value === 'false') return false;
  throw new Error(`${what}: "${value}" is neither on nor off`);
};

function preferenceOf(spec: string): { channel?: Channel; category?: string; enabled: boolean } {
  const eq = spec.lastIndexOf('=');
  if (eq < 0) throw new Error(`--pref "${spec}": expected KEY=on|off (KEY: all, channel:email, category:promo, email:promo)`);
  const key = spec.slice(0, eq);
  const enabled = onOff(spec.slice(eq + 1), `--pref ${key}`);
  if (key === 'all') return { enabled };
  const [left, right, ...rest] = key.split(':');
  if (rest.length || !right) throw new Error(`--pref "${spec}": KEY must be all, channel:C, category:K or C:K`);
  if (left === 'category') return { category: right, enabled };
  const channel = left === 'channel' ? right : left;
  if (!channels.includes(channel as Channel)) throw new Error(`--pref "${spec}": "${channel}" is not a channel (${channels.join(', ')})`);
  return left === 'channel' ? { channel: channel as Channel, enabled } : { channel: channel as Channel, category: right, enabled };
}

/**
 * The directory records that carry out a `directory set`, checked by the same schemas as an import.
 * User fields merge with what is stored, so setting one does not reset the others.
 */
export function recordsFromFlags(tenant: string, userId: string, flags: DirectorySetFlags, stored: UserView): DirectoryRecordInput[] {
  const records: DirectoryRecordInput[] = [];
  const touchesUser = [flags.email, flags.phone, flags.locale, flags.timezone].some((v) => v !== undefined);
  if (touchesUser || !stored.exists) {
    records.push({
      type: 'user', tenant, id: userId,
      email: flags.email ?? stored.email, phone: flags.phone ?? stored.phone,
      locale: flags.locale ?? stored.locale, timezone: flags.timezone ?? stored.timezone,
    });
  }
  for (const spec of flags.pref ?? []) records.push({ type: 'preference', tenant, user_id: userId, ...preferenceOf(spec) });
  if (flags.quietHours !== undefined) {
    if (flags.quietHours === 'off') records.push({ type: 'quiet_hours', tenant, user_id: userId });
    else {
      const [start, end, ...rest] = flags.quietHours.split('-');
      if (rest.length || !end) throw new Error(`--quiet-hours "${flags.quietHours}": expected HH:MM-HH:MM (e.g. 22:00-07:00) or off`);
      records.push({ type: 'quiet_hours', tenant, user_id: userId, start, end });
    }
  }
  if (flags.hardStop !== undefined) records.push({ type: 'hard_stop', tenant, user_id: userId, enabled: onOff(flags.hardStop, '--hard-stop') });
  for (const spec of flags.device ?? []) {
    const [platform, ...rest] = spec.split(':');
    const inactive = rest.at(-1) === 'inactive';
    const token = (inactive ? rest.slice(0, -1) : rest).join(':');
    if (!token) throw new Error(`--device "${spec}": expected PLATFORM:TOKEN (ios, android or web)`);
    records.push({ type: 'device', tenant, user_id: userId, platform: platform as 'ios', token, active: !inactive });
  }
  for (const topic of flags.topic ?? []) records.push({ type: 'topic_member', tenant, topic, user_id: userId });
  return records;
}
