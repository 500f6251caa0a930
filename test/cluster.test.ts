/**
 * The plugin on a real Redis Cluster (3 masters, 3 replicas, on loopback ports): the store contract, where keys
 * land, the HTTP plugin (tags, patterns across masters, leases), and a master killed while the app serves.
 * One cluster for the file; the failover test runs last, since it kills a master.
 */
import Fastify, { type FastifyInstance } from 'fastify'
import t from 'tap'
import cache, { type CachePluginOptions } from '../lib/index'
import { idPattern, keyId, tagId } from '../lib/keys'
import { RedisStore } from '../lib/stores/redis'
import { TieredStore } from '../lib/stores/tiered'
import { InvalidationBus } from '../lib/bus'
import { ThrottledLog } from '../lib/throttled-log'
import { storeContract } from './store-contract'
import { sleep, until, untilStored } from './helpers/app'
import { freePort, uniquePrefix } from './helpers/redis'
import { RedisCluster, deleteByPrefixOnCluster } from './helpers/redis-cluster'
import { threeProcessesAsOneCache } from './helpers/workers'

const LONG_MS = 60_000

t.test('a { cluster } option is checked: nodes are host:port strings or { host, port }', async (t) => {
  const cases: Array<[unknown, RegExp]> = [
    [{ cluster: [] }, /option "redis\.cluster": expected array length to be greater or equal to 1, got \[\]/],
    [{ cluster: [7000] }, /option "redis\.cluster\.0": .*got 7000/],
    [{ cluster: ['127.0.0.1:7000'], extra: 1 }, /option "redis\.extra": not a known option/]
  ]
  for (const [redis, message] of cases) {
    const app = Fastify()
    t.teardown(() => app.close())
    await t.rejects(async () => { await app.register(cache, { redis } as CachePluginOptions) }, { code: 'FST_CACHE_INVALID_OPTION', message }, JSON.stringify(redis))
  }
})

t.test('a cluster that does not answer never blocks start-up: the app starts and serves uncached', async (t) => {
  const port = await freePort()
  const app = Fastify()
  t.teardown(() => app.close())
  const started = Date.now()
  await app.register(cache, { redis: { cluster: [`127.0.0.1:${port}`] }, connectTimeoutMs: 300 })
  app.get('/x', { config: { cache: true } }, async () => ({ x: 1 }))
  await app.ready()
  t.ok(Date.now() - started < 3000, `registered in ${Date.now() - started} ms`)
  const response = await app.inject('/x')
  t.equal(response.statusCode, 200)
  t.same(response.json(), { x: 1 })
  t.equal(response.headers['x-cache'], 'MISS')
})

