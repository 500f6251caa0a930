import type { Redis } from 'ioredis'
import { escapeGlob } from '../keys'
import { performance } from 'node:perf_hooks'
import { expire, invalidateTags, read, release, write } from './redis-scripts'
import { INVALIDATION_WINDOW_MS, type CacheStore, type CleanupReport, type StoreRead, type StoreSetOptions, type WriteStamp } from './store'
import { newTokenPart } from './tokens'

// Layout under the prefix (the scripts are in redis-scripts.ts):
//   e:<id>   the entry: a header line `@<version> tag=token tag=token`, a newline, then the value bytes
//   l:<id>   the lease of the instance computing the entry, if any
//   g:<tag>  the tag's current token `<hard>.<soft>`
//   t:<tag>  the set of entry keys written with the tag (to count and reclaim them on invalidation)
//   v:<id>   the key's tombstone, set by delete/invalidate, refusing writes of misses that read before it
//   p        the pattern epoch, changed by each pattern invalidation
// Token records, tag sets and tombstones all expire: tag records and sets with their longest-lived entry (plus a
// second), tombstones after the invalidation window. Nothing is kept without a TTL.

const INFO_FIELDS = [
  'redis_version', 'used_memory_human', 'connected_clients', 'total_commands_processed',
  'keyspace_hits', 'keyspace_misses', 'evicted_keys', 'expired_keys'
]
const BATCH = 500
const NEWLINE = 0x0a
const EQUALS = 0x3d
const OWN_KEY = /^(?:[egltv]:|p$)/

export class RedisStore implements CacheStore {
  readonly kind = 'redis'
  readonly local = false
  private readonly entryPrefix: string
  private readonly tokenPrefix: string
  private readonly tagSetPrefix: string
  private readonly tombstonePrefix: string
  private readonly epochKey: string
  private readonly leasePrefix: string

  constructor (private readonly client: Redis, private readonly prefix: string) {
    this.leasePrefix = prefix + ':l:'
    this.entryPrefix = prefix + ':e:'
    this.tokenPrefix = prefix + ':g:'
    this.tagSetPrefix = prefix + ':t:'
    this.tombstonePrefix = prefix + ':v:'
    this.epochKey = prefix + ':p'
  }

  async read (id: string, tags: readonly string[]): Promise<StoreRead> {
    const reply = await read.run(this.client, [this.entryPrefix + id, this.tombstonePrefix + id, this.epochKey, this.leasePrefix + id],
      [this.tokenPrefix, newTokenPart(), ...tags]) as [Buffer | null, number, Buffer, Buffer, Buffer, number, number, Buffer, ...Buffer[]]
    const [raw, state, tombstone, epoch, version, leased, ttlMs, entryTags, ...tokens] = reply
    const stamp: WriteStamp = {
      tombstone: tombstone.toString(),
      epoch: epoch.toString(),
      version: version.toString(),
      tags: tags.map((tag, i) => [tag, tokens[i].toString()] as const)
    }
    const value = raw === null || state >= 2 ? null : payload(raw)
    if (value === null) return { value, stale: false, corrupt: state === 3, leased: leased === 1, stamp }
    const named = entryTags.toString()
    return { value, stale: state === 1, leased: leased === 1, stamp, ttlMs, entryTags: named === '' ? [] : named.split(' ') }
  }

  async peek (id: string): Promise<Buffer | undefined> {
    let raw: Buffer | null
    try {
      raw = await this.client.getBuffer(this.entryPrefix + id)
    } catch (error) {
      // Another type at the key: the full read reports it as corrupt, and the miss's write replaces it.
      if (error instanceof Error && error.message.startsWith('WRONGTYPE')) return undefined
      throw error
    }
    if (raw === null) return undefined
    const newline = raw.indexOf(NEWLINE)
    const equals = raw.indexOf(EQUALS)
    // A header line with no `tag=token` pair: an untagged entry, valid for as long as it exists.
    return newline !== -1 && (equals === -1 || equals > newline) ? raw.subarray(newline + 1) : undefined
  }

