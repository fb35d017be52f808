import client from 'prom-client';

/** Per-stage rates, latencies and dead letters, plus whatever gauges the pipeline registers. */
export class Metrics {
  readonly registry = new client.Registry();
  private readonly handled = new client.Counter({
    name: 'herald_stage_messages_total', help: 'Messages handled per stage and outcome',
    labelNames: ['stage', 'outcome'] as const, registers: [this.registry],
  });
  private readonly duration = new client.Histogram({
    name: 'herald_stage_duration_seconds', help: 'Time from pull to settle per stage',
    labelNames: ['stage'] as const, buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5], registers: [this.registry],
  });
  private readonly dead = new client.Counter({
    name: 'herald_dead_letters_total', help: 'Dead letters per stage', labelNames: ['stage'] as const, registers: [this.registry],
  });
  readonly deliveries = new client.Counter({
    name: 'herald_deliveries_total', help: 'Recipient outcomes per channel and status',
    labelNames: ['channel', 'status'] as const, registers: [this.registry],
  });

  constructor() {
    // The event-loop delay monitor is a libuv timer: at prom-client's 10 ms it woke an idle process
    // 100 times a second (main-thread wakeups 204/s -> 30/s at 100 ms), and a wakeup costs tens of
    // µs on these VMs. Lag is still measured at each sample; stalls shorter than 100 ms between
    // samples may go unseen.
    client.collectDefaultMetrics({ register: this.registry, eventLoopMonitoringPrecision: 100 });
  }

  /** Label-bound series, looked up once per stage and outcome: this runs for every message of every node. */
  private readonly series = new Map<string, { handled: client.Counter.Internal; duration: client.Histogram.Internal<string> }>();

  processed(stage: string, outcome: 'ok' | 'failed' | 'deferred', ms: number, count = 1): void {
    const key = `${stage}\u0000${outcome}`;
    let s = this.series.get(key);
    if (!s) {
      s = { handled: this.handled.labels({ stage, outcome }), duration: this.duration.labels({ stage }) };
      this.series.set(key, s);
    }
    s.handled.inc(count);
    s.duration.observe(ms / 1000);
  }

  deadLettered(stage: string): void {
    this.dead.inc({ stage });
  }
}
