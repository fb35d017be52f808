import { keyPart, type KeySpace } from './keys.js';
import { RedisScript } from './scripts.js';
import fs from 'node:fs';
import readline from 'node:readline';
import type { Redis } from 'ioredis';
import { describeIssues, directoryRecordSchema, type Channel, type DirectoryRecord } from '../schemas/index.js';
import type { z } from 'zod';
import type { DirectoryView } from './inbox.js';

/** A directory record as written by hand: defaults (active, locale, timezone) may be left out. */
export type DirectoryRecordInput = z.input<typeof directoryRecordSchema>;

/** Prefix of the preference flags in a user hash. */
export const PREF = 'pref:';

/** What the preference filter needs to know about one user. */
export interface UserProfile {
  id: string;
  exists: boolean;
  email?: string;
  phone?: string;
  locale: string;
  timezone: string;
  /** Active device tokens with their platform. */
  devices: { token: string; platform: string }[];
  /** Preference flags by key: `channel:email`, `category:promo`, `email:promo`. */
  preferences: Record<string, boolean>;
  /** Do-not-contact: nothing is ever delivered, critical or not. */
  hardStop?: boolean;
  /** Quiet hours as stored ("22:00-07:00"), in `timezone`. */
  quietHours?: string;
}

/** Everything the directory holds about one user, for operators (`herald directory show`). */
export interface UserView {
  tenant: string;
  id: string;
  exists: boolean;
  email?: string;
  phone?: string;
  locale: string;
  timezone: string;
  quiet_hours?: string;
  hard_stop: boolean;
  preferences: Record<string, boolean>;
  devices: DeviceView[];
  topics: string[];
}

/** A device as the directory holds it. */
export interface DeviceView {
  token: string;
  platform: string;
  active: boolean;
  /** ISO time of its latest registration (absent for devices loaded before it was recorded). */
  last_seen_at?: string;
  /** Why it was deactivated, when the sweep or a provider did. */
  deactivated_reason?: string;
}

/** What the stale-device sweep did. */
export interface SweepReport {
  deactivated: number;
}

export interface ImportReport {
  loaded: number;
  errors: { line: number; problems: string[] }[];
}

/** The recipient directory in Redis: users, devices, preferences and topics, per tenant. */
export class Directory {
  constructor(private readonly redis: Redis, private readonly keys: KeySpace, private readonly now: () => number = Date.now) {}

  /** Every registered device by when it was last seen, for the stale-device sweep. */
  private get seenIndex(): string { return this.keys.internal('device-seen'); }

  private key(tenant: string, kind: string, id: string): string {
    return this.keys.tenant(tenant, kind, id);
  }

  private write(pipeline: ReturnType<Redis['pipeline']>, record: DirectoryRecord): void {
    switch (record.type) {
      case 'user': {
        const fields: Record<string, string> = { locale: record.locale, timezone: record.timezone };
        if (record.email) fields.email = record.email;
        if (record.phone) fields.phone = record.phone;
        pipeline.hset(this.key(record.tenant, 'u', record.id), fields);
        break;
      }
      case 'device': {
        const seen = this.now();
        pipeline.hset(this.key(record.tenant, 'd', record.user_id), record.token,
          JSON.stringify({ platform: record.platform, active: record.active, last_seen_at: seen }));
        pipeline.zadd(this.seenIndex, seen, deviceMember(record.tenant, record.user_id, record.token));
        break;
      }
      case 'preference': {
        const field = preferenceField(record.channel, record.category);
        // Preferences live in the user's hash (`pref:` fields), so a profile is one HGETALL.
        pipeline.hset(this.key(record.tenant, 'u', record.user_id), `${PREF}${field}`, record.enabled ? '1' : '0');
        break;
      }
      case 'topic_member':
        pipeline.zadd(this.key(record.tenant, 't', record.topic), 0, record.user_id);
        // The reverse index: an inbox merges its topics' broadcasts at read time.
        pipeline.sadd(this.key(record.tenant, 'ut', record.user_id), record.topic);
        break;
      case 'quiet_hours':
        if (record.start && record.end) pipeline.hset(this.key(record.tenant, 'u', record.user_id), 'quiet_hours', `${record.start}-${record.end}`);
        else pipeline.hdel(this.key(record.tenant, 'u', record.user_id), 'quiet_hours');
        break;
      case 'hard_stop':
        pipeline.hset(this.key(record.tenant, 'u', record.user_id), 'hard_stop', record.enabled ? '1' : '0');
        break;
    }
  }

  /** Writes records (checked, defaults filled) in pipelines of `batchSize`. */
  async upsert(records: DirectoryRecordInput[], batchSize = 1_000): Promise<void> {
    await this.writeAll(records.map((r) => directoryRecordSchema.parse(r)), batchSize);
  }

