import type { Redis } from 'ioredis'
import { escapeGlob } from '../keys'
import { type CacheStore, type StoreSetOptions } from './store'

// Stores the entry and adds it to each tag's set, in one round trip and atomically, so that no tag set misses an
// entry it should name. A tag set lives as long as its longest-lived entry, so tag bookkeeping expires with the data.
const SET_WITH_TAGS = `
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
local ttl = tonumber(ARGV[2])
for i = 2, #KEYS do
  redis.call('SADD', KEYS[i], KEYS[1])
  if redis.call('PTTL', KEYS[i]) < ttl then redis.call('PEXPIRE', KEYS[i], ttl) end
end
return 1`

const INFO_FIELDS = [
  'redis_version', 'used_memory_human', 'connected_clients', 'total_commands_processed',
  'keyspace_hits', 'keyspace_misses', 'evicted_keys', 'expired_keys'
]
const BATCH = 500

/** Entries live at `<prefix>:e:<id>`, tag sets at `<prefix>:t:<tag>`. */
export class RedisStore implements CacheStore {
  readonly kind = 'redis'
  readonly local = false
  private readonly entryPrefix: string
  private readonly tagPrefix: string

  constructor (private readonly client: Redis, prefix: string) {
    this.entryPrefix = prefix + ':e:'
    this.tagPrefix = prefix + ':t:'
  }

  async get (id: string): Promise<Buffer | null> {
    return await this.client.getBuffer(this.entryPrefix + id)
  }

  async set (id: string, value: Buffer, options: StoreSetOptions): Promise<void> {
    const key = this.entryPrefix + id
    const ttlMs = Math.max(1, Math.round(options.ttlMs))
    if (options.tags === undefined || options.tags.length === 0) {
      await this.client.set(key, value, 'PX', ttlMs)
      return
    }
    const tagKeys = options.tags.map((tag) => this.tagPrefix + tag)
    await this.client.eval(SET_WITH_TAGS, 1 + tagKeys.length, key, ...tagKeys, value, ttlMs)
  }

  async delete (ids: readonly string[]): Promise<number> {
    return await this.unlink(ids.map((id) => this.entryPrefix + id))
  }

  async exists (id: string): Promise<boolean> {
    return await this.client.exists(this.entryPrefix + id) === 1
  }

  async expire (id: string, seconds: number): Promise<boolean> {
    return await this.client.expire(this.entryPrefix + id, seconds) === 1
  }

  async ttl (id: string): Promise<number> {
    return await this.client.ttl(this.entryPrefix + id)
  }

  async invalidateTags (tagIds: readonly string[]): Promise<number> {
    const tagKeys = tagIds.map((tag) => this.tagPrefix + tag)
    const members = new Set<string>()
    for (const tagKey of tagKeys) {
      for (const key of await this.client.smembers(tagKey)) members.add(key)
    }
    // Entries first: if this fails half way, the tag sets still name what is left, and a retry finishes the job.
    const count = await this.unlink([...members])
    await this.unlink(tagKeys)
    return count
  }

  async deletePattern (glob: string): Promise<number> {
    const match = escapeGlob(this.entryPrefix) + glob
    let cursor = '0'
    let count = 0
    do {
      const [next, keys] = await this.client.scan(cursor, 'MATCH', match, 'COUNT', 1000)
      cursor = next
      count += await this.unlink(keys)
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

  private async unlink (keys: readonly string[]): Promise<number> {
    let count = 0
    for (let i = 0; i < keys.length; i += BATCH) count += await this.client.unlink(...keys.slice(i, i + BATCH))
    return count
  }
}
