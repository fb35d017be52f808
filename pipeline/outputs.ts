/** Publishes to JetStream: what the runner needs of a JetStreamClient. */
export type Publish = (subject: string, data: string | Uint8Array, msgID: string) => Promise<unknown>;

/**
 * The publishes one input causes: bounded in flight, the first failure kept, and callbacks that run
 * once everything published before them is stored (checkpoints).
 */
export class Outputs {
  readonly pending = new Set<Promise<unknown>>();
  failure: unknown;
  private afterChain: Promise<unknown> = Promise.resolve();

  constructor(private readonly send: Publish) {}

  publish(subject: string, data: string, msgID: string): void {
    this.track(this.send(subject, data, msgID));
  }

  after(fn: () => Promise<void>): void {
    const before = [...this.pending];
    this.afterChain = this.afterChain.then(() => Promise.all(before)).then(fn);
    this.track(this.afterChain);
  }

  private track(p: Promise<unknown>): void {
    this.pending.add(p);
    p.then(() => this.pending.delete(p), (err) => { this.failure ??= err; this.pending.delete(p); });
  }

  /** Resolves when every publish and callback so far is done; throws the first failure. */
  async settled(): Promise<void> {
    await Promise.allSettled([...this.pending]);
    if (this.failure) throw this.failure;
  }
}
