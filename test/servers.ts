import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { freePort, startServer, stopAttached, urlOf, type RunningServer, type ServerName, type ServerPlan } from '../servers/local-servers.js';

/** Servers of a test's own, to stop and restart on purpose (the shared ones must stay up). */
export class DedicatedServers {
  private readonly plans = new Map<ServerName, ServerPlan>();
  private readonly running = new Map<ServerName, RunningServer>();
  readonly root = fs.mkdtempSync(path.join(os.tmpdir(), 'herald-faults-'));

  async start(names: ServerName[]): Promise<Record<string, string>> {
    for (const name of names) {
      if (!this.plans.has(name)) this.plans.set(name, { name, port: await freePort(), sidePort: await freePort(), dataDir: path.join(this.root, name) });
    }
    await Promise.all(names.map((n) => this.up(n)));
    const env: Record<string, string> = {};
    if (this.plans.has('nats')) env.NATS_URL = this.url('nats');
    if (this.plans.has('redis')) env.REDIS_URL = this.url('redis');
    if (this.plans.has('clickhouse')) env.CLICKHOUSE_URL = this.url('clickhouse');
    return env;
  }

  url(name: ServerName): string {
    return urlOf(name, this.plans.get(name)!.port);
  }

  /** Starts (again) on the same port with the same data. */
  async up(name: ServerName): Promise<void> {
    this.running.set(name, await startServer(this.plans.get(name)!, false));
  }

  async down(name: ServerName): Promise<void> {
    const s = this.running.get(name);
    if (s) await stopAttached(s);
    this.running.delete(name);
  }

  async close(): Promise<void> {
    await Promise.all([...this.running.keys()].map((n) => this.down(n)));
    fs.rmSync(this.root, { recursive: true, force: true });
  }
}