  async get (id: string): Promise<Buffer | null> {
    return (await this.read(id, [])).value
  }

  async set (id: string, value: Buffer, options: StoreSetOptions): Promise<boolean> {
    const ttlMs = Math.max(1, Math.round(options.ttlMs))
    const stamp = options.stamp
    const captured = new Map(stamp?.tags)
    const pairs = (options.tags ?? []).flatMap((tag) => [tag, captured.get(tag) ?? ''])
    const written = await write.run(this.client, [this.entryPrefix + id, this.tombstonePrefix + id, this.epochKey], [
      this.tokenPrefix, this.tagSetPrefix, value, ttlMs, stamp === undefined ? '0' : '1',
      stamp?.tombstone ?? '', stamp?.epoch ?? '', stamp?.version ?? '', newTokenPart(), newTokenPart(), ...pairs
    ])
    return written === 1
  }

  async delete (ids: readonly string[]): Promise<number> {
    let count = 0
    for (let i = 0; i < ids.length; i += BATCH) {
      const batch = ids.slice(i, i + BATCH)
      const pipeline = this.client.pipeline()
      for (const id of batch) pipeline.set(this.tombstonePrefix + id, newTokenPart(), 'PX', INVALIDATION_WINDOW_MS)
      pipeline.unlink(...batch.map((id) => this.entryPrefix + id))
      const results = await pipeline.exec()
      const [error, unlinked] = results?.at(-1) ?? [new Error('no reply')]
      if (error !== null && error !== undefined) throw error
      count += Number(unlinked)
    }
    return count
  }

  async acquireLease (id: string, token: string, ttlMs: number): Promise<boolean> {
    return await this.client.set(this.leasePrefix + id, token, 'PX', ttlMs, 'NX') === 'OK'
  }

  async releaseLease (id: string, token: string): Promise<void> {
    await release.run(this.client, [this.leasePrefix + id], [token])
  }

  async exists (id: string): Promise<boolean> {
    return (await this.get(id)) !== null
  }

  async expire (id: string, seconds: number): Promise<boolean> {
    return await expire.run(this.client, [this.entryPrefix + id], [this.tokenPrefix, this.tagSetPrefix, seconds * 1000]) === 1
  }

  async ttl (id: string): Promise<number> {
    // PTTL rounded up, as the memory store does: TTL would report 0 for an entry that still has 400 ms to live.
    const ms = await this.client.pttl(this.entryPrefix + id)
    return ms < 0 ? ms : Math.ceil(ms / 1000)
  }

  async invalidateTags (tags: readonly string[], options: { soft?: boolean } = {}): Promise<number> {
    const soft = options.soft === true
    await invalidateTags.run(this.client, [], [this.tokenPrefix, soft ? 'soft' : 'hard', newTokenPart(), ...tags])
    let count = 0
    for (const tag of tags) count += await this.reclaim(tag, soft)
    return count
  }

  async deletePattern (glob: string): Promise<number> {
    // A new epoch refuses the writes of misses in flight, whose keys SCAN cannot see yet.
    await this.client.set(this.epochKey, newTokenPart(), 'PX', INVALIDATION_WINDOW_MS)
    // Only * and ? are wildcards in a store pattern; [ ] and \ are literal, as in the memory store.
    const match = escapeGlob(this.entryPrefix) + glob.replace(/[[\]\\]/g, '\\$&')
    let cursor = '0'
    let count = 0
    do {
      const [next, keys] = await this.client.scan(cursor, 'MATCH', match, 'COUNT', 1000)
      cursor = next
      if (keys.length > 0) count += await this.client.unlink(...keys)
    } while (cursor !== '0')
    return count
  }

  async info (): Promise<Record<string, string | number>> {
    const text = await this.client.info()
    const figures: Record<string, string | number> = {}
    for (const line of text.split('\r\n')) {
      const colon = line.indexOf(':')
      if (colon === -1) continue
      const name = line.slice(0, colon)
      if (!INFO_FIELDS.includes(name)) continue
      const value = line.slice(colon + 1)
      figures[name] = /^\d+$/.test(value) ? Number(value) : value
    }
    return figures
  }

