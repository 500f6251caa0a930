import Fastify from 'fastify'
import t from 'tap'
import cache from '../lib/index'
import { INVALIDATION_WINDOW_MS } from '../lib/stores/store'
import { setTimeout as sleep } from 'node:timers/promises'
import type { Redis } from 'ioredis'
import { MemoryStore } from '../lib/stores/memory'
import { RedisStore } from '../lib/stores/redis'
import { keyId, tagId } from '../lib/keys'
import { storeContract } from './store-contract'
import { createClient, deleteByPrefix, redisUrl, uniquePrefix } from './helpers/redis'

const LONG_MS = 60_000
const id = (...parts: string[]): string => keyId(parts)

// ---------------------------------------------------------------------------
// The contract, on every store
// ---------------------------------------------------------------------------

t.test('memory store', async (t) => {
  await storeContract(t, 'memory', async () => {
    const store = new MemoryStore({ maxEntries: 100_000, maxBytes: 256 * 1024 * 1024 })
    return { store, cleanup: () => store.close() }
  })
})

t.test('redis store', async (t) => {
  const client = await createClient(t)
  await storeContract(t, 'redis', async () => {
    const prefix = uniquePrefix('store-contract')
    return { store: new RedisStore(client, prefix), cleanup: async () => { await deleteByPrefix(client, prefix) } }
  })
})

// The plugin's own clients auto-pipeline, and users may hand in one that does: with it, ioredis mishandles `call`.
t.test('redis store on an auto-pipelining client', async (t) => {
  const client = await createClient(t, { enableAutoPipelining: true })
  await storeContract(t, 'redis (auto-pipelining)', async () => {
    const prefix = uniquePrefix('store-contract-ap')
    return { store: new RedisStore(client, prefix), cleanup: async () => { await deleteByPrefix(client, prefix) } }
  })
})

// ---------------------------------------------------------------------------
// MemoryStore only: the bounds
// ---------------------------------------------------------------------------

/** The tag index is private; its size is what must not grow, so the test reads it. */
function tagIndexOf (store: MemoryStore): Map<string, Set<string>> {
  const index: unknown = Reflect.get(store, 'tagIndex')
  if (!(index instanceof Map)) throw new Error('MemoryStore no longer keeps its tag index in `tagIndex`; update this test')
  return index as Map<string, Set<string>>
}

async function figures (store: MemoryStore): Promise<{ entries: number, bytes: number, evicted: number }> {
  const info = await store.info()
  return { entries: Number(info['entries']), bytes: Number(info['bytes']), evicted: Number(info['evicted_keys']) }
}

t.test('memory store: maxEntries evicts the least recently read entry first', async (t) => {
  const store = new MemoryStore({ maxEntries: 3, maxBytes: 1024 * 1024 })
  t.teardown(() => store.close())
  const [a, b, c, d, e] = ['a', 'b', 'c', 'd', 'e'].map((name) => id('lru', name))
  for (const key of [a, b, c]) await store.set(key, Buffer.from(key), { ttlMs: LONG_MS })
  t.ok(await store.get(a), 'a is read, so b is now the least recently used')
  await store.set(d, Buffer.from(d), { ttlMs: LONG_MS })
  t.equal(await store.exists(b), false, 'b evicted')
  for (const key of [a, c, d]) t.equal(await store.exists(key), true, `${key} kept`)

  t.ok(await store.get(c), 'c is read; a is now the least recently used')
  await store.set(e, Buffer.from(e), { ttlMs: LONG_MS })
  t.equal(await store.exists(a), false, 'a evicted')
  for (const key of [c, d, e]) t.equal(await store.exists(key), true, `${key} kept`)

  // Setting an id again makes it the most recent one.
  await store.set(c, Buffer.from('c2'), { ttlMs: LONG_MS })
  await store.set(a, Buffer.from(a), { ttlMs: LONG_MS })
  t.equal(await store.exists(d), false, 'd, untouched longest, evicted')
  t.same(await store.get(c), Buffer.from('c2'))

  const { entries, evicted } = await figures(store)
  t.equal(entries, 3)
  t.equal(evicted, 3)
})

