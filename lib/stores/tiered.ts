import type { BusListener, BusMessage, InvalidationBus } from '../bus'
import { PEEK_REMOTELY, type CacheStore, type CleanupReport, type LeaseRequest, type StoreRead, type StoreSetOptions, type WriteStamp } from './store'
import { SharedReads } from './shared-reads'

export interface LocalTierOptions {
  /** Most entries held in the process; the least recently used go first. */
  maxEntries: number
  /** Most bytes held (values plus ids). */
  maxBytes: number
  /** Longest an entry is held, in milliseconds, however long it has left in Redis: the bound on a lost message. */
  ttlMs: number
}

interface Held {
  value: Buffer
  /** What the remote read that filled it saw: a later conditional write is checked against it. */
  stamp: WriteStamp
  /** The tags whose invalidation drops it. */
  tags: readonly string[]
  expiresAt: number
  bytes: number
}

/**
 * An in-process tier (L1) in front of a remote store (L2, Redis): a hit here costs no network. It holds only what
 * the remote store said was valid, never longer than the entry has left there nor than `ttlMs`, and drops what any
 * instance invalidates or rewrites: local changes directly, other instances' through the bus. While the bus is not
 * subscribed, every call goes to the remote store and nothing is held.
 *
 * A held entry keeps the stamp of the read that filled it: nothing it depends on has changed since, or the bus would
 * have dropped it, so a miss or refresh that starts from it writes back under the same conditions as one that had
 * read Redis itself.
 */
export class TieredStore implements CacheStore, BusListener {
  readonly kind: string
  readonly local = false
  /** A hit hands back the same Buffer each time, so decoding it once pays. */
  readonly keepsValues = true
  private bus: InvalidationBus | undefined
  // A Map iterates in insertion order; re-inserting on a hit makes its first key the least recently used.
  private readonly held = new Map<string, Held>()
  private readonly byTag = new Map<string, Set<string>>()
  private bytes = 0
  private hits = 0
  private misses = 0
  /**
   * Remote reads under way to fill the tier, by id and tags: concurrent misses of one id (all the requests for a hot
   * key when its copy here expires) share one, unless an invalidation was seen since it started. Its generation moves
   * with every invalidation seen: a remote read that started before one may have seen the old value, and must not put
   * it here after the invalidation dropped what was held.
   */
  private readonly fills = new SharedReads<StoreRead>()
  /** Lease waiters of this instance, woken when another instance writes the id they wait for. */
  private readonly waiters = new Map<string, Set<() => void>>()

  constructor (private readonly remote: CacheStore, private readonly options: LocalTierOptions) {
    this.kind = `memory+${remote.kind}`
  }

  /** The bus this tier listens to and publishes on; the tier is bypassed until it is attached and subscribed. */
  attach (bus: InvalidationBus): void {
    this.bus = bus
  }

  async read (id: string, tags: readonly string[], lease?: LeaseRequest): Promise<StoreRead> {
    const bus = this.bus
    if (bus === undefined || !bus.connected) return await this.remote.read(id, tags, lease)
    const held = this.live(id)
    // The stamp must cover every tag the caller's write would carry.
    if (held !== undefined && tags.every((tag) => held.stamp.tags.some(([name]) => name === tag))) {
      this.hits++
      this.held.delete(id)
      this.held.set(id, held)
      return { value: held.value, stale: false, stamp: held.stamp, ttlMs: held.expiresAt - Date.now() }
    }
    this.misses++
    const fill = tags.length === 0 ? id : id + '\n' + tags.join('\n')
    const generation = this.fills.generation
    let own = false
    const found = await this.fills.share(fill, async () => { own = true; return await this.remote.read(id, tags, lease) })
    // A lease that read took belongs to its own caller.
    if (!own) return found.leaseTaken === true ? { ...found, leaseTaken: false, leased: true } : found
    if (found.value !== null && !found.stale && found.corrupt !== true && generation === this.fills.generation && bus.connected) {
      // Dropped by its own tags, and by those its stamp holds a token of, or a write from that stamp would be refused.
      const byTags = new Set([...found.entryTags ?? [], ...tags])
      this.hold(id, found.value, found.stamp, [...byTags], found.ttlMs)
    }
    return found
  }

  /** Held entries only: they are valid whatever their tags. Otherwise the full read, which fills the tier. */
  async peek (id: string): Promise<Buffer | undefined> {
    const here = this.peekSync(id)
    return here === PEEK_REMOTELY ? await this.remote.peek(id) : here
  }

  peekSync (id: string): Buffer | undefined | typeof PEEK_REMOTELY {
    const bus = this.bus
    if (bus === undefined || !bus.connected) return PEEK_REMOTELY
    const held = this.live(id)
    if (held === undefined) return undefined
    this.hits++
    return held.value
  }

  async get (id: string): Promise<Buffer | null> {
    return (await this.read(id, [])).value
  }

