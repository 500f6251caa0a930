/**
 * Reads under way, by key: a read of a key that is already being read joins it instead of making another round trip.
 * Under load a hot key is asked for by many requests at once, and each would otherwise wait for its own reply
 * carrying the same bytes.
 *
 * A joiner gets what the store held when the first read ran, a moment before the joiner arrived. That is never older
 * than a change this process made: each change that can alter what the read finds moves the generation when it
 * completes, and a read started before is not joined after. A change made by another instance in that moment (less
 * than one round trip) may be missed by a joiner, as it would be by a request that arrived a moment earlier.
 */
export class SharedReads<T> {
  private current = 0
  private readonly pending = new Map<string, { generation: number, read: Promise<T> }>()

  /** Moves with every change: what a read found in an earlier generation may be out of date now. */
  get generation (): number {
    return this.current
  }

  /** The read of `key` under way since the last change, or a new one. */
  share (key: string, read: () => Promise<T>): Promise<T> {
    const under = this.pending.get(key)
    if (under !== undefined && under.generation === this.current) return under.read
    const started = { generation: this.current, read: read() }
    this.pending.set(key, started)
    const forget = (): void => { if (this.pending.get(key) === started) this.pending.delete(key) }
    started.read.then(forget, forget)
    return started.read
  }

  /** A change has completed (or was seen): reads started before are not joined after. */
  changed (): void {
    this.current++
  }

  /** Runs a change: whatever its outcome, reads started before it ended are not joined after. */
  async change<R> (run: () => Promise<R>): Promise<R> {
    try {
      return await run()
    } finally {
      this.changed()
    }
  }
}
