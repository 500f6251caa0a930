import type { Cluster, Redis } from 'ioredis'
import { escapeGlob } from '../keys'
import { performance } from 'node:perf_hooks'
import { type Call, batch, isCluster } from './redis-batch'
import { RedisLayout } from './redis-layout'
import { SharedReads } from './shared-reads'
import {
  type Arg, type RedisClient, deleteVersion, expireEntry, sendDirect, invalidateTag, readEntry, release, tagEntry, token, writeEntry
} from './redis-scripts'
import {
  INVALIDATION_WINDOW_MS, type CacheStore, type CleanupReport, type LeaseRequest, type StoreRead, type StoreSetOptions, type WriteStamp,
  tokenHalves
} from './store'
import { newTokenPart } from './tokens'

// The key layout is in redis-layout.ts, the Lua scripts in redis-scripts.ts. One code path serves a single node and
// a Redis Cluster: every script stays within one slot (an entry's keys, or one tag's), and what spans slots (an
// entry, its tags' tokens, the pattern epoch) takes separate commands, made safe by the tokens:
// - A read captures the tokens of the tags its write will carry (the stamp) and checks the entry's header against
//   their current values, so an entry whose tag was invalidated since it was written never reads as valid.
// - A stamped write puts the captured tokens in the header: if a tag was invalidated between the read and the write,
//   the entry reads as invalid (or stale) from the start, whatever the interleaving.
// - It checks the tombstone and the entry's version atomically with the write (same slot), then, after the write,
//   the pattern epoch and the tokens: when one changed since the read, it takes its entry back (if still its own).
//   Why this closes the race with deletePattern, which changes the epoch and then SCANs: either the epoch changed
//   before the re-check ran, and the re-check sees it; or it changed after, so the entry was written before the
//   change, hence before the SCAN began, and SCAN returns every key that exists for the whole of its iteration, so
//   the SCAN finds and removes it. A single node runs the write and the re-check in one pipeline, in order; a
//   cluster sends the re-check once the write has answered.
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

interface Header {
  version: string
  /** Tag and the token it had when the entry was written. */
  tags: Array<[string, string]>
}

/** The body of an entry with no `tag=token` pair in its header line: valid for as long as it exists. */
function untaggedBody (raw: Buffer | null): Buffer | undefined {
  if (raw === null) return undefined
  const newline = raw.indexOf(NEWLINE)
  if (newline === -1) return undefined
  // Searched backwards from the newline, so within the header line only: the body after it may be 50 KB.
  if (newline > 0 && raw.lastIndexOf(EQUALS, newline - 1) !== -1) return undefined
  return raw.subarray(newline + 1)
}

export class RedisStore implements CacheStore {
  readonly kind = 'redis'
  readonly local = false
  private readonly layout: RedisLayout
  /**
   * Peeks of one entry under way, joined by the peeks of it that come meanwhile. Writes and deletions end them; tag
   * invalidations need not, since a peek answers untagged entries only. Joiners get the same promise, by which the
   * deadline store above gives them the same deadline; a hung Redis still counts one failure per caller there.
   */
  private readonly peeks = new SharedReads<Buffer | undefined>()

  constructor (private readonly client: RedisClient, prefix: string) {
    this.layout = new RedisLayout(prefix)
  }

  /** The full Redis key of an entry. */
  entryKey (id: string): string {
    return this.layout.entry(id)
  }

