import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventually, Harness } from './harness.js';

describe.each(['chained', 'split'])('end to end through all five stages (%s wiring)', (wiring) => {
  let h: Harness;
  beforeAll(async () => {
    h = await Harness.create('e2e', { HERALD_WIRING: wiring });
    await h.load([
      { type: 'user', tenant: 'acme', id: 'u1', email: 'u1@example.com', locale: 'en', timezone: 'Europe/Paris' },
      { type: 'user', tenant: 'acme', id: 'u2', email: 'u2@example.com', locale: 'fr', timezone: 'Europe/Paris' },
      { type: 'user', tenant: 'acme', id: 'u3', email: 'u3@example.com', locale: 'en', timezone: 'UTC' },
      { type: 'preference', tenant: 'acme', user_id: 'u3', channel: 'email', enabled: false },
    ]);
    await h.start();
  });
  afterAll(async () => h?.close());

  it('delivers two emails and three inbox entries, and ClickHouse shows the funnel', async () => {
    await h.publish({
      tenant: 'acme', idempotency_key: 'welcome-1', tier: 'transactional', category: 'account',
      template: { id: 'welcome' }, data: { name: 'Ada', app: 'Herald' },
      recipients: { user_ids: ['u1', 'u2', 'u3'] }, channels: ['email', 'inapp'],
    });
    await eventually(() => h.smtp.messages.length >= 2, 'two emails');
    const u1 = h.smtp.to('u1@example.com');
    const u2 = h.smtp.to('u2@example.com');
    expect(u1).toHaveLength(1);
    expect(u1[0].subject).toBe('Welcome to Herald, Ada!');
    expect(u1[0].text).toBe('Hi Ada, your Herald account is ready.');
    expect(u1[0].html).toContain('<b>Ada</b>');
    expect(u2[0].subject).toBe('Bienvenue sur Herald, Ada !');
    expect(h.smtp.to('u3@example.com')).toHaveLength(0);

    for (const user of ['u1', 'u2', 'u3']) {
      const inbox = await eventually(async () => {
        const list = await h.inbox.list('acme', user);
        return list.length ? list : null;
      }, `inbox of ${user}`);
      expect(inbox).toHaveLength(1);
      expect(inbox[0].read).toBe(false);
    }
    expect((await h.inbox.list('acme', 'u2'))[0].title).toBe('Bienvenue sur Herald, Ada !');

    const rows = await eventually(async () => {
      const r = await h.receipts();
      return r.filter((x) => x.status === 'delivered').length >= 5 && r.some((x) => x.status === 'suppressed') ? r : null;
    }, 'receipts in ClickHouse');
    const sum = (status: string, channel?: string) =>
      rows.filter((r) => r.status === status && (channel === undefined || r.channel === channel)).reduce((a, r) => a + Number(r.count), 0);
    expect(sum('accepted')).toBe(1);
    expect(sum('resolved')).toBe(3);
    expect(sum('suppressed', 'email')).toBe(1);
    expect(rows.find((r) => r.status === 'suppressed')!.user_id).toBe('u3');
    expect(rows.find((r) => r.status === 'suppressed')!.reason).toBe('opted_out:channel:email');
    expect(sum('dispatched', 'email')).toBe(2);
    expect(sum('dispatched', 'inapp')).toBe(3);
    expect(sum('delivered', 'email')).toBe(2);
    expect(sum('delivered', 'inapp')).toBe(3);
    expect(sum('failed')).toBe(0);
    expect(new Set(rows.map((r) => r.event_date))).toEqual(new Set([new Date().toISOString().slice(0, 10)]));
  });
});
