import { type CacheStore, type StoreSetOptions, globToRegExp } from './store'

export interface MemoryStoreOptions {
  /** Most entries kept; the least recently used go first. */
  maxEntries: number
  /** Most bytes kept (values plus ids). */
  maxBytes: number
}

interface MemoryEntry {
  value: Buffer
  expiresAt: number
  tags: readonly string[] | undefined
  bytes: number
}

/** A bounded in-process LRU store: the embedded default when no Redis is configured. */
export class MemoryStore implements CacheStore {
  readonly kind = 'memory'
  readonly local = true
  // A Map iterates in insertion order; re-inserting on read makes its first key the least recently used.
  private readonly entries = new Map<string, MemoryEntry>()
  private readonly tagIndex = new Map<string, Set<string>>()
  private bytes = 0
  private evictions = 0
  private expirations = 0

  constructor (private readonly options: MemoryStoreOptions) {}

  async get (id: string): Promise<Buffer | null> {
    const entry = this.live(id)
    if (entry === undefined) return null
    this.entries.delete(id)
    this.entries.set(id, entry)
    return entry.value
  }

  async set (id: string, value: Buffer, options: StoreSetOptions): Promise<void> {
    this.remove(id)
    const entry: MemoryEntry = { value, expiresAt: Date.now() + options.ttlMs, tags: options.tags, bytes: value.length + id.length }
    if (entry.bytes > this.options.maxBytes) return
    this.entries.set(id, entry)
    this.bytes += entry.bytes
    for (const tag of options.tags ?? []) {
      let ids = this.tagIndex.get(tag)
      if (ids === undefined) this.tagIndex.set(tag, ids = new Set())
      ids.add(id)
    }
    this.evictOverflow()
  }

  async delete (ids: readonly string[]): Promise<number> {
    let count = 0
    for (const id of ids) if (this.live(id) !== undefined && this.remove(id)) count++
    return count
  }

  async exists (id: string): Promise<boolean> {
    return this.live(id) !== undefined
  }

  async expire (id: string, seconds: number): Promise<boolean> {
    const entry = this.live(id)
    if (entry === undefined) return false
    if (seconds <= 0) return this.remove(id)
    entry.expiresAt = Date.now() + seconds * 1000
    return true
  }

  async ttl (id: string): Promise<number> {
    const entry = this.live(id)
    return entry === undefined ? -2 : Math.ceil((entry.expiresAt - Date.now()) / 1000)
  }

  async invalidateTags (tagIds: readonly string[]): Promise<number> {
    let count = 0
    for (const tag of tagIds) {
      for (const id of this.tagIndex.get(tag) ?? []) if (this.live(id) !== undefined && this.remove(id)) count++
      this.tagIndex.delete(tag)
    }
    return count
  }

  async deletePattern (glob: string): Promise<number> {
    const pattern = globToRegExp(glob)
    let count = 0
    for (const id of [...this.entries.keys()]) if (pattern.test(id) && this.live(id) !== undefined && this.remove(id)) count++
    return count
  }

  async info (): Promise<Record<string, string | number>> {
    return {
      entries: this.entries.size,
      bytes: this.bytes,
      maxEntries: this.options.maxEntries,
      maxBytes: this.options.maxBytes,
      evicted_keys: this.evictions,
      expired_keys: this.expirations
    }
  }

  async close (): Promise<void> {
    this.entries.clear()
    this.tagIndex.clear()
    this.bytes = 0
  }

  /** The entry when present and fresh; an expired one is dropped on the way. */
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
    for (const tag of entry.tags ?? []) {
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
