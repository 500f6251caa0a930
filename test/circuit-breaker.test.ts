import Fastify from 'fastify'
import { Redis } from 'ioredis'
import t from 'tap'
import cache from '../lib/index'
import { CircuitBreaker } from '../lib/circuit-breaker'
import { keyId } from '../lib/keys'
import { DeadlineStore } from '../lib/stores/deadline'
import { RedisStore } from '../lib/stores/redis'
import { sleep, untilStored } from './helpers/app'
import { RedisProcess, uniquePrefix } from './helpers/redis'

t.test('the state machine: open after N failures, one probe after the cooldown, closed on its success', async (t) => {
  const breaker = new CircuitBreaker({ failures: 3, cooldownMs: 100 })
  t.equal(breaker.state, 'closed')
  breaker.failed()
  breaker.failed()
  breaker.succeeded()
  breaker.failed()
  breaker.failed()
  t.equal(breaker.state, 'closed', 'a success resets the count of consecutive failures')
  breaker.failed()
  t.equal(breaker.state, 'open')
  t.equal(breaker.allow(), false, 'open: calls are not attempted')
  await sleep(120)
  t.equal(breaker.allow(), true, 'after the cooldown one probe goes through')
  t.equal(breaker.state, 'half-open')
  t.equal(breaker.allow(), false, 'and only one')
  breaker.failed()
  t.equal(breaker.state, 'open', 'a failed probe opens it again')
  await sleep(120)
  t.equal(breaker.allow(), true)
  breaker.succeeded()
  t.equal(breaker.state, 'closed')
  t.equal(breaker.allow(), true)
})

t.test('a hung Redis: after a few timeouts the circuit opens and requests stop waiting; it closes after recovery', async (t) => {
  const redis = await RedisProcess.start()
  t.teardown(() => redis.stop())
  const app = Fastify()
  await app.register(cache, { redis: redis.url, prefix: uniquePrefix('breaker'), storeTimeoutMs: 200, circuitBreaker: { failures: 3, cooldownMs: 500 } })
  let calls = 0
  app.get('/data', { config: { cache: true } }, async () => ({ calls: ++calls }))
  t.teardown(() => app.close())
  await app.inject('/data')
  await untilStored(app)
  await redis.freeze()
  t.teardown(() => redis.unfreeze())
  for (let i = 0; i < 3; i++) t.equal((await app.inject('/data')).statusCode, 200, 'served while Redis hangs')
  t.equal((await app.cacheService.stats()).store.circuit, 'open')
  const started = Date.now()
  for (let i = 0; i < 20; i++) t.equal((await app.inject('/data')).statusCode, 200)
  t.ok(Date.now() - started < 1000, `with the circuit open, twenty requests did not wait on Redis (${Date.now() - started} ms)`)
  await redis.unfreeze()
  const deadline = Date.now() + 10_000
  while ((await app.inject('/data')).headers['x-cache'] !== 'HIT') {
    if (Date.now() > deadline) throw new Error('caching never resumed')
    await sleep(50)
  }
  t.equal((await app.cacheService.stats()).store.circuit, 'closed', 'a successful probe closed the circuit')
})

t.test('a hot key on a hung Redis: requests that share a read each count as a failure, and the circuit opens', async (t) => {
  const redis = await RedisProcess.start()
  t.teardown(() => redis.stop())
  const app = Fastify()
  await app.register(cache, { redis: redis.url, prefix: uniquePrefix('breaker-hot'), storeTimeoutMs: 200, circuitBreaker: { failures: 5, cooldownMs: 5000 } })
  app.get('/hot', { config: { cache: true } }, async () => 'computed')
  t.teardown(() => app.close())
  for (let i = 0; i < 3; i++) await app.inject('/hot')
  await untilStored(app)
  await redis.freeze()
  t.teardown(() => redis.unfreeze())
  const started = Date.now()
  const answers = await Promise.all(Array.from({ length: 10 }, async () => await app.inject('/hot')))
  t.ok(answers.every((answer) => answer.statusCode === 200 && answer.body === 'computed'), 'all served while Redis hangs')
  t.ok(Date.now() - started < 1000, `within about one deadline (${Date.now() - started} ms)`)
  t.equal((await app.cacheService.stats()).store.circuit, 'open', 'ten timed-out requests, one shared read: five failures or more')
})

