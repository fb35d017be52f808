import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

const compose = fs.readFileSync(path.join(import.meta.dirname, '..', '..', 'compose', 'docker-compose.yml'), 'utf8');

describe('the docker compose file ships safe', () => {
  it('publishes every port on loopback only', () => {
    const mappings = [...compose.matchAll(/ports:\s*\[([^\]]*)\]/g)].flatMap((m) => m[1].split(',').map((p) => p.trim().replace(/"/g, '')));
    expect(mappings.length).toBeGreaterThanOrEqual(4);
    for (const m of mappings) expect(m, m).toMatch(/^127\.0\.0\.1:\d+:\d+$/);
  });

  it('requires credentials for NATS, Redis and ClickHouse, from the environment', () => {
    expect(compose).toMatch(/nats-secure\.conf/);
    expect(compose).toMatch(/--requirepass", "\$\{REDIS_PASSWORD:\?/);
    expect(compose).toMatch(/CLICKHOUSE_PASSWORD: \$\{CLICKHOUSE_PASSWORD:\?/);
    expect(compose).not.toMatch(/CLICKHOUSE_SKIP_USER_SETUP/);
  });
});
