import type { ThrottledLog } from './throttled-log'
import type { CircuitBreaker } from './circuit-breaker'
import { FST_CACHE_CIRCUIT_OPEN, FST_CACHE_STORE_ERROR, FST_CACHE_STORE_TIMEOUT } from './errors'
import type { CacheStats, CacheCounters } from './stats'
import type { CacheStore } from './stores/store'

/**
 * Every store call goes through here: it gets a deadline, and a failure is counted and logged at most once per
 * burst. Reads fail open (the caller gets its fallback, a miss); writes reject with a coded error.
 */
export class GuardedStore {
  constructor (
    readonly store: CacheStore,
    private readonly timeoutMs: number,
    readonly log: ThrottledLog,
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

  async write<T> (operation: string, call: (store: CacheStore) => Promise<T>, options: WriteOptions = {}): Promise<T> {
    try {
      return await this.withDeadline(operation, call, options.timeoutMs, options.evenIfOpen)
    } catch (error) {
      this.failed(operation, error, options.route)
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

  private withDeadline<T> (operation: string, call: (store: CacheStore) => Promise<T>, timeoutMs = this.timeoutMs, evenIfOpen = false): Promise<T> {
    if (this.store.local) return call(this.store)
    const breaker = this.breaker
    if (breaker !== undefined && !evenIfOpen && !breaker.allow()) return Promise.reject(new FST_CACHE_CIRCUIT_OPEN(operation))
    return new Promise<T>((resolve, reject) => {
      let timedOut = false
      const timer = setTimeout(() => {
        timedOut = true
        breaker?.failed()
        reject(new FST_CACHE_STORE_TIMEOUT(operation, timeoutMs))
      }, timeoutMs)
      // A reply that comes after the deadline was already counted as a failure; it must not close the circuit.
      call(this.store).then(
        (value) => { clearTimeout(timer); if (!timedOut) breaker?.succeeded(); resolve(value) },
        (error: unknown) => {
          clearTimeout(timer)
          // An error reply (OOM, READONLY, WRONGTYPE...) comes from a Redis that answers: it must not open the circuit,
          // or reads that work would stop with the writes that do not.
          if (!timedOut) isErrorReply(error) ? breaker?.succeeded() : breaker?.failed()
          reject(error)
        }
      )
    })
  }
}

export interface WriteOptions {
  route?: CacheCounters
  timeoutMs?: number
  /** Goes through an open circuit: for clean-up that must not be skipped, such as giving back a lease. */
  evenIfOpen?: boolean
}

/** An error that Redis sent as its reply to a command, as opposed to no reply (a dead, hung or unreachable server). */
function isErrorReply (error: unknown): boolean {
  return error instanceof Error && error.name === 'ReplyError'
}
