import { type HttpEntry, decodeEntry, freshUntil, isEntryBytes } from './entry'
import type { GuardedStore } from './guarded-store'
import { plainBody } from './http/encoding'
import { type CacheKey, idPattern, keyId, tagId } from './keys'
import { decodeValue, encodeValue } from './serializer'
import type { CacheStats, CacheStatsSnapshot } from './stats'
import { FST_CACHE_INVALID_OPTION } from './errors'
import type { CleanupReport, WriteStamp } from './stores/store'
import type { FastifyInstance } from 'fastify'
import { type CachedFunction, type CachedOptions, createCached } from './cached'
import { type WarmOptions, type WarmResult, type WarmTarget, warmTargets } from './warm'

export interface SetOptions {
  /** Seconds fresh; the plugin's `ttl` when omitted. */
  ttl?: number
  tags?: string[]
  /**
   * Seconds after freshness ends during which getOrCompute still answers with the old value at once while one
   * refresh runs in the background (RFC 5861's idea, for values). Soft-invalidated values are served the same way.
   */
  staleWhileRevalidate?: number
}

export interface InvalidateTagsOptions {
  /** Mark the entries stale instead of removing them: stale-while-revalidate readers keep serving them meanwhile. */
  soft?: boolean
}

/** The `app.cacheService` decorator. Keys are strings (":" separates parts) or arrays of parts. */
export interface CacheService {
  /** The value, or undefined on a miss. A store failure is a miss. An HTTP entry reads as its body (JSON parsed). */
  get<T = unknown> (key: CacheKey): Promise<T | undefined>
  set (key: CacheKey, value: unknown, options?: SetOptions): Promise<void>
  /** Resolves true when the key existed. */
  delete (key: CacheKey): Promise<boolean>
  exists (key: CacheKey): Promise<boolean>
  /** Sets a new TTL in seconds; false when the key does not exist. */
  expire (key: CacheKey, seconds: number): Promise<boolean>
  /** Seconds left; -2 when missing (or the store failed), -1 when it never expires. */
  ttl (key: CacheKey): Promise<number>
  /** The cached value, or compute() once (concurrent callers in this process share one call), store it and return it. */
  getOrCompute<T> (key: CacheKey, compute: () => T | Promise<T>, options?: SetOptions): Promise<T>
  /** Deletes one key (a string) or several (an array of keys); resolves to how many existed. */
  invalidate (keys: string | CacheKey[]): Promise<number>
  /** Every entry carrying any of the tags becomes a miss (or, soft, stale); resolves to how many entries. */
  invalidateTags (tags: string | string[], options?: InvalidateTagsOptions): Promise<number>
  /** Deletes the entries whose key matches, e.g. `exec:dashboard:ws42:*` (`*` and `?` are wildcards); the count. */
  invalidatePattern (pattern: string): Promise<number>
  /** Wraps a function so that its results are cached by its arguments; `.invalidate(...args)` drops one. */
  cached<A extends unknown[], R> (fn: (...args: A) => R | Promise<R>, options?: CachedOptions<A>): CachedFunction<A, R>
  /** Refreshes entries: URLs of cached routes (through app.inject) and `{ key, compute }` values. Never throws per target. */
  warm (targets: readonly WarmTarget[], options?: WarmOptions): Promise<WarmResult>
  /** Maintenance pass over the prefix (see CleanupReport); its entry and byte counts also appear in stats(). */
  cleanup (): Promise<CleanupReport>
  stats (): Promise<CacheStatsSnapshot>
}

export class StoreCacheService implements CacheService {
  private readonly inFlight = new Map<string, Promise<unknown>>()
  private readonly refreshing = new Set<string>()
  private lastCleanup: { entries: number, bytes: number, at: string } | undefined

  constructor (
    private readonly guarded: GuardedStore,
    private readonly stats_: CacheStats,
    private readonly defaultTtl: number,
    private readonly inject: FastifyInstance['inject']
  ) {}

  async get<T = unknown> (key: CacheKey): Promise<T | undefined> {
    return await this.read<T>(keyId(key))
  }

  async set (key: CacheKey, value: unknown, options: SetOptions = {}): Promise<void> {
    await this.write(keyId(key), encodeValue(value), options)
  }

