/** How much one lookup moves the rate: about the last 16 lookups count. */
const WEIGHT = 1 / 16

/**
 * A route's recent share of lookups that found a usable entry (an exponentially weighted average), to choose how to
 * read: where most lookups hit, an untagged entry is worth trying with a plain GET first (the full read only on a
 * miss); where most miss, that GET is a round trip wasted before the full read, which answers a hit as well. It
 * starts at 1: a cached route is expected to hit.
 */
export class HitRate {
  private rate = 1

  observe (hit: boolean): void {
    this.rate += ((hit ? 1 : 0) - this.rate) * WEIGHT
  }

  /** Whether most recent lookups hit. */
  get likely (): boolean {
    return this.rate >= 0.5
  }
}