  async cleanup (): Promise<CleanupReport> {
    const started = performance.now()
    const report: CleanupReport = { scanned: 0, removedWithoutTtl: 0, removedDangling: 0, entries: 0, bytes: 0, durationMs: 0 }
    let cursor = '0'
    do {
      const [next, scanned] = await this.client.scan(cursor, 'MATCH', escapeGlob(this.prefix) + ':*', 'COUNT', 1000)
      cursor = next
      // Only the plugin's own kinds of key: another namespace nested under this prefix is not ours to touch.
      const keys = scanned.filter((key) => OWN_KEY.test(key.slice(this.prefix.length + 1)))
      report.scanned += keys.length
      if (keys.length === 0) continue
      const pipeline = this.client.pipeline()
      for (const key of keys) {
        pipeline.pttl(key)
        if (key.startsWith(this.entryPrefix)) pipeline.strlen(key)
      }
      const replies = await pipeline.exec() ?? []
      const orphans: string[] = []
      let reply = 0
      for (const key of keys) {
        const ttl = replies[reply++]?.[1]
        if (ttl === -1) orphans.push(key)
        if (!key.startsWith(this.entryPrefix)) continue
        const length = Number(replies[reply++]?.[1] ?? 0)
        // Counted only when it stays: not an orphan about to go, nor one that expired since the SCAN.
        if (typeof ttl === 'number' && ttl > 0) {
          report.entries++
          report.bytes += length
        }
      }
      if (orphans.length > 0) report.removedWithoutTtl += await this.client.unlink(...orphans)
      for (const key of keys) {
        if (key.startsWith(this.tagSetPrefix) && !orphans.includes(key)) report.removedDangling += await this.pruneTagSet(key)
      }
    } while (cursor !== '0')
    report.durationMs = performance.now() - started
    return report
  }

  async close (): Promise<void> {
    // The client belongs to whoever created it; the plugin closes the ones it opened itself.
  }

  /** Removes the members of a tag set whose entries are gone, in batches; resolves to how many. */
  private async pruneTagSet (setKey: string): Promise<number> {
    let removed = 0
    await this.forEachMemberBatch(setKey, async (members) => {
      const pipeline = this.client.pipeline()
      for (const member of members) pipeline.exists(member)
      const replies = await pipeline.exec() ?? []
      const gone = members.filter((_, i) => replies[i]?.[1] === 0)
      if (gone.length > 0) removed += await this.client.srem(setKey, ...gone)
    })
    return removed
  }

  /**
   * Counts (and, after a hard invalidation, removes) the entries of a tag set that still carry the tag: an entry
   * rewritten without it stays in the set until the set expires, and must be neither counted nor removed.
   */
  private async reclaim (tag: string, soft: boolean): Promise<number> {
    const setKey = this.tagSetPrefix + tag
    const marker = ' ' + tag + '='
    let count = 0
    await this.forEachMemberBatch(setKey, async (members) => {
      const pipeline = this.client.pipeline()
      for (const member of members) pipeline.getrange(member, 0, 65535)
      const heads = await pipeline.exec() ?? []
      const carrying = members.filter((_, i) => {
        const head = heads[i]?.[1]
        return typeof head === 'string' && (' ' + head.slice(0, Math.max(0, head.indexOf('\n')))).includes(marker)
      })
      count += carrying.length
      if (!soft && carrying.length > 0) await this.client.unlink(...carrying)
    })
    if (!soft) await this.client.unlink(setKey)
    return count
  }

  /** SSCAN in batches, so that a large tag set never blocks Redis. */
  private async forEachMemberBatch (setKey: string, visit: (members: string[]) => Promise<void>): Promise<void> {
    let cursor = '0'
    do {
      const [next, members] = await this.client.sscan(setKey, cursor, 'COUNT', BATCH)
      cursor = next
      if (members.length > 0) await visit(members)
    } while (cursor !== '0')
  }
}

/** The value bytes after the entry's header line, without a copy. */
function payload (raw: Buffer): Buffer {
  return raw.subarray(raw.indexOf(NEWLINE) + 1)
}
