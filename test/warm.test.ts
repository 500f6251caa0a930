import type { FastifyInstance } from 'fastify'
import t from 'tap'
import { FST_CACHE_STORE_ERROR } from '../lib/errors'
import { WARM_HEADER, type WarmDeps, type WarmProgress, type WarmTarget, scheduleWarming, warmTargets, warmToken } from '../lib/warm'
import { STORE_KINDS, cachedApp, sleep, untilStored } from './helpers/app'
import { RedisProcess } from './helpers/redis'

// Real Redis, slow handlers and timers: more than the default on a busy machine.
t.setTimeout(120_000)

const depsOf = (app: FastifyInstance): WarmDeps => ({ inject: app.inject.bind(app), service: app.cacheService })

/** Counts the handler runs of each URL, and how many ran at once at most. */
function origin () {
  const runs = new Map<string, number>()
  let active = 0
  let maxActive = 0
  return {
    runs,
    get maxActive () { return maxActive },
    async run (url: string, delayMs = 0): Promise<number> {
      const count = (runs.get(url) ?? 0) + 1
      runs.set(url, count)
      active++
      maxActive = Math.max(maxActive, active)
      try {
        if (delayMs > 0) await sleep(delayMs)
      } finally {
        active--
      }
      return count
    }
  }
}

t.test('the token is 32 hex characters and the header name is lower-case', async (t) => {
  t.match(warmToken, /^[0-9a-f]{32}$/)
  t.equal(WARM_HEADER, 'x-cache-warm')
})

