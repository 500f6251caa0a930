import type { FastifyInstance } from 'fastify'
import t from 'tap'
import { STORE_KINDS, cachedApp, sleep, until } from './helpers/app'
import { createClient, deleteByPrefix, uniquePrefix } from './helpers/redis'

// Real Redis, TTLs of seconds and schedules of a second: more than the default on a busy machine.
t.setTimeout(120_000)

const storedCount = async (app: FastifyInstance): Promise<number> => (await app.cacheService.stats()).stored

/** Requests a cached URL until it is served from the cache (misses are stored after the response has gone out). */
async function prime (app: FastifyInstance, url: string): Promise<void> {
  await until(`${url} is a HIT`, async () => (await app.inject(url)).headers['x-cache'] === 'HIT')
}

/** A GET route cached under the tag `ws:<ws>`, whose body says how many times its handler ran. */
function workspaceRoute (app: FastifyInstance): Map<string, number> {
  const runs = new Map<string, number>()
  app.get('/ws/:ws', {
    config: { cache: { ttl: 120, tags: (request) => [`ws:${(request.params as { ws: string }).ws}`] } }
  }, async (request) => {
    const ws = (request.params as { ws: string }).ws
    const run = (runs.get(ws) ?? 0) + 1
    runs.set(ws, run)
    return { ws, run }
  })
  return runs
}

async function xcache (app: FastifyInstance, url: string): Promise<string | undefined> {
  const value = (await app.inject(url)).headers['x-cache']
  return value === undefined ? undefined : String(value)
}

type TestContext = Parameters<Parameters<typeof t.test>[0]>[0]

interface WriteBody { ws: number, fail?: 'client' | 'server' }

