import type { Harness } from './harness.js';
import type { DirectoryRecordInput } from '../stores/directory.js';

/** The id of the i-th member of a loaded topic, sortable as the directory pages them. */
export const memberId = (i: number) => `m${String(i).padStart(7, '0')}`;

/** Loads `n` users in one topic, in slices so the test itself stays small in memory. */
export async function loadTopic(h: Harness, tenant: string, topic: string, n: number, user: (i: number) => Partial<DirectoryRecordInput> = () => ({})) {
  for (let start = 0; start < n; start += 50_000) {
    const records: DirectoryRecordInput[] = [];
    for (let i = start; i < Math.min(n, start + 50_000); i++) {
      records.push({ type: 'user', tenant, id: memberId(i), ...user(i) } as DirectoryRecordInput);
      records.push({ type: 'topic_member', tenant, topic, user_id: memberId(i) });
    }
    await h.load(records);
  }
}

/** How many members have how many entries in their own inbox (fan-out on write only). */
export async function inboxSizes(h: Harness, tenant: string, n: number): Promise<Record<number, number>> {
  const sizes: Record<number, number> = {};
  for (let start = 0; start < n; start += 20_000) {
    const pipeline = h.redis.pipeline();
    for (let i = start; i < Math.min(n, start + 20_000); i++) pipeline.zcard(h.topology.keys.tenant(tenant, 'inbox', memberId(i)));
    for (const [, size] of (await pipeline.exec())!) sizes[size as number] = (sizes[size as number] ?? 0) + 1;
  }
  return sizes;
}
