import { performance } from 'node:perf_hooks'
import {
  INVALIDATION_WINDOW_MS, type CacheStore, type CleanupReport, type LeaseRequest, type StoreRead, type StoreSetOptions, type WriteStamp, globMatcher,
  tokenHalves
} from './store'
import { newTokenPart } from './tokens'

export interface MemoryStoreOptions {
  /** Most entries kept; the least recently used go first. */
  maxEntries: number
  /** Most bytes kept (values plus ids). */
  maxBytes: number
}

interface MemoryEntry {
  value: Buffer
  version: string
  expiresAt: number
  /** The token of each tag when the entry was written. */
  tags: ReadonlyArray<readonly [string, string]>
  bytes: number
}

interface Expiring { value: string, expiresAt: number }

/** A bounded in-process LRU store with the same invalidation semantics as the Redis store. */
export class MemoryStore implements CacheStore {
  readonly kind = 'memory'
  readonly local = true
  readonly keepsValues = true
  // A Map iterates in insertion order; re-inserting on read makes its first key the least recently used.
  private readonly entries = new Map<string, MemoryEntry>()
  private readonly tagIndex = new Map<string, Set<string>>()
  private readonly tagTokens = new Map<string, Expiring>()
  private readonly tombstones = new Map<string, Expiring>()
  private readonly leases = new Map<string, Expiring>()
  private epoch = ''
  private writes = 0
  private bytes = 0
  private evictions = 0
  private expirations = 0

  constructor (private readonly options: MemoryStoreOptions) {}

  async read (id: string, tags: readonly string[], lease?: LeaseRequest): Promise<StoreRead> {
    const entry = this.live(id)
    const state = entry === undefined ? 'absent' : this.validity(entry)
    if (state === 'invalid') this.remove(id)
    const stamp: WriteStamp = {
      tombstone: this.current(this.tombstones, id) ?? '',
      epoch: this.epoch,
      version: state === 'invalid' || entry === undefined ? '' : entry.version,
      tags: tags.map((tag) => [tag, this.tagToken(tag, INVALIDATION_WINDOW_MS)] as const)
    }
    const leased = this.current(this.leases, id) !== undefined
    if (entry === undefined || state === 'invalid') {
      const leaseTaken = lease !== undefined && await this.acquireLease(id, lease.token, lease.ttlMs)
      return { value: null, stale: false, leased: leased || leaseTaken, leaseTaken, stamp }
    }
    this.touch(id, entry)
    return { value: entry.value, stale: state === 'stale', leased, stamp }
  }

  async peek (id: string): Promise<Buffer | undefined> {
    return this.peekSync(id)
  }

  peekSync (id: string): Buffer | undefined {
    const entry = this.live(id)
    if (entry === undefined || entry.tags.length > 0) return undefined
    this.touch(id, entry)
    return entry.value
  }

  async get (id: string): Promise<Buffer | null> {
    return (await this.read(id, [])).value
  }

  async set (id: string, value: Buffer, options: StoreSetOptions): Promise<boolean> {
    if (options.lease !== undefined) await this.releaseLease(id, options.lease)
    const stamp = options.stamp
    if (stamp !== undefined && !this.stampHolds(id, stamp)) return false
    this.remove(id)
    // Expired tokens and tombstones are dropped lazily on access, and swept now and then so that they stay bounded.
    if (++this.writes % 1000 === 0) { this.sweep(this.tagTokens); this.sweep(this.tombstones); this.sweep(this.leases) }
    const ttlMs = Math.max(1, Math.round(options.ttlMs))
    const tags = (options.tags ?? []).map((tag) => [tag, this.tagToken(tag, ttlMs + 1000)] as const)
    const entry: MemoryEntry = { value, version: newTokenPart(), expiresAt: Date.now() + ttlMs, tags, bytes: value.length + id.length }
    if (entry.bytes > this.options.maxBytes) return true
    this.entries.set(id, entry)
    this.bytes += entry.bytes
    for (const [tag] of tags) {
      let ids = this.tagIndex.get(tag)
      if (ids === undefined) this.tagIndex.set(tag, ids = new Set())
      ids.add(id)
    }
    this.evictOverflow()
    return true
  }

  async delete (ids: readonly string[]): Promise<number> {
    let count = 0
    for (const id of ids) {
      this.tombstones.set(id, { value: newTokenPart(), expiresAt: Date.now() + INVALIDATION_WINDOW_MS })
      if (this.live(id) !== undefined && this.remove(id)) count++
    }
    return count
  }

  async acquireLease (id: string, token: string, ttlMs: number): Promise<boolean> {
    if (this.current(this.leases, id) !== undefined) return false
    this.leases.set(id, { value: token, expiresAt: Date.now() + ttlMs })
    return true
  }

  async releaseLease (id: string, token: string): Promise<void> {
    if (this.current(this.leases, id) === token) this.leases.delete(id)
  }

  async exists (id: string): Promise<boolean> {
    const entry = this.live(id)
    return entry !== undefined && this.validity(entry) !== 'invalid'
  }

  async expire (id: string, seconds: number): Promise<boolean> {
    const entry = this.live(id)
    if (entry === undefined) return false
    if (seconds <= 0) return this.remove(id)
    entry.expiresAt = Date.now() + seconds * 1000
    for (const [tag] of entry.tags) {
      const token = this.tagTokens.get(tag)
      if (token !== undefined) token.expiresAt = Math.max(token.expiresAt, entry.expiresAt + 1000)
    }
    return true
  }

