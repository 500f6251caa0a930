import Fastify, { type FastifyInstance } from 'fastify'
import type { Redis } from 'ioredis'
import t from 'tap'
import cache, { type CachePluginOptions } from '../lib/index'
import { sleep, until } from './helpers/app'
import { startWorker } from './helpers/workers'
import { type Teardownable, createClient, deleteByPrefix, redisUrl, uniquePrefix } from './helpers/redis'

t.test('500 concurrent requests on a cold key across 4 processes sharing Redis', async (t) => {
  const prefix = uniquePrefix('stampede')
  const client = await createClient(t)
  t.teardown(() => deleteByPrefix(client, prefix))
  const env = { REDIS_URL: await redisUrl(), CACHE_PREFIX: prefix }
  const ports = await Promise.all([1, 2, 3, 4].map(() => startWorker(t, 'stampede-worker', env)))
  const responses = await Promise.all(Array.from({ length: 500 }, async (_, i) => {
    const response = await fetch(`http://127.0.0.1:${ports[i % 4]}/report`)
    return { status: response.status, cache: response.headers.get('x-cache'), body: await response.json() as { computedBy: number } }
  }))
  t.ok(responses.every((response) => response.status === 200), 'every request succeeded')
  let calls = 0
  let errors = 0
  for (const port of ports) {
    const counts = (await (await fetch(`http://127.0.0.1:${port}/calls`)).json()) as { calls: number, errors: number }
    calls += counts.calls
    errors += counts.errors
  }
  t.equal(calls, 1, `the handler ran once across all four processes (store errors: ${errors})`)
  t.equal(new Set(responses.map((response) => response.body.computedBy)).size, 1, 'everyone got the one computation')
})

async function instance (t: Teardownable, prefix: string, handler: () => Promise<unknown>, lease = { ttlMs: 1000, waitMs: 400 }): Promise<FastifyInstance> {
  const app = Fastify()
  await app.register(cache, { redis: await redisUrl(), prefix, lease })
  app.get('/k', { config: { cache: true } }, handler)
  t.teardown(() => app.close())
  return app
}

t.test('a lease holder that throws or hangs holds the other instances no longer than their wait', async (t) => {
  const prefix = uniquePrefix('lease')
  const client = await createClient(t)
  t.teardown(() => deleteByPrefix(client, prefix))
  let calls = 0
  const hanging = await instance(t, prefix, async () => { calls++; await sleep(1500); return 'late' })
  const throwing = await instance(t, prefix, async () => { calls++; await sleep(100); throw new Error('leader fails') })
  const other = await instance(t, prefix, async () => { calls++; return 'other' })

  const leader = hanging.inject('/k')
  await sleep(50)
  const started = Date.now()
  const waiter = await other.inject('/k')
  t.equal(waiter.statusCode, 200)
  t.equal(waiter.body, 'other', 'the waiter ran the handler itself')
  t.ok(Date.now() - started < 1200, `after a bounded wait (${Date.now() - started} ms)`)
  t.equal((await leader).body, 'late')
  await sleep(100)
  t.equal((await other.inject('/k')).body, 'other', 'the late holder did not overwrite the newer entry')

  await other.cacheService.invalidatePattern('*')
  const failing = throwing.inject('/k')
  await sleep(30)
  const afterFailure = await other.inject('/k')
  t.equal(afterFailure.statusCode, 200, 'the failure of the holder is not shared')
  t.equal((await failing).statusCode, 500)
  t.ok(calls >= 4)
})

t.test('stale-while-revalidate across instances: one background refresh in all', async (t) => {
  const prefix = uniquePrefix('swr-lease')
  const client = await createClient(t)
  t.teardown(() => deleteByPrefix(client, prefix))
  let calls = 0
  const apps: FastifyInstance[] = []
  for (let i = 0; i < 3; i++) {
    const app = Fastify()
    await app.register(cache, { redis: await redisUrl(), prefix })
    app.get('/kpi', { config: { cache: { ttl: 1, staleWhileRevalidate: 30 } } }, async () => { calls++; await sleep(200); return { calls } })
    t.teardown(() => app.close())
    apps.push(app)
  }
  await apps[0].inject('/kpi')
  await sleep(1200)
  const stale = await Promise.all(apps.flatMap((app) => Array.from({ length: 10 }, () => app.inject('/kpi'))))
  t.ok(stale.every((response) => response.headers['x-cache'] === 'STALE'), 'every instance served the stale entry at once')
  await sleep(800)
  t.equal(calls, 2, 'the first computation, then exactly one refresh for thirty stale hits on three instances')
  for (const app of apps) t.equal((await app.inject('/kpi')).headers['x-cache'], 'HIT')
})

