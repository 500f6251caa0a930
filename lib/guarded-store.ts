import type { FastifyBaseLogger } from 'fastify'
import type { CircuitBreaker } from './circuit-breaker'
import { FST_CACHE_CIRCUIT_OPEN, FST_CACHE_STORE_ERROR, FST_CACHE_STORE_TIMEOUT } from './errors'
import type { CacheStats, CacheCounters } from './stats'
import type { CacheStore } from './stores/store'

/** At most one log line per operation in this many milliseconds, so a Redis outage does not flood the log. */
const LOG_INTERVAL_MS = 10_000

/**
 * Every store call goes through here: it gets a deadline, and a failure is counted and logged at most once per
 * burst. Reads fail open (the caller gets its fallback, a miss); writes reject with a coded error.
 */
export class GuardedStore {
  private readonly lastLogged = new Map<string, { at: number, suppressed: number }>()

  constructor (
    readonly store: CacheStore,
    private readonly timeoutMs: number,
    private readonly log: FastifyBaseLogger,
    private readonly stats: CacheStats,
    /** Only for stores that leave the process; undefined when disabled. */
    readonly breaker?: CircuitBreaker
  ) {}

  async read<T> (operation: string, call: (store: CacheStore) => Promise<T>, fallback: T, route?: CacheCounters): Promise<T> {
    try {
      return await this.withDeadline(operation, call)
    } catch (error) {
      this.failed(operation, error, route)
      return fallback
    }
  }

  async write<T> (operation: string, call: (store: CacheStore) => Promise<T>, route?: CacheCounters, timeoutMs = this.timeoutMs): Promise<T> {
    try {
      return await this.withDeadline(operation, call, timeoutMs)
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
    const now = Date.now()
    const last = this.lastLogged.get(operation)
    if (last !== undefined && now - last.at < LOG_INTERVAL_MS) {
      last.suppressed++
      return
    }
    this.lastLogged.set(operation, { at: now, suppressed: 0 })
    this.log.warn({ err: error, operation, suppressed: last?.suppressed ?? 0 }, 'cache store operation failed; serving uncached')
  }

  private withDeadline<T> (operation: string, call: (store: CacheStore) => Promise<T>, timeoutMs = this.timeoutMs): Promise<T> {
    if (this.store.local) return call(this.store)
    const breaker = this.breaker
    if (breaker !== undefined && !breaker.allow()) return Promise.reject(new FST_CACHE_CIRCUIT_OPEN(operation))
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        breaker?.failed()
        reject(new FST_CACHE_STORE_TIMEOUT(operation, timeoutMs))
      }, timeoutMs)
      call(this.store).then(
        (value) => { clearTimeout(timer); breaker?.succeeded(); resolve(value) },
        (error: unknown) => { clearTimeout(timer); breaker?.failed(); reject(error) }
      )
    })
  }
}
