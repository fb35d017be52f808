/**
 * One encoding of every Redis key, so that no two (tenant, kind, ids) ever share a key:
 * - tenants use a fixed alphabet without `:` (schemas/common.ts), so a tenant never swallows a kind;
 * - free-form ids (users, topics, categories, requests) have `%` and `:` escaped, so `:` only
 *   ever separates components;
 * - a namespace sits after `herald@`, which no un-namespaced key starts with;
 * - Herald's own keys (rate limits, attempts) live under `~`, which no tenant name contains.
 */
export class KeySpace {
  /** Every key starts with this. */
  readonly root: string;

  constructor(readonly namespace = '') {
    this.root = namespace ? `herald@${namespace}:` : 'herald:';
  }

  /** A tenant's key: `<root><tenant>:<kind>:<id>…`. */
  tenant(tenant: string, kind: string, ...ids: string[]): string {
    let key = `${this.root}${tenant}:${kind}`;
    for (const id of ids) key += `:${keyPart(id)}`;
    return key;
  }

  /** A key of Herald's own, where no tenant's key can be: `<root>~<kind>:<id>…`. */
  internal(kind: string, ...ids: string[]): string {
    let key = `${this.root}~${kind}`;
    for (const id of ids) key += `:${keyPart(id)}`;
    return key;
  }
}

/** A free-form id as one key component: `%` and `:` escaped (readable, and cheap for plain ids). */
export function keyPart(id: string): string {
  return id.includes('%') || id.includes(':') ? id.replace(/%/g, '%25').replace(/:/g, '%3A') : id;
}
