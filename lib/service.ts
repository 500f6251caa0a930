import { decodeEntry, isEntryBytes } from './entry'
import type { GuardedStore } from './guarded-store'
import { type CacheKey, idPattern, keyId, tagId } from './keys'
import { decodeValue, encodeValue } from './serializer'
import type { CacheStats, CacheStatsSnapshot } from './stats'
import { FST_CACHE_INVALID_OPTION } from './errors'
import type { CleanupReport, WriteStamp } from './stores/store'
import type { FastifyInstance } from 'fastify'
import { type CachedFunction, type CachedOptions, createCached } from './cached'
import { type WarmOptions, type WarmResult, type WarmTarget, warmTargets } from './warm'

export interface SetOptions {
  /** Seconds; the plugin's `ttl` when omitted. */
  ttl?: number
  tags?: string[]
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
    const report = await this.guarded.write('cleanup', (store) => store.cleanup(), undefined, CLEANUP_TIMEOUT_MS)
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
    return this.stats_.snapshot({ ...counted, ...figures, kind: store.kind })
  }

  private async computeOnce<T> (id: string, compute: () => T | Promise<T>, options: SetOptions): Promise<T> {
    const tags = options.tags?.map(tagId) ?? []
    const found = await this.guarded.read('read', (store) => store.read(id, tags), undefined)
    const cached = found?.value == null || found.stale ? undefined : this.decode<T>(found.value)
    if (cached !== undefined) {
      this.stats_.count('hits')
      return cached
    }
    this.stats_.count('misses')
    const value = await compute()
    // The value is good whatever happens to the write: a store failure is logged and counted, not thrown. Without
    // a stamp (the read failed) nothing is written, since the write could undo an invalidation it never saw.
    if (value !== undefined && found !== undefined) {
      await this.write(id, encodeValue(value), options, found.stamp)
        .then((written) => { if (!written) this.stats_.count('raced') }, () => {})
    }
    return value
  }

  private async read<T> (id: string): Promise<T | undefined> {
    const found = await this.guarded.read('read', (store) => store.read(id, []), undefined)
    return found?.value == null || found.stale ? undefined : this.decode<T>(found.value)
  }

  private decode<T> (bytes: Buffer): T | undefined {
    try {
      return (isEntryBytes(bytes) ? bodyValue(bytes) : decodeValue(bytes)) as T
    } catch (error) {
      this.guarded.failed('decode', error)
      return undefined
    }
  }

  private async write (id: string, bytes: Buffer, options: SetOptions, stamp?: WriteStamp): Promise<boolean> {
    const ttl = options.ttl ?? this.defaultTtl
    assertSeconds(ttl, 'ttl')
    const tags = options.tags?.map(tagId)
    return await this.guarded.write('set', (store) => store.set(id, bytes, { ttlMs: ttl * 1000, tags, stamp }))
  }
}

/** A cleanup pass walks the whole prefix in batches; it gets far more than one store call's deadline. */
const CLEANUP_TIMEOUT_MS = 10 * 60 * 1000

/** An HTTP entry read through the service: its body, JSON-parsed when it is JSON. */
function bodyValue (bytes: Buffer): unknown {
  const entry = decodeEntry(bytes)
  const text = entry.body.toString('utf8')
  return /json/i.test(String(entry.headers['content-type'] ?? '')) ? JSON.parse(text) : text
}

function assertSeconds (seconds: number, name: string): void {
  if (!Number.isInteger(seconds) || seconds < 1) {
    throw new FST_CACHE_INVALID_OPTION(`option "${name}" must be a positive integer number of seconds, got ${String(seconds)}`)
  }
}
