import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { TestProject } from 'vitest/node';
import { freePort, startServer, stopAttached, type RunningServer } from '../servers/local-servers.js';

declare module 'vitest' {
  export interface ProvidedContext {
    natsUrl: string;
    redisUrl: string;
    clickhouseUrl: string;
    natsPort: number;
    dataRoot: string;
  }
}

/** Starts real nats-server (JetStream), redis-server and clickhouse-server on free ports with temp data. */
export default async function setup(project: TestProject) {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'herald-test-'));
  const servers: RunningServer[] = [];
  const stopAll = async () => {
    await Promise.all(servers.map((s) => stopAttached(s)));
    fs.rmSync(root, { recursive: true, force: true });
  };
  try {
    const [natsPort, natsMon, redisPort, chPort, chTcp] = await Promise.all([freePort(), freePort(), freePort(), freePort(), freePort()]);
    const started = await Promise.all([
      startServer({ name: 'nats', port: natsPort, sidePort: natsMon, dataDir: path.join(root, 'nats') }, false),
      startServer({ name: 'redis', port: redisPort, sidePort: 0, dataDir: path.join(root, 'redis') }, false),
      startServer({ name: 'clickhouse', port: chPort, sidePort: chTcp, dataDir: path.join(root, 'clickhouse') }, false),
    ]);
    servers.push(...started);
    project.provide('natsUrl', started[0].url);
    project.provide('redisUrl', started[1].url);
    project.provide('clickhouseUrl', started[2].url);
    project.provide('natsPort', natsPort);
    project.provide('dataRoot', root);
  } catch (err) {
    await stopAll();
    throw err;
  }
  return stopAll;
}
