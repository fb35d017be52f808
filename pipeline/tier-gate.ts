import type { Priority } from './runner.js';

/**
 * Process-wide priority between tiers. Consumers keep tiers apart in JetStream, but one process has
 * one event loop: while transactional messages are in hand here, bulk tiers step aside before each
 * new message and between the outputs of a fan-out, for at most `maxWaitMs` a step (slowed, never
 * starved).
 */
export class TierGate {
  private urgent = 0;
  private waiters: (() => void)[] = [];

  constructor(private readonly maxWaitMs = 20) {}

  /** A transactional message arrived. */
  hold(n = 1): void {
    this.urgent += n;
  }

  /** Transactional messages settled. */
  release(n = 1): void {
    this.urgent = Math.max(0, this.urgent - n);
    if (this.urgent === 0 && this.waiters.length) {
      const waiting = this.waiters;
      this.waiters = [];
      for (const wake of waiting) wake();
    }
  }

  /** Nothing to wait for (undefined), or a promise that resolves when transactional work is done or the step's wait is up. */
  clear(): Promise<void> | undefined {
    if (this.urgent === 0) return undefined;
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, this.maxWaitMs);
      this.waiters.push(() => { clearTimeout(timer); resolve(); });
    });
  }

  /** This gate as a runner's priority: urgent runners hold it, bulk ones step aside. */
  priority(urgent: boolean): Priority {
    return { urgent, hold: () => this.hold(), release: () => this.release(), clear: () => this.clear() };
  }
}
