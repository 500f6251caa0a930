import t from 'tap'
import { keyId, tagId } from '../lib/keys'
import { STORE_KINDS, cachedApp, sleep, untilStored } from './helpers/app'
import { createClient, uniquePrefix } from './helpers/redis'

/** A gate a handler waits at, so that a test can invalidate while the computation is in flight. */
function barrier (): { wait: () => Promise<void>, release: () => void, reached: Promise<void> } {
  let release!: () => void
  let arrive!: () => void
  const opened = new Promise<void>((resolve) => { release = resolve })
  const reached = new Promise<void>((resolve) => { arrive = resolve })
  return { wait: async () => { arrive(); await opened }, release, reached }
}

for (const kind of STORE_KINDS) {
  t.test(`${kind} store`, async (t) => {
    t.test('a miss computed before an invalidation never writes its old value back', async (t) => {
      const invalidations: Array<[string, (app: Awaited<ReturnType<typeof cachedApp>>) => Promise<unknown>]> = [
        ['its tag', (app) => app.cacheService.invalidateTags('ws:42')],
        ['its tag, softly', (app) => app.cacheService.invalidateTags('ws:42', { soft: true })],
        ['its key', (app) => app.cacheService.invalidate('dash:42')],
        ['a pattern', (app) => app.cacheService.invalidatePattern('dash:*')]
      ]
      for (const [what, invalidate] of invalidations) {
        const app = await cachedApp(t, kind)
        let version = 1
        let gate: ReturnType<typeof barrier> | undefined
        app.get('/dash', { config: { cache: { key: 'dash:42', tags: ['ws:42'] } } }, async () => {
          const seen = version
          if (gate !== undefined) await gate.wait()
          return { version: seen }
        })
        gate = barrier()
        const slow = app.inject('/dash')
        await gate.reached
        version = 2 // the data changes, and its event invalidates while the old computation is still running
        await invalidate(app)
        gate.release()
        t.equal((await slow).json().version, 1, `${what}: the slow request still gets its answer`)
        await sleep(50)
        gate = undefined
        const next = await app.inject('/dash')
        t.equal(next.headers['x-cache'], 'MISS', `${what}: the old value was not stored`)
        t.equal(next.json().version, 2, `${what}: the next read is fresh`)
        t.equal((await app.cacheService.stats()).raced, 1, `${what}: the refused write is counted`)
        await untilStored(app)
        t.equal((await app.inject('/dash')).headers['x-cache'], 'HIT', `${what}: caching goes on afterwards`)
      }
    })

    t.test('getOrCompute: a computation that straddles an invalidation is not stored', async (t) => {
      const app = await cachedApp(t, kind)
      const gate = barrier()
      const pending = app.cacheService.getOrCompute(['report', 7], async () => { await gate.wait(); return 'old' }, { tags: ['ws:7'] })
      await gate.reached
      await app.cacheService.invalidateTags(['ws:7'])
      gate.release()
      t.equal(await pending, 'old', 'the caller gets what was computed')
      t.equal(await app.cacheService.get(['report', 7]), undefined, 'but it was not stored')
      t.equal(await app.cacheService.getOrCompute(['report', 7], () => 'new', { tags: ['ws:7'] }), 'new')
      t.equal(await app.cacheService.get(['report', 7]), 'new')
    })

    t.test('soft invalidation: routes see a miss and refresh; the count says how many entries were marked', async (t) => {
      const app = await cachedApp(t, kind)
      let calls = 0
      app.get('/agents/:id', { config: { cache: { tags: ['agents'] } } }, async (request) => ({ id: (request.params as { id: string }).id, calls: ++calls }))
      await app.inject('/agents/1')
      await app.inject('/agents/2')
      await untilStored(app, 2)
      t.equal(await app.cacheService.invalidateTags('agents', { soft: true }), 2)
      const refreshed = await app.inject('/agents/1')
      t.equal(refreshed.headers['x-cache'], 'MISS')
      t.equal(refreshed.json().calls, 3)
      await untilStored(app, 3)
      t.equal((await app.inject('/agents/1')).headers['x-cache'], 'HIT', 'the refreshed entry is fresh')
      t.equal(await app.cacheService.invalidateTags('agents'), 2, 'a hard invalidation counts the refreshed and the stale entry')
    })
  })
}

t.test('redis: an evicted tag record never makes an invalidated entry fresh again', async (t) => {
  const client = await createClient(t)
  const prefix = uniquePrefix('evicted')
  const app = await cachedApp(t, 'redis', { prefix })
  await app.cacheService.set('page', 'soft-invalidated', { tags: ['ws:1'] })
  await app.cacheService.invalidateTags('ws:1', { soft: true })
  // Eviction under maxmemory, simulated: the tag's token record disappears while the stale entry stays.
  t.equal(await client.del(`${prefix}:g:{${tagId('ws:1')}}`), 1)
  t.ok(await client.exists(`${prefix}:e:{${keyId('page')}}`), 'the entry bytes are still in Redis')
  t.equal(await app.cacheService.get('page'), undefined, 'it reads as a miss, not as fresh')
  t.equal(await app.cacheService.exists('page'), false)
  await app.cacheService.set('page', 'new', { tags: ['ws:1'] })
  t.equal(await app.cacheService.get('page'), 'new', 'a new write under the recreated record is valid')
})
