import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { promisify } from 'node:util';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Config } from '../runtime/config.js';
import { freePort } from '../servers/local-servers.js';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');

/** Runs one `herald` command as an operator would, against a test config's servers; resolves with its output. */
export function runHerald(config: Config, args: string[], extra: Record<string, string> = {}) {
  return promisify(execFile)(path.join(root, 'bin', 'herald.js'), args, { env: { ...process.env, ...envFor(config, extra) } });
}

/** The environment that reproduces a test config for a `herald run` child process. */
export function envFor(config: Config, extra: Record<string, string> = {}): Record<string, string> {
  return {
    NATS_URL: config.natsUrl, REDIS_URL: config.redisUrl, CLICKHOUSE_URL: config.clickhouseUrl,
    CLICKHOUSE_DATABASE: config.clickhouseDatabase, HERALD_NAMESPACE: config.namespace,
    HERALD_DATA_DIR: config.dataDir, HERALD_STORAGE_BUDGET_MB: String(config.storageBudgetBytes / 1024 / 1024),
    SMTP_URL: config.providers.smtpUrls.join(','), LOG_LEVEL: process.env.LOG_LEVEL ?? 'warn', HERALD_SMTP_CATCHER_PORT: '0',
    HERALD_ACK_WAIT_MS: String(config.ackWaitMs), HERALD_REPLICAS: String(config.replicas),
    // Any free port: several `herald run` children may live at once.
    HERALD_API_PORT: '0',
    ...extra,
  };
}

/** A `herald run` process, started the way an operator would, ready when its /readyz answers. */
export class HeraldProcess {
  child?: ChildProcess;
  exitCode?: number | null;
  /** Its health port (/readyz, /metrics) once started. */
  port = 0;
  /** What it wrote since start(): its log lines (stdout) and anything else (stderr, also passed on). */
  output = '';
  /** @param args One process by default, whatever the machine's cores: a kill -9 is the crash of the whole pipeline. */
  constructor(private readonly env: Record<string, string>, private readonly args: string[] = ['run', '--workers', '1']) {}

  async start(): Promise<void> {
    const port = (this.port = await freePort());
    this.exitCode = undefined;
    const child = spawn(path.join(root, 'bin', 'herald.js'), this.args, {
      cwd: root, env: { ...process.env, ...this.env, HERALD_HTTP_PORT: String(port) }, stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.child = child;
    this.output = '';
    // The last 1 MB is plenty for a test to read, and bounds a long run's memory.
    const keep = (chunk: Buffer) => { this.output = (this.output + chunk.toString('utf8')).slice(-1_000_000); };
    child.stdout!.on('data', keep);
    child.stderr!.on('data', (chunk: Buffer) => { keep(chunk); process.stderr.write(chunk); });
    child.once('exit', (code) => { this.exitCode = code; });
    const deadline = Date.now() + 30_000;
    for (;;) {
      if (this.exitCode !== undefined) throw new Error(`herald run exited with ${this.exitCode} before it was ready`);
      if (await fetch(`http://127.0.0.1:${port}/readyz`).then((r) => r.ok, () => false)) return;
      if (Date.now() > deadline) throw new Error('herald run did not become ready in 30 s');
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /** Sends a signal and waits for the exit; returns the exit code (null when killed by the signal). */
  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<number | null | undefined> {
    const child = this.child;
    if (!child || this.exitCode !== undefined) return this.exitCode;
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    child.kill(signal);
    await exited;
    return this.exitCode;
  }
}