for (const kind of STORE_KINDS) {
  t.test(`${kind} store`, async (t) => {
    t.test('URL targets warm cold routes: the first live request is a HIT and each handler ran once', async (t) => {
      const app = await cachedApp(t, kind)
      const seen = origin()
      app.get('/items/:id', { config: { cache: { ttl: 120 } } }, async (request) => {
        const calls = await seen.run(request.url)
        return { id: (request.params as { id: string }).id, calls }
      })
      const targets: WarmTarget[] = ['/items/1', '/items/2', { url: '/items/3' }, '/items/4?view=full']
      const result = await warmTargets(depsOf(app), targets)
      t.same({ ok: result.ok, failed: result.failed, errors: result.errors }, { ok: 4, failed: 0, errors: [] })
      t.type(result.durationMs, 'number')
      await untilStored(app, 4)
      for (const url of ['/items/1', '/items/2', '/items/3', '/items/4?view=full']) {
        const live = await app.inject(url)
        t.equal(live.statusCode, 200, url)
        t.equal(live.headers['x-cache'], 'HIT', `${url} is a hit`)
        t.equal(live.json().calls, 1, `${url} serves the warmed body`)
        t.equal(seen.runs.get(url), 1, `${url}: the handler ran once`)
      }
    })

    t.test('a warmed entry serves what a live miss would have stored', async (t) => {
      const app = await cachedApp(t, kind)
      app.get('/page/:name', { config: { cache: { ttl: 90 } } }, async (request, reply) => {
        reply.header('x-origin', 'yes')
        return { name: (request.params as { name: string }).name }
      })
      await warmTargets(depsOf(app), ['/page/same'])
      await untilStored(app, 1)
      const warmed = await app.inject('/page/same')
      await app.inject('/page/other')
      await untilStored(app, 2)
      const live = await app.inject('/page/other')
      t.equal(warmed.headers['x-cache'], 'HIT')
      t.equal(live.headers['x-cache'], 'HIT')
      for (const name of ['content-type', 'cache-control', 'x-origin']) {
        t.equal(warmed.headers[name], live.headers[name], name)
      }
      t.same(warmed.json(), { name: 'same' })
    })

    t.test('target headers are sent (vary), and the token cannot be overridden by them', async (t) => {
      const app = await cachedApp(t, kind)
      const tokens: unknown[] = []
      app.get('/greeting', { config: { cache: { vary: ['accept-language'] } } }, async (request) => {
        tokens.push(request.headers[WARM_HEADER])
        return { lang: request.headers['accept-language'] }
      })
      const result = await warmTargets(depsOf(app), [
        { url: '/greeting', headers: { 'accept-language': 'fr', 'X-Cache-Warm': 'forged' } }
      ])
      t.equal(result.ok, 1)
      t.same(tokens, [warmToken], 'the handler saw the process token only')
      await untilStored(app, 1)
      const fr = await app.inject({ url: '/greeting', headers: { 'accept-language': 'fr' } })
      t.equal(fr.headers['x-cache'], 'HIT')
      t.same(fr.json(), { lang: 'fr' })
      const en = await app.inject({ url: '/greeting', headers: { 'accept-language': 'en' } })
      t.equal(en.headers['x-cache'], 'MISS', 'another vary value is not warmed')
    })

    t.test('re-warming a cached URL refreshes the entry', async (t) => {
      const app = await cachedApp(t, kind)
      let version = 0
      app.get('/prices', { config: { cache: { ttl: 300 } } }, async () => ({ version: ++version }))
      const first = await warmTargets(depsOf(app), ['/prices'])
      t.equal(first.ok, 1)
      await untilStored(app, 1)
      t.same((await app.inject('/prices')).json(), { version: 1 })
      const again = await warmTargets(depsOf(app), ['/prices'])
      t.same(again.errors, [], 'the second warm ran the handler')
      t.equal(version, 2, 'the handler ran again')
      await untilStored(app, 2)
      const live = await app.inject('/prices')
      t.equal(live.headers['x-cache'], 'HIT')
      t.same(live.json(), { version: 2 }, 'a later live request sees the new body')
    })

    t.test('a client sending the header with a wrong token gets no refresh', async (t) => {
      const app = await cachedApp(t, kind)
      let version = 0
      app.get('/stock', { config: { cache: { ttl: 300, allowBypass: false } } }, async () => ({ version: ++version }))
      await app.inject('/stock')
      await untilStored(app, 1)
      const forged = await app.inject({ url: '/stock', headers: { [WARM_HEADER]: 'f'.repeat(32) } })
      t.equal(forged.headers['x-cache'], 'HIT')
      t.same(forged.json(), { version: 1 })
      t.equal(version, 1)
    })

    t.test('key/compute targets store values readable by cacheService.get, with ttl and tags', async (t) => {
      const app = await cachedApp(t, kind)
      await app.ready()
      const result = await warmTargets(depsOf(app), [
        { key: 'user:1', compute: () => ({ name: 'Ada' }), ttl: 30, tags: ['users'] },
        { key: ['user', 2], compute: async () => { await sleep(5); return { name: 'Grace' } }, tags: ['users'] },
        { key: 'count', compute: () => 0 }
      ])
      t.same(result, { ok: 3, failed: 0, errors: [], durationMs: result.durationMs })
      t.same(await app.cacheService.get('user:1'), { name: 'Ada' })
      t.same(await app.cacheService.get(['user', 2]), { name: 'Grace' })
      t.equal(await app.cacheService.get('count'), 0)
      const ttl = await app.cacheService.ttl('user:1')
      t.ok(ttl > 0 && ttl <= 30, `ttl ${ttl} is the target's`)
      t.equal(await app.cacheService.invalidateTags('users'), 2, 'the tags were stored')
    })

    t.test('a key/compute target replaces a cached value (a refresh, not get-or-compute)', async (t) => {
      const app = await cachedApp(t, kind)
      await app.ready()
      await app.cacheService.set('config', { stale: true })
      let calls = 0
      const result = await warmTargets(depsOf(app), [{ key: 'config', compute: () => { calls++; return { stale: false } } }])
      t.equal(result.ok, 1)
      t.equal(calls, 1)
      t.same(await app.cacheService.get('config'), { stale: false })
    })

    t.test('good and bad targets: ok, failed and readable errors, never a throw', async (t) => {
      const app = await cachedApp(t, kind)
      app.get('/good', { config: { cache: true } }, async () => ({ good: true }))
      app.get('/boom', { config: { cache: true } }, async () => { throw new Error('origin exploded') })
      app.get('/uncached', async () => ({ plain: true }))
      const targets = [
        '/good',
        '/missing',
        '/boom',
        '/uncached',
        { key: 'fine', compute: () => 'value' },
        { key: 'thrower', compute: () => { throw new Error('no data') } },
        { key: 'rejecter', compute: async () => { throw new Error('db down') } },
        { key: '', compute: () => 1 },
        { key: 'nothing', compute: () => undefined },
        { key: 'bad-ttl', compute: () => 1, ttl: 0 },
        { url: '' },
        null as unknown as WarmTarget
      ] satisfies WarmTarget[]
      const result = await warmTargets(depsOf(app), targets)
      t.equal(result.ok, 2)
      t.equal(result.failed, 10)
      t.equal(result.errors.length, 10)
      const byTarget = new Map(result.errors.map((e) => [e.target, e.error]))
      t.match(byTarget.get('GET /missing'), /^HTTP 404: Route GET:\/missing not found/)
      t.match(byTarget.get('GET /boom'), /^HTTP 500: origin exploded$/)
      t.match(byTarget.get('GET /uncached'), /not cached/)
      t.equal(byTarget.get('key thrower'), 'no data')
      t.equal(byTarget.get('key rejecter'), 'db down')
      t.match(byTarget.get('key '), /^FST_CACHE_INVALID_KEY: /)
      t.match(byTarget.get('key nothing'), /undefined/)
      t.match(byTarget.get('key bad-ttl'), /^FST_CACHE_INVALID_OPTION: .*ttl/)
      t.match(byTarget.get('GET '), /non-empty string/)
      t.match(byTarget.get('null'), /not a warming target/)
      t.equal(await app.cacheService.get('fine'), 'value')
      await untilStored(app, 1)
      t.equal((await app.inject('/good')).headers['x-cache'], 'HIT')
    })

    t.test('concurrency is respected for URL targets (default 8, and as set)', async (t) => {
      const app = await cachedApp(t, kind)
      const seen = origin()
      const seen2 = origin()
      app.get('/slow/:id', { config: { cache: true } }, async (request) => ({ calls: await seen.run(request.url, 15) }))
      app.get('/slower/:id', { config: { cache: true } }, async (request) => ({ calls: await seen2.run(request.url, 15) }))
      const urls = Array.from({ length: 30 }, (_, i) => `/slow/${i}`)
      const result = await warmTargets(depsOf(app), urls, { concurrency: 5 })
      t.equal(result.ok, 30)
      t.equal(seen.maxActive, 5, 'five handlers at most, and the pool was full')
      t.equal(seen.runs.size, 30)

      const result2 = await warmTargets(depsOf(app), urls.map((url) => url.replace('slow', 'slower')))
      t.equal(result2.ok, 30)
      t.equal(seen2.maxActive, 8, 'the default is 8')
    })

    t.test('concurrency is respected for key/compute targets', async (t) => {
      const app = await cachedApp(t, kind)
      await app.ready()
      const seen = origin()
      const targets = Array.from({ length: 20 }, (_, i) => ({ key: `v:${i}`, compute: () => seen.run(`v:${i}`, 10) }))
      const result = await warmTargets(depsOf(app), targets, { concurrency: 3 })
      t.equal(result.ok, 20)
      t.equal(seen.maxActive, 3)
      t.equal(await app.cacheService.get('v:19'), 1)
    })

    t.test('per-target timeout: a slow target fails, the others go on, a late value is not stored', async (t) => {
      const app = await cachedApp(t, kind)
      let slowDone: Promise<void> | undefined
      app.get('/hang', { config: { cache: true } }, async () => { slowDone = sleep(1000); await slowDone; return { late: true } })
      app.get('/quick', { config: { cache: true } }, async () => ({ quick: true }))
      const result = await warmTargets(depsOf(app), [
        '/hang',
        { key: 'never', compute: () => new Promise(() => {}) },
        { key: 'late', compute: async () => { await sleep(500); return 'too late' } },
        '/quick',
        { key: 'soon', compute: () => 'on time' }
      ], { timeoutMs: 250, concurrency: 2 })
      t.equal(result.ok, 2)
      t.equal(result.failed, 3)
      t.same(result.errors.map((e) => e.target), ['GET /hang', 'key never', 'key late'])
      for (const e of result.errors) t.equal(e.error, 'timed out after 250 ms')
      t.equal(await app.cacheService.get('soon'), 'on time')
      await sleep(600)
      t.equal(await app.cacheService.get('late'), undefined, 'a compute that finished after its timeout is not stored')
      // Let the hung handler finish before the app closes.
      await slowDone
    })

    t.test('onProgress sees done go 1..N; one that throws or rejects does not break warming', async (t) => {
      const app = await cachedApp(t, kind)
      await app.ready()
      const targets: WarmTarget[] = Array.from({ length: 12 }, (_, i) =>
        ({ key: `p:${i}`, compute: () => { if (i % 4 === 0) throw new Error('bad'); return i } }))
      const seen: WarmProgress[] = []
      const result = await warmTargets(depsOf(app), targets, { concurrency: 4, onProgress: (p) => { seen.push({ ...p }) } })
      t.same(seen.map((p) => p.done), Array.from({ length: 12 }, (_, i) => i + 1))
      t.ok(seen.every((p) => p.total === 12 && p.ok + p.failed === p.done))
      t.same(seen.at(-1), { done: 12, total: 12, ok: 9, failed: 3 })
      t.equal(result.ok, 9)

      let calls = 0
      const thrown = await warmTargets(depsOf(app), targets, { onProgress: () => { calls++; throw new Error('progress bug') } })
      t.equal(thrown.ok, 9)
      t.equal(calls, 12)
      const rejected = await warmTargets(depsOf(app), targets, { onProgress: async () => { throw new Error('async progress bug') } })
      t.equal(rejected.ok, 9)
      await sleep(10) // an unhandled rejection would fail the test process
    })
  })
}

