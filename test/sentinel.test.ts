/**
 * Redis Sentinel: the plugin configured with `redis: { sentinels, name }` (ioredis's Sentinel support) finds the
 * master through Sentinel and caches; when the master crashes and Sentinel promotes the replica, the app keeps
 * answering (uncached while there is no master) and caches again on the new master, where the entries replicated
 * before the crash are still served.
 */
import Fastify, { type FastifyInstance } from 'fastify'
import { Redis } from 'ioredis'
import t from 'tap'
import cache from '../lib/index'
import { sleep, untilStored } from './helpers/app'
import { type Teardownable, uniquePrefix } from './helpers/redis'
import { SentinelSet } from './helpers/redis-sentinel'

let set: SentinelSet
t.before(async () => {
  set = await SentinelSet.start({ sentinels: 1, downAfterMs: 1000, failoverTimeoutMs: 3000 })
})
t.teardown(async () => await set?.stop())

async function appOnSentinel (t: Teardownable, prefix = uniquePrefix('sentinel')): Promise<{ app: FastifyInstance, prefix: string, calls: () => number }> {
  const app = Fastify()
  await app.register(cache, { redis: { sentinels: set.sentinels, name: set.name }, prefix, connectTimeoutMs: 5000 })
  let calls = 0
  app.get('/report', { config: { cache: { ttl: 60 } } }, async (request) => ({ query: request.query, calls: ++calls }))
  t.teardown(() => app.close())
  return { app, prefix, calls: () => calls }
}

/** The number of keys under the prefix on one server, asked directly. */
async function keysOn (port: number, prefix: string): Promise<number> {
  const client = new Redis({ host: '127.0.0.1', port, lazyConnect: true, retryStrategy: () => null })
  try {
    await client.connect()
    const [, keys] = await client.scan('0', 'MATCH', `${prefix}:*`, 'COUNT', 10_000)
    return keys.length
  } finally {
    client.disconnect()
  }
}

async function until (what: string, check: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!await check()) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`)
    await sleep(50)
  }
}

t.test('configured with sentinels and a master name, the plugin caches on the master', async (t) => {
  const { app, prefix, calls } = await appOnSentinel(t)
  t.same(await set.masterAddress(), { host: '127.0.0.1', port: set.master.port })
  const first = await app.inject('/report?n=1')
  t.equal(first.headers['x-cache'], 'MISS')
  await untilStored(app)
  const second = await app.inject('/report?n=1')
  t.equal(second.headers['x-cache'], 'HIT')
  t.equal(second.body, first.body)
  t.equal(calls(), 1)
  t.match(await app.cacheService.stats(), { errors: 0, store: { kind: 'redis' } })
  t.ok(await keysOn(set.master.port, prefix) > 0, 'the entry is on the master')
})

t.test('the master crashes: the app keeps serving, and caches again once Sentinel has promoted the replica', async (t) => {
  const { app, prefix, calls } = await appOnSentinel(t)
  await app.inject('/report?n=before')
  await untilStored(app)
  t.equal((await app.inject('/report?n=before')).headers['x-cache'], 'HIT')
  // Replication is asynchronous: the entry must be on the replica before the crash for the new master to have it.
  const onMaster = await keysOn(set.master.port, prefix)
  await until('the entry is replicated', async () => await keysOn(set.replica.port, prefix) === onMaster, 5000)

  await set.crashMaster()
  const crashedAt = Date.now()
  // Requests while there is no master, and while the client finds the new one: every one is answered.
  const statuses: number[] = []
  let slowest = 0
  const failover = { done: false }
  const promotion = set.untilReplicaPromoted(15_000).finally(() => { failover.done = true })
  while (!failover.done) {
    const started = Date.now()
    const response = await app.inject(`/report?n=outage-${statuses.length}`)
    statuses.push(response.statusCode)
    slowest = Math.max(slowest, Date.now() - started)
    await sleep(50)
  }
  await promotion
  t.comment(`failover took ${Date.now() - crashedAt} ms; ${statuses.length} requests meanwhile`)
  t.ok(statuses.length > 0, 'requests were made while there was no master')
  t.ok(statuses.every((status) => status === 200), 'every request during the failover was answered 200')
  t.ok(slowest < 2000, `no request waited on the dead master (slowest ${slowest} ms)`)

  // The client reconnects to the new master (it asks Sentinel again when the old address refuses it) and stores there.
  await until('the app stores again', async () => {
    await app.inject('/report?n=after')
    return await keysOn(set.replica.port, prefix) > onMaster
  }, 10_000)
  t.equal((await app.inject('/report?n=after')).headers['x-cache'], 'HIT', 'caching works on the new master')

  // Another instance, which has nothing of its own: both entries are served from the new master, the one stored
  // before the crash (replicated) and the one stored after it.
  const other = await appOnSentinel(t, prefix)
  t.equal((await other.app.inject('/report?n=before')).headers['x-cache'], 'HIT', 'the entry stored before the crash survived')
  t.equal((await other.app.inject('/report?n=after')).headers['x-cache'], 'HIT')
  t.equal(other.calls(), 0)
  t.ok(calls() >= statuses.length + 2, 'the handler served every request that missed')
})