t.test('memory store: maxBytes evicts until the values and ids fit', async (t) => {
  const maxBytes = 1000
  const store = new MemoryStore({ maxEntries: 1000, maxBytes })
  t.teardown(() => store.close())
  const value = Buffer.alloc(300, 1)
  const [a, b, c, d] = ['a', 'b', 'c', 'd'].map((name) => id('bytes', name))
  for (const key of [a, b, c]) await store.set(key, value, { ttlMs: LONG_MS })
  t.equal((await figures(store)).bytes, 3 * (300 + a.length), 'bytes count values plus ids')
  await store.get(a)
  await store.set(d, value, { ttlMs: LONG_MS })
  t.equal(await store.exists(b), false, 'the least recently read entry goes first')
  for (const key of [a, c, d]) t.equal(await store.exists(key), true, `${key} kept`)
  const after = await figures(store)
  t.ok(after.bytes <= maxBytes, `bytes ${after.bytes} <= ${maxBytes}`)
  t.equal(after.entries, 3)

  // One big entry pushes out as many as it needs.
  const big = id('bytes', 'big')
  await store.set(big, Buffer.alloc(maxBytes - big.length - 100, 2), { ttlMs: LONG_MS })
  t.equal(await store.exists(big), true)
  const last = await figures(store)
  t.ok(last.bytes <= maxBytes, `bytes ${last.bytes} <= ${maxBytes}`)
  t.equal(last.entries, 1, 'everything else was evicted to make room')

  // An overwrite replaces the byte count rather than adding to it.
  await store.set(big, Buffer.alloc(10), { ttlMs: LONG_MS })
  t.equal((await figures(store)).bytes, 10 + big.length)
  await store.delete([big])
  t.same(await figures(store), { entries: 0, bytes: 0, evicted: (await figures(store)).evicted }, 'empty again')
})

t.test('memory store: an entry bigger than maxBytes is not stored and evicts nothing', async (t) => {
  const maxBytes = 500
  const store = new MemoryStore({ maxEntries: 1000, maxBytes })
  t.teardown(() => store.close())
  const small = id('huge', 'small')
  await store.set(small, Buffer.from('small'), { ttlMs: LONG_MS })
  const huge = id('huge', 'huge')
  await store.set(huge, Buffer.alloc(maxBytes), { ttlMs: LONG_MS, tags: [tagId('huge')] })
  t.equal(await store.get(huge), null, 'not stored')
  t.equal(await store.exists(huge), false)
  t.equal(await store.exists(small), true, 'nothing was evicted for it')
  const info = await figures(store)
  t.equal(info.entries, 1)
  t.equal(info.evicted, 0)
  t.equal(tagIndexOf(store).size, 0, 'its tags were not indexed')

  // Replacing a stored value with one that cannot be stored leaves no stale value behind.
  await store.set(small, Buffer.alloc(maxBytes * 2), { ttlMs: LONG_MS })
  t.equal(await store.get(small), null)
  t.equal((await figures(store)).bytes, 0)

  // Exactly maxBytes fits.
  const exact = id('huge', 'exact')
  await store.set(exact, Buffer.alloc(maxBytes - exact.length), { ttlMs: LONG_MS })
  t.equal(await store.exists(exact), true)
})

