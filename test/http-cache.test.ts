import { Readable } from 'node:stream'
import type { RouteHandlerMethod } from 'fastify'
import t from 'tap'
import { STORE_KINDS, cachedApp, sleep, untilStored } from './helpers/app'

for (const kind of STORE_KINDS) {
  t.test(`${kind} store`, async (t) => {
    t.test('a miss is served by the handler, then the stored response is a hit', async (t) => {
      const app = await cachedApp(t, kind)
      let calls = 0
      app.get('/report', { config: { cache: { ttl: 120 } } }, async (_request, reply) => {
        calls++
        reply.header('x-report', 'weekly')
        return { calls }
      })
      const miss = await app.inject('/report')
      t.equal(miss.statusCode, 200)
      t.equal(miss.headers['x-cache'], 'MISS')
      t.equal(miss.headers['cache-control'], 'public, max-age=120')
      t.match(miss.headers.etag, /^"[A-Za-z0-9_-]+"$/)
      t.notOk('age' in miss.headers, 'a response the handler just made has no age')
      await untilStored(app)
      const hit = await app.inject('/report')
      t.equal(hit.statusCode, 200)
      t.equal(hit.headers['x-cache'], 'HIT')
      t.equal(hit.headers.age, '0')
      t.equal(hit.headers.etag, miss.headers.etag)
      t.equal(hit.headers['cache-control'], 'public, max-age=120')
      t.equal(hit.headers['x-report'], 'weekly', 'headers the handler set are served from the entry')
      t.equal(hit.headers['content-type'], 'application/json; charset=utf-8')
      t.equal(hit.body, '{"calls":1}')
      t.equal(calls, 1)
    })

    t.test('age counts whole seconds since the response was stored', async (t) => {
      const app = await cachedApp(t, kind)
      app.get('/aged', { config: { cache: { ttl: 60 } } }, async () => 'old')
      await app.inject('/aged')
      await untilStored(app)
      await sleep(1100)
      const hit = await app.inject('/aged')
      t.equal(hit.headers['x-cache'], 'HIT')
      t.equal(hit.headers.age, '1')
      t.equal(hit.headers['cache-control'], 'public, max-age=60', 'max-age with age lets caches compute what is left')
    })

    t.test('credentialed requests get private cache-control, on misses and on hits', async (t) => {
      const app = await cachedApp(t, kind)
      app.get('/mine', { config: { cache: { key: 'mine', ttl: 30 } } }, async () => 'data')
      const miss = await app.inject({ url: '/mine', headers: { authorization: 'Bearer x' } })
      t.equal(miss.headers['cache-control'], 'private, max-age=30')
      await untilStored(app)
      const withCookie = await app.inject({ url: '/mine', headers: { cookie: 'sid=1' } })
      t.equal(withCookie.headers['x-cache'], 'HIT')
      t.equal(withCookie.headers['cache-control'], 'private, max-age=30')
      const anonymous = await app.inject('/mine')
      t.equal(anonymous.headers['cache-control'], 'public, max-age=30')
    })

    t.test('a route cacheControl is sent, false sends none, and a handler-set one is kept and stored', async (t) => {
      const app = await cachedApp(t, kind)
      app.get('/custom', { config: { cache: { cacheControl: 'public, max-age=5, s-maxage=60' } } }, async () => 'a')
      app.get('/none', { config: { cache: { cacheControl: false } } }, async () => 'b')
      app.get('/own', { config: { cache: true } }, async (_request, reply) => {
        reply.header('cache-control', 'max-age=7')
        return 'c'
      })
      for (const [url, expected] of [['/custom', 'public, max-age=5, s-maxage=60'], ['/none', undefined], ['/own', 'max-age=7']]) {
        t.equal((await app.inject(url as string)).headers['cache-control'], expected, `${url} on a miss`)
      }
      await untilStored(app, 3)
      for (const [url, expected] of [['/custom', 'public, max-age=5, s-maxage=60'], ['/none', undefined], ['/own', 'max-age=7']]) {
        const hit = await app.inject(url as string)
        t.equal(hit.headers['x-cache'], 'HIT')
        t.equal(hit.headers['cache-control'], expected, `${url} on a hit`)
      }
    })

    t.test('If-None-Match gets a 304 without a body, on misses and hits, for this key only', async (t) => {
      const app = await cachedApp(t, kind)
      app.get('/a', { config: { cache: true } }, async () => ({ resource: 'a' }))
      app.get('/b', { config: { cache: true } }, async () => ({ resource: 'b' }))
      const first = await app.inject('/a')
      const etag = first.headers.etag as string
      await untilStored(app)
      const hit304 = await app.inject({ url: '/a', headers: { 'if-none-match': etag } })
      t.equal(hit304.statusCode, 304)
      t.equal(hit304.body, '')
      t.equal(hit304.headers.etag, etag)
      t.equal(hit304.headers['x-cache'], 'HIT')
      t.equal((await app.inject({ url: '/a', headers: { 'if-none-match': `"nope", W/${etag}` } })).statusCode, 304, 'weak comparison in a list')
      t.equal((await app.inject({ url: '/a', headers: { 'if-none-match': '*' } })).statusCode, 304)
      t.equal((await app.inject({ url: '/a', headers: { 'if-none-match': '"nope"' } })).statusCode, 200)
      const other = await app.inject({ url: '/b', headers: { 'if-none-match': etag } })
      t.equal(other.statusCode, 200, 'an etag of another key never answers 304')
      t.equal(other.headers['x-cache'], 'MISS')
      const missEtag = other.headers.etag as string
      await app.inject('/a?fresh=1').then((r) => t.equal(r.headers['x-cache'], 'MISS'))
      const miss304 = await app.inject({ url: '/b?v=2', headers: { 'if-none-match': missEtag } })
      t.equal(miss304.statusCode, 304, 'a miss whose fresh response matches answers 304 too')
      t.equal(miss304.headers['x-cache'], 'MISS')
      t.equal(miss304.body, '')
      await untilStored(app, 4)
      const full = await app.inject('/b?v=2')
      t.equal(full.headers['x-cache'], 'HIT')
      t.equal(full.body, '{"resource":"b"}', 'the 304 on a miss still stored the full response')
    })

    t.test('HEAD is answered from the GET entry', async (t) => {
      const app = await cachedApp(t, kind)
      let calls = 0
      app.get('/doc', { config: { cache: true } }, async () => { calls++; return 'hello head' })
      await app.inject('/doc')
      await untilStored(app)
      const head = await app.inject({ method: 'HEAD', url: '/doc' })
      t.equal(head.statusCode, 200)
      t.equal(head.headers['x-cache'], 'HIT')
      t.equal(head.body, '')
      t.equal(head.headers['content-length'], String('hello head'.length))
      t.equal(calls, 1)
    })

    t.test('responses that must not be stored are not, and each is counted by reason', async (t) => {
      const app = await cachedApp(t, kind, { maxEntryBytes: 100 })
      const calls: Record<string, number> = {}
      const route = (url: string, handler: RouteHandlerMethod): void => {
        app.route({
          method: ['GET', 'POST'],
          url,
          config: { cache: true },
          handler: async function (request, reply) {
            calls[url] = (calls[url] ?? 0) + 1
            return await handler.call(this, request, reply)
          }
        })
      }
      route('/not-found', async (_request, reply) => reply.code(404).send('missing'))
      route('/throws', async () => { throw new Error('boom') })
      route('/cookie', async (_request, reply) => { reply.header('set-cookie', 'sid=1'); return 'c' })
      route('/no-store', async (_request, reply) => { reply.header('cache-control', 'no-store'); return 'n' })
      route('/private', async (_request, reply) => { reply.header('cache-control', 'private, max-age=60'); return 'p' })
      route('/vary-star', async (_request, reply) => { reply.header('vary', '*'); return 'v' })
      route('/large', async () => 'x'.repeat(101))
      route('/stream', async (_request, reply) => { reply.type('text/plain'); return Readable.from(['a', 'b']) })
      const expected: Record<string, number> = {
        '/not-found': 404, '/throws': 500, '/cookie': 200, '/no-store': 200, '/private': 200, '/vary-star': 200, '/large': 200, '/stream': 200
      }
      for (const url of Object.keys(expected)) {
        for (let i = 0; i < 2; i++) {
          const response = await app.inject(url)
          t.equal(response.statusCode, expected[url], `${url} status`)
          t.equal(response.headers['x-cache'], 'MISS', `${url} is never a hit`)
          await sleep(10)
        }
        t.equal(calls[url], 2, `${url} ran its handler every time`)
      }
      const post = await app.inject({ method: 'POST', url: '/cookie' })
      t.equal(post.statusCode, 200)
      t.notOk('x-cache' in post.headers, 'other methods are not looked up')
      t.equal((await app.inject('/no-store')).headers['cache-control'], 'no-store', 'the handler\'s no-store is sent as it was')
      const stats = await app.cacheService.stats()
      t.equal(stats.stored, 0)
      t.same(stats.skippedBy, {
        status: 4, 'set-cookie': 2, 'no-store': 3, private: 2, 'vary-star': 2, 'too-large': 2, stream: 2
      })
    })

    t.test('statuses decides what is stored', async (t) => {
      const app = await cachedApp(t, kind, { statuses: [200, 404] })
      let calls = 0
      app.get('/gone', { config: { cache: true } }, async (_request, reply) => { calls++; return reply.code(404).send('gone') })
      await app.inject('/gone')
      await untilStored(app)
      const hit = await app.inject('/gone')
      t.equal(hit.statusCode, 404)
      t.equal(hit.headers['x-cache'], 'HIT')
      t.equal(calls, 1)
    })

    t.test('skip_cache bypasses the read, runs the handler and replaces the entry', async (t) => {
      const app = await cachedApp(t, kind)
      let version = 0
      app.get('/live', { config: { cache: true } }, async () => ({ version: ++version }))
      app.get('/locked', { config: { cache: { allowBypass: false } } }, async () => ({ version: ++version }))
      app.get('/admin', {
        config: { cache: { allowBypass: (request) => request.headers['x-role'] === 'admin' } }
      }, async () => ({ version: ++version }))
      await app.inject('/live')
      await untilStored(app)
      for (const value of ['true', '1']) {
        const bypass = await app.inject(`/live?skip_cache=${value}`)
        t.equal(bypass.headers['x-cache'], 'BYPASS')
        await sleep(30)
      }
      const hit = await app.inject('/live')
      t.equal(hit.headers['x-cache'], 'HIT')
      t.equal(hit.json().version, 3, 'the bypass replaced the entry')
      t.equal((await app.inject('/live?skip_cache=no')).headers['x-cache'], 'HIT', 'only true and 1 bypass')

      await app.inject('/locked')
      await app.inject('/admin')
      await untilStored(app, 4)
      t.equal((await app.inject('/locked?skip_cache=1')).headers['x-cache'], 'HIT', 'allowBypass: false ignores it')
      t.equal((await app.inject('/admin?skip_cache=1')).headers['x-cache'], 'HIT', 'the predicate refused')
      t.equal((await app.inject({ url: '/admin?skip_cache=1', headers: { 'x-role': 'admin' } })).headers['x-cache'], 'BYPASS')
      t.equal((await app.cacheService.stats()).bypass, 3)
    })

    t.test('the default key: query order does not matter, values and vary headers do', async (t) => {
      const app = await cachedApp(t, kind)
      let calls = 0
      app.get('/items/:id', { config: { cache: { vary: ['Accept-Language'] } } }, async (request) => {
        calls++
        return { params: request.params, query: request.query, lang: request.headers['accept-language'] ?? null }
      })
      const first = await app.inject('/items/7?b=2&a=1')
      t.equal(first.headers.vary, 'accept-language')
      await untilStored(app)
      t.equal((await app.inject('/items/7?a=1&b=2')).headers['x-cache'], 'HIT', 'reordered query')
      t.equal((await app.inject('/items/7?a=1&b=2&skip_cache=no')).headers['x-cache'], 'HIT', 'skip_cache is not part of the key')
      t.equal((await app.inject('/items/7?a=1&b=3')).headers['x-cache'], 'MISS')
      t.equal((await app.inject('/items/8?a=1&b=2')).headers['x-cache'], 'MISS')
      const french = await app.inject({ url: '/items/7?a=1&b=2', headers: { 'accept-language': 'fr' } })
      t.equal(french.headers['x-cache'], 'MISS')
      t.equal(french.json().lang, 'fr')
      await untilStored(app, 4)
      const again = await app.inject({ url: '/items/7?b=2&a=1', headers: { 'accept-language': 'fr' } })
      t.equal(again.headers['x-cache'], 'HIT')
      t.equal(again.json().lang, 'fr')
      t.equal(again.headers.vary, 'accept-language')
      t.equal(calls, 4)
    })

    t.test('a response that varies on a header is reused only for the same header value', async (t) => {
      const app = await cachedApp(t, kind)
      app.get('/greeting', { config: { cache: { key: 'greeting' } } }, async (request, reply) => {
        reply.header('vary', 'Accept-Language')
        return request.headers['accept-language'] === 'fr' ? 'bonjour' : 'hello'
      })
      await app.inject({ url: '/greeting', headers: { 'accept-language': 'fr' } })
      await untilStored(app)
      const english = await app.inject({ url: '/greeting', headers: { 'accept-language': 'en' } })
      t.equal(english.body, 'hello', 'a French variant is never served to an English request')
      t.equal(english.headers['x-cache'], 'MISS')
      await untilStored(app, 2)
      const englishAgain = await app.inject({ url: '/greeting', headers: { 'accept-language': 'en' } })
      t.equal(englishAgain.headers['x-cache'], 'HIT')
      t.equal(englishAgain.body, 'hello')
    })

    t.test('a declared key, and a key builder that sees validated, coerced input', async (t) => {
      const app = await cachedApp(t, kind)
      const seen: unknown[] = []
      app.get('/exec', {
        schema: { querystring: { type: 'object', properties: { ws: { type: 'integer' }, timeframe: { enum: ['24h', '7d'] } }, required: ['ws', 'timeframe'] } },
        config: {
          cache: {
            key: (request) => {
              const query = request.query as { ws: number, timeframe: string }
              seen.push(query.ws)
              return ['exec', 'dashboard', query.ws, query.timeframe]
            }
          }
        }
      }, async (request) => request.query)
      t.equal((await app.inject('/exec?ws=42&timeframe=24h')).statusCode, 200)
      t.equal((await app.inject('/exec?ws=42&timeframe=1y')).statusCode, 400, 'validation refuses before any lookup')
      t.same(seen, [42], 'the builder got the coerced number and never saw the invalid request')
      await untilStored(app)
      t.ok(await app.cacheService.exists('exec:dashboard:42:24h'), 'the entry lives under the declared key')
      t.equal((await app.inject('/exec?timeframe=24h&ws=42')).headers['x-cache'], 'HIT')
    })

    t.test('callback-style handlers and handlers that return the reply', async (t) => {
      const app = await cachedApp(t, kind)
      app.get('/callback', { config: { cache: true } }, (_request, reply) => { setTimeout(() => reply.send('later'), 5) })
      app.get('/returns-reply', { config: { cache: true } }, async (_request, reply) => reply.send('sent'))
      for (const [url, body] of [['/callback', 'later'], ['/returns-reply', 'sent']]) {
        const miss = await app.inject(url)
        t.equal(miss.body, body)
        t.equal(miss.headers['x-cache'], 'MISS')
      }
      await untilStored(app, 2)
      t.equal((await app.inject('/callback')).body, 'later')
      t.equal((await app.inject('/returns-reply')).headers['x-cache'], 'HIT')
    })

    t.test('routes without cache config, or with cache: false, get no hooks', async (t) => {
      const app = await cachedApp(t, kind)
      app.get('/plain', async () => 'plain')
      app.get('/off', { config: { cache: false } }, async () => 'off')
      for (const url of ['/plain', '/off']) {
        const response = await app.inject(url)
        t.equal(response.body, url.slice(1))
        t.notOk('x-cache' in response.headers)
        t.notOk('etag' in response.headers)
      }
    })
  })
}