/**
 * The commands Redis runs for keys under the prefix, in order, as MONITOR reports them (a little after they ran), an
 * ECHO as 'handler'. Commands a script runs are listed too, with 'lua' as their source: only round trips count here.
 */
async function watchCommands (t: Teardownable, prefix: string): Promise<string[]> {
  const monitor = await (await createClient(t)).monitor()
  t.teardown(() => monitor.disconnect())
  const seen: string[] = []
  monitor.on('monitor', (_time: string, args: string[], source: string) => {
    if (source.includes('lua') || !args.some((arg) => arg.includes(prefix))) return
    const command = String(args[0]).toLowerCase()
    seen.push(command === 'echo' ? 'handler' : command)
  })
  return seen
}

/** An app on its own prefix, a client for looking into Redis, and the commands Redis runs for the prefix. */
async function watchedApp (t: Teardownable, name: string, options: CachePluginOptions = {}): Promise<{ app: FastifyInstance, client: Redis, prefix: string, seen: string[] }> {
  const prefix = uniquePrefix(name)
  const client = await createClient(t)
  t.teardown(() => deleteByPrefix(client, prefix))
  const seen = await watchCommands(t, prefix)
  const app = Fastify()
  await app.register(cache, { redis: await redisUrl(), prefix, ...options })
  t.teardown(() => app.close())
  return { app, client, prefix, seen }
}

t.test('a miss takes the lease within its read, and gives it back with its write: no round trip of their own', async (t) => {
  const { app, client, prefix, seen } = await watchedApp(t, 'lease-in-read', { compression: false })
  const leaseKeys: number[] = []
  const handler = async (): Promise<string> => {
    await client.echo(`${prefix}:handler`)
    leaseKeys.push((await client.keys(`${prefix}:l:*`)).length)
    return 'computed'
  }
  app.get('/plain', { config: { cache: { key: 'plain' } } }, handler)
  app.get('/tagged', { config: { cache: { key: 'tagged', tags: ['t'] } } }, handler)
  // Another key with the same tag first: Redis then knows every script, and the tag has its token record.
  app.get('/warm', { config: { cache: { key: 'warm', tags: ['t'] } } }, async () => 'warm')
  await app.inject('/warm')
  await until('/warm stored', async () => (await client.exists(`${prefix}:e:{warm}`)) === 1)
  // MONITOR reports commands a little after they ran: what the warm-up sent must be in before counting starts.
  await sleep(200)
  // On a single node the read's script also reads the pattern epoch and the tags' tokens, and the write's checks
  // them and records the entry under its tags: one command each.
  for (const [url, before] of [['/plain', ['get', 'evalsha']], ['/tagged', ['evalsha']]] as const) {
    seen.length = 0
    t.equal((await app.inject(url)).headers['x-cache'], 'MISS')
    await until(`${url} stored`, async () => (await client.exists(`${prefix}:e:{${url.slice(1)}}`)) === 1)
    await sleep(100)
    const marker = seen.indexOf('handler')
    t.ok(marker > 0, `${url}: the handler ran after the read (${seen.join(' ')})`)
    t.notOk(seen.slice(0, marker).includes('set'), `${url}: no SET NX of a lease before the handler`)
    t.same(seen.slice(0, marker).sort(), [...before].sort(), `${url}: the read alone before the handler`)
    t.equal(leaseKeys.pop(), 1, `${url}: the lease is held while the handler runs`)
    t.same(seen.slice(marker + 1).filter((command) => command !== 'keys' && command !== 'exists'), ['evalsha'],
      `${url}: after it, the write alone, with no separate release`)
    t.equal((await client.keys(`${prefix}:l:*`)).length, 0, `${url}: the lease is given back`)
  }
})

