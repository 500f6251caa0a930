/**
 * `npm run bench:scale [-- --max 1000000]`: how the costs grow.
 * 1. A hit (cacheService.get, one at a time) with 10^3, 10^5 and 10^6 entries under the prefix in Redis.
 * 2. A tag invalidation (hard, and soft) of a tag carried by 10, 1,000 and 100,000 entries.
 * 3. The in-process tier against its bounds: what it holds and what the process's heap grows by, for maxBytes.
 * Entries are written through the store (small values, so that a million fit in memory quickly). Everything goes
 * under a prefix of its own, removed at the end. Env: REDIS_URL (redis://127.0.0.1:6379).
 */
import { randomBytes } from 'node:crypto'
import { parseArgs } from 'node:util'
import Fastify from 'fastify'
import { Redis } from 'ioredis'
import cache from '../lib/index'
import { InvalidationBus } from '../lib/bus'
import { encodeValue } from '../lib/serializer'
import { keyId, tagId } from '../lib/keys'
import { RedisStore } from '../lib/stores/redis'
import { TieredStore } from '../lib/stores/tiered'
import { ThrottledLog } from '../lib/throttled-log'
import { PAYLOAD_JSON } from './payload'
import { percentile } from './statistics'
import { deleteByPrefix } from '../test/helpers/redis'

const { values: args } = parseArgs({ options: { max: { type: 'string', default: '1000000' } } })
const max = Number(args.max)
const redisUrl = process.env['REDIS_URL'] ?? 'redis://127.0.0.1:6379'
const prefix = `bench:scale-${randomBytes(4).toString('hex')}`
const CONCURRENCY = 500
const HOUR_MS = 3_600_000

const ms = (since: bigint): number => Number(process.hrtime.bigint() - since) / 1e6

/** Writes ids [from, to) in parallel batches; returns how long it took. */
async function fill (store: RedisStore, from: number, to: number, name: (i: number) => string, tags: string[] = []): Promise<number> {
  const started = process.hrtime.bigint()
  const value = encodeValue({ n: 1, label: 'a small value' })
  for (let i = from; i < to; i += CONCURRENCY) {
    const batch: Array<Promise<boolean>> = []
    for (let j = i; j < Math.min(to, i + CONCURRENCY); j++) batch.push(store.set(name(j), value, { ttlMs: HOUR_MS, tags }))
    await Promise.all(batch)
  }
  return ms(started)
}

async function hitsByEntryCount (client: Redis): Promise<string> {
  const app = Fastify()
  await app.register(cache, { redis: redisUrl, prefix })
  await app.ready()
  const store = new RedisStore(client, prefix)
  const id = (i: number): string => keyId(['scale', i])
  const rows: string[] = []
  let filled = 0
  for (const count of [1_000, 100_000, 1_000_000].filter((n) => n <= max)) {
    const fillMs = await fill(store, filled, count, id)
    filled = count
    const micros: number[] = []
    for (let i = 0; i < 3000; i++) {
      const key = ['scale', Math.floor(Math.random() * count)]
      const started = process.hrtime.bigint()
      if (await app.cacheService.get(key) === undefined) throw new Error(`entry ${String(key[1])} missing`)
      micros.push(ms(started) * 1000)
    }
    const memory = /used_memory:(\d+)/.exec(await client.info('memory'))?.[1]
    rows.push(`| ${count.toLocaleString('en')} | ${(fillMs / 1000).toFixed(1)} | ${percentile(micros, 0.5).toFixed(0)} | ${percentile(micros, 0.99).toFixed(0)} | ${(Number(memory) / 2 ** 20).toFixed(0)} |`)
  }
  await app.close()
  await deleteByPrefix(client, prefix)
  return '| entries in Redis | fill s | hit p50 µs | hit p99 µs | Redis used_memory MiB |\n| ---: | ---: | ---: | ---: | ---: |\n' + rows.join('\n')
}

