import Fastify, { type FastifyInstance } from 'fastify'
import { Redis } from 'ioredis'
import t from 'tap'
import cache from '../lib/index'
import { InvalidationBus } from '../lib/bus'
import { keyId, tagId } from '../lib/keys'
import { RedisStore } from '../lib/stores/redis'
import { TieredStore } from '../lib/stores/tiered'
import { ThrottledLog } from '../lib/throttled-log'
import { sleep, until, untilStored } from './helpers/app'
import { RedisProcess, type Teardownable, createClient, deleteByPrefix, redisUrl, uniquePrefix } from './helpers/redis'
import { threeProcessesAsOneCache } from './helpers/workers'
import { storeContract } from './store-contract'

const quiet = new ThrottledLog(Fastify().log)

/** A tiered store over Redis with its bus subscribed, as the plugin builds it. */
async function tieredStore (client: Redis, prefix: string, bounds = { maxEntries: 10_000, maxBytes: 64 * 1024 * 1024, ttlMs: 60_000 }): Promise<{ store: TieredStore, bus: InvalidationBus }> {
  const store = new TieredStore(new RedisStore(client, prefix), bounds)
  const bus = InvalidationBus.start(client, prefix, quiet, store)
  store.attach(bus)
  if (!await bus.ready(2000)) throw new Error('the bus did not subscribe')
  return { store, bus }
}

t.test('tiered store (memory in front of Redis)', async (t) => {
  const client = await createClient(t)
  await storeContract(t, 'tiered', async () => {
    const prefix = uniquePrefix('tiered-contract')
    const { store, bus } = await tieredStore(client, prefix)
    return { store, cleanup: async () => { await bus.close(); await deleteByPrefix(client, prefix) } }
  })
})

/** Instances of one app sharing a prefix, each with its own in-process tier; `origin` is the data they serve. */
async function instances (t: Teardownable, count: number, redis: string, memory: { ttl?: number } = { ttl: 300 }): Promise<{ apps: FastifyInstance[], origin: Map<string, string>, computed: () => number, prefix: string }> {
  const prefix = uniquePrefix('tier')
  const cleaner = await clientOf(t, redis)
  t.teardown(() => deleteByPrefix(cleaner, prefix))
  const origin = new Map<string, string>()
  let computed = 0
  const apps: FastifyInstance[] = []
  for (let i = 0; i < count; i++) {
    const app = Fastify()
    await app.register(cache, { redis, prefix, memory })
    app.get<{ Params: { id: string } }>('/item/:id', {
      config: {
        cache: {
          ttl: 300,
          key: (request) => ['item', (request.params as { id: string }).id],
          tags: (request) => [`item:${(request.params as { id: string }).id}`, 'items']
        }
      }
    }, async (request) => { computed++; return { value: origin.get(request.params.id) ?? null } })
    app.get<{ Params: { id: string } }>('/plain/:id', { config: { cache: { ttl: 300 } } },
      async (request) => { computed++; return { value: origin.get(request.params.id) ?? null } })
    t.teardown(() => app.close())
    apps.push(app)
  }
  return { apps, origin, computed: () => computed, prefix }
}

async function clientOf (t: Teardownable, url: string): Promise<Redis> {
  const client = new Redis(url)
  t.teardown(() => client.quit())
  return client
}

async function valueOf (app: FastifyInstance, url: string): Promise<{ value: string | null, cache: string }> {
  const response = await app.inject(url)
  return { value: (response.json() as { value: string | null }).value, cache: String(response.headers['x-cache']) }
}

/** Reads the URL on every app until each has it in its own tier (a HIT that sends no command to Redis). */
async function warmEverywhere (apps: FastifyInstance[], url: string): Promise<void> {
  await apps[0].inject(url)
  await untilStored(apps[0])
  for (const app of apps) {
    await app.inject(url)
    await until(`${url} held in memory`, async () => {
      const before = Number((await app.cacheService.stats()).store['memoryHits'])
      await app.inject(url)
      return Number((await app.cacheService.stats()).store['memoryHits']) > before
    })
  }
}

/** The Redis store, counting the full reads it is asked for. */
class CountedRedisStore extends RedisStore {
  reads = 0
  override async read (...args: Parameters<RedisStore['read']>): ReturnType<RedisStore['read']> {
    this.reads++
    return await super.read(...args)
  }
}