t.test('a route whose lookups keep missing skips the plain GET and reads once; one that hits keeps it', async (t) => {
  const { app, client, prefix, seen } = await watchedApp(t, 'hit-rate')
  let n = 0
  app.get('/always-new', { config: { cache: { key: () => ['new', ++n] } } }, async () => 'computed')
  app.get('/same', { config: { cache: { key: 'same' } } }, async () => 'computed')
  for (let i = 0; i < 30; i++) await app.inject('/always-new')
  await app.inject('/same')
  await until('/same stored', async () => (await client.exists(`${prefix}:e:{same}`)) === 1)
  for (let i = 0; i < 30; i++) await app.inject('/same')
  await sleep(200)

  seen.length = 0
  t.equal((await app.inject('/always-new')).headers['x-cache'], 'MISS')
  await until('the miss stored', async () => (await client.exists(`${prefix}:e:{new:${n}}`)) === 1)
  await sleep(100)
  t.equal(seen[0], 'evalsha', `a miss after thirty: the full read first, no plain GET (${seen.join(' ')})`)
  seen.length = 0
  t.equal((await app.inject('/same')).headers['x-cache'], 'HIT')
  await sleep(100)
  t.same(seen, ['get'], 'a hit after thirty: one plain GET')
})

t.test('concurrent hits of one key share one plain GET; a write in this process ends the sharing', async (t) => {
  const { app, client, prefix, seen } = await watchedApp(t, 'shared-peek', { compression: false })
  let version = 0
  app.get('/hot', { config: { cache: { key: 'hot' } } }, async () => ({ version: ++version }))
  await app.inject('/hot')
  await until('/hot stored', async () => (await client.exists(`${prefix}:e:{hot}`)) === 1)
  for (let i = 0; i < 5; i++) await app.inject('/hot')
  await sleep(200)

  seen.length = 0
  const hits = await Promise.all(Array.from({ length: 20 }, async () => await app.inject('/hot')))
  await sleep(100)
  t.ok(hits.every((hit) => hit.headers['x-cache'] === 'HIT' && hit.json<{ version: number }>().version === 1), 'twenty hits, one body')
  t.same(seen, ['get'], 'twenty concurrent hits, one GET')

  // Invalidated by this process while hits are in flight: a request after that never gets the entry it removed (the
  // requests in flight may have computed and stored the next one meanwhile).
  const during = Array.from({ length: 5 }, async () => await app.inject('/hot'))
  await app.cacheService.invalidate('hot')
  t.equal((await app.inject('/hot')).json<{ version: number }>().version, 2, 'after the invalidation, the next computation')
  await Promise.all(during)
})

t.test('cacheService.set with tags is one command on a single node: the tags\' tokens kept, or created', async (t) => {
  const { app, client, prefix, seen } = await watchedApp(t, 'tagged-set')
  await app.cacheService.set('first', { n: 1 }, { ttl: 60, tags: ['kept'] })
  const kept = await client.get(`${prefix}:g:{kept}`)
  t.ok(kept, 'the first write created the token of its tag')
  await sleep(200)

  seen.length = 0
  await app.cacheService.set('second', { n: 2 }, { ttl: 60, tags: ['kept', 'new'] })
  await sleep(100)
  t.same(seen, ['evalsha'], 'one command, the tokens read and created inside it')
  t.equal(await client.get(`${prefix}:g:{kept}`), kept, 'an existing token is kept')
  t.ok(await client.get(`${prefix}:g:{new}`), 'an absent one is created')
  t.same(await app.cacheService.get('second'), { n: 2 }, 'the header names the current tokens: the entry reads as valid')
  await app.cacheService.invalidateTags(['new'])
  t.equal(await app.cacheService.get('second'), undefined, 'invalidating either tag removes it')
  t.same(await app.cacheService.get('first'), { n: 1 }, 'the other entry of the kept tag stays')
})