  async ttl (id: string): Promise<number> {
    const entry = this.live(id)
    return entry === undefined ? -2 : Math.ceil((entry.expiresAt - Date.now()) / 1000)
  }

  async invalidateTags (tags: readonly string[], options: { soft?: boolean } = {}): Promise<number> {
    let count = 0
    for (const tag of tags) {
      const [hard, soft] = tokenHalves(this.current(this.tagTokens, tag) ?? '.')
      const token = options.soft === true ? `${hard}.${newTokenPart()}` : `${newTokenPart()}.${soft}`
      const expiresAt = this.tagTokens.get(tag)?.expiresAt ?? Date.now() + INVALIDATION_WINDOW_MS
      this.tagTokens.set(tag, { value: token, expiresAt: Math.max(expiresAt, Date.now() + INVALIDATION_WINDOW_MS) })
      for (const id of [...this.tagIndex.get(tag) ?? []]) {
        if (this.live(id) === undefined) continue
        count++
        if (options.soft !== true) this.remove(id)
      }
    }
    return count
  }

  async deletePattern (glob: string): Promise<number> {
    // A new epoch refuses the writes of misses in flight, whose keys SCAN cannot see yet.
    this.epoch = newTokenPart()
    const matches = globMatcher(glob)
    let count = 0
    for (const id of [...this.entries.keys()]) if (matches(id) && this.live(id) !== undefined && this.remove(id)) count++
    return count
  }

  async info (): Promise<Record<string, string | number>> {
    this.sweep(this.tagTokens)
    this.sweep(this.tombstones)
    return {
      entries: this.entries.size,
      bytes: this.bytes,
      tags: this.tagTokens.size,
      maxEntries: this.options.maxEntries,
      maxBytes: this.options.maxBytes,
      evicted_keys: this.evictions,
      expired_keys: this.expirations
    }
  }

  async cleanup (): Promise<CleanupReport> {
    const started = performance.now()
    const before = this.tagTokens.size + this.tombstones.size
    this.sweep(this.tagTokens)
    this.sweep(this.tombstones)
    let scanned = 0
    for (const id of [...this.entries.keys()]) { scanned++; this.live(id) }
    return {
      scanned,
      removedWithoutTtl: 0,
      removedDangling: before - this.tagTokens.size - this.tombstones.size,
      entries: this.entries.size,
      bytes: this.bytes,
      durationMs: performance.now() - started
    }
  }

  async close (): Promise<void> {
    this.entries.clear()
    this.tagIndex.clear()
    this.tagTokens.clear()
    this.tombstones.clear()
    this.bytes = 0
  }

  private validity (entry: MemoryEntry): 'valid' | 'stale' | 'invalid' {
    let state: 'valid' | 'stale' = 'valid'
    for (const [tag, token] of entry.tags) {
      const current = this.current(this.tagTokens, tag)
      if (current === undefined) return 'invalid'
      const [hard, soft] = tokenHalves(token)
      const [currentHard, currentSoft] = tokenHalves(current)
      if (hard !== currentHard) return 'invalid'
      if (soft !== currentSoft) state = 'stale'
    }
    return state
  }

  private stampHolds (id: string, stamp: WriteStamp): boolean {
    if ((this.current(this.tombstones, id) ?? '') !== stamp.tombstone || this.epoch !== stamp.epoch) return false
    if ((this.live(id)?.version ?? '') !== stamp.version) return false
    return stamp.tags.every(([tag, token]) => this.current(this.tagTokens, tag) === token)
  }

  /** The tag's current token, created when missing, and kept alive for at least `ttlMs`. */
  private tagToken (tag: string, ttlMs: number): string {
    const now = Date.now()
    let token = this.tagTokens.get(tag)
    if (token === undefined || token.expiresAt <= now) {
      token = { value: `${newTokenPart()}.${newTokenPart()}`, expiresAt: now + ttlMs }
      this.tagTokens.set(tag, token)
    }
    token.expiresAt = Math.max(token.expiresAt, now + ttlMs)
    return token.value
  }

  private current (records: Map<string, Expiring>, name: string): string | undefined {
    const record = records.get(name)
    if (record === undefined) return undefined
    if (record.expiresAt > Date.now()) return record.value
    records.delete(name)
    return undefined
  }

  private sweep (records: Map<string, Expiring>): void {
    const now = Date.now()
    for (const [name, record] of records) if (record.expiresAt <= now) records.delete(name)
  }

  private touch (id: string, entry: MemoryEntry): void {
    this.entries.delete(id)
    this.entries.set(id, entry)
  }

  /** The entry when present and unexpired; an expired one is dropped on the way. */
  private live (id: string): MemoryEntry | undefined {
    const entry = this.entries.get(id)
    if (entry === undefined) return undefined
    if (entry.expiresAt > Date.now()) return entry
    this.remove(id)
    this.expirations++
    return undefined
  }

  private remove (id: string): boolean {
    const entry = this.entries.get(id)
    if (entry === undefined) return false
    this.entries.delete(id)
    this.bytes -= entry.bytes
    for (const [tag] of entry.tags) {
      const ids = this.tagIndex.get(tag)
      if (ids === undefined) continue
      ids.delete(id)
      if (ids.size === 0) this.tagIndex.delete(tag)
    }
    return true
  }

  private evictOverflow (): void {
    while (this.entries.size > this.options.maxEntries || this.bytes > this.options.maxBytes) {
      const oldest = this.entries.keys().next().value
      if (oldest === undefined) return
      this.remove(oldest)
      this.evictions++
    }
  }
}