t.test('concurrent misses of one id in the tier share one Redis read, unless an invalidation came first', async (t) => {
  const client = await createClient(t)
  const prefix = uniquePrefix('tier-fill')
  t.teardown(() => deleteByPrefix(client, prefix))
  const remote = new CountedRedisStore(client, prefix)
  const store = new TieredStore(remote, { maxEntries: 100, maxBytes: 1 << 20, ttlMs: 60_000 })
  const bus = InvalidationBus.start(client, prefix, quiet, store)
  store.attach(bus)
  t.teardown(() => bus.close())
  t.ok(await bus.ready(2000))
  const [hot, cold, other] = [keyId('hot'), keyId('cold'), keyId('other')]
  const tag = tagId('t')
  await remote.set(hot, Buffer.from('value'), { ttlMs: 60_000, tags: [tag] })
  remote.reads = 0

  const lease = (n: number): { token: string, ttlMs: number } => ({ token: `token-${n}`, ttlMs: 5000 })
  const found = await Promise.all(Array.from({ length: 20 }, (_, n) => store.read(hot, [tag], lease(n))))
  t.equal(remote.reads, 1, '20 concurrent misses, one read')
  t.ok(found.every((read) => read.value?.toString() === 'value'), 'each got the value')
  t.ok(found.every((read) => read.stamp === found[0]?.stamp), 'and the stamp of that read')
  t.equal((await store.read(hot, [tag])).value?.toString(), 'value')
  t.equal(remote.reads, 1, 'then held')

  remote.reads = 0
  const absent = await Promise.all(Array.from({ length: 5 }, (_, n) => store.read(cold, [], lease(n))))
  t.equal(remote.reads, 1)
  t.equal(absent.filter((read) => read.leaseTaken === true).length, 1, 'one caller holds the lease the shared read took')
  t.ok(absent.every((read) => read.leased === true), 'the others see it held')

  remote.reads = 0
  const first = store.read(other, [])
  await store.delete([keyId('unrelated')])
  const second = store.read(other, [])
  await Promise.all([first, second])
  t.equal(remote.reads, 2, 'a read that started before an invalidation is not shared with one after it')
})

t.test('an in-process hit sends nothing to Redis', async (t) => {
  const server = await RedisProcess.start()
  t.teardown(() => server.stop())
  const { apps, origin } = await instances(t, 1, server.url)
  origin.set('1', 'one')
  await warmEverywhere(apps, '/item/1')
  await warmEverywhere(apps, '/plain/1')
  const admin = await clientOf(t, server.url)
  const commands = async (): Promise<number> => Number(/total_commands_processed:(\d+)/.exec(await admin.info('stats'))?.[1])
  const before = await commands()
  for (let i = 0; i < 100; i++) {
    t.equal((await valueOf(apps[0], i % 2 === 0 ? '/item/1' : '/plain/1')).cache, 'HIT')
  }
  // INFO reports the commands before it: the first INFO is the only one counted in between.
  t.equal(await commands() - before, 1, '100 hits, tagged and untagged, and no command but the INFO that counts')
})

t.test('three instances behave as one cache: whatever one changes, the others stop serving', async (t) => {
  const redis = await redisUrl()
  const changes: Array<[string, (app: FastifyInstance) => Promise<unknown>]> = [
    ['a tag', (app) => app.cacheService.invalidateTags('item:1')],
    ['a shared tag, softly', (app) => app.cacheService.invalidateTags('items', { soft: true })],
    ['its key', (app) => app.cacheService.invalidate('item:1')],
    ['a pattern', (app) => app.cacheService.invalidatePattern('*')]
  ]
  for (const [what, change] of changes) {
    const { apps, origin, computed } = await instances(t, 3, redis)
    origin.set('1', 'old')
    await warmEverywhere(apps, '/item/1')
    const before = computed()
    origin.set('1', 'new')
    await change(apps[0])
    t.same(await valueOf(apps[0], '/item/1').then((r) => r.value), 'new', `${what}: the instance that changed it serves the new value`)
    for (const [i, app] of apps.entries()) {
      // The in-process TTL is 300 s: without the bus, the old value would be served for five minutes.
      await until(`${what}: instance ${i} serves the new value`, async () => (await valueOf(app, '/item/1')).value === 'new', 1000)
    }
    t.pass(`${what}: every instance serves the new value within a second`)
    t.ok(computed() - before <= 3, `${what}: recomputed a few times at most (${computed() - before})`)
  }
})