for (const kind of STORE_KINDS) {
  t.test(`${kind} store`, async (t) => {
    t.test('invalidates: a 2xx write invalidates its tags before the response is sent', async (t) => {
      const app = await cachedApp(t, kind)
      workspaceRoute(app)
      let writes = 0
      app.post('/items', {
        config: { cache: { invalidates: (request) => [`ws:${(request.body as WriteBody).ws}`] } }
      }, async (request, reply) => {
        writes++
        const body = request.body as WriteBody
        if (body.fail === 'client') return await reply.code(400).send({ error: 'bad item' })
        if (body.fail === 'server') throw new Error('the database is down')
        return { created: true }
      })
      await prime(app, '/ws/1')
      await prime(app, '/ws/2')

      const created = await app.inject({ method: 'POST', url: '/items', payload: { ws: 1 } })
      t.equal(created.statusCode, 200)
      t.same(created.json(), { created: true })
      t.equal(created.headers['x-cache'], undefined, 'a write-only route gets no x-cache header')
      t.equal(created.headers['cache-control'], undefined, 'nor a cache-control')
      t.equal(created.headers.etag, undefined, 'nor an etag')
      // No wait: the invalidation must have happened before the response reached the client.
      const next = await app.inject('/ws/1')
      t.equal(next.headers['x-cache'], 'MISS', 'the tag was invalidated before the response was sent')
      t.equal(next.json().run, 2, 'the next read is fresh')
      t.equal(await xcache(app, '/ws/2'), 'HIT', 'another tag is left alone')
      t.same((await app.cacheService.stats()).invalidations, { 'ws:1': 1 }, 'the invalidation is counted by tag')

      await prime(app, '/ws/1')
      const refused = await app.inject({ method: 'POST', url: '/items', payload: { ws: 1, fail: 'client' } })
      t.equal(refused.statusCode, 400)
      t.equal(await xcache(app, '/ws/1'), 'HIT', 'a 4xx write invalidates nothing')

      const failed = await app.inject({ method: 'POST', url: '/items', payload: { ws: 1, fail: 'server' } })
      t.equal(failed.statusCode, 500)
      t.equal(await xcache(app, '/ws/1'), 'HIT', 'a thrown error (5xx) invalidates nothing')
      t.equal(writes, 3)
      t.same((await app.cacheService.stats()).invalidations, { 'ws:1': 1 }, 'failed writes counted no invalidation')
    })

    t.test('invalidates: the response waits for a slow invalidation', async (t) => {
      const app = await cachedApp(t, kind)
      workspaceRoute(app)
      app.post('/items', {
        config: { cache: { invalidates: (request) => [`ws:${(request.body as WriteBody).ws}`] } }
      }, async () => ({ created: true }))
      // The hook calls the decorated service: slowing it down shows whether the response waits for it.
      const service = app.cacheService
      const invalidateTags = service.invalidateTags.bind(service)
      let finished = false
      service.invalidateTags = async (tags, options) => {
        await sleep(150)
        const count = await invalidateTags(tags, options)
        finished = true
        return count
      }
      await prime(app, '/ws/1')
      const created = await app.inject({ method: 'POST', url: '/items', payload: { ws: 1 } })
      t.equal(created.statusCode, 200)
      t.ok(finished, 'the invalidation had finished when the response arrived')
      t.equal(await xcache(app, '/ws/1'), 'MISS')
    })

    t.test('invalidates: a fixed array of tags', async (t) => {
      const app = await cachedApp(t, kind)
      workspaceRoute(app)
      app.post('/reset', { config: { cache: { invalidates: ['ws:1', 'ws:2'] } } }, async () => ({ reset: true }))
      await prime(app, '/ws/1')
      await prime(app, '/ws/2')
      await prime(app, '/ws/3')
      const reset = await app.inject({ method: 'POST', url: '/reset' })
      t.equal(reset.statusCode, 200)
      t.equal(await xcache(app, '/ws/1'), 'MISS')
      t.equal(await xcache(app, '/ws/2'), 'MISS')
      t.equal(await xcache(app, '/ws/3'), 'HIT', 'a tag not listed is left alone')
    })

    t.test('invalidates: a builder that throws does not change the response and is counted', async (t) => {
      const app = await cachedApp(t, kind, {}, { logger: false })
      workspaceRoute(app)
      app.post('/boom', {
        config: { cache: { invalidates: () => { throw new Error('no tags today') } } }
      }, async () => ({ saved: true }))
      await prime(app, '/ws/1')
      const before = await app.cacheService.stats()
      const response = await app.inject({ method: 'POST', url: '/boom', payload: { ws: 1 } })
      t.equal(response.statusCode, 200, 'the write still succeeds')
      t.same(response.json(), { saved: true })
      const after = await app.cacheService.stats()
      t.equal(after.errors, before.errors + 1, 'the failure is counted in errors')
      t.equal(after.routes['/boom']?.errors, 1, 'and in the route\'s errors')
      t.equal(await xcache(app, '/ws/1'), 'HIT', 'nothing was invalidated')
    })

    t.test('invalidates on a read route is refused with FST_CACHE_INVALID_OPTION', async (t) => {
      const declarations: Array<[string, (app: FastifyInstance) => void]> = [
        ['GET', (app) => app.get('/r', { config: { cache: { invalidates: ['x'] } } }, async () => 'x')],
        ['HEAD', (app) => app.head('/r', { config: { cache: { invalidates: () => ['x'] } } }, async () => 'x')],
        ['GET and POST', (app) => app.route({
          method: ['GET', 'POST'], url: '/r', config: { cache: { invalidates: ['x'] } }, handler: async () => 'x'
        })]
      ]
      for (const [what, declare] of declarations) {
        const app = await cachedApp(t, kind)
        let error: unknown
        try {
          // The plugin compiles route options in onRoute: the declaration itself throws (ready would reject otherwise).
          declare(app)
          await app.ready()
        } catch (caught) {
          error = caught
        }
        t.equal((error as { code?: string } | undefined)?.code, 'FST_CACHE_INVALID_OPTION', `${what}: refused`)
        t.match(String((error as Error | undefined)?.message), /invalidates/, `${what}: the message names the option`)
      }
    })

    t.test('invalidates on PUT, PATCH and DELETE routes', async (t) => {
      const app = await cachedApp(t, kind)
      workspaceRoute(app)
      const tags = (request: { params: unknown }): string[] => [`ws:${(request.params as { ws: string }).ws}`]
      app.put('/ws/:ws', { config: { cache: { invalidates: tags } } }, async () => ({ put: true }))
      app.patch('/ws/:ws', { config: { cache: { invalidates: tags } } }, async () => ({ patched: true }))
      app.delete('/ws/:ws', { config: { cache: { invalidates: tags } } }, async (_request, reply) => await reply.code(204).send())
      for (const method of ['PUT', 'PATCH', 'DELETE'] as const) {
        await prime(app, '/ws/1')
        await prime(app, '/ws/2')
        const response = await app.inject({ method, url: '/ws/1', payload: method === 'DELETE' ? undefined : { name: 'x' } })
        t.equal(response.statusCode, method === 'DELETE' ? 204 : 200, `${method} succeeds`)
        t.equal(response.headers['x-cache'], undefined, `${method}: no x-cache header`)
        t.equal(await xcache(app, '/ws/1'), 'MISS', `${method} invalidated ws:1`)
        t.equal(await xcache(app, '/ws/2'), 'HIT', `${method} left ws:2 alone`)
      }
    })

    t.test('refreshAhead: a hit near expiry refreshes the entry in the background', async (t) => {
      const app = await cachedApp(t, kind)
      let runs = 0
      app.get('/fresh', { config: { cache: { ttl: 2, refreshAhead: 1 } } }, async () => ({ run: ++runs }))
      const warmed = await app.cacheService.warm(['/fresh'])
      t.equal(warmed.ok, 1, 'warmed')
      t.equal(runs, 1)
      const early = await app.inject('/fresh')
      t.equal(early.headers['x-cache'], 'HIT')
      await sleep(300)
      t.equal(runs, 1, 'a hit far from expiry refreshes nothing')

      await sleep(900) // ~1.2 s after storing: less than refreshAhead (1 s) left of the 2 s TTL
      const hit = await app.inject('/fresh')
      t.equal(hit.headers['x-cache'], 'HIT', 'the hit near expiry is served from the cache')
      t.equal(hit.json().run, 1, 'with the old body')
      await until('the refresh is stored', async () => await storedCount(app) >= 2)
      t.equal(runs, 2, 'the handler ran once more')
      const next = await app.inject('/fresh')
      t.equal(next.headers['x-cache'], 'HIT', 'the next request is a hit')
      t.equal(next.json().run, 2, 'with the new body')
      t.equal(next.headers.age, '0', 'which is fresh')
    })

    t.test('refreshAhead: many concurrent hits near expiry refresh once', async (t) => {
      const app = await cachedApp(t, kind)
      let runs = 0
      app.get('/busy', { config: { cache: { ttl: 2, refreshAhead: 1 } } }, async () => {
        const run = ++runs
        await sleep(50)
        return { run }
      })
      t.equal((await app.cacheService.warm(['/busy'])).ok, 1)
      await sleep(1200)
      const hits = await Promise.all(Array.from({ length: 25 }, () => app.inject('/busy')))
      t.same(hits.map((hit) => hit.headers['x-cache']), hits.map(() => 'HIT'), 'every request is a hit')
      t.same(hits.map((hit) => hit.json().run), hits.map(() => 1), 'with the old body')
      await until('the refresh is stored', async () => await storedCount(app) >= 2)
      await sleep(300)
      t.equal(runs, 2, 'one refresh ran')
      const stats = await app.cacheService.stats()
      t.equal(stats.stored, 2, 'one refresh was stored')
      t.equal(stats.errors, 0)
    })

    t.test('without refreshAhead a hit near expiry refreshes nothing', async (t) => {
      const app = await cachedApp(t, kind)
      let runs = 0
      app.get('/plain', { config: { cache: { ttl: 2 } } }, async () => ({ run: ++runs }))
      t.equal((await app.cacheService.warm(['/plain'])).ok, 1)
      await sleep(1200)
      const hit = await app.inject('/plain')
      t.equal(hit.headers['x-cache'], 'HIT')
      await sleep(400)
      t.equal(runs, 1, 'the handler did not run again')
      t.equal(await storedCount(app), 1, 'nothing more was stored')
    })

    t.test('warm.onReady warms in the background after ready', async (t) => {
      const app = await cachedApp(t, kind, { warm: { onReady: ['/a', '/b'] } })
      const runs = { a: 0, b: 0 }
      app.get('/a', { config: { cache: { ttl: 120 } } }, async () => { await sleep(100); return { page: 'a', run: ++runs.a } })
      app.get('/b', { config: { cache: { ttl: 120 } } }, async () => { await sleep(100); return { page: 'b', run: ++runs.b } })
      t.equal((await app.cacheService.stats()).lastWarm, null, 'nothing warmed before ready')
      await app.ready()
      t.equal((await app.cacheService.stats()).lastWarm, null, 'ready() does not wait for the warming')
      await until('both pages are warmed', async () => (await app.cacheService.stats()).lastWarm !== null)
      t.same(runs, { a: 1, b: 1 }, 'each handler ran once')
      t.equal(await storedCount(app), 2, 'both responses were stored')
      for (const url of ['/a', '/b']) {
        const live = await app.inject(url)
        t.equal(live.headers['x-cache'], 'HIT', `${url}: the first live request is a hit`)
        t.equal(live.json().run, 1)
      }
      t.same(runs, { a: 1, b: 1 }, 'the live requests ran no handler')
      const lastWarm = (await app.cacheService.stats()).lastWarm
      t.match(lastWarm, { ok: 2, failed: 0, durationMs: Number, at: String })
      t.ok(!Number.isNaN(Date.parse(lastWarm?.at ?? '')), 'at is a date')
    })

    t.test('warm.schedule runs repeatedly and stops on close', async (t) => {
      const app = await cachedApp(t, kind, { warm: { schedule: { intervalMs: 1000, targets: ['/s'] } } })
      let runs = 0
      app.get('/s', { config: { cache: { ttl: 120 } } }, async () => ({ run: ++runs }))
      const service = app.cacheService
      const warm = service.warm.bind(service)
      let warmCalls = 0
      service.warm = async (targets, options) => { warmCalls++; return await warm(targets, options) }
      await app.ready()
      await sleep(2600)
      t.ok(runs >= 2, `the handler ran at least twice in 2.6 s (ran ${runs} times)`)
      t.ok(runs <= 3, `and not more often than the interval allows (ran ${runs} times)`)
      t.match((await app.cacheService.stats()).lastWarm, { ok: 1, failed: 0 })
      t.equal((await app.inject('/s')).headers['x-cache'], 'HIT', 'live requests hit the warmed entry')
      await app.close()
      const [runsAtClose, callsAtClose] = [runs, warmCalls]
      await sleep(1600)
      t.equal(warmCalls, callsAtClose, 'no warming run started after close')
      t.equal(runs, runsAtClose, 'no handler ran after close')
    })

    t.test('cleanup.intervalMs runs the cleanup on a schedule and stops on close', async (t) => {
      const prefix = uniquePrefix('maint-cleanup-schedule')
      const app = await cachedApp(t, kind, { prefix, cleanup: { intervalMs: 1000 } })
      const service = app.cacheService
      const cleanup = service.cleanup.bind(service)
      let cleanups = 0
      service.cleanup = async () => { cleanups++; return await cleanup() }
      await app.ready()
      const orphan = `${prefix}:e:orphan`
      const client = kind === 'redis' ? await createClient(t) : undefined
      if (client !== undefined) {
        await client.set(orphan, 'left behind')
        t.equal(await client.ttl(orphan), -1, 'planted without a TTL')
      }
      await until('a cleanup pass ran', async () => (await app.cacheService.stats()).store.countedAt !== undefined, 3500)
      t.ok(cleanups >= 1, 'the scheduled cleanup ran')
      if (client !== undefined) {
        await until('the orphan is removed', async () => await client.exists(orphan) === 0, 3500)
        t.pass('the key without a TTL was removed')
      }
      await app.close()
      const atClose = cleanups
      await sleep(1600)
      t.equal(cleanups, atClose, 'no cleanup ran after close')
    })

    t.test('stats(): invalidations by tag, raced, lastWarm', async (t) => {
      const app = await cachedApp(t, kind)
      app.get('/w', { config: { cache: true } }, async () => ({ ok: true }))
      const empty = await app.cacheService.stats()
      t.same(empty.invalidations, {})
      t.equal(empty.raced, 0, 'raced is counted')
      t.equal(empty.lastWarm, null)

      await app.cacheService.invalidateTags(['a', 'b'])
      await app.cacheService.invalidateTags(['a', 'b'])
      await app.cacheService.invalidateTags('c', { soft: true })
      t.same((await app.cacheService.stats()).invalidations, { a: 2, b: 2, c: 1 })

      const result = await app.cacheService.warm(['/w', { key: 'warm:value', compute: () => 42 }, '/missing'])
      t.match(result, { ok: 2, failed: 1 })
      const { lastWarm } = await app.cacheService.stats()
      t.match(lastWarm, { ok: 2, failed: 1, durationMs: Number, at: String })
      t.ok(!Number.isNaN(Date.parse(lastWarm?.at ?? '')), 'at is a date')
      t.equal(await app.cacheService.get('warm:value'), 42)
    })
  })
}

