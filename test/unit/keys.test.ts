import { describe, expect, it } from 'vitest';
import { chunkId } from '../../processors/resolve.js';
import { kvToken, requestIdFor } from '../../runtime/ids.js';
import { tenantSchema } from '../../schemas/index.js';
import { KeySpace } from '../../stores/keys.js';

/** Names built to collide under `prefix + tenant + ":" + kind + ":" + id`, plus generated hostile ones. */
const hostile = ['a', 'a:u:x', 'x:u:victim', 'u', 'rate', 'prod', 'prod:acme', 'acme', '~rate', 'a%3Au', 'a:', ':a', '', '.', 'a.b', 'x:', '%', '%%3A',
  ...Array.from({ length: 40 }, (_, i) => ['a', ':', '%', '3A', 'u', '.', '~', 'rate', 'x'].filter((_, j) => (i >> (j % 6)) & 1).join(''))];

describe('one key encoding that cannot collide', () => {
  it('refuses tenant names that could reach into another tenant\'s keys', () => {
    for (const bad of ['a:u:x', 'prod:acme', 'a.b', '~rate', '', 'x'.repeat(65), 'a b']) expect(tenantSchema.safeParse(bad).success).toBe(false);
    for (const good of ['acme', 'rate', 'a-b_C9']) expect(tenantSchema.safeParse(good).success).toBe(true);
  });

  it('gives every (namespace, tenant, kind, ids) its own Redis key, and internal keys a space of their own', () => {
    const tenants = ['a', 'u', 'rate', 'prod', 'acme', 'x', 'cap'];
    const seen = new Map<string, string>();
    const record = (key: string, what: string) => {
      expect(seen.get(key) ?? what, `${key} is both ${seen.get(key)} and ${what}`).toBe(what);
      seen.set(key, what);
    };
    for (const ns of ['', 'prod', 'a']) {
      const keys = new KeySpace(ns);
      for (const tenant of tenants) {
        for (const kind of ['u', 'inbox', 'inbox-read', 'cap', 't']) {
          for (const id of hostile) {
            record(keys.tenant(tenant, kind, id), JSON.stringify([ns, tenant, kind, id]));
            record(keys.tenant(tenant, kind, id, 'day', id), JSON.stringify([ns, tenant, kind, id, 'day', id]));
          }
        }
        for (const id of hostile) record(keys.internal('rate', 't', tenant, id), JSON.stringify([ns, '(internal)', 'rate', tenant, id]));
      }
    }
    expect(seen.size).toBeGreaterThan(10_000);
  });

  it('turns any tenant or id into a valid NATS KV key token, distinct from every other', () => {
    const kvKey = /^[-/_=.a-zA-Z0-9]+$/;
    const tokens = new Map<string, string>();
    for (const v of [...hostile.filter(Boolean), 'order.1:2', 'x'.repeat(64), 'x'.repeat(65), '=abc', 'é']) {
      const t = kvToken(v);
      expect(t).toMatch(kvKey);
      expect(t.startsWith('.')).toBe(false);
      expect(tokens.get(t) ?? v).toBe(v);
      tokens.set(t, v);
    }
  });

  it('names chunks and requests unambiguously when ids hold separators', () => {
    const chunk = (id: string, n: number) => chunkId({ request: { tenant: 't', id } as never, chunk: n, user_ids: ['u'] });
    const ids = ['x', 'x:', 'x::0', 'x:0', 'x::', ':x', 'x%3A'];
    const names = ids.flatMap((id) => [0, 1].map((n) => chunk(id, n)));
    expect(new Set(names).size).toBe(names.length);
    // The derived request id hashes tenant and key apart: no separator can make two meet.
    expect(requestIdFor('a', 'u:x:K')).not.toBe(requestIdFor('a:u:x', 'K'));
  });
});
