import t from 'tap'
import { STORE_KINDS, cachedApp, sleep, untilStored } from './helpers/app'

for (const kind of STORE_KINDS) {
  t.test(`${kind} store`, async (t) => {
    t.test('a header that changes responses but is not keyed makes the response unstorable, and is counted', async (t) => {
      const lines: string[] = []
      const app = await cachedApp(t, kind, {}, { logger: { level: 'warn', stream: { write: (line: string) => { lines.push(line) } } } })
      let calls = 0
      // A naive handler that builds links from the forwarded host: the classic poisoning target.
      app.get('/home', { config: { cache: { key: 'home' } } }, async (request) => {
        calls++
        return { link: `https://${String(request.headers['x-forwarded-host'] ?? 'example.com')}/login` }
      })
      for (const header of ['x-forwarded-host', 'x-host', 'x-original-url', 'x-rewrite-url', 'x-http-method-override', 'x-forwarded-scheme']) {
        const poisoned = await app.inject({ url: '/home', headers: { [header]: 'evil.example' } })
        t.equal(poisoned.statusCode, 200)
        await sleep(20)
      }
      const clean = await app.inject('/home')
      t.equal(clean.headers['x-cache'], 'MISS', 'nothing the attacker sent was stored')
      t.same(clean.json(), { link: 'https://example.com/login' })
      await untilStored(app)
      const hit = await app.inject({ url: '/home', headers: { 'x-forwarded-host': 'evil.example' } })
      t.equal(hit.headers['x-cache'], 'HIT', 'a clean entry may still be served to such a request')
      t.same(hit.json(), { link: 'https://example.com/login' })
      t.equal(calls, 7)
      const stats = await app.cacheService.stats()
      t.equal(stats.skippedBy['unkeyed-header'], 6, 'each attempt is counted')
      t.ok(lines.some((line) => line.includes('suspected cache poisoning attempt')), 'and logged (at most once per burst)')
      t.ok(lines.filter((line) => line.includes('suspected cache poisoning attempt')).length <= 1)
    })

    t.test('a header the route keys on (vary), or one the user lists, is handled accordingly', async (t) => {
      const app = await cachedApp(t, kind, { unkeyedHeaders: ['X-Tenant-Override'] })
      app.get('/keyed', { config: { cache: { vary: ['x-forwarded-host'] } } }, async (request) => ({ host: request.headers['x-forwarded-host'] }))
      app.get('/listed', { config: { cache: true } }, async () => 'listed')
      await app.inject({ url: '/keyed', headers: { 'x-forwarded-host': 'a.example' } })
      await untilStored(app)
      const other = await app.inject({ url: '/keyed', headers: { 'x-forwarded-host': 'b.example' } })
      t.equal(other.headers['x-cache'], 'MISS', 'keyed: each value has its own entry')
      t.same(other.json(), { host: 'b.example' })
      await app.inject({ url: '/listed', headers: { 'x-tenant-override': '1' } })
      await sleep(30)
      t.equal((await app.inject('/listed')).headers['x-cache'], 'MISS', 'a user-listed header also prevents storing')
    })

    t.test('with trustProxy, a forwarded host is part of the default key, and one host is never served for another', async (t) => {
      const app = await cachedApp(t, kind, {}, { trustProxy: true })
      app.get('/page', { config: { cache: true } }, async (request) => ({ host: request.host }))
      await app.inject({ url: '/page', headers: { 'x-forwarded-host': 'a.example' } })
      await untilStored(app)
      t.equal((await app.inject({ url: '/page', headers: { 'x-forwarded-host': 'a.example' } })).headers['x-cache'], 'HIT', 'trusted, keyed, storable')
      const b = await app.inject({ url: '/page', headers: { 'x-forwarded-host': 'b.example' } })
      t.equal(b.headers['x-cache'], 'MISS')
      t.same(b.json(), { host: 'b.example' })
      const direct = await app.inject({ url: '/page', headers: { host: 'c.example' } })
      t.same(direct.json(), { host: 'c.example' }, 'the Host header is part of the key too')
    })

    t.test('a GET with a body is not stored', async (t) => {
      const app = await cachedApp(t, kind)
      app.get('/search', { config: { cache: true } }, async () => 'results')
      const withBody = await app.inject({ method: 'GET', url: '/search', payload: 'q=secret', headers: { 'content-type': 'text/plain' } })
      t.equal(withBody.statusCode, 200)
      await sleep(30)
      t.equal((await app.inject('/search')).headers['x-cache'], 'MISS')
      t.equal((await app.cacheService.stats()).skippedBy['request-body'], 1)
    })

    t.test('a query allow-list: other parameters are a bypass, so they can neither split nor poison the entry', async (t) => {
      const app = await cachedApp(t, kind)
      let calls = 0
      app.get('/report', { config: { cache: { query: ['workspace_id', 'timeframe'] } } }, async (request) => ({ calls: ++calls, query: request.query }))
      await app.inject('/report?timeframe=7d&workspace_id=ws1')
      await untilStored(app)
      t.equal((await app.inject('/report?workspace_id=ws1&timeframe=7d')).headers['x-cache'], 'HIT')
      const extra = await app.inject('/report?workspace_id=ws1&timeframe=7d&utm_source=x')
      t.equal(extra.headers['x-cache'], 'BYPASS', 'an undeclared parameter is not cached')
      t.equal(extra.json().calls, 2)
      await sleep(30)
      const again = await app.inject('/report?workspace_id=ws1&timeframe=7d')
      t.equal(again.json().calls, 1, 'and did not replace the entry')
      // Parameter cloaking (';' as a separator to some proxies): here it stays inside the value, so its own key.
      const cloaked = await app.inject('/report?workspace_id=ws1&timeframe=7d;callback=evil')
      t.equal(cloaked.headers['x-cache'], 'MISS')
      t.equal(cloaked.json().query.timeframe, '7d;callback=evil')
      await sleep(30)
      const clean = await app.inject('/report?workspace_id=ws1&timeframe=7d')
      t.equal(clean.json().calls, 1, 'the clean entry is untouched')
      t.notMatch(clean.body, /evil/)
    })
  })
}