  async read (id: string, tags: readonly string[], lease?: LeaseRequest): Promise<StoreRead> {
    const layout = this.layout
    const keys = [layout.entry(id), layout.tombstone(id), layout.lease(id)]
    const args = lease === undefined ? [] : [lease.token, Math.max(1, Math.round(lease.ttlMs))]
    let entryReply: unknown[]
    let epoch: unknown
    let tokens: unknown[]
    if (isCluster(this.client)) {
      [entryReply, epoch, ...tokens] = await batch(this.client, [
        { script: readEntry, keys, args },
        { command: 'get', args: [layout.epochKey] },
        ...tags.map((tag): Call => ({ command: 'get', args: [layout.token(tag)] }))
      ]) as [unknown[], unknown, ...unknown[]]
    } else {
      // One script reads the epoch and the tokens too: one command, no pipeline.
      entryReply = await readEntry.run(this.client, [...keys, layout.epochKey, ...tags.map((tag) => layout.token(tag))], args, true) as unknown[]
      ;[epoch, ...tokens] = entryReply.slice(6)
    }
    const [raw, wrongType, tombstone, leased, pttl, taken] = entryReply as [Buffer | null, number, Buffer, number, number, number]
    // A tag without a token record (never used, expired or evicted) gets one now, rarely: the stamp must capture a
    // definite token, which any later invalidation changes.
    const absent = tags.flatMap((_, i) => tokens[i] === null ? [i] : [])
    if (absent.length > 0) {
      const created = await batch(this.client, absent.map((i): Call =>
        ({ script: token, keys: [layout.token(tags[i] ?? '')], args: [newTagToken(), INVALIDATION_WINDOW_MS] })))
      absent.forEach((i, n) => { tokens[i] = created[n] })
    }
    const captured = tags.map((tag, i) => [tag, text(tokens[i])] as const)
    const header = raw === null || wrongType === 1 ? undefined : parseHeader(raw)
    const stamp: WriteStamp = { tombstone: tombstone.toString(), epoch: text(epoch), version: header?.version ?? '', tags: captured }
    const corrupt = wrongType === 1 || (raw !== null && header === undefined)
    if (raw === null || header === undefined) return { value: null, stale: false, corrupt, leased: leased === 1, leaseTaken: taken === 1, stamp }

    const state = await this.validity(header, new Map(captured))
    const value = state === 'invalid' ? null : raw.subarray(raw.indexOf(NEWLINE) + 1)
    return {
      value,
      stale: value !== null && state === 'stale',
      corrupt: false,
      leased: leased === 1,
      stamp,
      ...(value !== null && pttl > 0 ? { ttlMs: pttl } : {}),
      ...(value !== null ? { entryTags: header.tags.map(([tag]) => tag) } : {})
    }
  }

  peek (id: string): Promise<Buffer | undefined> {
    return this.peeks.share(id, () => this.peekOnce(id))
  }

  /**
   * One peek's read, and the value it finds: the joiners of a shared peek take the value as it is. Then, not await:
   * over many keys each peek is a read of its own, and each promise shows.
   */
  private peekOnce (id: string): Promise<Buffer | undefined> {
    return this.getEntry(id).then(untaggedBody, (error: unknown) => {
      // Another type at the key: the full read reports it as corrupt, and the miss's write replaces it.
      if (error instanceof Error && error.message.startsWith('WRONGTYPE')) return undefined
      throw error
    })
  }

  async get (id: string): Promise<Buffer | null> {
    return (await this.read(id, [])).value
  }

  /**
   * The plain GET of a peek, sent at once on a single node rather than auto-pipelined: alone in its batch (a quiet
   * app, one request at a time) an auto-pipelined command costs twice the CPU, and under load the two measured level.
   */
  private getEntry (id: string): Promise<Buffer | null> {
    const key = this.layout.entry(id)
    return isCluster(this.client) ? this.client.getBuffer(key) : sendDirect(this.client, 'get', [key]) as Promise<Buffer | null>
  }

  async set (id: string, value: Buffer, options: StoreSetOptions): Promise<boolean> {
    return await this.peeks.change(() => this.write(id, value, options))
  }

  private async write (id: string, value: Buffer, options: StoreSetOptions): Promise<boolean> {
    const layout = this.layout
    const ttlMs = Math.max(1, Math.round(options.ttlMs))
    const keep = ttlMs + 1000
    const tags = [...new Set(options.tags ?? [])]
    const entryKey = layout.entry(id)
    const version = newTokenPart()
    const tagCall = (tag: string, create: string): Call =>
      ({ script: tagEntry, keys: [layout.token(tag), layout.tagSet(tag)], args: [keep, entryKey, create] })
    const writeKeys = [entryKey, layout.tombstone(id), layout.lease(id)]
    const tagKeys = (): string[] => [layout.epochKey, ...tags.flatMap((tag) => [layout.token(tag), layout.tagSet(tag)])]
    const writeArgs = (mode: '0' | '1' | '2', header: string, stamp?: WriteStamp): Arg[] =>
      [mode, stamp?.tombstone ?? '', stamp?.version ?? '', ttlMs, header, value, options.lease ?? '']

    const stamp = options.stamp
    if (stamp === undefined) {
      // Not conditional: the header carries the tags' current tokens, created where there are none. On a single node
      // the script reads them as it writes; on a Cluster they live in other slots, and are read (or created) first.
      if (!isCluster(this.client)) {
        await writeEntry.run(this.client, [...writeKeys, ...tagKeys()],
          [...writeArgs('2', headerLine(version, [], [])), '', keep, ...tags.map(() => newTagToken()), ...tags], true)
        return true
      }
      const current = await batch(this.client, tags.map((tag) => tagCall(tag, newTagToken())))
      await writeEntry.run(this.client, writeKeys, writeArgs('0', headerLine(version, tags, current.map(text))))
      return true
    }

    const captured = new Map(stamp.tags)
    // A tag whose token the read did not capture cannot be checked: the write is refused, as after an invalidation.
    if (!tags.every((tag) => captured.has(tag))) return false
    const seen = tags.map((tag) => captured.get(tag) ?? '')
    const header = headerLine(version, tags, seen)
    if (!isCluster(this.client)) {
      // The script checks the epoch and the tags' tokens before it writes, and adds the entry to its tags' sets.
      const written = await writeEntry.run(this.client, [...writeKeys, ...tagKeys()], [...writeArgs('1', header, stamp), stamp.epoch, keep, ...seen], true)
      return written === 1
    }
    const written = await writeEntry.run(this.client, writeKeys, writeArgs('1', header, stamp))
    if (written !== 1) return false
    const [epoch, ...tokens] = await batch(this.client, [{ command: 'get', args: [layout.epochKey] }, ...tags.map((tag) => tagCall(tag, ''))])
    const intact = text(epoch) === stamp.epoch && seen.every((token, i) => text(tokens[i]) === token)
    if (intact) return true
    await deleteVersion.run(this.client, [entryKey], [version])
    return false
  }