  private async writeAll(records: DirectoryRecord[], batchSize = 1_000): Promise<void> {
    for (let i = 0; i < records.length; i += batchSize) {
      const pipeline = this.redis.pipeline();
      for (const record of records.slice(i, i + batchSize)) this.write(pipeline, record);
      await execOrThrow(pipeline);
    }
  }

  /**
   * Loads a JSONL file; a bad line is reported with its number and the good lines still load.
   * `onProgress` hears the bytes read so far after each write (a progress bar's done / total).
   */
  async importFile(file: string, onProgress?: (bytesRead: number) => void): Promise<ImportReport> {
    const report: ImportReport = { loaded: 0, errors: [] };
    const input = fs.createReadStream(file, 'utf8');
    const lines = readline.createInterface({ input, crlfDelay: Infinity });
    let lineNo = 0;
    let pending: DirectoryRecord[] = [];
    for await (const line of lines) {
      lineNo++;
      if (!line.trim()) continue;
      let json: unknown;
      try {
        json = JSON.parse(line);
      } catch (err) {
        report.errors.push({ line: lineNo, problems: [`not JSON: ${(err as Error).message}`] });
        continue;
      }
      const parsed = directoryRecordSchema.safeParse(json);
      if (!parsed.success) {
        report.errors.push({ line: lineNo, problems: describeIssues(parsed.error.issues) });
        continue;
      }
      pending.push(parsed.data);
      if (pending.length >= 1_000) {
        await this.writeAll(pending);
        report.loaded += pending.length;
        pending = [];
        onProgress?.(input.bytesRead);
      }
    }
    await this.writeAll(pending);
    report.loaded += pending.length;
    onProgress?.(input.bytesRead);
    return report;
  }

  /** One page of a topic's members in a stable order (by id), after `afterUserId`. */
  async topicPage(tenant: string, topic: string, afterUserId: string | undefined, limit: number): Promise<string[]> {
    const start = afterUserId === undefined ? '-' : `(${afterUserId}`;
    return this.redis.zrangebylex(this.key(tenant, 't', topic), start, '+', 'LIMIT', 0, limit);
  }

  async topicSize(tenant: string, topic: string): Promise<number> {
    return this.redis.zcard(this.key(tenant, 't', topic));
  }

  /**
   * Reads every profile of a chunk in a few round trips: script calls reading 250 hashes each
   * (never one round trip per user, and far less client work than 500 pipelined commands).
   */
  async profiles(tenant: string, userIds: string[], withDevices: boolean): Promise<UserProfile[]> {
    const keys: string[] = [];
    for (const id of userIds) {
      keys.push(this.key(tenant, 'u', id));
      if (withDevices) keys.push(this.key(tenant, 'd', id));
    }
    const results = await hgetallMany(this.redis, keys);
    const stride = withDevices ? 2 : 1;
    return userIds.map((id, i) => {
      const user = results[i * stride];
      const active = withDevices ? devicesOf(results[i * stride + 1]).filter((d) => d.active).map(({ token, platform }) => ({ token, platform })) : [];
      return {
        id,
        // A user record always sets locale; a hash holding only preferences is no user.
        exists: user.locale !== undefined,
        email: user.email,
        phone: user.phone,
        locale: user.locale ?? 'en',
        timezone: user.timezone ?? 'UTC',
        devices: active,
        preferences: preferencesOf(user),
        hardStop: user.hard_stop === '1',
        quietHours: user.quiet_hours,
      };
    });
  }

  /** The topics a user belongs to. */
  async topicsOf(tenant: string, userId: string): Promise<string[]> {
    return (await this.redis.smembers(this.key(tenant, 'ut', userId))).sort();
  }

  /** Where a feed read finds the user's inbox view itself (their profile and topics). */
  inboxView(tenant: string, userId: string, criticalCategories: string[] = []): DirectoryView {
    return { profileKey: this.key(tenant, 'u', userId), topicsKey: this.key(tenant, 'ut', userId), criticalCategories };
  }

  /** Removes a user from a topic (both directions). */
  async leaveTopic(tenant: string, userId: string, topic: string): Promise<void> {
    await execOrThrow(this.redis.pipeline()
      .zrem(this.key(tenant, 't', topic), userId)
      .srem(this.key(tenant, 'ut', userId), topic));
  }

  /** Removes many users from a topic (both directions), in pipelines. */
  async leaveTopicMany(tenant: string, topic: string, userIds: string[]): Promise<void> {
    for (let i = 0; i < userIds.length; i += 1_000) {
      const pipeline = this.redis.pipeline();
      const slice = userIds.slice(i, i + 1_000);
      pipeline.zrem(this.key(tenant, 't', topic), ...slice);
      for (const userId of slice) pipeline.srem(this.key(tenant, 'ut', userId), topic);
      await execOrThrow(pipeline);
    }
  }

