import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { projectRoot } from '../runtime/root.js';

const repoDir = projectRoot;
/** Server configs live with the docker compose file. */
const composeDir = path.join(repoDir, 'compose');

export type ServerName = 'nats' | 'redis' | 'clickhouse';

/** Where one server listens and keeps its data. */
export interface ServerPlan {
  name: ServerName;
  port: number;
  dataDir: string;
  /** Extra port a server needs (NATS monitoring, ClickHouse native protocol). */
  sidePort: number;
  /** NATS only: another config file (secure, cluster node) instead of nats.conf. */
  configFile?: string;
  /** Environment for the server (a NATS config's $VARIABLES). */
  env?: Record<string, string>;
}

export interface RunningServer {
  name: ServerName;
  url: string;
  pid: number;
  process?: ChildProcess;
}

/** A process's children (Linux /proc), none once it is gone: the workers of a `--workers N` primary. */
export function childPids(pid: number): number[] {
  try {
    return fs.readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

export function isListening(port: number, host = '127.0.0.1', timeoutMs = 500): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = net.connect({ port, host });
    const done = (ok: boolean) => { sock.destroy(); resolve(ok); };
    sock.setTimeout(timeoutMs, () => done(false));
    sock.once('connect', () => done(true));
    sock.once('error', () => done(false));
  });
}

async function waitFor(check: () => Promise<boolean>, what: string, timeoutMs: number, logFile: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  const tail = fs.existsSync(logFile) ? fs.readFileSync(logFile, 'utf8').slice(-2000) : '(no log)';
  throw new Error(`${what} did not start within ${timeoutMs} ms; its log ends:\n${tail}`);
}

function commandFor(plan: ServerPlan): { cmd: string; args: string[] } {
  switch (plan.name) {
    case 'nats':
      return {
        cmd: 'nats-server',
        args: ['-c', plan.configFile ?? path.join(repoDir, 'nats.conf'), '-a', '127.0.0.1', '-p', String(plan.port),
          '-m', String(plan.sidePort), '-sd', path.join(plan.dataDir, 'jetstream')],
      };
    case 'redis':
      return {
        cmd: 'redis-server',
        args: ['--port', String(plan.port), '--bind', '127.0.0.1', '--dir', plan.dataDir,
          '--appendonly', 'yes', '--appendfsync', 'everysec', '--save', '', '--protected-mode', 'no'],
      };
    case 'clickhouse': {
      const template = fs.readFileSync(path.join(composeDir, 'clickhouse', 'config.xml'), 'utf8');
      const configFile = path.join(plan.dataDir, 'config.xml');
      fs.writeFileSync(configFile, template
        .replaceAll('{data_dir}', plan.dataDir)
        .replaceAll('{http_port}', String(plan.port))
        .replaceAll('{tcp_port}', String(plan.sidePort)));
      return { cmd: 'clickhouse-server', args: [`--config-file=${configFile}`] };
    }
  }
}

async function clickhouseAnswers(port: number): Promise<boolean> {
  try {
    const res = await fetch(`http://127.0.0.1:${port}/ping`);
    return res.ok;
  } catch {
    return false;
  }
}

export function urlOf(name: ServerName, port: number): string {
  return name === 'nats' ? `nats://127.0.0.1:${port}` : name === 'redis' ? `redis://127.0.0.1:${port}` : `http://127.0.0.1:${port}`;
}

/**
 * Starts one server from the Debian binaries and waits until it answers.
 * `detached` servers outlive this process (for `herald servers start`); attached ones die with it (tests).
 */
export async function startServer(plan: ServerPlan, detached: boolean): Promise<RunningServer> {
  fs.mkdirSync(plan.dataDir, { recursive: true });
  const logFile = path.join(plan.dataDir, `${plan.name}.log`);
  const { cmd, args } = commandFor(plan);
  const out = fs.openSync(logFile, 'a');
  const child = spawn(cmd, args, { cwd: plan.dataDir, detached, stdio: ['ignore', out, out], env: { ...process.env, ...plan.env } });
  fs.closeSync(out);
  let exited: string | undefined;
  child.once('exit', (code, signal) => { exited = `exited (${signal ?? code})`; });
  child.once('error', (err) => { exited = err.message; });
  await waitFor(async () => {
    if (exited) throw new Error(`${cmd} ${exited}; see ${logFile}:\n${fs.existsSync(logFile) ? fs.readFileSync(logFile, 'utf8').slice(-2000) : ''}`);
    return plan.name === 'clickhouse' ? clickhouseAnswers(plan.port) : isListening(plan.port);
  }, cmd, plan.name === 'clickhouse' ? 60_000 : 20_000, logFile);
  if (detached) {
    child.unref();
    fs.writeFileSync(path.join(plan.dataDir, `${plan.name}.pid`), String(child.pid));
  }
  return { name: plan.name, url: urlOf(plan.name, plan.port), pid: child.pid!, process: detached ? undefined : child };
}

/** Stops a server started detached, by its pid file. Returns whether one was running. */
export async function stopDetached(name: ServerName, dataDir: string): Promise<boolean> {
  const pidFile = path.join(dataDir, `${name}.pid`);
  if (!fs.existsSync(pidFile)) return false;
  const pid = Number(fs.readFileSync(pidFile, 'utf8'));
  fs.rmSync(pidFile);
  try {
    process.kill(pid, 'SIGTERM');
  } catch {
    return false;
  }
  for (let i = 0; i < 100; i++) {
    try { process.kill(pid, 0); } catch { return true; }
    await new Promise((r) => setTimeout(r, 100));
  }
  try { process.kill(pid, 'SIGKILL'); } catch { /* already gone */ }
  return true;
}

/** Stops an attached server and waits for it to exit. */
export async function stopAttached(server: RunningServer): Promise<void> {
  const child = server.process;
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const gone = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
  await gone;
  clearTimeout(timer);
}
