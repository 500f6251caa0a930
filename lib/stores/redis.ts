import { createHash } from 'node:crypto'
import type { Redis } from 'ioredis'
import { escapeGlob } from '../keys'
import { performance } from 'node:perf_hooks'
import { INVALIDATION_WINDOW_MS, type CacheStore, type CleanupReport, type StoreRead, type StoreSetOptions, type WriteStamp } from './store'
import { newTokenPart } from './tokens'

// Layout under the prefix:
//   e:<id>   the entry: a header line `@<version> tag=token tag=token`, a newline, then the value bytes
//   l:<id>   the lease of the instance computing the entry, if any
//   g:<tag>  the tag's current token `<hard>.<soft>`
//   t:<tag>  the set of entry keys written with the tag (to count and reclaim them on invalidation)
//   v:<id>   the key's tombstone, set by delete/invalidate, refusing writes of misses that read before it
//   p        the pattern epoch, changed by each pattern invalidation
// Token records, tag sets and tombstones all expire: tag records and sets with their longest-lived entry (plus a
// second), tombstones after the invalidation window. Nothing is kept without a TTL.

// KEYS: entry, tombstone, epoch, lease. ARGV: tag token prefix, a new token part, then the tags whose tokens to capture.
// Returns: value or false, validity (0 valid, 1 stale, 2 invalid, 3 corrupt), tombstone, epoch, the entry's version (even when
// invalid: a conditional write compares it with what is there), whether a lease is held, captured tokens...
const READ = `
local value = redis.pcall('GET', KEYS[1])
local state = 0
local version = ''
-- Something that is not an entry (another type, or bytes without a header line) reads as corrupt (3), so that the
-- miss's write replaces it.
if type(value) == 'table' then value = false state = 3 end
if value then
  local newline = string.find(value, '\\n', 1, true)
  if not newline then state = 3 else
    local header = string.sub(value, 1, newline - 1)
    version = string.match(header, '^@([^ ]+)') or ''
    for tag, token in string.gmatch(header, '([^ =]+)=([^ ]+)') do
      local current = redis.call('GET', ARGV[1] .. tag)
      if not current then state = 2 break end
      local hard, soft = string.match(token, '^([^.]*)%.(.*)$')
      local currentHard, currentSoft = string.match(current, '^([^.]*)%.(.*)$')
      if hard ~= currentHard then state = 2 break end
      if soft ~= currentSoft then state = 1 end
    end
  end
end
local result = { value or false, state, redis.call('GET', KEYS[2]) or '', redis.call('GET', KEYS[3]) or '', version, redis.call('EXISTS', KEYS[4]) }
for i = 3, #ARGV do
  local key = ARGV[1] .. ARGV[i]
  local token = redis.call('GET', key)
  if not token then
    token = ARGV[2] .. '.' .. ARGV[2]
    redis.call('SET', key, token, 'PX', ${INVALIDATION_WINDOW_MS})
  end
  result[#result + 1] = token
end
return result`

// KEYS: entry, tombstone, epoch. ARGV: tag token prefix, tag set prefix, value, ttl ms, '1' when stamped,
// tombstone, epoch and entry version of the stamp, a new token part, the new version, then pairs of tag and the token
// the stamp saw. A stamped write is refused when the entry was rewritten since the read (a late writer whose lease
// expired must not overwrite a newer value) or anything it depends on was invalidated.
const WRITE = `
local stamped = ARGV[5] == '1'
if stamped then
  if (redis.call('GET', KEYS[2]) or '') ~= ARGV[6] or (redis.call('GET', KEYS[3]) or '') ~= ARGV[7] then return 0 end
  local head = redis.pcall('GETRANGE', KEYS[1], 0, 63)
  if type(head) ~= 'string' then head = '' end
  if (string.match(head, '^@([^ \\n]+)') or '') ~= ARGV[8] then return 0 end
end
local ttl = tonumber(ARGV[4])
local keep = ttl + 1000
local header = { '@' .. ARGV[10] }
for i = 11, #ARGV, 2 do
  local tag = ARGV[i]
  local tokenKey = ARGV[1] .. tag
  local current = redis.call('GET', tokenKey)
  if stamped and current ~= ARGV[i + 1] then return 0 end
  if not current then
    current = ARGV[9] .. '.' .. ARGV[9]
    redis.call('SET', tokenKey, current, 'PX', keep)
  elseif redis.call('PTTL', tokenKey) < keep then
    redis.call('PEXPIRE', tokenKey, keep)
  end
  local setKey = ARGV[2] .. tag
  redis.call('SADD', setKey, KEYS[1])
  if redis.call('PTTL', setKey) < keep then redis.call('PEXPIRE', setKey, keep) end
  header[#header + 1] = tag .. '=' .. current
end
redis.call('SET', KEYS[1], table.concat(header, ' ') .. '\\n' .. ARGV[3], 'PX', ttl)
return 1`