t.test('on a Redis Cluster', async (t) => {
  const started = Date.now()
  const cluster = await RedisCluster.start(t)
  t.comment(`cluster of 3 masters and 3 replicas up in ${Date.now() - started} ms`)
  const client = await cluster.client(t)

  /** The slot of a key, as the cluster computes it. */
  async function slotOf (key: string): Promise<number> {
    return Number(await client.call('CLUSTER', 'KEYSLOT', key))
  }

  function fixture (t: tap.Test, name: string): { store: RedisStore, prefix: string } {
    const prefix = uniquePrefix(name)
    t.teardown(() => deleteByPrefixOnCluster(client, prefix))
    return { store: new RedisStore(client, prefix), prefix }
  }

  await storeContract(t, 'redis cluster', async () => {
    const prefix = uniquePrefix('cluster-contract')
    return { store: new RedisStore(client, prefix), cleanup: () => deleteByPrefixOnCluster(client, prefix) }
  })

  await t.test('an entry\'s keys share its slot, a tag\'s keys share the tag\'s, and both spread over every master', async (t) => {
    const { store, prefix } = fixture(t, 'cluster-spread')
    const ids = Array.from({ length: 60 }, (_, i) => keyId(['spread', String(i)]))
    const tags = Array.from({ length: 30 }, (_, i) => tagId(`tag:${i}`))
    for (const [i, id] of ids.entries()) {
      const tag = tags[i % tags.length] ?? ''
      const { stamp } = await store.read(id, [tag])
      t.equal(await store.set(id, Buffer.from(id), { ttlMs: LONG_MS, tags: [tag], stamp }), true)
      await store.acquireLease(id, 'holder', LONG_MS)
    }
    await store.delete([ids[0] ?? ''])
    const entrySlots = new Set<number>()
    const entryMasters = new Set<number>()
    for (const id of ids) {
      const slot = await slotOf(store.entryKey(id))
      entrySlots.add(slot)
      entryMasters.add(await cluster.masterOfSlot(slot))
      t.equal(await slotOf(`${prefix}:v:{${id}}`), slot, `${id}: its tombstone is in its slot`)
      t.equal(await slotOf(`${prefix}:l:{${id}}`), slot, `${id}: its lease is in its slot`)
    }
    const tagMasters = new Set<number>()
    for (const tag of tags) {
      const slot = await slotOf(`${prefix}:g:{${tag}}`)
      t.equal(await slotOf(`${prefix}:t:{${tag}}`), slot, `${tag}: its set is in its token's slot`)
      tagMasters.add(await cluster.masterOfSlot(slot))
    }
    t.ok(entrySlots.size > 40, `60 entries use many slots (${entrySlots.size}), not one`)
    t.equal(entryMasters.size, 3, 'entries are on all three masters')
    t.equal(tagMasters.size, 3, 'tag records are on all three masters')
    t.equal(await store.exists(ids[0] ?? ''), false, 'the deleted entry is gone')
    t.equal(await store.invalidateTags(tags), ids.length - 1, 'one invalidation reaches entries on every master')
    t.equal(await store.deletePattern('*'), 0)
  })

  await t.test('hostile key parts and tags never cause CROSSSLOT', async (t) => {
    const { store } = fixture(t, 'cluster-hostile')
    const parts = ['{', '}', '{}', '}{', '', 'a{b}c', '{x}', '%7B', '%e', '%u', '\u0000', 'ünï', '*', '?', '[a]', ':', '\\', ' ']
    const ids = [...new Set([...parts.map((part) => keyId([part])), ...parts.map((part) => keyId(['h', part])), keyId([null])])]
    t.ok(ids.includes(''), 'the empty id is among them')
    for (const id of ids) {
      const key = store.entryKey(id)
      t.match(key, /\{[^{}]+\}$/, `${JSON.stringify(id)}: its key ends in a non-empty hash tag (${key})`)
    }
    const tags = parts.filter((part) => part !== '').map(tagId)
    for (const id of ids) {
      const read = await store.read(id, tags)
      t.equal(await store.set(id, Buffer.from('v' + id), { ttlMs: LONG_MS, tags, stamp: read.stamp }), true, `${JSON.stringify(id)}: stamped write`)
      t.same(await store.get(id), Buffer.from('v' + id), `${JSON.stringify(id)}: read back`)
      t.equal(await store.expire(id, 120), true)
      t.ok(await store.ttl(id) > 60)
      t.equal(await store.acquireLease(id, 'me', 1000), true)
      await store.releaseLease(id, 'me')
    }
    t.equal(await store.invalidateTags([tagId('{x}')]), ids.length, 'every entry carries the tag {x}')
    for (const id of ids) await store.set(id, Buffer.from('again'), { ttlMs: LONG_MS, tags })
    t.equal(await store.deletePattern(idPattern('h:*')), parts.length, 'the h:* entries, whatever their parts')
    t.equal(await store.delete(ids), ids.length - parts.length, 'the others')
    t.equal(await store.get(''), null)

    // The empty id is written with a stand-in hash tag; only a glob that matches the empty id removes it.
    await store.set('', Buffer.from('empty'), { ttlMs: LONG_MS })
    t.same(await store.get(''), Buffer.from('empty'))
    t.equal(await store.deletePattern('%?'), 0, 'a glob that does not match the empty id leaves it')
    t.equal(await store.deletePattern('*'), 1, 'one that does removes it')
    t.equal(await store.get(''), null)
  })

  await t.test('cleanup() walks every master: keys without a TTL and dangling tag-set members go', async (t) => {
    const { store, prefix } = fixture(t, 'cluster-cleanup')
    const ids = Array.from({ length: 12 }, (_, i) => keyId(['c', String(i)]))
    for (const id of ids) await store.set(id, Buffer.from('x'.repeat(10)), { ttlMs: LONG_MS, tags: [tagId('c')] })
    // Planted without a TTL, on keys that hash to all three masters.
    const orphans = Array.from({ length: 12 }, (_, i) => `${prefix}:e:{orphan-${i}}`)
    const masters = new Set<number>()
    for (const orphan of orphans) {
      await client.set(orphan, 'left behind')
      masters.add(await cluster.masterOfSlot(await slotOf(orphan)))
    }
    t.equal(masters.size, 3, 'the planted keys are on all three masters')
    await client.sadd(`${prefix}:t:{${tagId('c')}}`, `${prefix}:e:{gone}`)
    const report = await store.cleanup()
    t.equal(report.removedWithoutTtl, orphans.length, 'every key without a TTL, whichever master holds it')
    t.equal(report.removedDangling, 1, 'the dangling member')
    t.equal(report.entries, ids.length, 'the entries of every master are counted')
    for (const orphan of orphans) t.equal(await client.exists(orphan), 0)
    for (const id of ids) t.equal(await store.exists(id), true, `${id} survives`)
  })

  async function app (t: tap.Test, prefix: string, options: CachePluginOptions = {}): Promise<FastifyInstance> {
    const app = Fastify()
    await app.register(cache, { redis: { cluster: cluster.startupNodes }, prefix, ...options })
    t.teardown(() => app.close())
    return app
  }

  await t.test('the HTTP plugin: miss, hit, tags, patterns across masters, leases', async (t) => {
    const prefix = uniquePrefix('cluster-http')
    t.teardown(() => deleteByPrefixOnCluster(client, prefix))
    const server = await app(t, prefix)
    const other = await app(t, prefix)
    let calls = 0
    server.get('/items/:id', {
      config: { cache: { key: (request) => ['items', (request.params as { id: string }).id], tags: (request) => [`item:${(request.params as { id: string }).id}`, 'items'] } }
    }, async (request) => ({ id: (request.params as { id: string }).id, calls: ++calls }))
    let slowCalls = 0
    for (const instance of [server, other]) {
      instance.get('/slow', { config: { cache: { key: 'slow', tags: ['slow'] } } }, async () => {
        slowCalls++
        await sleep(300)
        return { slow: true }
      })
    }
    t.equal((await server.cacheService.stats()).store.kind, 'redis')
    t.equal((await server.cacheService.stats()).store['cluster_masters'], 3, 'stats report the three masters')

    const ids = Array.from({ length: 12 }, (_, i) => `i${i}`)
    for (const id of ids) t.equal((await server.inject(`/items/${id}`)).headers['x-cache'], 'MISS')
    await untilStored(server, ids.length)
    for (const id of ids) t.equal((await server.inject(`/items/${id}`)).headers['x-cache'], 'HIT', `${id}: a hit`)
    const masters = new Set<number>()
    for (const id of ids) masters.add(await cluster.masterOfSlot(await slotOf(`${prefix}:e:{${keyId(['items', id])}}`)))
    t.equal(masters.size, 3, 'the entries are on all three masters')

    t.equal(await server.cacheService.invalidateTags('item:i0'), 1)
    t.equal((await server.inject('/items/i0')).headers['x-cache'], 'MISS', 'a tag invalidation makes its entry a miss')
    t.equal((await server.inject('/items/i1')).headers['x-cache'], 'HIT', 'and leaves the others')
    await untilStored(server, ids.length + 1)

    t.equal(await server.cacheService.invalidatePattern('items:*'), ids.length, 'a pattern reaches the entries on every master')
    for (const id of ids) t.equal((await server.inject(`/items/${id}`)).headers['x-cache'], 'MISS', `${id}: a miss after the pattern`)
    await untilStored(server, 2 * ids.length + 1)
    t.equal(await server.cacheService.invalidateTags('items'), ids.length, 'a tag shared by entries on every master')
    t.equal((await server.inject('/items/i5')).headers['x-cache'], 'MISS')

    // Leases: two instances, a slow handler, concurrent misses on both: one computation in all.
    const responses = await Promise.all(Array.from({ length: 10 }, (_, i) => (i % 2 === 0 ? server : other).inject('/slow')))
    t.ok(responses.every((response) => response.statusCode === 200 && response.json().slow === true), 'every request answered')
    t.equal(slowCalls, 1, 'the handler ran once across both instances')
  })

  await t.test('the in-process tier on the cluster: its contract, and three instances kept coherent by the bus', async (t) => {
    await storeContract(t, 'tiered on the cluster', async () => {
      const prefix = uniquePrefix('cluster-tiered')
      const store = new TieredStore(new RedisStore(client, prefix), { maxEntries: 10_000, maxBytes: 64 * 1024 * 1024, ttlMs: 60_000 })
      const bus = InvalidationBus.start(client, prefix, new ThrottledLog(Fastify().log), store)
      store.attach(bus)
      if (!await bus.ready(3000)) throw new Error('the bus did not subscribe on the cluster')
      return { store, cleanup: async () => { await bus.close(); await deleteByPrefixOnCluster(client, prefix) } }
    })

    const prefix = uniquePrefix('cluster-bus')
    t.teardown(() => deleteByPrefixOnCluster(client, prefix))
    const origin = new Map<string, number>()
    const instances: FastifyInstance[] = []
    for (let i = 0; i < 3; i++) {
      const instance = await app(t, prefix, { memory: { ttl: 300 } })
      instance.get('/items/:id', {
        config: { cache: { ttl: 300, key: (request) => ['items', (request.params as { id: string }).id], tags: (request) => [`item:${(request.params as { id: string }).id}`] } }
      }, async (request) => ({ version: origin.get((request.params as { id: string }).id) ?? 0 }))
      instances.push(instance)
    }
    const ids = Array.from({ length: 6 }, (_, i) => `b${i}`)
    for (const id of ids) {
      origin.set(id, 1)
      await instances[0].inject(`/items/${id}`)
    }
    await untilStored(instances[0], ids.length)
    const memoryHits = async (instance: FastifyInstance): Promise<number> => Number((await instance.cacheService.stats()).store['memoryHits'])
    for (const instance of instances) {
      // A pass over every id served from the instance's own tier: each read a memory hit.
      await until('a pass served wholly from memory', async () => {
        const before = await memoryHits(instance)
        for (const id of ids) t.equal((await instance.inject(`/items/${id}`)).json().version, 1)
        return await memoryHits(instance) - before === ids.length
      }, 2000)
      const store = (await instance.cacheService.stats()).store
      t.equal(store.kind, 'memory+redis')
      t.equal(store['bus'], 'subscribed')
    }
    // One change by tag, one by pattern, from different instances: with a 300 s in-process TTL, only the bus can
    // make the others serve the new versions in time.
    origin.set('b0', 2)
    await instances[1].cacheService.invalidateTags('item:b0')
    for (const id of ids.slice(1)) origin.set(id, 3)
    await instances[2].cacheService.invalidatePattern('items:*')
    for (const [n, instance] of instances.entries()) {
      await until(`instance ${n} serves the new versions`, async () => {
        const versions = await Promise.all(ids.map(async (id) => (await instance.inject(`/items/${id}`)).json().version))
        return versions[0] === 2 && versions.slice(1).every((version) => version === 3)
      }, 2000)
    }
    t.pass('every instance serves every new version')
  })

  await t.test('three processes sharing the cluster behave as one cache', async (t) => {
    const prefix = uniquePrefix('cluster-processes')
    t.teardown(() => deleteByPrefixOnCluster(client, prefix))
    await threeProcessesAsOneCache(t, { CLUSTER_NODES: cluster.startupNodes.map((node) => `${node.host}:${node.port}`).join(','), CACHE_PREFIX: prefix })
  })

  // Last: it kills a master.
  await t.test('a master killed while the app serves: fail-open, then caching again after the failover', async (t) => {
    const prefix = uniquePrefix('cluster-failover')
    t.teardown(() => deleteByPrefixOnCluster(client, prefix).catch(() => {}))
    const server = await app(t, prefix)
    let calls = 0
    server.get('/f/:id', { config: { cache: { key: (request) => ['f', (request.params as { id: string }).id] } } },
      async (request) => ({ id: (request.params as { id: string }).id, calls: ++calls }))
    const ids = Array.from({ length: 24 }, (_, i) => `k${i}`)
    for (const id of ids) await server.inject(`/f/${id}`)
    await untilStored(server, ids.length)
    const masterOf = new Map<string, number>()
    for (const id of ids) masterOf.set(id, await cluster.masterOfSlot(await slotOf(`${prefix}:e:{${keyId(['f', id])}}`)))
    const victim = masterOf.get('k0') ?? 0
    const onVictim = ids.filter((id) => masterOf.get(id) === victim)
    t.ok(onVictim.length > 0 && onVictim.length < ids.length, `some entries are on the master to kill (${onVictim.length} of ${ids.length})`)

    // Load while the master dies and its replica takes over: every response must be right.
    const run = { loading: true }
    const outcomes: Array<{ id: string, status: number, body: string, cache: string }> = []
    const load = (async () => {
      for (let i = 0; run.loading; i++) {
        const id = ids[i % ids.length] ?? 'k0'
        const response = await server.inject(`/f/${id}`)
        outcomes.push({ id, status: response.statusCode, body: response.body, cache: String(response.headers['x-cache']) })
        await sleep(5)
      }
    })()
    const killedAt = Date.now()
    const promoted = await cluster.killMaster(victim)
    t.comment(`master on port ${victim} killed; replica on port ${promoted} promoted after ${Date.now() - killedAt} ms`)
    await sleep(500)
    run.loading = false
    await load
    const wrong = outcomes.filter((outcome) => outcome.status !== 200 || !outcome.body.includes(`"id":"${outcome.id}"`))
    t.same(wrong, [], `all ${outcomes.length} responses during the failover were 200 with the right body`)
    const tally = (cache: string): number => outcomes.filter((outcome) => outcome.cache === cache).length
    t.comment(`during the failover: ${tally('HIT')} hits, ${tally('MISS')} misses (uncached or recomputed)`)

    // After the failover, the victim's slots cache again: a new key there is stored, then hit.
    let fresh = ''
    for (let i = 0; fresh === ''; i++) {
      const candidate = `new${i}`
      if (await cluster.masterOfSlot(await slotOf(`${prefix}:e:{${keyId(['f', candidate])}}`)) === promoted) fresh = candidate
    }
    await until('a key on the promoted master to be cached', async () => (await server.inject(`/f/${fresh}`)).headers['x-cache'] === 'HIT', 15_000)
    const onPromoted = onVictim[0] ?? 'k0'
    await until('an entry written before the failover to be served again', async () => (await server.inject(`/f/${onPromoted}`)).headers['x-cache'] === 'HIT', 15_000)
    t.pass(`keys on the promoted master (${fresh}, ${onPromoted}) are served from the cache again`)
    t.equal(await server.cacheService.invalidatePattern('f:*') >= ids.length, true, 'a pattern still reaches every master')
  })
})
