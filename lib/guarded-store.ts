import type { ThrottledLog } from './throttled-log'
import type { CircuitBreaker } from './circuit-breaker'
import { FST_CACHE_STORE_ERROR, FST_CACHE_STORE_TIMEOUT } from './errors'
import type { CacheStats, CacheCounters } from './stats'
import type { CacheStore } from './stores/store'

/**
 * Every store call goes through here: a failure is counted and logged at most once per burst. Reads fail open (the
 * caller gets its fallback, a miss); writes reject with a coded error. Deadlines and the circuit breaker are the
 * store's own (see DeadlineStore), so that an in-process tier in front of Redis pays for neither.
 */
export class GuardedStore {
  constructor (
    readonly store: CacheStore,
    readonly log: ThrottledLog,
    private readonly stats: CacheStats,
    /** The remote store's breaker, for stats(); undefined for an in-process store or when disabled. */
    readonly breaker?: CircuitBreaker
  ) {}

  async read<T> (operation: string, call: (store: CacheStore) => Promise<T>, fallback: T, route?: CacheCounters): Promise<T> {
    try {
      return await call(this.store)
    } catch (error) {
      this.failed(operation, error, route)
      return fallback
    }
  }

  async write<T> (operation: string, call: (store: CacheStore) => Promise<T>, route?: CacheCounters): Promise<T> {
    try {
      return await call(this.store)
    } catch (error) {
      this.failed(operation, error, route)
      if (error instanceof FST_CACHE_STORE_TIMEOUT) throw error
      // An open circuit is one more way for the store to fail: callers catch one code, FST_CACHE_STORE_ERROR.
      throw new FST_CACHE_STORE_ERROR(operation, error instanceof Error ? error.message : String(error))
    }
  }

  /** Counts and logs a failure that happened outside a store call, such as a corrupt entry. */
  failed (operation: string, error: unknown, route?: CacheCounters): void {
    this.stats.count('errors', route)
    this.log.warn(operation, { err: error, operation }, 'cache store operation failed; serving uncached')
  }
}