t.test('path and query variants cannot split one resource into many keys or make a poisoned variant', async (t) => {
  const app = await cachedApp(t, 'memory', {}, { routerOptions: { ignoreTrailingSlash: true, ignoreDuplicateSlashes: true } })
  let calls = 0
  app.get('/agents/:agentId/analytics', { config: { cache: true } }, async (request) => ({ calls: ++calls, params: request.params, query: request.query }))
  await app.inject('/agents/a%20b/analytics?timeframe=7d&limit=5')
  await untilStored(app)
  const variants = [
    '/agents/a%20b/analytics?limit=5&timeframe=7d', // reordered
    '/agents/a%20b/analytics/?timeframe=7d&limit=5', // trailing slash
    '//agents/a%20b//analytics?timeframe=7d&limit=5', // duplicate slashes
    '/agents/a b/analytics?timeframe=7d&limit=5', // another encoding of the same param
    '/agents/a%20b/analytics?timeframe=%37d&limit=5' // percent-encoded query value
  ]
  for (const url of variants) {
    const response = await app.inject(url)
    t.equal(response.headers['x-cache'], 'HIT', `${url} shares the entry`)
    t.equal(response.json().calls, 1)
  }
  const duplicated = await app.inject('/agents/a%20b/analytics?timeframe=7d&timeframe=evil&limit=5')
  t.equal(duplicated.headers['x-cache'], 'MISS', 'a duplicated parameter is another request, with its own key')
  t.same(duplicated.json().query.timeframe, ['7d', 'evil'])
  const clean = await app.inject('/agents/a%20b/analytics?timeframe=7d&limit=5')
  t.equal(clean.json().calls, 1, 'and did not touch the clean entry')
})