  async delete (key: CacheKey): Promise<boolean> {
    const id = keyId(key)
    return await this.guarded.write('delete', (store) => store.delete([id])) > 0
  }

  async exists (key: CacheKey): Promise<boolean> {
    const id = keyId(key)
    return await this.guarded.read('exists', (store) => store.exists(id), false)
  }

  async expire (key: CacheKey, seconds: number): Promise<boolean> {
    const id = keyId(key)
    assertSeconds(seconds, 'seconds')
    return await this.guarded.write('expire', (store) => store.expire(id, seconds))
  }

  async ttl (key: CacheKey): Promise<number> {
    const id = keyId(key)
    return await this.guarded.read('ttl', (store) => store.ttl(id), -2)
  }

  async getOrCompute<T> (key: CacheKey, compute: () => T | Promise<T>, options: SetOptions = {}): Promise<T> {
    const id = keyId(key)
    assertSeconds(options.ttl ?? this.defaultTtl, 'ttl')
    if (options.staleWhileRevalidate !== undefined) assertSeconds(options.staleWhileRevalidate, 'staleWhileRevalidate')
    const pending = this.inFlight.get(id)
    if (pending !== undefined) return await (pending as Promise<T>)
    const flight = this.computeOnce(id, compute, options)
    this.inFlight.set(id, flight)
    try {
      return await flight
    } finally {
      this.inFlight.delete(id)
    }
  }

  async invalidate (keys: string | CacheKey[]): Promise<number> {
    const ids = typeof keys === 'string' ? [keyId(keys)] : keys.map(keyId)
    return await this.guarded.write('invalidate', (store) => store.delete(ids))
  }

  async invalidateTags (tags: string | string[], options: InvalidateTagsOptions = {}): Promise<number> {
    const names = typeof tags === 'string' ? [tags] : tags
    const ids = names.map(tagId)
    const count = await this.guarded.write('invalidateTags', (store) => store.invalidateTags(ids, options))
    this.stats_.invalidated(names)
    return count
  }

  async invalidatePattern (pattern: string): Promise<number> {
    const glob = idPattern(pattern)
    return await this.guarded.write('invalidatePattern', (store) => store.deletePattern(glob))
  }

  cached<A extends unknown[], R> (fn: (...args: A) => R | Promise<R>, options?: CachedOptions<A>): CachedFunction<A, R> {
    return createCached(this, fn, options)
  }

  async warm (targets: readonly WarmTarget[], options?: WarmOptions): Promise<WarmResult> {
    const result = await warmTargets({ inject: this.inject, service: this }, targets, options)
    this.stats_.warmed(result)
    return result
  }

  async cleanup (): Promise<CleanupReport> {
    const report = await this.guarded.write('cleanup', (store) => store.cleanup())
    this.lastCleanup = { entries: report.entries, bytes: report.bytes, at: new Date().toISOString() }
    return report
  }

  async stats (): Promise<CacheStatsSnapshot> {
    const store = this.guarded.store
    const figures = await this.guarded.read('info', (s) => s.info(), {})
    // Counting entries in Redis means a SCAN of the prefix: stats() reports the last cleanup pass's count instead.
    const counted: Record<string, string | number> = this.lastCleanup === undefined
      ? {}
      : { entriesCounted: this.lastCleanup.entries, bytesCounted: this.lastCleanup.bytes, countedAt: this.lastCleanup.at }
    const circuit: Record<string, string> = this.guarded.breaker === undefined ? {} : { circuit: this.guarded.breaker.state }
    return this.stats_.snapshot({ ...counted, ...circuit, ...figures, kind: store.kind })
  }

  private async computeOnce<T> (id: string, compute: () => T | Promise<T>, options: SetOptions): Promise<T> {
    const tags = options.tags?.map(tagId) ?? []
    const found = await this.guarded.read('read', (store) => store.read(id, tags), undefined)
    const current = found?.value == null ? undefined : this.decode<T>(found.value)
    if (found !== undefined && current !== undefined) {
      if (!found.stale && current.freshUntil > Date.now()) {
        this.stats_.count('hits')
        return current.value
      }
      if ((options.staleWhileRevalidate ?? 0) > 0) {
        this.stats_.count('stale')
        this.refreshInBackground(id, compute, options, found.stamp)
        return current.value
      }
    }
    this.stats_.count('misses')
    const value = await compute()
    // The value is good whatever happens to the write: a store failure is logged and counted, not thrown. Without
    // a stamp (the read failed) nothing is written, since the write could undo an invalidation it never saw.
    if (value !== undefined && found !== undefined) await this.writeComputed(id, value, options, found.stamp)
    return value
  }