t.test('errors[] is capped at 100 while failed keeps counting', async (t) => {
  const app = await cachedApp(t, 'memory')
  await app.ready()
  const targets = Array.from({ length: 150 }, (_, i) => ({ key: `e:${i}`, compute: () => { throw new Error(`fail ${i}`) } }))
  const result = await warmTargets(depsOf(app), [...targets, { key: 'ok', compute: () => true }], { concurrency: 1 })
  t.equal(result.failed, 150)
  t.equal(result.ok, 1)
  t.equal(result.errors.length, 100)
  t.same(result.errors[99], { target: 'key e:99', error: 'fail 99' })
})

t.test('a store write failure counts as failed', async (t) => {
  t.test('a service whose set rejects', async (t) => {
    const deps: WarmDeps = {
      inject: (() => { throw new Error('not used') }) as unknown as WarmDeps['inject'],
      service: {
        set: async () => { throw new FST_CACHE_STORE_ERROR('set', 'connection lost') },
        getOrCompute: async () => { throw new Error('not used') }
      }
    }
    const result = await warmTargets(deps, [{ key: 'a', compute: () => 1 }])
    t.same(result.errors, [{ target: 'key a', error: 'FST_CACHE_STORE_ERROR: cache store operation "set" failed: connection lost' }])
  })

  t.test('an inject that rejects', async (t) => {
    const deps: WarmDeps = {
      inject: (async () => { throw new Error('socket hang up') }) as unknown as WarmDeps['inject'],
      service: { set: async () => {}, getOrCompute: async () => { throw new Error('not used') } }
    }
    const result = await warmTargets(deps, ['/x'])
    t.same(result.errors, [{ target: 'GET /x', error: 'socket hang up' }])
  })

  t.test('a Redis that went away', async (t) => {
    const redis = await RedisProcess.start()
    t.teardown(() => redis.stop())
    const app = await cachedApp(t, 'redis', { redis: redis.url, storeTimeoutMs: 200 })
    await app.ready()
    await redis.stop()
    const result = await warmTargets(depsOf(app), [{ key: 'a', compute: () => 1 }, { key: 'b', compute: () => 2 }])
    t.equal(result.failed, 2)
    for (const e of result.errors) t.match(e.error, /^FST_CACHE_STORE_(ERROR|TIMEOUT): /)
  })
})

