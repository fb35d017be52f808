import type { AttemptLog } from '../stores/attempts.js';

/** Which attempt a delivery of a message is, and the failure to record when it fails. */
export interface AttemptCounter {
  /** 1 on the first delivery; then failures so far + 1, with the first failure. */
  current(id: string, deliveryCount: number): Promise<{ attempt: number; firstError?: string }>;
  /** Records a failure; returns the attempt it was and the first failure. */
  failed(id: string, deliveryCount: number, error: string): Promise<{ attempt: number; firstError?: string }>;
  /**
   * Counts a start of a redelivered message and returns how many earlier starts never settled
   * (the process died under them). A store that cannot answer says 0: never a false poison.
   */
  started(id: string): Promise<number>;
  /** A redelivered message was nak'd: its starts ended well. */
  settled(id: string): void;
  /** Forgets a message that settled for good. */
  clear(id: string): void;
}

/**
 * Attempts as real failures, counted in the attempt log: JetStream's delivery count also counts
 * deliveries that were only deferred (send_at, an open breaker, a rate limit). When the log cannot
 * be read, the delivery count stands in.
 */
export class LoggedAttempts implements AttemptCounter {
  constructor(private readonly log: AttemptLog) {}

  async current(id: string, deliveryCount: number): Promise<{ attempt: number; firstError?: string }> {
    if (deliveryCount === 1) return { attempt: 1 };
    try {
      const record = await this.log.get(id);
      return { attempt: (record?.count ?? 0) + 1, firstError: record?.firstError };
    } catch {
      return { attempt: deliveryCount };
    }
  }

  async failed(id: string, deliveryCount: number, error: string): Promise<{ attempt: number; firstError?: string }> {
    try {
      const record = await this.log.fail(id, error);
      return { attempt: record.count, firstError: record.firstError };
    } catch {
      return { attempt: deliveryCount };
    }
  }

  async started(id: string): Promise<number> {
    try {
      return await this.log.started(id);
    } catch {
      return 0;
    }
  }

  settled(id: string): void {
    this.log.settled(id).catch(() => undefined);
  }

  clear(id: string): void {
    this.log.clear(id).catch(() => undefined);
  }
}

/** JetStream's delivery count as the attempt (no log: tests, replays). */
export const deliveryCountAttempts: AttemptCounter = {
  current: async (_id, deliveryCount) => ({ attempt: deliveryCount }),
  failed: async (_id, deliveryCount) => ({ attempt: deliveryCount }),
  started: async () => 0,
  settled: () => undefined,
  clear: () => undefined,
};