t.test('a value rewritten by one instance replaces the others\' copies (cacheService.set, refreshes)', async (t) => {
  const { apps } = await instances(t, 3, await redisUrl())
  await apps[0].cacheService.set('config:flags', { dark: false }, { ttl: 300 })
  for (const app of apps) t.same(await app.cacheService.get('config:flags'), { dark: false })
  for (const app of apps) t.same(await app.cacheService.get('config:flags'), { dark: false }, 'held in memory now')
  await apps[1].cacheService.set('config:flags', { dark: true }, { ttl: 300 })
  for (const [i, app] of apps.entries()) {
    await until(`instance ${i} sees the rewrite`, async () => (await app.cacheService.get<{ dark: boolean }>('config:flags'))?.dark === true, 1000)
  }
  await apps[2].cacheService.delete('config:flags')
  for (const [i, app] of apps.entries()) {
    await until(`instance ${i} sees the delete`, async () => (await app.cacheService.get('config:flags')) === undefined, 1000)
  }
  t.pass('a rewrite and a delete reached every instance')
})

t.test('a tagged value read without its tags is still dropped by its tag', async (t) => {
  const { apps } = await instances(t, 2, await redisUrl())
  await apps[0].cacheService.set('report:9', 'v1', { ttl: 300, tags: ['ws:9'] })
  for (let i = 0; i < 2; i++) t.equal(await apps[1].cacheService.get('report:9'), 'v1')
  await apps[0].cacheService.invalidateTags('ws:9')
  await until('the other instance drops it', async () => (await apps[1].cacheService.get('report:9')) === undefined, 1000)
  t.pass('dropped')
})

t.test('a subscriber that lost its connection drops what it holds: messages missed meanwhile cannot matter', async (t) => {
  const redis = await redisUrl()
  const { apps, origin, prefix } = await instances(t, 2, redis)
  origin.set('1', 'old')
  await warmEverywhere(apps, '/item/1')
  // A change the bus never carries: another app on the same prefix without the in-process tier (an older deploy,
  // say), or a message lost while the subscriber was away.
  const outsider = Fastify()
  await outsider.register(cache, { redis, prefix })
  t.teardown(() => outsider.close())
  origin.set('1', 'new')
  await outsider.cacheService.invalidateTags('item:1')
  t.equal((await valueOf(apps[1], '/item/1')).value, 'old', 'no message: the in-process copy is still served')
  const admin = await createClient(t)
  const killed = await admin.client('KILL', 'TYPE', 'pubsub')
  t.ok(Number(killed) >= 1, 'the subscribers\' connections were killed')
  await until('the subscriber is back and the copy dropped', async () => (await valueOf(apps[1], '/item/1')).value === 'new', 3000)
  t.pass('after the reconnection the instance reads Redis again')
})

t.test('bounds: entries and bytes, least recently used first, and the in-process TTL', async (t) => {
  const client = await createClient(t)
  const prefix = uniquePrefix('tier-bounds')
  t.teardown(() => deleteByPrefix(client, prefix))
  const { store, bus } = await tieredStore(client, prefix, { maxEntries: 3, maxBytes: 64 * 1024, ttlMs: 300 })
  t.teardown(() => bus.close())
  const ids = ['a', 'b', 'c', 'd'].map((name) => keyId(['bound', name]))
  for (const id of ids) await store.set(id, Buffer.from(id), { ttlMs: 60_000 })
  for (const id of ids) await store.read(id, [])
  let info = await store.info()
  t.equal(info['memoryEntries'], 3, 'at most maxEntries held')
  await store.read(ids[1], [])
  t.equal((await store.info())['memoryHits'], 1, 'b was held (the least recently used, a, was dropped)')
  await store.read(ids[0], [])
  t.equal((await store.info())['memoryMisses'], 5, 'a was not held any more')
  await store.set(keyId(['bound', 'big']), Buffer.alloc(80 * 1024), { ttlMs: 60_000 })
  await store.read(keyId(['bound', 'big']), [])
  info = await store.info()
  t.ok(Number(info['memoryBytes']) <= 64 * 1024, 'an entry larger than maxBytes is not held')
  await sleep(350)
  const hits = Number((await store.info())['memoryHits'])
  t.equal((await store.read(ids[0], [])).value?.toString(), ids[0], 'still in Redis')
  t.equal((await store.info())['memoryHits'], hits, 'but no longer in memory after the in-process TTL')
  t.equal((await store.read(keyId(['bound', 'gone']), [tagId('x')])).value, null)
})

t.test('three processes sharing one Redis behave as one cache', async (t) => {
  const prefix = uniquePrefix('processes')
  const client = await createClient(t)
  t.teardown(() => deleteByPrefix(client, prefix))
  await threeProcessesAsOneCache(t, { REDIS_URL: await redisUrl(), CACHE_PREFIX: prefix })
})