  async delete (ids: readonly string[]): Promise<number> {
    return await this.peeks.change(() => this.deleteIds(ids))
  }

  private async deleteIds (ids: readonly string[]): Promise<number> {
    let count = 0
    for (let i = 0; i < ids.length; i += BATCH) {
      // Per id, the tombstone then the entry: the same slot, so the same connection, in that order.
      const replies = await batch(this.client, ids.slice(i, i + BATCH).flatMap((id): Call[] => [
        { command: 'set', args: [this.layout.tombstone(id), newTokenPart(), 'PX', INVALIDATION_WINDOW_MS] },
        { command: 'unlink', args: [this.layout.entry(id)] }
      ]))
      for (let r = 1; r < replies.length; r += 2) count += Number(replies[r])
    }
    return count
  }

  async acquireLease (id: string, token: string, ttlMs: number): Promise<boolean> {
    return await this.client.set(this.layout.lease(id), token, 'PX', ttlMs, 'NX') === 'OK'
  }

  async releaseLease (id: string, token: string): Promise<void> {
    await release.run(this.client, [this.layout.lease(id)], [token])
  }

  async exists (id: string): Promise<boolean> {
    return (await this.get(id)) !== null
  }

  async expire (id: string, seconds: number): Promise<boolean> {
    const ms = seconds * 1000
    const head = await expireEntry.run(this.client, [this.layout.entry(id)], [ms])
    if (head === null) return false
    // Keeps the entry's tag records alive as long as it.
    const { tags } = parseHeaderLine(text(head))
    await batch(this.client, tags.map(([tag]): Call =>
      ({ script: tagEntry, keys: [this.layout.token(tag), this.layout.tagSet(tag)], args: [ms + 1000, '', ''] })))
    return true
  }

  async ttl (id: string): Promise<number> {
    // PTTL rounded up, as the memory store does: TTL would report 0 for an entry that still has 400 ms to live.
    const ms = await this.client.pttl(this.layout.entry(id))
    return ms < 0 ? ms : Math.ceil(ms / 1000)
  }

  async invalidateTags (tags: readonly string[], options: { soft?: boolean } = {}): Promise<number> {
    const soft = options.soft === true
    const part = newTokenPart()
    await batch(this.client, tags.map((tag): Call => ({ script: invalidateTag, keys: [this.layout.token(tag)], args: [soft ? 'soft' : 'hard', part] })))
    let count = 0
    for (const tag of tags) count += await this.reclaim(tag, soft)
    return count
  }

  async deletePattern (glob: string): Promise<number> {
    return await this.peeks.change(() => this.deleteMatching(glob))
  }

  private async deleteMatching (glob: string): Promise<number> {
    // A new epoch refuses the writes of misses in flight, whose keys SCAN cannot see yet.
    await this.client.set(this.layout.epochKey, newTokenPart(), 'PX', INVALIDATION_WINDOW_MS)
    // Only * and ? are wildcards in a store pattern; [ ] and \ are literal, as in the memory store.
    const match = escapeGlob(this.layout.entryPrefix) + '{' + glob.replace(/[[\]\\]/g, '\\$&') + '}'
    const emptyIdKey = this.layout.entry('')
    const matchesEmpty = /^\**$/.test(glob)
    let count = 0
    await this.scanEveryMaster(match, async (node, found) => {
      // The empty id's key holds a stand-in that a glob may match although it does not match the empty id.
      const keys = found.filter((key) => key !== emptyIdKey || matchesEmpty)
      const replies = await batch(node, keys.map((key): Call => ({ command: 'unlink', args: [key] })))
      for (const reply of replies) count += Number(reply)
    })
    return count
  }