t.test('each call on a hung Redis fails at its own deadline, counted from when it started', async (t) => {
  const redis = await RedisProcess.start()
  t.teardown(() => redis.stop())
  const client = new Redis(redis.url, { maxRetriesPerRequest: 1 })
  t.teardown(() => client.disconnect())
  const store = new DeadlineStore(new RedisStore(client, uniquePrefix('deadlines')), 200)
  t.equal(await store.get(keyId(['warm'])), null, 'answers while Redis does')
  redis.freeze()
  t.teardown(() => redis.unfreeze())
  const started = Date.now()
  const failedAt = async (delay: number): Promise<number> => {
    await sleep(delay)
    const error = await store.get(keyId(['k', delay])).then(() => undefined, (e: unknown) => e)
    t.match(error, { code: 'FST_CACHE_STORE_TIMEOUT' }, `the call started at ${delay} ms timed out`)
    return Date.now() - started
  }
  const [first, second, third] = await Promise.all([failedAt(0), failedAt(80), failedAt(150)])
  for (const [at, startedAt] of [[first, 0], [second, 80], [third, 150]] as const) {
    t.ok(at >= startedAt + 195 && at < startedAt + 400, `started at ${startedAt} ms, failed at ${at} ms`)
  }
  redis.unfreeze()
  t.equal(await store.get(keyId(['after'])), null, 'and answers again')
})

t.test('peeks of one key that share a read share its deadline; one that comes after it passed gets its own', async (t) => {
  const redis = await RedisProcess.start()
  t.teardown(() => redis.stop())
  const client = new Redis(redis.url, { maxRetriesPerRequest: 1 })
  t.teardown(() => client.disconnect())
  const breaker = new CircuitBreaker({ failures: 3, cooldownMs: 60_000 })
  const store = new DeadlineStore(new RedisStore(client, uniquePrefix('shared-deadline')), 200, breaker)
  const id = keyId(['hot'])
  t.equal(await store.peek(id), undefined, 'answers while Redis does')
  redis.freeze()
  t.teardown(() => redis.unfreeze())
  const started = Date.now()
  const failedAt = async (delay: number): Promise<number> => {
    await sleep(delay)
    const error = await store.peek(id).then(() => undefined, (e: unknown) => e)
    t.match(error, { code: 'FST_CACHE_STORE_TIMEOUT' }, `the peek started at ${delay} ms timed out`)
    return Date.now() - started
  }
  const [first, joined] = await Promise.all([failedAt(0), failedAt(100)])
  t.ok(first >= 195 && first < 400, `the first peek failed at its deadline (${first} ms)`)
  t.ok(joined !== undefined && Math.abs(joined - first) < 50, `the one that joined it 100 ms later failed with it (${joined} ms)`)
  t.equal(breaker.state, 'closed', 'two requests, two failures: below the threshold of three')
  // The shared read is still waiting on the frozen Redis: a peek now joins it, with a deadline of its own.
  const before = Date.now()
  const error = await store.peek(id).then(() => undefined, (e: unknown) => e)
  t.match(error, { code: 'FST_CACHE_STORE_TIMEOUT' }, 'the later peek timed out too')
  t.ok(Date.now() - before >= 195, `after a whole deadline of its own (${Date.now() - before} ms)`)
  t.equal(breaker.state, 'open', 'the third failure opened the circuit')
})

t.test('circuitBreaker: false keeps calling Redis every time', async (t) => {
  const redis = await RedisProcess.start()
  t.teardown(() => redis.stop())
  const app = Fastify()
  await app.register(cache, { redis: redis.url, prefix: uniquePrefix('no-breaker'), circuitBreaker: false })
  t.teardown(() => app.close())
  t.equal((await app.cacheService.stats()).store.circuit, undefined)
})
