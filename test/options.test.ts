import fastifyRedis from '@fastify/redis'
import Fastify from 'fastify'
import type { Redis } from 'ioredis'
import { randomBytes } from 'node:crypto'
import t from 'tap'
import cache, { type CachePluginOptions, type RouteCacheOptions } from '../lib/index'
import { sleep, until, untilStored } from './helpers/app'
import { RedisProcess, createClient, deleteByPrefix, freePort, redisUrl, uniquePrefix } from './helpers/redis'

// Real Redis servers and reconnection waits: more than the default 30 s on a busy machine.
t.setTimeout(120_000)

type TestContext = Parameters<Parameters<typeof t.test>[0]>[0]

/** Registers the plugin with the options and waits for ready; resolves to the error it failed with, if any. */
async function registrationError (t: TestContext, options: unknown): Promise<unknown> {
  const app = Fastify()
  t.teardown(() => app.close().catch(() => {}))
  try {
    await app.register(cache, options as CachePluginOptions)
    await app.ready()
    return undefined
  } catch (error) {
    return error
  }
}

/** Declares a route with the cache config and waits for ready; resolves to the error, if any. */
async function routeError (t: TestContext, url: string, config: unknown): Promise<unknown> {
  const app = Fastify()
  t.teardown(() => app.close().catch(() => {}))
  await app.register(cache, {})
  try {
    app.get(url, { config: { cache: config as RouteCacheOptions } }, async () => 'x')
    await app.ready()
    return undefined
  } catch (error) {
    return error
  }
}

function messageOf (error: unknown): string {
  return error instanceof Error ? error.message : ''
}

function codeOf (error: unknown): unknown {
  return typeof error === 'object' && error !== null ? (error as { code?: unknown }).code : undefined
}

/** Names of the clients connected to the Redis that `raw` talks to. */
async function clientNames (raw: Redis): Promise<string[]> {
  const list = await raw.client('LIST') as string
  return list.split('\n').map((line) => /(?:^| )name=(\S*)/.exec(line)?.[1] ?? '').filter((name) => name !== '')
}

t.test('each wrong plugin option throws FST_CACHE_INVALID_OPTION naming the option and the value', async (t) => {
  // [options, the option's name in the message, how the given value is shown]
  const cases: Array<[unknown, string, string]> = [
    [{ ttl: -5 }, 'ttl', '-5'],
    [{ ttl: 1.5 }, 'ttl', '1.5'],
    [{ ttl: 'x' }, 'ttl', '"x"'],
    [{ ttl: 0 }, 'ttl', '0'],
    [{ prefix: 'a b' }, 'prefix', '"a b"'],
    [{ prefix: 'a*' }, 'prefix', '"a*"'],
    [{ prefix: '' }, 'prefix', '""'],
    [{ prefix: 'a:' }, 'prefix', '"a:"'],
    [{ statuses: [500] }, 'statuses', '500'],
    [{ statuses: [] }, 'statuses', '[]'],
    [{ statuses: [200, 99] }, 'statuses', '99'],
    [{ maxEntryBytes: 0 }, 'maxEntryBytes', '0'],
    [{ storeTimeoutMs: 0 }, 'storeTimeoutMs', '0'],
    [{ connectTimeoutMs: -1 }, 'connectTimeoutMs', '-1'],
    [{ tll: 60 }, 'tll', '60'],
    [{ redis: 'http://x' }, 'redis', '"http://x"'],
    [{ redis: 6379 }, 'redis', '6379'],
    [{ memory: { maxEntries: 0 } }, 'memory.maxEntries', '0'],
    [{ memory: { maxEntires: 10 } }, 'memory.maxEntires', '10'],
    [{ memory: { ttl: 0 } }, 'memory.ttl', '0'],
    [{ compression: { minBytes: -1 } }, 'compression', '-1'],
    [{ compression: true }, 'compression', 'true'],
    [{ compression: { quality: 12 } }, 'compression', '12'],
    [{ compression: { quality: 2.5 } }, 'compression', '2.5'],
    [{ lookup: 'sometimes' }, 'lookup', '"sometimes"'],
    [{ allowBypass: 'yes' }, 'allowBypass', '"yes"']
  ]
  for (const [options, name, given] of cases) {
    const label = JSON.stringify(options)
    const error = await registrationError(t, options)
    t.ok(error instanceof Error, `${label} throws`)
    t.equal(codeOf(error), 'FST_CACHE_INVALID_OPTION', `${label} has the code`)
    const message = messageOf(error)
    t.ok(message.includes(`option "${name}"`) || message.includes(`option "${name}.`), `${label}: the message names ${name}: ${message}`)
    t.ok(message.includes(`got ${given}`), `${label}: the message shows what was given (${given}): ${message}`)
  }
})

t.test('the message of a pattern option quotes the pattern that is enforced', async (t) => {
  const error = await registrationError(t, { prefix: 'a b' })
  const message = messageOf(error)
  t.ok(message.includes('A-Za-z0-9'), `the expected pattern is shown as it is, not lower-cased: ${message}`)
})