  /** One background refresh per key at a time; its failure is logged and counted, and the stale value stays. */
  private refreshInBackground<T> (id: string, compute: () => T | Promise<T>, options: SetOptions, stamp: WriteStamp): void {
    if (this.refreshing.has(id)) return
    this.refreshing.add(id)
    Promise.resolve()
      .then(compute)
      .then((value) => value === undefined ? undefined : this.writeComputed(id, value, options, stamp))
      .catch((error: unknown) => this.guarded.failed('refresh', error))
      .finally(() => this.refreshing.delete(id))
  }

  private async writeComputed (id: string, value: unknown, options: SetOptions, stamp: WriteStamp): Promise<void> {
    await this.write(id, encodeValue(value), options, stamp)
      .then((written) => { if (!written) this.stats_.count('raced') }, () => {})
  }

  private async read<T> (id: string): Promise<T | undefined> {
    const found = await this.guarded.read('read', (store) => store.read(id, []), undefined)
    const current = found?.value == null || found.stale ? undefined : this.decode<T>(found.value)
    return current !== undefined && current.freshUntil > Date.now() ? current.value : undefined
  }

  private decode<T> (bytes: Buffer): { value: T, freshUntil: number } | undefined {
    try {
      if (isEntryBytes(bytes)) {
        const entry = decodeEntry(bytes)
        return { value: bodyValue(entry) as T, freshUntil: freshUntil(entry) }
      }
      const unwrapped = unwrapFreshness(bytes)
      return { value: decodeValue(unwrapped.inner) as T, freshUntil: unwrapped.freshUntil }
    } catch (error) {
      this.guarded.failed('decode', error)
      return undefined
    }
  }

  private async write (id: string, bytes: Buffer, options: SetOptions, stamp?: WriteStamp): Promise<boolean> {
    const ttl = options.ttl ?? this.defaultTtl
    assertSeconds(ttl, 'ttl')
    const staleFor = options.staleWhileRevalidate ?? 0
    if (staleFor !== 0) assertSeconds(staleFor, 'staleWhileRevalidate')
    const tags = options.tags?.map(tagId)
    const stored = staleFor === 0 ? bytes : wrapFreshness(bytes, Date.now() + ttl * 1000)
    return await this.guarded.write('set', (store) => store.set(id, stored, { ttlMs: (ttl + staleFor) * 1000, tags, stamp }))
  }
}

/** An HTTP entry read through the service: its body, JSON-parsed when it is JSON. */
function bodyValue (entry: HttpEntry): unknown {
  const text = plainBody(entry).toString('utf8')
  return /json/i.test(String(entry.headers['content-type'] ?? '')) ? JSON.parse(text) : text
}

// A value kept past its freshness (for stale-while-revalidate) carries when it stops being fresh:
// 'F', then the time in milliseconds as a float64, then the value's own bytes.
const FRESHNESS_MARKER = 0x46
const FRESHNESS_BYTES = 9

function wrapFreshness (bytes: Buffer, freshUntil: number): Buffer {
  const head = Buffer.allocUnsafe(FRESHNESS_BYTES)
  head[0] = FRESHNESS_MARKER
  head.writeDoubleBE(freshUntil, 1)
  return Buffer.concat([head, bytes])
}

/** Values without the marker are fresh for as long as the store keeps them. */
function unwrapFreshness (bytes: Buffer): { inner: Buffer, freshUntil: number } {
  if (bytes.length < FRESHNESS_BYTES || bytes[0] !== FRESHNESS_MARKER) return { inner: bytes, freshUntil: Infinity }
  return { inner: bytes.subarray(FRESHNESS_BYTES), freshUntil: bytes.readDoubleBE(1) }
}

function assertSeconds (seconds: number, name: string): void {
  if (!Number.isInteger(seconds) || seconds < 1) {
    throw new FST_CACHE_INVALID_OPTION(`option "${name}" must be a positive integer number of seconds, got ${String(seconds)}`)
  }
}
