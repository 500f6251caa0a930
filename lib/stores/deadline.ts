import type { CircuitBreaker } from '../circuit-breaker'
import { FST_CACHE_CIRCUIT_OPEN, FST_CACHE_STORE_TIMEOUT } from '../errors'
import type { CacheStore, CleanupReport, LeaseRequest, StoreRead, StoreSetOptions } from './store'

/**
 * Invalidations and clean-up are not on the request path and walk many keys (a tag's entries, a SCAN of the prefix),
 * so they get far longer deadlines than one store call; a dead Redis still fails them at once.
 */
export const BULK_TIMEOUT_MS = 60_000
export const CLEANUP_TIMEOUT_MS = 10 * 60_000

/**
 * A store that leaves the process, with a deadline on every call and a circuit breaker in front: no request ever
 * waits on a hung Redis for longer than the deadline, and a failing one is not called at all for a while. Calls
 * that time out or get no reply count as failures; an error reply (OOM, READONLY, WRONGTYPE...) comes from a Redis
 * that answers and does not.
 */
export class DeadlineStore implements CacheStore {
  readonly kind: string
  readonly local = false

  /** The deadline of each key's peek in flight, until it is answered or passes. */
  private readonly peeks = new Map<string, Bound<Buffer | undefined>>()

  constructor (private readonly inner: CacheStore, private readonly timeoutMs: number, readonly breaker?: CircuitBreaker) {
    this.kind = inner.kind
  }

  /**
   * A read past its deadline still runs, and may take the lease when it lands (Redis frozen then thawed, or a command
   * ioredis sends again after a reconnect): its request has gone on without it, so no one would give it back, and
   * every instance would wait for that key's lease until it expires. Such a late read gives it back.
   */
  read (id: string, tags: readonly string[], lease?: LeaseRequest): Promise<StoreRead> {
    const late = lease === undefined
      ? undefined
      : (found: StoreRead): void => { if (found.leaseTaken === true) this.giveBack(id, lease.token) }
    return this.limit('read', () => this.inner.read(id, tags, lease), this.timeoutMs, false, late)
  }

  /**
   * A store that shares one peek among concurrent callers (the Redis store does) returns them the same promise: they
   * share its deadline too, instead of a timer each. Each still counts as one call for the circuit breaker.
   */
  peek (id: string): Promise<Buffer | undefined> {
    if (!this.allowed()) return Promise.reject(new FST_CACHE_CIRCUIT_OPEN('peek'))
    const read = this.inner.peek(id)
    const bound = this.peeks.get(id)
    if (bound !== undefined && bound.pending === read) {
      bound.callers++
      return bound.promise
    }
    // By key, not a WeakMap by promise: its weak entries, one per peek, cost the garbage collector more than this saves.
    const started: Bound<Buffer | undefined> = this.bind('peek', read, this.timeoutMs, undefined, () => {
      if (this.peeks.get(id) === started) this.peeks.delete(id)
    })
    this.peeks.set(id, started)
    return started.promise
  }

  get (id: string): Promise<Buffer | null> { return this.limit('get', () => this.inner.get(id)) }
  set (id: string, value: Buffer, options: StoreSetOptions): Promise<boolean> { return this.limit('set', () => this.inner.set(id, value, options)) }
  /** A late acquisition gives the lease back, as a late read does. */
  acquireLease (id: string, token: string, ttlMs: number): Promise<boolean> {
    const late = (taken: boolean): void => { if (taken) this.giveBack(id, token) }
    return this.limit('lease', () => this.inner.acquireLease(id, token, ttlMs), this.timeoutMs, false, late)
  }

  /** Even through an open circuit: a lease left behind would make every instance wait for it. */
  releaseLease (id: string, token: string): Promise<void> { return this.limit('releaseLease', () => this.inner.releaseLease(id, token), this.timeoutMs, true) }
  delete (ids: readonly string[]): Promise<number> { return this.limit('delete', () => this.inner.delete(ids)) }
  exists (id: string): Promise<boolean> { return this.limit('exists', () => this.inner.exists(id)) }
  expire (id: string, seconds: number): Promise<boolean> { return this.limit('expire', () => this.inner.expire(id, seconds)) }
  ttl (id: string): Promise<number> { return this.limit('ttl', () => this.inner.ttl(id)) }
  invalidateTags (tags: readonly string[], options?: { soft?: boolean }): Promise<number> {
    return this.limit('invalidateTags', () => this.inner.invalidateTags(tags, options), BULK_TIMEOUT_MS)
  }

  deletePattern (glob: string): Promise<number> { return this.limit('deletePattern', () => this.inner.deletePattern(glob), BULK_TIMEOUT_MS) }
  info (): Promise<Record<string, string | number>> { return this.limit('info', () => this.inner.info()) }
  cleanup (): Promise<CleanupReport> { return this.limit('cleanup', () => this.inner.cleanup(), CLEANUP_TIMEOUT_MS) }
  close (): Promise<void> { return this.inner.close() }

  /** Releases a lease taken by a call that came too late for its caller; a failure changes nothing for anyone. */
  private giveBack (id: string, token: string): void {
    this.inner.releaseLease(id, token).catch(() => {})
  }

  private allowed (evenIfOpen = false): boolean {
    return this.breaker === undefined || evenIfOpen || this.breaker.allow()
  }

  /** `late`: called with the value of a call that answers after its deadline. */
  private limit<T> (operation: string, call: () => Promise<T>, timeoutMs = this.timeoutMs, evenIfOpen = false, late?: (value: T) => void): Promise<T> {
    if (!this.allowed(evenIfOpen)) return Promise.reject(new FST_CACHE_CIRCUIT_OPEN(operation))
    let pending: Promise<T>
    try {
      pending = call()
    } catch (error) {
      pending = Promise.reject(error)
    }
    return this.bind(operation, pending, timeoutMs, late).promise
  }

  /**
   * The deadline on one call, awaited by `callers` requests: a timeout or a failure counts once for each of them.
   * `settled`: called once the call is answered or its deadline passed, whichever comes first.
   */
  private bind<T> (operation: string, pending: Promise<T>, timeoutMs: number, late?: (value: T) => void, settled?: () => void): Bound<T> {
    const breaker = this.breaker
    let timedOut = false
    const failed = (): void => { if (breaker !== undefined) for (let i = 0; i < bound.callers; i++) breaker.failed() }
    const bound: Bound<T> = {
      pending,
      callers: 1,
      promise: new Promise<T>((resolve, reject) => {
        const timer = setTimeout(() => {
          timedOut = true
          settled?.()
          failed()
          reject(new FST_CACHE_STORE_TIMEOUT(operation, timeoutMs))
        }, timeoutMs)
        // A reply that comes after the deadline was already counted as a failure; it must not close the circuit.
        pending.then(
          (value) => {
            clearTimeout(timer)
            if (timedOut) {
              late?.(value)
            } else {
              settled?.()
              breaker?.succeeded()
            }
            resolve(value)
          },
          (error: unknown) => {
            clearTimeout(timer)
            if (!timedOut) {
              settled?.()
              isErrorReply(error) ? breaker?.succeeded() : failed()
            }
            reject(error)
          }
        )
      })
    }
    return bound
  }
}

/** A deadline-bound call, and how many requests await it. */
interface Bound<T> {
  /** The call itself, without the deadline. */
  pending: Promise<T>
  promise: Promise<T>
  callers: number
}

/** An error that Redis sent as its reply to a command, as opposed to no reply (a dead, hung or unreachable server). */
function isErrorReply (error: unknown): boolean {
  return error instanceof Error && error.name === 'ReplyError'
}
