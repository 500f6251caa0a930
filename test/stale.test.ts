import t from 'tap'
import { STORE_KINDS, cachedApp, sleep, until, untilStored } from './helpers/app'

for (const kind of STORE_KINDS) {
  t.test(`${kind} store`, async (t) => {
    t.test('staleWhileRevalidate: a stale entry is served at once with its age, and one refresh runs', async (t) => {
      const app = await cachedApp(t, kind)
      let calls = 0
      app.get('/overview', { config: { cache: { ttl: 1, staleWhileRevalidate: 30 } } }, async () => {
        calls++
        await sleep(100)
        return { calls }
      })
      const first = await app.inject('/overview')
      t.equal(first.headers['cache-control'], 'public, max-age=1, stale-while-revalidate=30', 'advertised to browsers and CDNs')
      await untilStored(app)
      await sleep(2100)
      const started = Date.now()
      const stale = await Promise.all(Array.from({ length: 20 }, () => app.inject('/overview')))
      t.ok(Date.now() - started < 1000, 'no request waited for the refresh')
      for (const response of stale) {
        t.equal(response.headers['x-cache'], 'STALE')
        t.equal(response.json().calls, 1)
        t.ok(Number(response.headers.age) >= 2, `age counts from when it was stored (${String(response.headers.age)})`)
      }
      await until('the refresh stored a new entry', async () => (await app.cacheService.stats()).stored >= 2)
      t.equal(calls, 2, 'exactly one refresh for twenty stale hits')
      const fresh = await app.inject('/overview')
      t.equal(fresh.headers['x-cache'], 'HIT')
      t.equal(fresh.json().calls, 2)
      t.equal((await app.cacheService.stats()).stale, 20)
    })

    t.test('staleWhileRevalidate serves soft-invalidated entries while they refresh', async (t) => {
      const app = await cachedApp(t, kind)
      let version = 0
      app.get('/agents', { config: { cache: { ttl: 600, tags: ['agents'], staleWhileRevalidate: 60 } } }, async () => ({ version: ++version }))
      await app.inject('/agents')
      await untilStored(app)
      await app.cacheService.invalidateTags('agents', { soft: true })
      const stale = await app.inject('/agents')
      t.equal(stale.headers['x-cache'], 'STALE')
      t.equal(stale.json().version, 1)
      await until('refreshed', async () => (await app.inject('/agents')).json().version === 2)
    })

    t.test('past the stale window the entry is a miss', async (t) => {
      const app = await cachedApp(t, kind)
      let calls = 0
      app.get('/short', { config: { cache: { ttl: 1, staleWhileRevalidate: 1 } } }, async () => ({ calls: ++calls }))
      await app.inject('/short')
      await untilStored(app)
      await sleep(2100)
      const response = await app.inject('/short')
      t.equal(response.headers['x-cache'], 'MISS')
      t.equal(response.json().calls, 2)
    })

    t.test('staleIfError: a failing handler is answered with the stale entry, which is not replaced', async (t) => {
      const app = await cachedApp(t, kind)
      let failing = false
      let calls = 0
      app.get('/kpis', { config: { cache: { ttl: 1, staleIfError: 60 } } }, async (_request, reply) => {
        calls++
        if (failing) {
          if (calls % 2 === 0) throw new Error('database is down')
          return reply.code(503).send({ error: 'unavailable' })
        }
        return { calls }
      })
      const first = await app.inject('/kpis')
      t.equal(first.headers['cache-control'], 'public, max-age=1, stale-if-error=60')
      await untilStored(app)
      await sleep(1100)
      failing = true
      for (let i = 0; i < 2; i++) {
        const response = await app.inject('/kpis')
        t.equal(response.statusCode, 200, 'the failure (a throw, then a 503) is not what the client sees')
        t.equal(response.headers['x-cache'], 'STALE')
        t.same(response.json(), { calls: 1 })
        t.equal(response.headers['content-type'], 'application/json; charset=utf-8')
      }
      failing = false
      const recovered = await app.inject('/kpis')
      t.equal(recovered.headers['x-cache'], 'MISS', 'the failed responses were not stored')
      t.equal(recovered.json().calls, 4)
    })

    t.test('without staleIfError, a failure is the failure', async (t) => {
      const app = await cachedApp(t, kind)
      let failing = false
      app.get('/plain', { config: { cache: { ttl: 1 } } }, async () => { if (failing) throw new Error('down'); return 'ok' })
      await app.inject('/plain')
      await untilStored(app)
      await sleep(1100)
      failing = true
      t.equal((await app.inject('/plain')).statusCode, 500)
    })

    t.test('500 concurrent requests on a cold key run the handler once', async (t) => {
      const app = await cachedApp(t, kind)
      let calls = 0
      app.get('/cold', { config: { cache: true } }, async () => { calls++; await sleep(100); return { calls } })
      const responses = await Promise.all(Array.from({ length: 500 }, () => app.inject('/cold')))
      t.equal(calls, 1)
      t.ok(responses.every((response) => response.statusCode === 200 && response.json().calls === 1), 'everyone got the one answer')
      t.equal(responses.filter((response) => response.headers['x-cache'] === 'MISS').length, 1, 'one miss, the others shared it')
    })

    t.test('a request that comes after the leader\'s response went out, and before it was stored, waits for the write', async (t) => {
      const app = await cachedApp(t, kind)
      let calls = 0
      // A slow hook after the plugin's own onSend: the response is captured at once, and sent (then stored) later.
      app.get('/late', { onSend: async (_request, _reply, payload) => { await sleep(150); return payload }, config: { cache: true } },
        async () => ({ calls: ++calls }))
      const leader = app.inject('/late')
      await until('the leader\'s handler ran', () => calls === 1)
      await sleep(50)
      const late = await app.inject('/late')
      t.equal(calls, 1, 'the late request did not run the handler')
      t.equal(late.headers['x-cache'], 'HIT')
      t.same(late.json(), { calls: 1 })
      t.equal((await leader).headers['x-cache'], 'MISS')
    })

    t.test('a leader whose write is refused (an invalidation came first) sends later requests to the handler', async (t) => {
      const app = await cachedApp(t, kind)
      let calls = 0
      app.get('/refused', { onSend: async (_request, _reply, payload) => { await sleep(150); return payload }, config: { cache: { tags: ['t'] } } },
        async () => ({ calls: ++calls }))
      const leader = app.inject('/refused')
      await until('the leader\'s handler ran', () => calls === 1)
      await app.cacheService.invalidateTags('t')
      const late = await app.inject('/refused')
      t.same(late.json(), { calls: 2 }, 'computed again: the leader\'s response predates the invalidation')
      await leader
    })

    t.test('a leader that throws or answers something unstorable releases its waiters, who run the handler', async (t) => {
      const app = await cachedApp(t, kind)
      let calls = 0
      app.get('/flaky', { config: { cache: true } }, async (_request, reply) => {
        calls++
        await sleep(50)
        if (calls === 1) throw new Error('first one fails')
        if (calls === 2) return reply.header('set-cookie', 'sid=2').send({ calls })
        return { calls }
      })
      const responses = await Promise.all(Array.from({ length: 10 }, () => app.inject('/flaky')))
      t.equal(responses.filter((response) => response.statusCode === 500).length, 1, 'only the leader saw its failure')
      t.ok(responses.filter((response) => response.statusCode === 200).length === 9)
      t.notOk(responses.some((response) => response.statusCode === 200 && response.headers['set-cookie'] !== undefined && response.json().calls !== 2),
        'a Set-Cookie response is never shared')
    })

    t.test('a leader that hangs holds its waiters no longer than coalesceWaitMs', async (t) => {
      const app = await cachedApp(t, kind, { coalesceWaitMs: 200 })
      let calls = 0
      app.get('/hang', { config: { cache: true } }, async () => {
        calls++
        if (calls === 1) await sleep(3000)
        return { calls }
      })
      const leader = app.inject('/hang')
      await sleep(20)
      const started = Date.now()
      const waiter = await app.inject('/hang')
      t.ok(Date.now() - started < 1500, 'the waiter gave up on the leader')
      t.equal(waiter.json().calls, 2, 'and ran the handler itself')
      await leader
    })
  })
}