t.test('memory store: the tag index does not grow with evicted, deleted or invalidated entries', async (t) => {
  const store = new MemoryStore({ maxEntries: 10, maxBytes: 1024 * 1024 })
  t.teardown(() => store.close())
  const index = tagIndexOf(store)

  for (let i = 0; i < 1000; i++) {
    await store.set(id('churn', String(i)), Buffer.from('x'), { ttlMs: LONG_MS, tags: [tagId(`t${i}`), tagId('shared')] })
  }
  t.equal((await figures(store)).entries, 10)
  t.ok(index.size <= 11, `at most one tag per live entry plus the shared one (${index.size})`)
  t.equal(index.get(tagId('shared'))?.size, 10, 'the shared tag names only the live entries')

  // An evicted id that comes back with other tags is not reached through its old ones.
  const reborn = id('churn', '0')
  await store.set(reborn, Buffer.from('reborn'), { ttlMs: LONG_MS, tags: [tagId('new')] })
  t.equal(await store.invalidateTags([tagId('t0')]), 0)
  t.same(await store.get(reborn), Buffer.from('reborn'))

  // The same id set again and again with new tags keeps one tag entry.
  for (let i = 0; i < 100; i++) await store.set(reborn, Buffer.from('x'), { ttlMs: LONG_MS, tags: [tagId(`again${i}`)] })
  t.notOk(index.has(tagId('again0')))
  t.ok(index.has(tagId('again99')))

  await store.delete(Array.from({ length: 1000 }, (_, i) => id('churn', String(i))))
  t.equal((await figures(store)).entries, 0)
  t.equal(index.size, 0, 'deleting every entry empties the tag index')

  await store.set(id('inv', '1'), Buffer.from('x'), { ttlMs: LONG_MS, tags: [tagId('a'), tagId('b')] })
  await store.set(id('inv', '2'), Buffer.from('x'), { ttlMs: LONG_MS, tags: [tagId('b')] })
  t.equal(await store.invalidateTags([tagId('a')]), 1)
  t.same([...index.keys()], [tagId('b')], 'invalidating a tag drops the removed entry from its other tags')
  t.same([...(index.get(tagId('b')) ?? [])], [id('inv', '2')])
  await store.deletePattern('*')
  t.equal(index.size, 0, 'deletePattern() empties it too')
})

t.test('memory store: expired entries are dropped from the tag index when touched', async (t) => {
  const store = new MemoryStore({ maxEntries: 100, maxBytes: 1024 * 1024 })
  t.teardown(() => store.close())
  const index = tagIndexOf(store)
  await store.set(id('exp', '1'), Buffer.from('x'), { ttlMs: 50, tags: [tagId('e')] })
  await sleep(150)
  t.equal(await store.get(id('exp', '1')), null)
  t.equal(index.size, 0)
  t.equal(Number((await store.info())['expired_keys']), 1)
})

// ---------------------------------------------------------------------------
// RedisStore only: where things live in Redis
// ---------------------------------------------------------------------------

async function redisFixture (t: tap.Test, name: string): Promise<{ client: Redis, prefix: string, store: RedisStore }> {
  const client = await createClient(t)
  const prefix = uniquePrefix(name)
  t.teardown(() => deleteByPrefix(client, prefix))
  return { client, prefix, store: new RedisStore(client, prefix) }
}

async function keysUnder (client: Redis, prefix: string): Promise<string[]> {
  const found: string[] = []
  let cursor = '0'
  do {
    const [next, keys] = await client.scan(cursor, 'MATCH', prefix.replace(/[*?[\]\\]/g, '\\$&') + '*', 'COUNT', 1000)
    cursor = next
    found.push(...keys)
  } while (cursor !== '0')
  return [...new Set(found)].sort()
}

