import Fastify, { type FastifyInstance } from 'fastify'
import { Redis } from 'ioredis'
import t from 'tap'
import cache from '../lib/index'
import { cachedApp, sleep, untilStored } from './helpers/app'
import { RedisProcess, type Teardownable, createClient, uniquePrefix } from './helpers/redis'

/** Collects the plugin's warnings, to count log lines in a storm. */
function captureWarnings (): { lines: string[], stream: { write: (line: string) => void } } {
  const lines: string[] = []
  return { lines, stream: { write: (line: string) => { if (JSON.parse(line).level >= 40) lines.push(line) } } }
}

async function appOn (t: Teardownable, redis: string | Redis, options: { storeTimeoutMs?: number, connectTimeoutMs?: number } = {}) {
  const warnings = captureWarnings()
  const app = Fastify({ logger: { level: 'warn', stream: warnings.stream } })
  await app.register(cache, { redis, prefix: uniquePrefix('fail-open'), storeTimeoutMs: 200, ...options })
  let calls = 0
  app.get('/data', { config: { cache: { ttl: 60 } } }, async () => ({ calls: ++calls }))
  t.teardown(() => app.close())
  return { app, warnings, calls: () => calls }
}

async function untilHit (app: FastifyInstance, url: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while ((await app.inject(url)).headers['x-cache'] !== 'HIT') {
    if (Date.now() > deadline) throw new Error(`${url} never became a hit`)
    await sleep(50)
  }
}

t.test('a Redis that stops and restarts: requests keep working, then caching resumes', async (t) => {
  const redis = await RedisProcess.start()
  t.teardown(() => redis.stop())
  const { app, warnings, calls } = await appOn(t, redis.url)
  await app.inject('/data')
  await untilStored(app)
  t.equal((await app.inject('/data')).headers['x-cache'], 'HIT')

  await redis.stop()
  const started = Date.now()
  for (let i = 0; i < 50; i++) {
    const response = await app.inject('/data')
    t.equal(response.statusCode, 200, 'served by the handler while Redis is down')
  }
  t.ok(Date.now() - started < 5000, 'nothing waited on the dead Redis')
  t.equal(calls(), 51)
  const stats = await app.cacheService.stats()
  t.ok(stats.errors >= 50, 'every failure is counted')
  t.ok(warnings.lines.length <= 4, `failures are logged once per burst, not per request (${warnings.lines.length} lines)`)

  await redis.restart()
  await untilHit(app, '/data')
  t.pass('caching resumed after Redis came back')
})

t.test('a hung Redis: each request waits at most storeTimeoutMs', async (t) => {
  const redis = await RedisProcess.start()
  t.teardown(() => redis.stop())
  const { app } = await appOn(t, redis.url, { storeTimeoutMs: 150 })
  await app.inject('/data')
  await untilStored(app)
  await redis.freeze()
  t.teardown(() => redis.unfreeze())
  const started = Date.now()
  const response = await app.inject('/data')
  const waited = Date.now() - started
  t.equal(response.statusCode, 200)
  t.equal(response.headers['x-cache'], 'MISS')
  t.ok(waited < 1500, `the request went on without the cache (${waited} ms)`)
  await redis.unfreeze()
  await untilHit(app, '/data')
})

t.test('a Redis that is down at start-up does not block it; caching starts when it comes up', async (t) => {
  const redis = await RedisProcess.start()
  const port = redis.port
  await redis.stop()
  const started = Date.now()
  const { app } = await appOn(t, `redis://127.0.0.1:${port}`, { connectTimeoutMs: 300 })
  await app.ready()
  t.ok(Date.now() - started < 3000, 'ready() did not wait on the missing Redis')
  const response = await app.inject('/data')
  t.equal(response.statusCode, 200)
  const revived = await RedisProcess.start({ port })
  t.teardown(() => revived.stop())
  await untilHit(app, '/data')
  t.pass('the app cached once Redis answered')
})

t.test('a corrupt entry is a miss, is counted, and is replaced', async (t) => {
  const client = await createClient(t)
  const prefix = uniquePrefix('corrupt')
  const app = await cachedApp(t, 'redis', { prefix })
  let calls = 0
  app.get('/page', { config: { cache: { key: 'page' } } }, async () => ({ calls: ++calls }))
  await app.inject('/page')
  await untilStored(app)
  const key = `${prefix}:e:{page}`
  t.ok(await client.exists(key), 'the entry lives at <prefix>:e:{<key>}')
  // Bytes without the store's header line, then a header line followed by a broken HTTP envelope.
  for (const garbage of [Buffer.from('not an entry'), Buffer.from([0x0a, 0x48, 1, 0, 0, 0, 99, 123])]) {
    await client.set(key, garbage)
    const response = await app.inject('/page')
    t.equal(response.statusCode, 200)
    t.equal(response.headers['x-cache'], 'MISS', 'the corrupt bytes were never served')
    await sleep(30)
    t.equal((await app.inject('/page')).headers['x-cache'], 'HIT', 'the entry was replaced')
  }
  t.ok((await app.cacheService.stats()).errors >= 1, 'the undecodable envelope was counted')
})

t.test('a read that lands after its deadline and takes the lease gives it back: the key is not blocked', async (t) => {
  const redis = await RedisProcess.start()
  t.teardown(() => redis.stop())
  const prefix = uniquePrefix('late-lease')
  const app = Fastify()
  // A breaker that stays closed, so that the one read below is sent; leases that would block the key for 10 s.
  await app.register(cache, { redis: redis.url, prefix, storeTimeoutMs: 150, circuitBreaker: false, lease: { ttlMs: 10_000, waitMs: 2000 } })
  let calls = 0
  // Tagged: the lookup goes straight to the full read, which asks for the lease (an untagged one peeks first).
  app.get('/cold', { config: { cache: { ttl: 60, tags: ['t'] } } }, async () => ({ calls: ++calls }))
  t.teardown(() => app.close())
  await app.ready()
  const client = new Redis(redis.url)
  t.teardown(() => client.disconnect())
  await client.ping()

  await redis.freeze()
  t.teardown(() => redis.unfreeze())
  const during = await app.inject('/cold')
  t.equal(during.headers['x-cache'], 'MISS', 'served by the handler while Redis is frozen')
  // Thawed, Redis runs the queued read: the key is empty, so the read takes the lease for a request long gone.
  await redis.unfreeze()
  await sleep(300)
  t.same(await client.keys(`${prefix}:l:*`), [], 'the late read gave the lease back')
  const started = Date.now()
  const after = await app.inject('/cold')
  t.equal(after.headers['x-cache'], 'MISS')
  t.ok(Date.now() - started < 1000, `the next request computed at once, not after the lease's wait (${Date.now() - started} ms)`)
  t.equal(calls, 2)
})
