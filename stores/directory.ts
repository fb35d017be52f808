import type { KeySpace } from './keys.js';
import fs from 'node:fs';
import readline from 'node:readline';
import type { Redis } from 'ioredis';
import { describeIssues, directoryRecordSchema, type Channel, type DirectoryRecord } from '../schemas/index.js';
import type { z } from 'zod';

/** A directory record as written by hand: defaults (active, locale, timezone) may be left out. */
export type DirectoryRecordInput = z.input<typeof directoryRecordSchema>;

const PREF = 'pref:';

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
  devices: { token: string; platform: string; active: boolean }[];
  topics: string[];
}

export interface ImportReport {
  loaded: number;
  errors: { line: number; problems: string[] }[];
}

/** The recipient directory in Redis: users, devices, preferences and topics, per tenant. */
export class Directory {
  constructor(private readonly redis: Redis, private readonly keys: KeySpace) {}

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
      case 'device':
        pipeline.hset(this.key(record.tenant, 'd', record.user_id), record.token,
          JSON.stringify({ platform: record.platform, active: record.active }));
        break;
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
   * Reads every profile of a chunk in one round trip: one script call reading all the hashes
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

  /** Removes a user from a topic (both directions). */
  async leaveTopic(tenant: string, userId: string, topic: string): Promise<void> {
    await execOrThrow(this.redis.pipeline()
      .zrem(this.key(tenant, 't', topic), userId)
      .srem(this.key(tenant, 'ut', userId), topic));
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
    const counts = (await this.redis.eval(COUNT_TOWARD_CAP, keys.length, ...keys, requestId)) as number[];
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

  /** Forgets a device (the app unregistered it); false when the user has no such device. */
  async removeDevice(tenant: string, userId: string, token: string): Promise<boolean> {
    return (await this.redis.hdel(this.key(tenant, 'd', userId), token)) === 1;
  }
}

/** The preference flags stored in a user hash (`pref:` fields). */
function preferencesOf(user: Record<string, string>): Record<string, boolean> {
  const preferences: Record<string, boolean> = {};
  for (const k in user) if (k.startsWith(PREF)) preferences[k.slice(PREF.length)] = user[k] === '1';
  return preferences;
}

/** The devices stored in a device hash (token → JSON). */
function devicesOf(hash: Record<string, string>): { token: string; platform: string; active: boolean }[] {
  return Object.entries(hash).map(([token, raw]) => {
    const d = JSON.parse(raw) as { platform: string; active: boolean };
    return { token, platform: d.platform, active: d.active !== false };
  });
}

export function preferenceField(channel?: Channel, category?: string): string {
  if (channel && category) return `${channel}:${category}`;
  if (channel) return `channel:${channel}`;
  if (category) return `category:${category}`;
  return 'all';
}

const COUNT_TOWARD_CAP = `local out = {}
for i, key in ipairs(KEYS) do
  redis.call('SADD', key, ARGV[1])
  redis.call('EXPIRE', key, 172800)
  out[i] = redis.call('SCARD', key)
end
return out`;

const HGETALL_MANY = `local out = {}
for i, key in ipairs(KEYS) do out[i] = redis.call('HGETALL', key) end
return out`;

/** HGETALL of many keys in one script call (single Redis; keys may span hash slots). */
export async function hgetallMany(redis: Redis, keys: string[]): Promise<Record<string, string>[]> {
  if (keys.length === 0) return [];
  const raw = (await redis.eval(HGETALL_MANY, keys.length, ...keys)) as string[][];
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
