import cliProgress from 'cli-progress';

/** Progress of a long operator command: a bar on a terminal, nothing until the summary otherwise. */
export interface Progress {
  update(done: number, total: number): void;
  /** Ends the bar (if any); the caller prints its own summary line. */
  stop(): void;
}

/**
 * A progress bar (done / total, rate, ETA) on stderr when it is a terminal; when it is not (CI,
 * pipes, `--json`), no bar, so the output stays plain summary lines.
 */
export function progress(label: string, unit: string, enabled = process.stderr.isTTY === true): Progress {
  if (!enabled) return { update: () => undefined, stop: () => undefined };
  const bar = new cliProgress.SingleBar({
    format: `${label} [{bar}] {value}/{total} ${unit} | {percentage}% | {rate}/s | ETA {eta_formatted}`,
    stream: process.stderr,
    hideCursor: true,
    etaBuffer: 20,
  }, cliProgress.Presets.shades_classic);
  const started = Date.now();
  let running = false;
  return {
    update(done, total) {
      const rate = Math.round(done / Math.max(0.001, (Date.now() - started) / 1000));
      if (!running) {
        bar.start(total, done, { rate });
        running = true;
      } else {
        bar.setTotal(total);
        bar.update(done, { rate });
      }
    },
    stop() {
      if (running) bar.stop();
    },
  };
}