// ARGV: tag token prefix, 'hard' or 'soft', a new token part, then the tags. Changing the token is the invalidation
// itself, O(1) per tag; removing the entries afterwards only reclaims memory.
const INVALIDATE_TAGS = `
for i = 4, #ARGV do
  local key = ARGV[1] .. ARGV[i]
  local hard, soft = string.match(redis.call('GET', key) or '.', '^([^.]*)%.(.*)$')
  if ARGV[2] == 'hard' then hard = ARGV[3] else soft = ARGV[3] end
  if redis.call('PTTL', key) > ${INVALIDATION_WINDOW_MS} then
    redis.call('SET', key, hard .. '.' .. soft, 'KEEPTTL')
  else
    redis.call('SET', key, hard .. '.' .. soft, 'PX', ${INVALIDATION_WINDOW_MS})
  end
end
return 1`

// KEYS: entry. ARGV: tag token prefix, tag set prefix, ttl ms. Keeps the entry's tag records alive as long as it.
const EXPIRE = `
local ttl = tonumber(ARGV[3])
if redis.call('PEXPIRE', KEYS[1], ttl) == 0 then return 0 end
local value = redis.call('GETRANGE', KEYS[1], 0, 65535)
local newline = string.find(value, '\\n', 1, true)
if newline then
  for tag in string.gmatch(string.sub(value, 1, newline - 1), '([^ =]+)=[^ ]+') do
    for _, key in ipairs({ ARGV[1] .. tag, ARGV[2] .. tag }) do
      if redis.call('PTTL', key) < ttl + 1000 then redis.call('PEXPIRE', key, ttl + 1000) end
    end
  end
end
return 1`

// KEYS: lease. ARGV: token. Deletes the lease only if this holder still has it.
const RELEASE = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`

const INFO_FIELDS = [
  'redis_version', 'used_memory_human', 'connected_clients', 'total_commands_processed',
  'keyspace_hits', 'keyspace_misses', 'evicted_keys', 'expired_keys'
]
const BATCH = 500
const NEWLINE = 0x0a
const EQUALS = 0x3d
const OWN_KEY = /^(?:[egltv]:|p$)/

/** A Lua script run by its SHA, sent whole only when Redis does not know it yet (after a restart, say). */
class Script {
  private readonly sha: string
  constructor (private readonly source: string) {
    this.sha = createHash('sha1').update(source).digest('hex')
  }

  async run (client: Redis, keys: string[], args: Array<string | number | Buffer>): Promise<unknown> {
    try {
      return await client.callBuffer('EVALSHA', this.sha, keys.length, ...keys, ...args)
    } catch (error) {
      if (!(error instanceof Error) || !error.message.startsWith('NOSCRIPT')) throw error
      return await client.callBuffer('EVAL', this.source, keys.length, ...keys, ...args)
    }
  }
}

const read = new Script(READ)
const write = new Script(WRITE)
const invalidateTags = new Script(INVALIDATE_TAGS)
const expire = new Script(EXPIRE)
const release = new Script(RELEASE)

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
      [this.tokenPrefix, newTokenPart(), ...tags]) as [Buffer | null, number, Buffer, Buffer, Buffer, number, ...Buffer[]]
    const [raw, state, tombstone, epoch, version, leased, ...tokens] = reply
    const stamp: WriteStamp = {
      tombstone: tombstone.toString(),
      epoch: epoch.toString(),
      version: version.toString(),
      tags: tags.map((tag, i) => [tag, tokens[i].toString()] as const)
    }
    const value = raw === null || state >= 2 ? null : payload(raw)
    return { value, stale: value !== null && state === 1, corrupt: state === 3, leased: leased === 1, stamp }
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
