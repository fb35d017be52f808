import { describe, expect, it } from 'vitest';
import { statusOf } from '../../stores/request-status.js';

/** A status hash as the tracker leaves it: validate accepted at t=1000 on these channels. */
const accepted = (extra: Record<string, string | number>, channels = 'email') =>
  Object.fromEntries(Object.entries({ tier: 'social', category: 'c', accepted: 1000, updated: 2000, channels, ...extra }).map(([k, v]) => [k, String(v)]));

describe('a notification\'s state from its counts', () => {
  it('is queued before validate, scheduled while its send_at waits, processing until every recipient is done', () => {
    expect(statusOf('r', { tier: 'social', category: 'c', updated: '1', send_at: '' }, 0).status).toBe('queued');
    expect(statusOf('r', accepted({ send_at: '2030-01-01T00:00:00.000Z', 's:deferred': 1 }), 0).status).toBe('scheduled');
    expect(statusOf('r', accepted({ recipients: 2, resolved_all: 1, 'c:email:delivered': 1, 't:email': 1 }), 0).status).toBe('processing');
    // Resolved so far equals done so far, but the fan-out has more pages coming.
    expect(statusOf('r', accepted({ recipients: 500, 'c:email:delivered': 500, 't:email': 500 }), 0).status).toBe('processing');
  });

  it('completes when every recipient is done on every channel, suppressions included', () => {
    const s = statusOf('r', accepted({ recipients: 2, resolved_all: 1, 'c:email:delivered': 1, 'c:email:suppressed': 1, 't:email': 2, 'c:inapp:delivered': 2, 't:inapp': 2 }, 'email,inapp'), 0);
    expect(s).toMatchObject({ status: 'completed', recipients: 2, counts: { email: { delivered: 1, suppressed: 1 }, inapp: { delivered: 2 } } });
    expect(s.accepted_at).toBe(new Date(1000).toISOString());
  });

  it('counts push per recipient: two devices of one user do not finish another user', () => {
    const oneUserTwoDevices = accepted({ recipients: 2, resolved_all: 1, 'c:push:delivered': 2 }, 'push');
    expect(statusOf('r', oneUserTwoDevices, 1).status).toBe('processing');
    expect(statusOf('r', oneUserTwoDevices, 2).status).toBe('completed');
  });

  it('says partially_failed, failed, expired, cancelled and failed-at-validation as they are', () => {
    const done = { recipients: 2, resolved_all: 1, 't:email': 2 };
    expect(statusOf('r', accepted({ ...done, 'c:email:delivered': 1, 'c:email:failed': 1 }), 0).status).toBe('partially_failed');
    expect(statusOf('r', accepted({ ...done, 'c:email:failed': 2 }), 0).status).toBe('failed');
    expect(statusOf('r', accepted({ ...done, 'c:email:dead_lettered': 2 }), 0).status).toBe('failed');
    expect(statusOf('r', accepted({ ...done, 'c:email:expired': 2 }), 0).status).toBe('expired');
    expect(statusOf('r', accepted({ recipients: 2, resolved_all: 1, 'c:email:cancelled': 2, 't:email': 2 }), 0).status).toBe('cancelled');
    expect(statusOf('r', { tier: 'social', category: 'c', updated: '5', 's:rejected': '1', reason: 'tier: bad' }, 0)).toMatchObject({ status: 'failed', reason: 'tier: bad' });
    expect(statusOf('r', accepted({ 's:expired': 1, reason: 'expires_at passed' }), 0).status).toBe('expired');
    // Given up before any channel (the filter dead-lettered it): failed, not processing for ever.
    expect(statusOf('r', accepted({ recipients: 2, 's:dead_lettered': 1 }), 0).status).toBe('failed');
    expect(statusOf('r', { tier: 'social', category: 'c', updated: '5', 's:dead_lettered': '1' }, 0).status).toBe('failed');
  });
});
