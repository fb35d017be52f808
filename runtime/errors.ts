/** The sender's fault or a fact that will not change: never retried, dead-lettered at once. */
export class PermanentError extends Error {
  /** Every problem found, each naming where it is. */
  readonly problems: string[];
  constructor(message: string, problems: string[] = [message]) {
    super(message);
    this.name = 'PermanentError';
    this.problems = problems;
  }
}

/** A passing failure: retried with backoff, or after `retryAfterMs` when the provider said so. */
export class RetryableError extends Error {
  constructor(message: string, readonly retryAfterMs?: number) {
    super(message);
    this.name = 'RetryableError';
  }
}

/** Exponential backoff with full jitter: uniform in [0, min(cap, base * 2^(attempt-1))]. */
export function backoffMs(attempt: number, baseMs = 250, capMs = 300_000, random = Math.random): number {
  const ceiling = Math.min(capMs, baseMs * 2 ** Math.max(0, attempt - 1));
  return Math.floor(random() * ceiling);
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** Not a failure: the work is due later (send_at, quiet hours, an open breaker). Not an attempt. */
/** A message that the process died under, again and again: set aside before it is handled once more. */
export class PoisonError extends Error {
  constructor(readonly starts: number, deliveries: number) {
    super(`delivered ${deliveries} times and never settled (${starts + 1} starts): it may be what stops the process, so it is set aside unprocessed`);
    this.name = 'PoisonError';
  }
}

/**
 * A stream that is full (discard-new) refuses new messages: that is backpressure from downstream,
 * to wait out, not the message's fault and not an attempt.
 */
export function isBackpressure(err: unknown): boolean {
  // Not "maximum message size exceeded": one message too large is that message's problem.
  return /maximum (bytes|messages) exceeded|insufficient (storage )?resources|no space left/i.test(errorMessage(err));
}

export class DeferError extends Error {
  constructor(readonly untilMs: number, readonly reason: string) {
    super(`deferred until ${new Date(untilMs).toISOString()}: ${reason}`);
    this.name = 'DeferError';
  }
}