  /** Everything about one user, devices inactive included. */
  async show(tenant: string, userId: string): Promise<UserView> {
    const [user, devices, topics] = await Promise.all([
      this.redis.hgetall(this.key(tenant, 'u', userId)),
      this.redis.hgetall(this.key(tenant, 'd', userId)),
      this.topicsOf(tenant, userId),
    ]);
    return {
      tenant, id: userId, exists: user.locale !== undefined,
      email: user.email, phone: user.phone, locale: user.locale ?? 'en', timezone: user.timezone ?? 'UTC',
      quiet_hours: user.quiet_hours, hard_stop: user.hard_stop === '1', preferences: preferencesOf(user),
      devices: devicesOf(devices), topics,
    };
  }

  /** Sets one preference (the provider told us the user unsubscribed, or an operator did). */
  async setPreference(tenant: string, userId: string, pref: { channel?: Channel; category?: string; enabled: boolean }): Promise<void> {
    await this.redis.hset(this.key(tenant, 'u', userId), `${PREF}${preferenceField(pref.channel, pref.category)}`, pref.enabled ? '1' : '0');
  }

  /**
   * Counts a request toward a frequency cap: per user, category and day (in the user's time zone),
   * as a set of request ids, so a redelivered chunk is not counted twice. Returns each user's count.
   */
  async countTowardCap(tenant: string, category: string, requestId: string, users: { id: string; day: string }[]): Promise<number[]> {
    if (users.length === 0) return [];
    const keys = users.map((u) => this.keys.tenant(tenant, 'cap', category, u.day, u.id));
    const counts = (await COUNT_TOWARD_CAP.run(this.redis, keys, [requestId])) as number[];
    return counts.map(Number);
  }

  /** Marks a device token inactive at once, so no later send uses it. */
  async deactivateDevice(tenant: string, userId: string, token: string): Promise<void> {
    const key = this.key(tenant, 'd', userId);
    const raw = await this.redis.hget(key, token);
    if (!raw) return;
    const device = JSON.parse(raw) as { platform: string; active: boolean };
    await this.redis.hset(key, token, JSON.stringify({ ...device, active: false }));
  }

  /**
   * Deletes everything the directory holds of one user: profile, preferences, devices, topic
   * memberships (both directions), frequency-cap counters. Returns how many keys went.
   */
  async eraseUser(tenant: string, userId: string): Promise<number> {
    const devicesKey = this.key(tenant, 'd', userId);
    const [topics, tokens] = await Promise.all([this.topicsOf(tenant, userId), this.redis.hkeys(devicesKey)]);
    // Cap counters are keyed per category and day: found by pattern (glob characters escaped).
    const pattern = `${this.keys.tenant(tenant, 'cap')}:*:*:${keyPart(userId).replace(/[*?[\]\\]/g, '\\$&')}`;
    const caps: string[] = [];
    let cursor = '0';
    do {
      const [next, found] = await this.redis.scan(cursor, 'MATCH', pattern, 'COUNT', 1_000);
      caps.push(...found);
      cursor = next;
    } while (cursor !== '0');
    const pipeline = this.redis.pipeline();
    for (const topic of topics) pipeline.zrem(this.key(tenant, 't', topic), userId);
    for (const token of tokens) pipeline.zrem(this.seenIndex, deviceMember(tenant, userId, token));
    pipeline.del(this.key(tenant, 'u', userId), devicesKey, this.key(tenant, 'ut', userId), ...caps);
    const results = await execOrThrow(pipeline);
    return Number(results[results.length - 1]);
  }

  /** Forgets a device (the app unregistered it); false when the user has no such device. */
  async removeDevice(tenant: string, userId: string, token: string): Promise<boolean> {
    const [removed] = await execOrThrow(this.redis.pipeline()
      .hdel(this.key(tenant, 'd', userId), token)
      .zrem(this.seenIndex, deviceMember(tenant, userId, token)));
    return removed === 1;
  }