t.test('redis: cacheService.cleanup()', async (t) => {
  async function setup (t: TestContext) {
    const prefix = uniquePrefix('maint-cleanup')
    const app = await cachedApp(t, 'redis', { prefix })
    app.get('/page', { config: { cache: { ttl: 120, tags: ['real'] } } }, async () => ({ page: 'x'.repeat(500) }))
    const client = await createClient(t)
    await prime(app, '/page')
    await app.cacheService.set('k1', { a: 1 }, { tags: ['real'] })
    await app.cacheService.set('k2', 'y'.repeat(1000), { ttl: 300 })
    const entryKeys: string[] = []
    let cursor = '0'
    do {
      const [next, keys] = await client.scan(cursor, 'MATCH', `${prefix}:e:*`, 'COUNT', 1000)
      cursor = next
      entryKeys.push(...keys)
    } while (cursor !== '0')
    entryKeys.sort()
    let bytes = 0
    for (const key of entryKeys) bytes += await client.strlen(key)
    return { app, client, prefix, entryKeys, bytes }
  }

  t.test('counts the entries and their bytes; stats() reports them', async (t) => {
    const { app, client, entryKeys, bytes } = await setup(t)
    t.equal(entryKeys.length, 3, 'three entries stored')
    t.equal((await app.cacheService.stats()).store.entriesCounted, undefined, 'no count before a pass')
    const report = await app.cacheService.cleanup()
    t.match(report, { removedWithoutTtl: 0, removedDangling: 0, entries: 3, bytes, durationMs: Number })
    t.ok(report.scanned >= 3, 'the entries (and tag records) were scanned')
    const { store } = await app.cacheService.stats()
    t.equal(store.entriesCounted, 3)
    t.equal(store.bytesCounted, bytes)
    t.type(store.countedAt, 'string')
    t.ok(!Number.isNaN(Date.parse(String(store.countedAt))), 'countedAt is a date')
    for (const key of entryKeys) t.equal(await client.exists(key), 1, `${key} survives`)
  })

  t.test('removes keys without a TTL and dangling tag-set members, and nothing else', async (t) => {
    const { app, client, prefix, entryKeys, bytes } = await setup(t)
    const other = uniquePrefix('maint-cleanup-other')
    t.teardown(() => deleteByPrefix(client, other))
    const tagSet = `${prefix}:t:{real}`
    const members = (await client.smembers(tagSet)).sort()
    t.equal(members.length, 2, 'the real tag set holds the page and k1')

    // Planted without a TTL: an entry, a tag set, and a dangling member of a real tag set.
    await client.set(`${prefix}:e:x`, 'junk')
    await client.sadd(`${prefix}:t:y`, `${prefix}:e:nothing`)
    await client.sadd(tagSet, `${prefix}:e:gone`)
    // Not the plugin's: a nested namespace and another prefix, without TTLs.
    const survivors = [`${prefix}:other:z`, `${prefix}:other:e:z`, `${prefix}:pp`, `${prefix}:e`, `${other}:e:x`, `${other}:t:y`]
    for (const key of survivors) await client.set(key, 'not yours')

    const report = await app.cacheService.cleanup()
    t.equal(await client.exists(`${prefix}:e:x`), 0, 'the entry without a TTL is gone')
    t.equal(await client.exists(`${prefix}:t:y`), 0, 'the tag set without a TTL is gone')
    t.same((await client.smembers(tagSet)).sort(), members, 'the dangling member is gone, the live ones stay')
    t.ok(await client.pttl(tagSet) > 0, 'the real tag set keeps its TTL')
    for (const key of survivors) t.equal(await client.get(key), 'not yours', `${key} is left alone`)
    for (const key of entryKeys) t.equal(await client.exists(key), 1, `${key} survives`)
    t.equal(report.removedWithoutTtl, 2, 'two keys without a TTL removed')
    t.equal(report.removedDangling, 1, 'one dangling member removed')
    t.equal((await app.inject('/page')).headers['x-cache'], 'HIT', 'the cached page is still served')
    t.equal(await app.cacheService.invalidateTags('real'), 2, 'the tag still reaches its two entries')

    // The count is of the entries left under the prefix: the removed orphan `e:x` is not one of them.
    t.equal(report.entries, 3, 'entries counts what was stored, not the orphan it removed')
    t.equal(report.bytes, bytes, 'bytes counts what was stored, not the orphan it removed')
  })
})

t.test('memory: cacheService.cleanup() reports the entries and bytes of info', async (t) => {
  const app = await cachedApp(t, 'memory')
  app.get('/page', { config: { cache: { ttl: 120, tags: ['real'] } } }, async () => ({ page: 'x'.repeat(500) }))
  await prime(app, '/page')
  await app.cacheService.set('k1', { a: 1 }, { tags: ['real'] })
  await app.cacheService.set('k2', 'y'.repeat(1000))
  const report = await app.cacheService.cleanup()
  const { store } = await app.cacheService.stats()
  t.equal(store.kind, 'memory')
  t.equal(report.entries, 3)
  t.equal(report.entries, store.entries, 'entries as info reports them')
  t.equal(report.bytes, store.bytes, 'bytes as info reports them')
  t.ok(report.bytes > 1500, 'the bytes include the values')
  t.equal(report.removedWithoutTtl, 0)
  t.equal(store.entriesCounted, report.entries)
  t.equal(store.bytesCounted, report.bytes)
  t.type(store.countedAt, 'string')
})