t.test('invalid options throw FST_CACHE_INVALID_OPTION up front', async (t) => {
  const app = await cachedApp(t, 'memory')
  await app.ready()
  let computed = 0
  const targets = [{ key: 'k', compute: () => ++computed }]
  const bad: unknown[] = [
    { concurrency: 0 }, { concurrency: 257 }, { concurrency: 1.5 }, { concurrency: Number.NaN }, { concurrency: '4' },
    { timeoutMs: 0 }, { timeoutMs: -1 }, { timeoutMs: Infinity }, { onProgress: 'yes' }, null
  ]
  for (const options of bad) {
    await t.rejects(warmTargets(depsOf(app), targets, options as never), { code: 'FST_CACHE_INVALID_OPTION' }, JSON.stringify(options))
  }
  await t.rejects(warmTargets(depsOf(app), 'not an array' as never), { code: 'FST_CACHE_INVALID_OPTION' })
  t.equal(computed, 0, 'nothing ran')
  t.equal((await warmTargets(depsOf(app), targets, { concurrency: 256 })).ok, 1, '256 is allowed')
  t.match(await warmTargets(depsOf(app), []), { ok: 0, failed: 0, errors: [], durationMs: Number })
})

t.test('scheduleWarming', async (t) => {
  t.test('runs repeatedly, never overlapping, waits intervalMs after each run, and stops', async (t) => {
    let active = 0
    let maxActive = 0
    const starts: number[] = []
    const ends: number[] = []
    const handle = scheduleWarming(async () => {
      starts.push(performance.now())
      active++
      maxActive = Math.max(maxActive, active)
      await sleep(25)
      active--
      ends.push(performance.now())
    }, { intervalMs: 20, jitterMs: 10 })
    t.teardown(() => handle.stop())
    const deadline = Date.now() + 5000
    while (ends.length < 4 && Date.now() < deadline) await sleep(5)
    handle.stop()
    t.ok(ends.length >= 4, `ran ${ends.length} times`)
    t.equal(maxActive, 1, 'runs never overlap')
    for (let i = 1; i < starts.length; i++) {
      const gap = starts[i] - ends[i - 1]
      t.ok(gap >= 19, `run ${i + 1} started ${gap.toFixed(1)} ms after run ${i} ended`)
    }
    const count = starts.length
    await sleep(120)
    t.equal(starts.length, count, 'no run starts after stop()')
  })

  t.test('a run that throws or rejects does not stop the schedule', async (t) => {
    let runs = 0
    const handle = scheduleWarming(() => {
      runs++
      if (runs === 1) throw new Error('sync failure')
      return Promise.reject(new Error('async failure'))
    }, { intervalMs: 5 })
    const counted = (): number => runs
    t.teardown(() => handle.stop())
    const deadline = Date.now() + 5000
    while (Date.now() < deadline && counted() < 4) await sleep(5)
    handle.stop()
    t.ok(runs >= 4, `ran ${runs} times`)
  })

  t.test('the timer is unref\'d, waits for the first interval, and stop() before it means no run', async (t) => {
    let runs = 0
    const timers = (): number => process.getActiveResourcesInfo().filter((name) => name === 'Timeout').length
    const before = timers()
    const handle = scheduleWarming(async () => { runs++ }, { intervalMs: 30 })
    t.equal(timers(), before, 'the timer does not keep the process alive')
    await sleep(10)
    t.equal(runs, 0, 'no run before intervalMs')
    handle.stop()
    handle.stop()
    await sleep(60)
    t.equal(runs, 0)
  })

  t.test('invalid schedules throw FST_CACHE_INVALID_OPTION', async (t) => {
    const run = async (): Promise<void> => {}
    for (const schedule of [{ intervalMs: 0 }, { intervalMs: -5 }, { intervalMs: Number.NaN }, { intervalMs: 10, jitterMs: -1 },
      { intervalMs: 2 ** 31 }, {}]) {
      t.throws(() => scheduleWarming(run, schedule as never), { code: 'FST_CACHE_INVALID_OPTION' }, JSON.stringify(schedule))
    }
    t.throws(() => scheduleWarming('run' as never, { intervalMs: 10 }), { code: 'FST_CACHE_INVALID_OPTION' })
  })
})