t.test('redis store: the layout under the prefix', async (t) => {
  const { client, prefix, store } = await redisFixture(t, 'redis-layout')
  const key = keyId(['ws*', '[a]', 'a:b'])
  const tag = tagId('user:1')
  const value = Buffer.from([0, 1, 2, 0xff, 0x0a, 9])
  await store.set(key, value, { ttlMs: LONG_MS, tags: [tag] })
  await store.set(id('plain'), Buffer.from('p'), { ttlMs: LONG_MS })

  t.same(await keysUnder(client, prefix + ':'), [`${prefix}:e:{${key}}`, `${prefix}:e:{plain}`, `${prefix}:g:{${tag}}`, `${prefix}:t:{${tag}}`].sort(),
    'entries (e:), one token record (g:) and one tag set (t:) per tag, nothing else')
  const token = await client.get(`${prefix}:g:{${tag}}`)
  t.match(token, /^[A-Za-z0-9_-]+\.$/, 'a token is <hard>.<soft>, the soft half empty until a soft invalidation')
  const raw = await client.getBuffer(`${prefix}:e:{${key}}`) as Buffer
  const newline = raw.indexOf(0x0a)
  t.match(raw.subarray(0, newline).toString(), new RegExp(`^@[A-Za-z0-9_-]+ ${tag.replace(/[.%]/g, '\\$&')}=${token?.replace(/[.-]/g, '\\$&')}$`),
    'the entry is a header line with its version, its tags and their tokens')
  t.same(raw.subarray(newline + 1), value, 'then the bytes as they were')
  t.match((await client.get(`${prefix}:e:{plain}`)), /^@[A-Za-z0-9_-]+\np$/, 'an untagged entry has only its version in the header')
  t.same(await client.smembers(`${prefix}:t:{${tag}}`), [`${prefix}:e:{${key}}`], 'the tag set names the full entry key')
  const pttl = await client.pttl(`${prefix}:e:{${key}}`)
  t.ok(pttl > LONG_MS - 5000 && pttl <= LONG_MS, `the entry has the TTL it was given (${pttl})`)
  for (const record of [`${prefix}:g:{${tag}}`, `${prefix}:t:{${tag}}`]) {
    const recordTtl = await client.pttl(record)
    t.ok(recordTtl >= pttl && recordTtl <= LONG_MS + 1000, `${record} expires a little after its entry (${recordTtl})`)
  }
  await store.delete([id('plain')])
  const tombstoneTtl = await client.pttl(`${prefix}:v:{plain}`)
  t.ok(tombstoneTtl > 0 && tombstoneTtl <= INVALIDATION_WINDOW_MS, 'a delete leaves a tombstone that expires')
  await store.deletePattern('nothing*')
  t.ok(await client.pttl(`${prefix}:p`) > 0, 'a pattern invalidation changes the epoch, which expires too')
})

t.test('redis store: a tag set lives at least as long as its longest-lived entry', async (t) => {
  const { client, prefix, store } = await redisFixture(t, 'redis-tag-ttl')
  const tag = tagId('shared')
  const tagKey = `${prefix}:t:{${tag}}`
  const entries: Array<[string, number]> = [[id('a'), 5_000], [id('b'), 60_000], [id('c'), 2_000]]
  for (const [key, ttlMs] of entries) {
    await store.set(key, Buffer.from(key), { ttlMs, tags: [tag] })
    const tagTtl = await client.pttl(tagKey)
    let longest = 0
    for (const [other] of entries) longest = Math.max(longest, await client.pttl(`${prefix}:e:{${other}}`))
    t.ok(tagTtl >= longest, `after setting ${key}: tag PTTL ${tagTtl} >= longest entry PTTL ${longest}`)
  }
  t.equal(await client.pttl(tagKey) > 0, true, 'the tag set does expire')

  // A second tag on the short entry gets the short entry's TTL (plus the store's one-second margin), not a longer one.
  const other = tagId('other')
  await store.set(id('d'), Buffer.from('d'), { ttlMs: 3_000, tags: [other, tag] })
  const otherTtl = await client.pttl(`${prefix}:t:{${other}}`)
  t.ok(otherTtl > 3_000 && otherTtl <= 4_000, `the other tag follows its only entry (${otherTtl})`)
})

t.test('redis store: expire() keeps the tag sets of the entry alive as long as the entry', async (t) => {
  const { client, prefix, store } = await redisFixture(t, 'redis-expire-tag')
  const tag = tagId('extended')
  const key = id('extended')
  await store.set(key, Buffer.from('x'), { ttlMs: 2_000, tags: [tag] })
  t.equal(await store.expire(key, 3600), true)
  const entryTtl = await client.pttl(`${prefix}:e:{${key}}`)
  const tagTtl = await client.pttl(`${prefix}:t:{${tag}}`)
  t.ok(tagTtl === -1 || tagTtl >= entryTtl, `tag PTTL ${tagTtl} >= entry PTTL ${entryTtl}`)
})