async function tagInvalidation (client: Redis): Promise<string> {
  const store = new RedisStore(client, prefix)
  const rows: string[] = []
  for (const size of [10, 1_000, 100_000].filter((n) => n <= max)) {
    for (const soft of [false, true]) {
      const tag = tagId(`tag-${size}-${soft ? 'soft' : 'hard'}`)
      await fill(store, 0, size, (i) => keyId(['tagged', size, soft ? 's' : 'h', i]), [tag])
      const started = process.hrtime.bigint()
      const count = await store.invalidateTags([tag], { soft })
      const took = ms(started)
      if (count !== size) throw new Error(`invalidated ${count} of ${size}`)
      // The invalidation itself is the token change; the rest of the time reclaims (hard) or counts (soft) entries.
      const readStarted = process.hrtime.bigint()
      const after = await store.read(keyId(['tagged', size, soft ? 's' : 'h', 0]), [])
      const readMs = ms(readStarted)
      if (soft ? !after.stale : after.value !== null) throw new Error('the invalidation did not take')
      rows.push(`| ${size.toLocaleString('en')} | ${soft ? 'soft' : 'hard'} | ${took.toFixed(1)} | ${readMs.toFixed(2)} |`)
    }
  }
  await deleteByPrefix(client, prefix)
  return '| entries with the tag | invalidation | invalidateTags ms (token change + reclaim or count) | next read ms |\n| ---: | --- | ---: | ---: |\n' + rows.join('\n')
}

async function tierAgainstBounds (client: Redis): Promise<string> {
  const rows: string[] = []
  const value = Buffer.from(PAYLOAD_JSON)
  const remote = new RedisStore(client, prefix)
  const ids = Array.from({ length: 20_000 }, (_, i) => keyId(['tier', i]))
  for (let i = 0; i < ids.length; i += CONCURRENCY) await Promise.all(ids.slice(i, i + CONCURRENCY).map((id) => remote.set(id, value, { ttlMs: HOUR_MS })))
  for (const bounds of [{ maxEntries: 1_000, maxBytes: 64 * 2 ** 20 }, { maxEntries: 100_000, maxBytes: 4 * 2 ** 20 }, { maxEntries: 100_000, maxBytes: 16 * 2 ** 20 }]) {
    const tier = new TieredStore(remote, { ...bounds, ttlMs: HOUR_MS })
    const bus = InvalidationBus.start(client, prefix, new ThrottledLog(Fastify().log), tier)
    tier.attach(bus)
    if (!await bus.ready(2000)) throw new Error('the bus did not subscribe')
    for (let i = 0; i < ids.length; i += CONCURRENCY) await Promise.all(ids.slice(i, i + CONCURRENCY).map((id) => tier.read(id, [])))
    // What the tier retains: the memory given back when it drops everything it holds.
    const used = async (): Promise<number> => {
      // Several collections, a turn of the event loop between them: buffers are freed in a later pass than objects.
      for (let i = 0; i < 3; i++) { globalThis.gc?.(); await new Promise((resolve) => setImmediate(resolve)) }
      return process.memoryUsage().heapUsed + process.memoryUsage().arrayBuffers
    }
    const info = await tier.info()
    const holding = await used()
    tier.reset()
    const grown = holding - await used()
    rows.push(`| ${bounds.maxEntries.toLocaleString('en')} | ${(bounds.maxBytes / 2 ** 20).toFixed(0)} | ${Number(info['memoryEntries']).toLocaleString('en')} | ${(Number(info['memoryBytes']) / 2 ** 20).toFixed(1)} | ${(grown / 2 ** 20).toFixed(1)} |`)
    await bus.close()
    await tier.close()
  }
  await deleteByPrefix(client, prefix)
  return `20,000 distinct ${value.length}-byte entries read through the tier:\n\n| maxEntries | maxBytes MiB | held | held bytes MiB (values + ids) | memory retained MiB (heap + buffers freed when dropped) |\n| ---: | ---: | ---: | ---: | ---: |\n` + rows.join('\n')
}

async function main (): Promise<void> {
  const client = new Redis(redisUrl)
  try {
    console.log(`## Hit latency by entry count\n\n${await hitsByEntryCount(client)}\n`)
    console.log(`## Tag invalidation by tag size\n\n${await tagInvalidation(client)}\n`)
    console.log(`## The in-process tier against its bounds\n\n${await tierAgainstBounds(client)}\n`)
  } finally {
    await deleteByPrefix(client, prefix)
    client.disconnect()
  }
}

main().catch((error: unknown) => { console.error(error); process.exit(1) })
