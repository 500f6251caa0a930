import t from 'tap'
import { STORE_KINDS, cachedApp, sleep, until } from './helpers/app'

for (const kind of STORE_KINDS) {
  t.test(`${kind} store`, async (t) => {
    t.test('staleWhileRevalidate: past its ttl, the old value is answered at once and one refresh runs', async (t) => {
      const app = await cachedApp(t, kind)
      let computations = 0
      const compute = async (): Promise<string> => { computations++; await sleep(50); return `v${computations}` }
      const options = { ttl: 1, staleWhileRevalidate: 30 }
      t.equal(await app.cacheService.getOrCompute('report', compute, options), 'v1')
      await sleep(1100)
      t.equal(await app.cacheService.get('report'), undefined, 'get() answers fresh values only')
      const answers = await Promise.all(Array.from({ length: 20 }, () => app.cacheService.getOrCompute('report', compute, options)))
      t.same(new Set(answers), new Set(['v1']), 'every caller got the stale value without waiting')
      await until('the value was refreshed', async () => (await app.cacheService.get('report')) === 'v2')
      t.equal(computations, 2, 'exactly one background refresh ran')
      t.ok((await app.cacheService.stats()).stale >= 1)
      t.ok(await app.cacheService.ttl('report') > 1, 'the stored value outlives its freshness by the window')
    })

    t.test('without staleWhileRevalidate, an expired value is recomputed while the caller waits', async (t) => {
      const app = await cachedApp(t, kind)
      let computations = 0
      const compute = (): number => ++computations
      await app.cacheService.getOrCompute('plain', compute, { ttl: 1 })
      await sleep(1100)
      t.equal(await app.cacheService.getOrCompute('plain', compute, { ttl: 1 }), 2)
    })

    t.test('a soft invalidation is served stale while it refreshes; a hard one waits for the new value', async (t) => {
      const app = await cachedApp(t, kind)
      let version = 0
      const compute = async (): Promise<number> => { await sleep(30); return ++version }
      const options = { ttl: 60, tags: ['ws:1'], staleWhileRevalidate: 60 }
      t.equal(await app.cacheService.getOrCompute('dash', compute, options), 1)
      await app.cacheService.invalidateTags('ws:1', { soft: true })
      t.equal(await app.cacheService.getOrCompute('dash', compute, options), 1, 'stale, at once')
      await until('the value was refreshed', async () => (await app.cacheService.get('dash')) === 2)
      await app.cacheService.invalidateTags('ws:1')
      t.equal(await app.cacheService.getOrCompute('dash', compute, options), 3, 'a hard invalidation is a miss')
    })

    t.test('a refresh that fails keeps the stale value and is counted', async (t) => {
      const app = await cachedApp(t, kind)
      const options = { ttl: 1, staleWhileRevalidate: 30 }
      await app.cacheService.getOrCompute('fragile', () => 'good', options)
      await sleep(1100)
      const before = (await app.cacheService.stats()).errors
      t.equal(await app.cacheService.getOrCompute('fragile', () => { throw new Error('database down') }, options), 'good')
      await until('the failed refresh was counted', async () => (await app.cacheService.stats()).errors > before)
      t.equal(await app.cacheService.getOrCompute('fragile', () => 'recovered', options), 'good', 'still served stale')
      await until('the value was refreshed', async () => (await app.cacheService.get('fragile')) === 'recovered')
    })

    t.test('staleWhileRevalidate must be a positive integer', async (t) => {
      const app = await cachedApp(t, kind)
      await t.rejects(app.cacheService.getOrCompute('x', () => 1, { staleWhileRevalidate: -1 }), { code: 'FST_CACHE_INVALID_OPTION' })
    })
  })
}
