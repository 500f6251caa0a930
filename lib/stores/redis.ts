import { createHash } from 'node:crypto'
import type { Redis } from 'ioredis'
import { escapeGlob } from '../keys'
import { type CacheStore, type StoreSetOptions } from './store'

// Each tagged entry has a companion set `<prefix>:m:<id>` naming its tags, so that an overwrite or a new TTL can find
// the tag sets it must leave or extend. A tag set lives as long as its longest-lived entry: tag bookkeeping expires
// with the data (plus a second, so that it never expires before the entry by a rounding). Both scripts run
// atomically, so no tag set ever misses an entry it should name.
const SET_ENTRY = `
local old = redis.call('SMEMBERS', KEYS[2])
for _, tag in ipairs(old) do redis.call('SREM', ARGV[3] .. tag, KEYS[1]) end
if #old > 0 then redis.call('DEL', KEYS[2]) end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
local ttl = tonumber(ARGV[2])
for i = 4, #ARGV do
  local tagKey = ARGV[3] .. ARGV[i]
  redis.call('SADD', tagKey, KEYS[1])
  if redis.call('PTTL', tagKey) < ttl + 1000 then redis.call('PEXPIRE', tagKey, ttl + 1000) end
  redis.call('SADD', KEYS[2], ARGV[i])
end
if #ARGV > 3 then redis.call('PEXPIRE', KEYS[2], ttl) end
return 1`

const EXPIRE_ENTRY = `
local ttl = tonumber(ARGV[1])
if redis.call('PEXPIRE', KEYS[1], ttl) == 0 then return 0 end
if redis.call('PEXPIRE', KEYS[2], ttl) == 1 then
  for _, tag in ipairs(redis.call('SMEMBERS', KEYS[2])) do
    local tagKey = ARGV[2] .. tag
    redis.call('SADD', tagKey, KEYS[1])
    if redis.call('PTTL', tagKey) < ttl + 1000 then redis.call('PEXPIRE', tagKey, ttl + 1000) end
  end
end
return 1`

const INFO_FIELDS = [
  'redis_version', 'used_memory_human', 'connected_clients', 'total_commands_processed',
  'keyspace_hits', 'keyspace_misses', 'evicted_keys', 'expired_keys'
]
const BATCH = 500

/** A Lua script run by its SHA, sent whole only when Redis does not know it yet (after a restart, say). */
class Script {
  private readonly sha: string
  constructor (private readonly source: string) {
    this.sha = createHash('sha1').update(source).digest('hex')
  }

  async run (client: Redis, keys: string[], args: Array<string | number | Buffer>): Promise<unknown> {
    try {
      return await client.evalsha(this.sha, keys.length, ...keys, ...args)
    } catch (error) {
      if (!(error instanceof Error) || !error.message.startsWith('NOSCRIPT')) throw error
      return await client.eval(this.source, keys.length, ...keys, ...args)
    }
  }
}

const setEntry = new Script(SET_ENTRY)
const expireEntry = new Script(EXPIRE_ENTRY)

/** Entries live at `<prefix>:e:<id>`, their tag lists at `<prefix>:m:<id>`, tag sets at `<prefix>:t:<tag>`. */
export class RedisStore implements CacheStore {
  readonly kind = 'redis'
  readonly local = false
  private readonly entryPrefix: string
  private readonly tagListPrefix: string
  private readonly tagPrefix: string

  constructor (private readonly client: Redis, prefix: string) {
    this.entryPrefix = prefix + ':e:'
    this.tagListPrefix = prefix + ':m:'
    this.tagPrefix = prefix + ':t:'
  }

  async get (id: string): Promise<Buffer | null> {
    return await this.client.getBuffer(this.entryPrefix + id)
  }

  async set (id: string, value: Buffer, options: StoreSetOptions): Promise<void> {
    const ttlMs = Math.max(1, Math.round(options.ttlMs))
    await setEntry.run(this.client, [this.entryPrefix + id, this.tagListPrefix + id], [value, ttlMs, this.tagPrefix, ...(options.tags ?? [])])
  }

  async delete (ids: readonly string[]): Promise<number> {
    return await this.unlinkEntries(ids.map((id) => this.entryPrefix + id))
  }

  async exists (id: string): Promise<boolean> {
    return await this.client.exists(this.entryPrefix + id) === 1
  }

  async expire (id: string, seconds: number): Promise<boolean> {
    return await expireEntry.run(this.client, [this.entryPrefix + id, this.tagListPrefix + id], [seconds * 1000, this.tagPrefix]) === 1
  }

  async ttl (id: string): Promise<number> {
    // PTTL rounded up, as the memory store does: TTL would report 0 for an entry that still has 400 ms to live.
    const ms = await this.client.pttl(this.entryPrefix + id)
    return ms < 0 ? ms : Math.ceil(ms / 1000)
  }

  async invalidateTags (tagIds: readonly string[]): Promise<number> {
    const tagKeys = tagIds.map((tag) => this.tagPrefix + tag)
    const members = new Set<string>()
    for (const tagKey of tagKeys) {
      for (const key of await this.client.smembers(tagKey)) members.add(key)
    }
    // Entries first: if this fails half way, the tag sets still name what is left, and a retry finishes the job.
    const count = await this.unlinkEntries([...members])
    await this.unlink(tagKeys)
    return count
  }

  async deletePattern (glob: string): Promise<number> {
    // Only * and ? are wildcards in a store pattern; [ ] and \ are literal, as in the memory store.
    const match = escapeGlob(this.entryPrefix) + glob.replace(/[[\]\\]/g, '\\$&')
    let cursor = '0'
    let count = 0
    do {
      const [next, keys] = await this.client.scan(cursor, 'MATCH', match, 'COUNT', 1000)
      cursor = next
      count += await this.unlinkEntries(keys)
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

  async close (): Promise<void> {
    // The client belongs to whoever created it; the plugin closes the ones it opened itself.
  }

  /** Unlinks entry keys with their tag lists; resolves to how many entries existed. */
  private async unlinkEntries (entryKeys: readonly string[]): Promise<number> {
    await this.unlink(entryKeys.map((key) => this.tagListPrefix + key.slice(this.entryPrefix.length)))
    return await this.unlink(entryKeys)
  }

  private async unlink (keys: readonly string[]): Promise<number> {
    let count = 0
    for (let i = 0; i < keys.length; i += BATCH) count += await this.client.unlink(...keys.slice(i, i + BATCH))
    return count
  }
}