t.test('redis store: deletePattern() never touches keys outside its prefix', async (t) => {
  const { client, prefix, store } = await redisFixture(t, 'redis-pattern')
  // Sibling stores whose prefixes share a beginning with ours, or that ours is the beginning of.
  const siblingPrefixes = [prefix + 'x', prefix + '-e', prefix.slice(0, -1), prefix + ':sub']
  for (const sibling of siblingPrefixes) t.teardown(() => deleteByPrefix(client, sibling))
  const siblings = siblingPrefixes.map((sibling) => new RedisStore(client, sibling))

  const ids = [id('exec', 'a'), id('exec', 'b'), id('other')]
  const tag = tagId('t')
  for (const target of [store, ...siblings]) {
    for (const key of ids) await target.set(key, Buffer.from(key), { ttlMs: LONG_MS, tags: [tag] })
  }
  // Raw keys near the entry namespace that are not entries.
  const strays = [prefix, `${prefix}:e`, `${prefix}:E:exec:a`, `${prefix}:ex:exec:a`, `${prefix}e:exec:a`, `${prefix}:t:exec:a`,
    `${prefix}:e:exec:a`, `${prefix}:E:{exec:a}`, `${prefix}:ex:{exec:a}`, `${prefix}e:{exec:a}`, `${prefix}:t:{exec:a}`, `${prefix}:v:{exec:a}`]
  for (const stray of strays) await client.set(stray, 'stray', 'PX', LONG_MS)
  t.teardown(() => client.unlink(...strays))

  t.equal(await store.deletePattern('exec:*'), 2)
  t.equal(await store.deletePattern('*'), 1)
  for (const key of ids) t.equal(await store.exists(key), false)
  for (const [i, sibling] of siblings.entries()) {
    for (const key of ids) t.equal(await sibling.exists(key), true, `${siblingPrefixes[i]}: ${key} survives`)
  }
  for (const stray of strays) t.equal(await client.get(stray), 'stray', `${stray} survives`)
  t.equal(await client.exists(`${prefix}:t:{${tag}}`), 1, 'its own tag set is not an entry either')
})

t.test('redis store: a prefix with glob characters is matched literally', async (t) => {
  const { client, prefix } = await redisFixture(t, 'redis-glob-prefix')
  const store = new RedisStore(client, `${prefix}:g?[x]*`)
  const neighbour = new RedisStore(client, `${prefix}:gA[x]yz`)
  const neighbour2 = new RedisStore(client, `${prefix}:gAx`)
  for (const target of [store, neighbour, neighbour2]) await target.set(id('k'), Buffer.from('k'), { ttlMs: LONG_MS })
  t.equal(await store.deletePattern('*'), 1)
  t.equal(await store.exists(id('k')), false)
  t.equal(await neighbour.exists(id('k')), true)
  t.equal(await neighbour2.exists(id('k')), true)
})

t.test('redis store: close() leaves the client it was handed open', async (t) => {
  const { client, store } = await redisFixture(t, 'redis-close')
  await store.close()
  t.equal(await client.ping(), 'PONG')
})

t.test('a Redis client with keyPrefix is refused at registration, given or made from options', async (t) => {
  const given = await createClient(t, { keyPrefix: 'kp:' })
  const url = new URL(await redisUrl())
  for (const redis of [given, { host: url.hostname, port: Number(url.port), keyPrefix: 'kp:' }]) {
    const app = Fastify()
    await t.rejects(async () => { await app.register(cache, { redis, prefix: uniquePrefix('key-prefix') }) },
      { code: 'FST_CACHE_INVALID_OPTION', message: /keyPrefix/ })
    await app.close().catch(() => {})
  }
  t.equal(await given.ping(), 'PONG', 'the client it was given is left open')
})