t.test('earlyRefresh (XFetch): hot keys are refreshed before they expire, more often as expiry nears', async (t) => {
  const app = await cachedApp(t, 'memory')
  let calls = 0
  app.get('/slow', { config: { cache: { ttl: 2, earlyRefresh: 1 } } }, async () => {
    calls++
    await sleep(300)
    return { calls }
  })
  await app.inject('/slow')
  const storedAt = Date.now()
  await untilStored(app)
  const early = await app.inject('/slow')
  t.equal(early.headers['x-cache'], 'HIT')
  t.equal(calls, 1, 'far from expiry (about 1.7 s left for a 0.3 s computation) a refresh is very unlikely')
  // Hits keep coming as expiry nears: each refreshes with probability exp(-left / 0.3 s), close to 1 at the end, so
  // one of them starts the (single) refresh while the entry is still fresh.
  await sleep(Math.max(0, storedAt + 1200 - Date.now()))
  const outcomes: string[] = []
  const refreshStarted = (): boolean => calls >= 2 // the handler runs in the background, between our requests
  while (!refreshStarted() && Date.now() < storedAt + 2500) {
    outcomes.push(String((await app.inject('/slow')).headers['x-cache']))
    await sleep(10)
  }
  t.ok(calls >= 2, 'a background refresh started')
  t.ok(outcomes.length > 0 && outcomes.every((outcome) => outcome === 'HIT'), `while every answer was still a hit (${outcomes.length} hits)`)
  await until('the refreshed entry is stored', async () => (await app.inject('/slow')).json().calls >= 2, 2000)
  t.pass('the entry was replaced before it expired')
})