t.test('valid options register', async (t) => {
  const error = await registrationError(t, {
    prefix: 'analytics:prod',
    ttl: 30,
    statuses: [200, 404],
    maxEntryBytes: 1000,
    allowBypass: () => false,
    lookup: 'onRequest',
    storeTimeoutMs: 100,
    connectTimeoutMs: 0,
    memory: { maxEntries: 10, maxBytes: 4096 }
  })
  t.equal(error, undefined)
})

t.test("a route's bad config.cache throws FST_CACHE_INVALID_OPTION naming the route", async (t) => {
  const cases: Array<[string, unknown, string, string]> = [
    ['/bad-ttl', { ttl: -1 }, 'ttl', '-1'],
    ['/bad-field', { tll: 5 }, 'tll', '5'],
    ['/bad-vary', { vary: ['bad header'] }, 'vary', '"bad header"'],
    ['/bad-statuses', { statuses: [503] }, 'statuses', '503'],
    ['/bad-key', { key: '' }, 'key', '""'],
    ['/bad-tags', { tags: [''] }, 'tags', '""']
  ]
  for (const [url, config, name, given] of cases) {
    const error = await routeError(t, url, config)
    t.ok(error instanceof Error, `${url} throws`)
    t.equal(codeOf(error), 'FST_CACHE_INVALID_OPTION', `${url} has the code`)
    const message = messageOf(error)
    t.ok(message.includes(`route ${url}`), `${url}: the message names the route: ${message}`)
    t.ok(message.includes(name), `${url}: the message names ${name}: ${message}`)
    t.ok(message.includes(`got ${given}`), `${url}: the message shows what was given: ${message}`)
  }
})

t.test('cache: false and no cache config add no hooks', async (t) => {
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(cache, {})
  let calls = 0
  app.get('/off', { config: { cache: false } }, async () => ({ calls: ++calls }))
  app.get('/plain', async () => ({ calls: ++calls }))
  app.get('/on', { config: { cache: true } }, async () => ({ calls: ++calls }))
  await app.ready()

  for (const url of ['/off', '/plain']) {
    const first = await app.inject(url)
    const second = await app.inject(url)
    t.equal(first.statusCode, 200)
    t.equal(first.headers['x-cache'], undefined, `${url} has no x-cache`)
    t.equal(second.headers['x-cache'], undefined)
    t.equal(first.headers['etag'], undefined, `${url} gets no etag from the plugin`)
    t.equal(first.headers['cache-control'], undefined, `${url} gets no cache-control from the plugin`)
    t.not(first.json().calls, second.json().calls, `${url} runs its handler every time`)
  }
  const on = await app.inject('/on')
  t.equal(on.headers['x-cache'], 'MISS', 'an opted-in route does get x-cache')
  const stats = await app.cacheService.stats()
  t.strictSame(Object.keys(stats.routes), ['/on'], 'only the opted-in route is tracked')
})

t.test('a client passed in is not closed by app.close()', async (t) => {
  const client = await createClient(t)
  const cleaner = await createClient(t)
  const prefix = uniquePrefix('options-client')
  t.teardown(() => deleteByPrefix(cleaner, prefix))
  const app = Fastify()
  await app.register(cache, { redis: client, prefix })
  app.get('/x', { config: { cache: true } }, async () => 'x')
  await app.ready()
  await app.inject('/x')
  await untilStored(app, 1, 3000)
  await app.close()
  t.equal(client.status, 'ready', 'still ready after app.close()')
  t.equal(await client.ping(), 'PONG', 'and usable')
  const [, keys] = await client.scan('0', 'MATCH', `${prefix}:e:*`, 'COUNT', 1000)
  t.equal(keys.length, 1, 'the entry went into that client')
  await client.quit()
  await until('the client has ended', async () => client.status === 'end', 2000)
  t.equal(client.status, 'end', 'quit by its owner')
})

t.test("the plugin's own client is closed by app.close()", async (t) => {
  const raw = await createClient(t)
  const base = new URL(await redisUrl())
  const variants: Array<[string, (name: string) => CachePluginOptions['redis']]> = [
    ['ioredis options', (name) => ({ host: base.hostname, port: Number(base.port || 6379), connectionName: name })],
    ['a URL', (name) => {
      const url = new URL(base.href)
      url.searchParams.set('connectionName', name)
      return url.href
    }]
  ]
  for (const [label, redisOption] of variants) {
    const name = `fst-cache-test-${randomBytes(6).toString('hex')}`
    const prefix = uniquePrefix('options-owned')
    t.teardown(() => deleteByPrefix(raw, prefix))
    const app = Fastify()
    await app.register(cache, { redis: redisOption(name), prefix })
    app.get('/x', { config: { cache: true } }, async () => 'x')
    await app.ready()
    await app.inject('/x')
    await untilStored(app, 1, 3000)
    t.ok((await clientNames(raw)).includes(name), `${label}: the plugin's client is connected`)
    t.ok((await raw.scan('0', 'MATCH', `${prefix}:e:*`, 'COUNT', 1000))[1].length > 0, `${label}: it stored the entry`)
    await app.close()
    await until(`${label}: the client ${name} is gone`, async () => !(await clientNames(raw)).includes(name), 2000)
      .then(() => t.pass(`${label}: the plugin's client is closed by app.close()`), (error: unknown) => t.fail(String(error)))
  }
})

