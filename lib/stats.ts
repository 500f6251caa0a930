/** Outcomes the plugin counts, overall and per route. Counters live in memory: no Redis write per request. */
export interface CacheCounters {
  hits: number
  misses: number
  stale: number
  bypass: number
  errors: number
  /** Responses written to the store. */
  stored: number
  /** Responses that were not storable (status, Set-Cookie, no-store, too large...). */
  skipped: number
  /** Writes refused because the key or one of its tags was invalidated while the value was being computed. */
  raced: number
}

export type CounterName = keyof CacheCounters

export interface CounterSnapshot extends CacheCounters {
  /** hits / (hits + misses + stale), 0 when there were none. */
  hitRate: number
}

export interface CacheStatsSnapshot extends CounterSnapshot {
  routes: Record<string, CounterSnapshot>
  /** Invalidations by tag (hard and soft), for the most recently invalidated tags. */
  invalidations: Record<string, number>
  /** The last warming run, if any. */
  lastWarm: { ok: number, failed: number, durationMs: number, at: string } | null
  /** Why responses were not stored, by reason. */
  skippedBy: Record<string, number>
  store: { kind: string } & Record<string, string | number>
}

const MAX_TAGS_TRACKED = 1000

function emptyCounters (): CacheCounters {
  return { hits: 0, misses: 0, stale: 0, bypass: 0, errors: 0, stored: 0, skipped: 0, raced: 0 }
}

function withRate (counters: CacheCounters): CounterSnapshot {
  const lookups = counters.hits + counters.misses + counters.stale
  return { ...counters, hitRate: lookups === 0 ? 0 : counters.hits / lookups }
}

export class CacheStats {
  private readonly overall = emptyCounters()
  private readonly byRoute = new Map<string, CacheCounters>()
  private readonly skippedBy = new Map<string, number>()
  // Insertion-ordered, re-inserted on each count: the oldest tags are dropped first, so the map stays bounded.
  private readonly invalidations = new Map<string, number>()
  private lastWarm: CacheStatsSnapshot['lastWarm'] = null

  /** Counters of one route, created once when the route is compiled so that the hot path only increments. */
  route (name: string): CacheCounters {
    let counters = this.byRoute.get(name)
    if (counters === undefined) this.byRoute.set(name, counters = emptyCounters())
    return counters
  }

  count (name: CounterName, route?: CacheCounters): void {
    this.overall[name]++
    if (route !== undefined) route[name]++
  }

  skip (reason: string, route: CacheCounters): void {
    this.count('skipped', route)
    this.skippedBy.set(reason, (this.skippedBy.get(reason) ?? 0) + 1)
  }

  invalidated (tags: readonly string[]): void {
    for (const tag of tags) {
      const count = (this.invalidations.get(tag) ?? 0) + 1
      this.invalidations.delete(tag)
      this.invalidations.set(tag, count)
      if (this.invalidations.size > MAX_TAGS_TRACKED) this.invalidations.delete(this.invalidations.keys().next().value as string)
    }
  }

  warmed (result: { ok: number, failed: number, durationMs: number }): void {
    this.lastWarm = { ok: result.ok, failed: result.failed, durationMs: result.durationMs, at: new Date().toISOString() }
  }

  snapshot (store: CacheStatsSnapshot['store']): CacheStatsSnapshot {
    const routes: Record<string, CounterSnapshot> = {}
    for (const [name, counters] of this.byRoute) routes[name] = withRate(counters)
    return {
      ...withRate(this.overall),
      routes,
      skippedBy: Object.fromEntries(this.skippedBy),
      invalidations: Object.fromEntries(this.invalidations),
      lastWarm: this.lastWarm,
      store
    }
  }
}