  async info (): Promise<Record<string, string | number>> {
    const masters = this.masters()
    const texts = await Promise.all(masters.map((node) => node.info()))
    if (texts.length === 1) return infoFigures(texts[0] ?? '', INFO_FIELDS)
    // A cluster: the counters of every master added up, its memory too, and how many masters there are.
    const figures: Record<string, string | number> = { cluster_masters: texts.length }
    let usedMemory = 0
    for (const info of texts) {
      const own = infoFigures(info, [...INFO_FIELDS, 'used_memory'])
      for (const [name, value] of Object.entries(own)) {
        if (name === 'used_memory') usedMemory += Number(value)
        else if (typeof value === 'number') figures[name] = Number(figures[name] ?? 0) + value
        else figures[name] ??= value
      }
    }
    figures['used_memory_human'] = humanBytes(usedMemory)
    return figures
  }

  async cleanup (): Promise<CleanupReport> {
    const started = performance.now()
    const report: CleanupReport = { scanned: 0, removedWithoutTtl: 0, removedDangling: 0, entries: 0, bytes: 0, durationMs: 0 }
    const { prefix, entryPrefix, tagSetPrefix } = this.layout
    const tagSets: string[] = []
    await this.scanEveryMaster(escapeGlob(prefix) + ':*', async (node, scanned) => {
      // Only the plugin's own kinds of key: another namespace nested under this prefix is not ours to touch.
      const keys = scanned.filter((key) => OWN_KEY.test(key.slice(prefix.length + 1)))
      report.scanned += keys.length
      if (keys.length === 0) return
      const replies = await batch(node, keys.flatMap((key): Call[] => key.startsWith(entryPrefix)
        ? [{ command: 'pttl', args: [key] }, { command: 'strlen', args: [key] }]
        : [{ command: 'pttl', args: [key] }]), { settle: true })
      const orphans: string[] = []
      let reply = 0
      for (const key of keys) {
        const ttl = replies[reply++]
        if (ttl === -1) orphans.push(key)
        if (key.startsWith(tagSetPrefix) && ttl !== -1) tagSets.push(key)
        if (!key.startsWith(entryPrefix)) continue
        const length = replies[reply++]
        // Counted only when it stays: not an orphan about to go, nor one that expired since the SCAN.
        if (typeof ttl === 'number' && ttl > 0) {
          report.entries++
          report.bytes += typeof length === 'number' ? length : 0
        }
      }
      const removed = await batch(node, orphans.map((key): Call => ({ command: 'unlink', args: [key] })))
      for (const count of removed) report.removedWithoutTtl += Number(count)
    })
    for (const setKey of tagSets) report.removedDangling += await this.pruneTagSet(setKey)
    report.durationMs = performance.now() - started
    return report
  }

  async close (): Promise<void> {
    // The client belongs to whoever created it; the plugin closes the ones it opened itself.
  }

  /** Whether a tagged entry is still valid: its tags' tokens now, from the read when it captured them. */
  private async validity (header: Header, captured: ReadonlyMap<string, string>): Promise<'valid' | 'stale' | 'invalid'> {
    const missing = header.tags.map(([tag]) => tag).filter((tag) => !captured.has(tag))
    const current = new Map(captured)
    if (missing.length > 0) {
      const fetched = await batch(this.client, missing.map((tag): Call => ({ command: 'get', args: [this.layout.token(tag)] })))
      missing.forEach((tag, i) => { if (fetched[i] !== null) current.set(tag, text(fetched[i])) })
    }
    let state: 'valid' | 'stale' = 'valid'
    for (const [tag, recorded] of header.tags) {
      const now = current.get(tag)
      if (now === undefined) return 'invalid'
      const [hard, soft] = tokenHalves(recorded)
      const [nowHard, nowSoft] = tokenHalves(now)
      if (hard !== nowHard) return 'invalid'
      if (soft !== nowSoft) state = 'stale'
    }
    return state
  }