  /**
   * Deactivates every device not registered again within `staleMs`, saying why on the device, so
   * pushes stop going to phones that were wiped or abandoned. Idempotent; any process may run it.
   */
  async sweepStaleDevices(staleMs: number): Promise<SweepReport> {
    const now = this.now();
    const cutoff = now - staleMs;
    const days = Math.round(staleMs / 86_400_000 * 10) / 10;
    let deactivated = 0;
    for (;;) {
      const members = await this.redis.zrangebyscore(this.seenIndex, '-inf', cutoff, 'WITHSCORES', 'LIMIT', 0, 500);
      if (members.length === 0) return { deactivated };
      const pipeline = this.redis.pipeline();
      for (let i = 0; i < members.length; i += 2) {
        const [tenant, userId, token] = JSON.parse(members[i]) as [string, string, string];
        const seenAt = Number(members[i + 1]);
        // Only a device still as stale as the index says (a registration in between moved both).
        DEACTIVATE_STALE.queue(pipeline, [this.key(tenant, 'd', userId), this.seenIndex], [token, members[i], cutoff, now,
          `stale: not seen for ${days} days (last seen ${new Date(seenAt).toISOString()})`]);
      }
      for (const result of await execOrThrow(pipeline)) deactivated += Number(result);
    }
  }
}

/** The preference flags stored in a user hash (`pref:` fields). */
function preferencesOf(user: Record<string, string>): Record<string, boolean> {
  const preferences: Record<string, boolean> = {};
  for (const k in user) if (k.startsWith(PREF)) preferences[k.slice(PREF.length)] = user[k] === '1';
  return preferences;
}

/** The devices stored in a device hash (token → JSON). */
function devicesOf(hash: Record<string, string>): DeviceView[] {
  return Object.entries(hash).map(([token, raw]) => {
    const d = JSON.parse(raw) as { platform: string; active: boolean; last_seen_at?: number; deactivated_reason?: string };
    return {
      token, platform: d.platform, active: d.active !== false,
      ...(d.last_seen_at ? { last_seen_at: new Date(d.last_seen_at).toISOString() } : {}),
      ...(d.deactivated_reason ? { deactivated_reason: d.deactivated_reason } : {}),
    };
  });
}

/** A device's member in the last-seen index: JSON, so no separator can be forged by an id. */
export function deviceMember(tenant: string, userId: string, token: string): string {
  return JSON.stringify([tenant, userId, token]);
}

/**
 * Deactivates one device if it is still stale: KEYS device hash, seen index; ARGV token, index
 * member, cutoff, now, reason. Returns 1 when it deactivated it.
 */
const DEACTIVATE_STALE = new RedisScript(`local score = redis.call('ZSCORE', KEYS[2], ARGV[2])
if not score or tonumber(score) > tonumber(ARGV[3]) then return 0 end
redis.call('ZREM', KEYS[2], ARGV[2])
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return 0 end
-- A record it cannot read is left as it is (and out of the index), never a sweep stuck on it.
local ok, d = pcall(cjson.decode, raw)
if not ok or type(d) ~= 'table' then return 0 end
if d.active == false then return 0 end
d.active = false
d.deactivated_at = tonumber(ARGV[4])
d.deactivated_reason = ARGV[5]
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(d))
return 1`, 'DEACTIVATE_STALE');

export function preferenceField(channel?: Channel, category?: string): string {
  if (channel && category) return `${channel}:${category}`;
  if (channel) return `channel:${channel}`;
  if (category) return `category:${category}`;
  return 'all';
}

const COUNT_TOWARD_CAP = new RedisScript(`local out = {}
for i, key in ipairs(KEYS) do
  redis.call('SADD', key, ARGV[1])
  redis.call('EXPIRE', key, 172800)
  out[i] = redis.call('SCARD', key)
end
return out`, 'COUNT_TOWARD_CAP');

/** Hashes one HGETALL_MANY call reads at most. */
const MAX_KEYS_PER_SCRIPT = 250;

const HGETALL_MANY = new RedisScript(`local out = {}
for i, key in ipairs(KEYS) do out[i] = redis.call('HGETALL', key) end
return out`, 'HGETALL_MANY');

/** HGETALL of many keys, up to MAX_KEYS_PER_SCRIPT a script call (single Redis; keys may span hash slots). */
export async function hgetallMany(redis: Redis, keys: string[]): Promise<Record<string, string>[]> {
  const raw: string[][] = [];
  // One after another, a bounded number each: Redis runs nothing else during a script, and a
  // password reset's reads must not wait behind a fan-out chunk's.
  for (let i = 0; i < keys.length; i += MAX_KEYS_PER_SCRIPT) {
    raw.push(...((await HGETALL_MANY.run(redis, keys.slice(i, i + MAX_KEYS_PER_SCRIPT), [])) as string[][]));
  }
  return raw.map((flat) => {
    const obj: Record<string, string> = {};
    for (let i = 0; i < flat.length; i += 2) obj[flat[i]] = flat[i + 1];
    return obj;
  });
}

/** ioredis pipelines report per-command errors in their results; surface the first one. */
export async function execOrThrow(pipeline: ReturnType<Redis['pipeline']>): Promise<unknown[]> {
  const results = (await pipeline.exec()) ?? [];
  return results.map(([err, value]) => {
    if (err) throw err;
    return value;
  });
}