t.test('with @fastify/redis registered first, the plugin uses app.redis and does not close it', async (t) => {
  const client = await createClient(t)
  const prefix = uniquePrefix('options-fastify-redis')
  t.teardown(() => deleteByPrefix(client, prefix))
  const app = Fastify()
  await app.register(fastifyRedis, { client })
  await app.register(cache, { prefix })
  let calls = 0
  app.get('/x', { config: { cache: { key: 'the-key' } } }, async () => ({ calls: ++calls }))
  await app.ready()
  t.equal(app.redis, client)

  t.equal((await app.inject('/x')).headers['x-cache'], 'MISS')
  await untilStored(app, 1, 3000)
  t.equal(await client.exists(`${prefix}:e:{the-key}`), 1, "the entry is in app.redis's Redis under the prefix")
  t.equal((await app.cacheService.stats()).store.kind, 'redis', 'the store is Redis, not memory')
  const hit = await app.inject('/x')
  t.equal(hit.headers['x-cache'], 'HIT')
  t.equal(hit.json().calls, 1)

  await app.close()
  t.equal(client.status, 'ready', 'app.redis is not closed by the cache plugin')
  t.equal(await client.ping(), 'PONG')
})

t.test('registration waits for Redis: the first request after ready() is stored', async (t) => {
  const redis = await RedisProcess.start()
  t.teardown(() => redis.stop())
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(cache, { redis: redis.url, prefix: uniquePrefix('options-wait') })
  let calls = 0
  app.get('/x', { config: { cache: true } }, async () => ({ calls: ++calls }))
  await app.ready()

  const first = await app.inject('/x')
  t.equal(first.statusCode, 200)
  t.equal(first.headers['x-cache'], 'MISS')
  await untilStored(app, 1, 1000)
  const stats = await app.cacheService.stats()
  t.equal(stats.stored, 1, 'the very first response is stored')
  t.equal(stats.errors, 0, 'with no store error')
  const second = await app.inject('/x')
  t.equal(second.headers['x-cache'], 'HIT')
  t.equal(second.json().calls, 1)
})

t.test('registration waits (up to connectTimeoutMs) for a Redis that is slow to answer', async (t) => {
  const redis = await RedisProcess.start()
  t.teardown(() => redis.stop())
  redis.freeze()
  t.teardown(() => { if (redis.running) redis.unfreeze() })
  const app = Fastify()
  t.teardown(() => app.close())
  const started = Date.now()
  const thaw = setTimeout(() => redis.unfreeze(), 400)
  t.teardown(() => clearTimeout(thaw))
  await app.register(cache, { redis: redis.url, prefix: uniquePrefix('options-slow'), connectTimeoutMs: 5000 })
  app.get('/x', { config: { cache: true } }, async () => 'x')
  await app.ready()
  const elapsed = Date.now() - started
  t.ok(elapsed >= 350, `ready() waited for Redis to answer (${elapsed} ms)`)
  t.ok(elapsed < 3000, `and no longer than needed (${elapsed} ms)`)
  t.equal((await app.inject('/x')).headers['x-cache'], 'MISS')
  await untilStored(app, 1, 1000)
  t.equal((await app.cacheService.stats()).errors, 0, 'the first request was looked up and stored without a store error')
  t.equal((await app.inject('/x')).headers['x-cache'], 'HIT')
})

t.test('a Redis that is not there does not block start-up; caching starts once it appears', async (t) => {
  const port = await freePort()
  const app = Fastify()
  t.teardown(() => app.close())
  let calls = 0
  const started = Date.now()
  await app.register(cache, { redis: `redis://127.0.0.1:${port}`, prefix: uniquePrefix('options-absent'), connectTimeoutMs: 300 })
  app.get('/x', { config: { cache: true } }, async () => ({ calls: ++calls }))
  await app.ready()
  const elapsed = Date.now() - started
  t.ok(elapsed < 3000, `ready() resolved in ${elapsed} ms`)

  const first = await app.inject('/x')
  const second = await app.inject('/x')
  t.equal(first.statusCode, 200, 'the route answers')
  t.equal(second.statusCode, 200)
  t.not(second.headers['x-cache'], 'HIT', 'uncached')
  t.equal(second.json().calls, 2, 'the handler ran each time')

  const redis = await RedisProcess.start({ port })
  t.teardown(() => redis.stop())
  const deadline = Date.now() + 10_000
  let outcome: unknown
  while (Date.now() < deadline) {
    outcome = (await app.inject('/x')).headers['x-cache']
    if (outcome === 'HIT') break
    await sleep(100)
  }
  t.equal(outcome, 'HIT', 'the route becomes cached once Redis is there')
})