  /** The nodes holding the data: every master of a cluster, or the one server. */
  private masters (): Redis[] {
    if (!isCluster(this.client)) return [this.client as Redis]
    const masters = (this.client as Cluster).nodes('master')
    // Before the client knows the cluster's nodes, a SCAN of "every master" would silently scan none.
    if (masters.length === 0) throw new Error('no Redis Cluster master is known yet')
    return masters
  }

  /** SCAN on every master, in batches; `visit` gets the node each batch came from, to act on it directly. */
  private async scanEveryMaster (match: string, visit: (node: Redis, keys: string[]) => Promise<void>): Promise<void> {
    for (const node of this.masters()) {
      let cursor = '0'
      do {
        const [next, keys] = await node.scan(cursor, 'MATCH', match, 'COUNT', 1000)
        cursor = next
        if (keys.length > 0) await visit(node, keys)
      } while (cursor !== '0')
    }
  }

  /** Removes the members of a tag set whose entries are gone, in batches; resolves to how many. */
  private async pruneTagSet (setKey: string): Promise<number> {
    let removed = 0
    await this.forEachMemberBatch(setKey, async (members) => {
      const replies = await batch(this.client, members.map((member): Call => ({ command: 'exists', args: [member] })), { settle: true })
      const gone = members.filter((_, i) => replies[i] === 0)
      if (gone.length > 0) removed += await this.client.srem(setKey, ...gone)
    })
    return removed
  }

  /**
   * Counts (and, after a hard invalidation, removes) the entries of a tag set that still carry the tag: an entry
   * rewritten without it stays in the set until the set expires, and must be neither counted nor removed.
   */
  private async reclaim (tag: string, soft: boolean): Promise<number> {
    const setKey = this.layout.tagSet(tag)
    let count = 0
    await this.forEachMemberBatch(setKey, async (members) => {
      const heads = await batch(this.client, members.map((member): Call => ({ command: 'getrange', args: [member, 0, 65535] })), { settle: true })
      const carrying = members.filter((_, i) => {
        const head = heads[i]
        return Buffer.isBuffer(head) && parseHeaderLine(head.toString('latin1').split('\n', 1)[0] ?? '').tags.some(([name]) => name === tag)
      })
      count += carrying.length
      if (!soft) await batch(this.client, carrying.map((key): Call => ({ command: 'unlink', args: [key] })))
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

/** A reply as text: '' for none. */
function text (reply: unknown): string {
  return reply === null || reply === undefined ? '' : String(reply)
}

/**
 * A new tag's token: a fresh hard half and an empty soft one, which the first soft invalidation fills. Every entry
 * carries its tags' tokens in its header, so the empty half saves a token's length per tag in every entry.
 */
function newTagToken (): string {
  return newTokenPart() + '.'
}

/** The header of stored bytes, or undefined when they are not an entry (no header line). */
function parseHeader (raw: Buffer): Header | undefined {
  const newline = raw.indexOf(NEWLINE)
  return newline === -1 ? undefined : parseHeaderLine(raw.toString('latin1', 0, newline))
}

/** `@<version> tag=token tag=token`: ids, tags and tokens are ASCII, so latin1 reads them as written. */
function parseHeaderLine (line: string): Header {
  // As the scripts read it (redis-scripts.ts): token characters that end within the first 64 bytes, or none.
  const version = /^@([A-Za-z0-9_-]{1,62})(?= |$)/.exec(line)?.[1] ?? ''
  const tags: Array<[string, string]> = []
  for (const match of line.matchAll(/([^ =]+)=([^ ]+)/g)) tags.push([match[1] ?? '', match[2] ?? ''])
  return { version, tags }
}

function headerLine (version: string, tags: readonly string[], tokens: readonly string[]): string {
  return ['@' + version, ...tags.map((tag, i) => tag + '=' + (tokens[i] ?? ''))].join(' ')
}

function infoFigures (info: string, fields: readonly string[]): Record<string, string | number> {
  const figures: Record<string, string | number> = {}
  for (const line of info.split('\r\n')) {
    const colon = line.indexOf(':')
    if (colon === -1) continue
    const name = line.slice(0, colon)
    if (!fields.includes(name)) continue
    const value = line.slice(colon + 1)
    figures[name] = /^\d+$/.test(value) ? Number(value) : value
  }
  return figures
}

/** Bytes as Redis's used_memory_human writes them (1.50M). */
function humanBytes (bytes: number): string {
  const units = ['B', 'K', 'M', 'G', 'T']
  let value = bytes
  let unit = 0
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024
    unit++
  }
  return unit === 0 ? `${value}B` : `${value.toFixed(2)}${units[unit]}`
}
