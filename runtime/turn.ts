/**
 * Gathers the callers of one turn of the event loop and lets them all go at once, at its check
 * phase (setImmediate). Requests that arrived together (many sockets are readable in one poll)
 * then issue their Redis and NATS commands in one synchronous run, which ioredis's auto-pipeline
 * and the NATS client each send in one socket write: on a VM a write costs tens of microseconds,
 * and per request it was a fifth of the HTTP edge's CPU. A caller waits at most until the loop has
 * handled what it had already read.
 */
export class TurnGate {
  private waiting: (() => void)[] | null = null;

  /** Resolves together with every other `pass()` of this turn. */
  pass(): Promise<void> {
    return new Promise((resolve) => {
      if (this.waiting) {
        this.waiting.push(resolve);
        return;
      }
      this.waiting = [resolve];
      setImmediate(() => {
        const released = this.waiting ?? [];
        this.waiting = null;
        for (const go of released) go();
      });
    });
  }
}