  async set (id: string, value: Buffer, options: StoreSetOptions): Promise<boolean> {
    const written = await this.remote.set(id, value, options)
    // The next read fills from Redis, with the stamp of what is there now.
    if (written) this.changed({ kind: 'ids', ids: [id] })
    return written
  }

  async delete (ids: readonly string[]): Promise<number> {
    const count = await this.remote.delete(ids)
    this.changed({ kind: 'ids', ids })
    return count
  }

  async expire (id: string, seconds: number): Promise<boolean> {
    const done = await this.remote.expire(id, seconds)
    if (done) this.changed({ kind: 'ids', ids: [id] })
    return done
  }

  async invalidateTags (tags: readonly string[], options?: { soft?: boolean }): Promise<number> {
    const count = await this.remote.invalidateTags(tags, options)
    // Soft as well: a stale entry is served from Redis's answer, which says it is stale.
    this.changed({ kind: 'tags', tags })
    return count
  }

  async deletePattern (glob: string): Promise<number> {
    const count = await this.remote.deletePattern(glob)
    this.changed({ kind: 'pattern', glob })
    return count
  }

  acquireLease (id: string, token: string, ttlMs: number): Promise<boolean> { return this.remote.acquireLease(id, token, ttlMs) }
  releaseLease (id: string, token: string): Promise<void> { return this.remote.releaseLease(id, token) }
  exists (id: string): Promise<boolean> { return this.remote.exists(id) }
  ttl (id: string): Promise<number> { return this.remote.ttl(id) }
  cleanup (): Promise<CleanupReport> { return this.remote.cleanup() }

  async info (): Promise<Record<string, string | number>> {
    return {
      ...await this.remote.info(),
      memoryEntries: this.held.size,
      memoryBytes: this.bytes,
      memoryHits: this.hits,
      memoryMisses: this.misses,
      bus: this.bus?.connected === true ? 'subscribed' : 'down'
    }
  }

  async close (): Promise<void> {
    this.reset()
    await this.remote.close()
  }

  apply (message: BusMessage): void {
    this.fills.changed()
    if (message.kind === 'ids') {
      for (const id of message.ids) {
        this.drop(id)
        for (const wake of [...this.waiters.get(id) ?? []]) wake()
      }
    } else if (message.kind === 'tags') {
      for (const tag of message.tags) for (const id of [...this.byTag.get(tag) ?? []]) this.drop(id)
    } else {
      // Every held stamp carries the pattern epoch the pattern just changed: none could write back any more.
      this.reset()
    }
  }

  /** Resolves when an instance writes or drops the id, or after ms at the latest. */
  nextChange (id: string, ms: number): Promise<void> {
    return new Promise((resolve) => {
      let waiting = this.waiters.get(id)
      if (waiting === undefined) this.waiters.set(id, waiting = new Set())
      const wake = (): void => {
        clearTimeout(timer)
        waiting.delete(wake)
        if (waiting.size === 0) this.waiters.delete(id)
        resolve()
      }
      const timer = setTimeout(wake, ms)
      waiting.add(wake)
    })
  }

  reset (): void {
    this.fills.changed()
    this.held.clear()
    this.byTag.clear()
    this.bytes = 0
  }

  /** A change made here: applied to this tier at once, then sent to the others. */
  private changed (message: BusMessage): void {
    this.apply(message)
    this.bus?.publish(message)
  }

  private hold (id: string, value: Buffer, stamp: WriteStamp, tags: readonly string[], ttlMs = this.options.ttlMs): void {
    const bytes = value.length + id.length
    if (bytes > this.options.maxBytes || ttlMs <= 0) return
    this.drop(id)
    // A reply's Buffer may be a slice of a larger one that holding it would keep alive, and a small copy would come
    // from Node's shared pool: an unpooled copy of its own, so that maxBytes bounds the memory held.
    const own = value.byteLength === value.buffer.byteLength ? value : Buffer.allocUnsafeSlow(value.byteLength).fill(value)
    this.held.set(id, { value: own, stamp, tags, expiresAt: Date.now() + Math.min(ttlMs, this.options.ttlMs), bytes })
    this.bytes += bytes
    for (const tag of tags) {
      let ids = this.byTag.get(tag)
      if (ids === undefined) this.byTag.set(tag, ids = new Set())
      ids.add(id)
    }
    while (this.held.size > this.options.maxEntries || this.bytes > this.options.maxBytes) {
      const oldest = this.held.keys().next().value
      if (oldest === undefined) break
      this.drop(oldest)
    }
  }

  private live (id: string): Held | undefined {
    const held = this.held.get(id)
    if (held === undefined) return undefined
    if (held.expiresAt > Date.now()) return held
    this.drop(id)
    return undefined
  }

  private drop (id: string): void {
    const held = this.held.get(id)
    if (held === undefined) return
    this.held.delete(id)
    this.bytes -= held.bytes
    for (const tag of held.tags) {
      const ids = this.byTag.get(tag)
      ids?.delete(id)
      if (ids?.size === 0) this.byTag.delete(tag)
    }
  }
}
