// Shared-cache mode against a real upstream: an origin server returns the headers each case needs, a shared-mode
// route proxies it with fetch, and each case asserts what the client sees and how many requests reached the origin.
// Grouped by section of RFC 9111 (and RFC 5861, 9211, 9213), written from the RFCs' text.
import type { IncomingMessage } from 'node:http'
import { brotliDecompressSync } from 'node:zlib'
import type { FastifyInstance, InjectOptions, LightMyRequestResponse } from 'fastify'
import replyFrom from '@fastify/reply-from'
import Fastify from 'fastify'
import t from 'tap'
import cache, { type CachePluginOptions, type RouteCacheOptions } from '../lib/index'
import { STORE_KINDS, cachedApp, sleep, until, untilStored, type StoreKind } from './helpers/app'
import { type Origin, type OriginAnswer, proxyTo, startOrigin } from './helpers/origin'
import type { Teardownable } from './helpers/redis'

const http = (ms: number): string => new Date(ms).toUTCString()
const TEXT = { 'content-type': 'text/plain' }

interface Setup { app: FastifyInstance, origin: Origin, get: (url: string, headers?: InjectOptions['headers']) => Promise<LightMyRequestResponse> }

async function setup (
  t: Teardownable, kind: StoreKind, answer: (request: IncomingMessage, index: number) => OriginAnswer,
  route: RouteCacheOptions = {}, plugin: CachePluginOptions = {}
): Promise<Setup> {
  const origin = await startOrigin(t, answer)
  const app = await cachedApp(t, kind, plugin)
  proxyTo(app, origin, route)
  return { app, origin, get: async (url, headers) => await app.inject({ url, headers }) }
}

/** The origin's answer for a resource that changes with each request it receives. */
const versioned = (headers: Record<string, string>) => (_request: IncomingMessage, index: number): OriginAnswer =>
  ({ headers: { ...TEXT, ...headers }, body: `v${index + 1}` })

for (const kind of STORE_KINDS) {
  t.test(`${kind} store`, async (t) => {
    t.test('RFC 9111 3: storing responses', async (t) => {
      t.test('a response with max-age is stored and reused, with Age and Cache-Status (4.2, 5.1; RFC 9211)', async (t) => {
        const { app, origin, get } = await setup(t, kind, versioned({ 'cache-control': 'max-age=60', 'x-upstream': 'yes' }))
        const miss = await get('/doc')
        t.equal(miss.body, 'v1')
        t.equal(miss.headers['x-cache'], 'MISS')
        t.equal(miss.headers['cache-status'], 'fastify-response-cache; fwd=uri-miss; fwd-status=200; stored')
        t.equal(miss.headers['cache-control'], 'max-age=60', 'the origin\'s Cache-Control goes through as it is')
        await untilStored(app)
        const hit = await get('/doc')
        t.equal(hit.body, 'v1')
        t.equal(hit.headers['x-cache'], 'HIT')
        t.match(hit.headers['cache-status'], /^fastify-response-cache; hit; ttl=(58|59|60)$/)
        t.ok(['0', '1'].includes(String(hit.headers.age)), `age ${String(hit.headers.age)}: the time since Date, whole seconds`)
        t.equal(hit.headers['cache-control'], 'max-age=60', 'no Cache-Control of the plugin\'s in shared mode')
        t.equal(hit.headers['x-upstream'], 'yes')
        t.ok(hit.headers.date, 'the origin\'s Date is stored and sent')
        t.equal(origin.count(), 1)
      })

      t.test('5.2.2.5 no-store: never stored', async (t) => {
        const { origin, get } = await setup(t, kind, versioned({ 'cache-control': 'no-store, max-age=60' }))
        t.equal((await get('/x')).headers['cache-status'], 'fastify-response-cache; fwd=uri-miss; fwd-status=200; detail=no-store')
        await sleep(30)
        t.equal((await get('/x')).body, 'v2')
        t.equal(origin.count(), 2)
      })

      t.test('5.2.2.7 private: never stored by a shared cache; a qualified private stores the rest', async (t) => {
        const { app, origin, get } = await setup(t, kind, (request, index) => request.url === '/private'
          ? { headers: { ...TEXT, 'cache-control': 'private, max-age=60' }, body: `p${index}` }
          : { headers: { ...TEXT, 'cache-control': 'private="x-user", max-age=60', 'x-user': 'alice' }, body: 'shared' })
        await get('/private')
        await sleep(30)
        t.equal((await get('/private')).headers['x-cache'], 'MISS')
        const first = await get('/qualified')
        t.equal(first.headers['x-user'], 'alice', 'the origin\'s response goes through whole')
        await untilStored(app)
        const hit = await get('/qualified')
        t.equal(hit.headers['x-cache'], 'HIT')
        t.equal(hit.headers['x-user'], undefined, 'the private field is never reused')
        t.equal(origin.count(), 3)
      })

      t.test('3 a status that is not heuristically cacheable needs explicit freshness', async (t) => {
        const { app, origin, get } = await setup(t, kind, (request) => ({
          status: 302,
          headers: { location: '/elsewhere', ...(request.url === '/fresh' ? { 'cache-control': 'max-age=60' } : {}) }
        }))
        await get('/plain')
        await sleep(30)
        t.equal((await get('/plain')).headers['x-cache'], 'MISS', 'a 302 without freshness information')
        await get('/fresh')
        await untilStored(app)
        const hit = await get('/fresh')
        t.equal(hit.statusCode, 302)
        t.equal(hit.headers['x-cache'], 'HIT')
        t.equal(hit.headers.location, '/elsewhere')
        t.equal(origin.count(), 3)
      })

      t.test('4.2.2 heuristic freshness from Last-Modified, for a heuristically cacheable status', async (t) => {
        const { app, origin, get } = await setup(t, kind, (request) => ({
          status: request.url === '/missing' ? 404 : 200,
          headers: { ...TEXT, 'last-modified': http(Date.now() - 1000_000) },
          body: 'old news'
        }))
        for (const url of ['/page', '/missing']) await get(url)
        await untilStored(app, 2)
        const page = await get('/page')
        t.equal(page.headers['x-cache'], 'HIT')
        t.match(page.headers['cache-status'], /hit; ttl=(98|99|100)$/, 'a tenth of the 1000 s since Last-Modified')
        t.equal((await get('/missing')).statusCode, 404)
        t.equal(origin.count(), 2)
      })

      t.test('3.5 a request with Authorization is stored only with public, s-maxage or must-revalidate', async (t) => {
        const { app, origin, get } = await setup(t, kind, (request) => ({
          headers: { ...TEXT, 'cache-control': request.url === '/public' ? 'public, max-age=60' : 'max-age=60' },
          body: 'for ' + String(request.headers.authorization)
        }))
        const auth = { authorization: 'Bearer a' }
        await get('/own', auth)
        await sleep(30)
        t.equal((await get('/own', auth)).headers['cache-status'], 'fastify-response-cache; fwd=uri-miss; fwd-status=200; detail=authorization')
        await get('/public', auth)
        await untilStored(app)
        t.equal((await get('/public', auth)).headers['x-cache'], 'HIT')
        t.equal(origin.count(), 3)
      })

      t.test('4.1 Vary: a stored response is reused only for the same values; Vary: * never', async (t) => {
        const { app, origin, get } = await setup(t, kind, (request) => ({
          headers: { ...TEXT, 'cache-control': 'max-age=60', vary: request.url === '/star' ? '*' : 'X-Variant' },
          body: `variant ${String(request.headers['x-variant'])}`
        }))
        await get('/v', { 'x-variant': 'a' })
        await untilStored(app)
        const b = await get('/v', { 'x-variant': 'b' })
        t.equal(b.body, 'variant b')
        t.equal(b.headers['cache-status'], 'fastify-response-cache; fwd=vary-miss; fwd-status=200; stored')
        await untilStored(app, 2)
        t.equal((await get('/v', { 'x-variant': 'b' })).headers['x-cache'], 'HIT')
        await get('/star')
        await sleep(30)
        t.equal((await get('/star')).headers['x-cache'], 'MISS')
        t.equal(origin.count(), 4)
      })
    })

    t.test('concurrent misses reach the origin once; HEAD is answered from the GET entry', async (t) => {
      const { app, origin, get } = await setup(t, kind, versioned({ 'cache-control': 'max-age=60' }))
      const responses = await Promise.all(Array.from({ length: 20 }, async () => await get('/hot')))
      // A store call past its deadline fails open and reaches the origin: the count of store errors says if one did.
      const errors = (await app.cacheService.stats()).errors
      t.ok(responses.every((response) => response.body === 'v1'), `every response is the one computation (store errors: ${errors})`)
      t.equal(origin.count(), 1, `the origin was asked once (store errors: ${errors})`)
      await untilStored(app)
      const head = await app.inject({ method: 'HEAD', url: '/hot' })
      t.equal(head.headers['x-cache'], 'HIT')
      t.equal(head.body, '')
      t.equal(origin.count('HEAD'), 0)
    })

    t.test('a streamed upstream body (@fastify/reply-from) is read whole and stored; one over maxEntryBytes streams on', async (t) => {
      const origin = await startOrigin(t, (request) => ({
        headers: { ...TEXT, 'cache-control': 'max-age=60' },
        body: request.url === '/big' ? 'x'.repeat(5000) : 'small'
      }))
      const app = await cachedApp(t, kind, { maxEntryBytes: 1000 })
      await app.register(replyFrom, { base: origin.url })
      app.get('/*', { config: { cache: { mode: 'shared' } } }, (request, reply) => { reply.from(request.url) })
      const small = await app.inject('/small')
      t.equal(small.body, 'small')
      t.equal(small.headers['cache-status'], 'fastify-response-cache; fwd=uri-miss; fwd-status=200; stored')
      await untilStored(app)
      t.equal((await app.inject('/small')).headers['x-cache'], 'HIT')
      const big = await app.inject('/big')
      t.equal(big.body, 'x'.repeat(5000), 'every byte, those read and the rest')
      t.equal(big.headers['cache-status'], 'fastify-response-cache; fwd=uri-miss; fwd-status=200; detail=too-large')
      t.equal((await app.inject('/big')).headers['x-cache'], 'MISS')
      t.equal(origin.count(), 3)
    })

    t.test('warming a shared-mode URL stores it, then revalidates it with a conditional request', async (t) => {
      const { app, origin, get } = await setup(t, kind, (request) => request.headers['if-none-match'] === '"k"'
        ? { status: 304, headers: { etag: '"k"', 'cache-control': 'max-age=0' } }
        : { headers: { ...TEXT, etag: '"k"', 'cache-control': 'max-age=0' }, body: 'warm' })
      t.match(await app.cacheService.warm(['/warmed']), { ok: 1, failed: 0 })
      t.match(await app.cacheService.warm(['/warmed']), { ok: 1, failed: 0 }, 'the 304 refreshed and stored the entry')
      t.equal(origin.requests[1].headers['if-none-match'], '"k"')
      const response = await get('/warmed')
      t.equal(response.body, 'warm')
      t.equal(origin.count(), 3)
    })

    t.test('RFC 9111 4.2: freshness', async (t) => {
      t.test('4.2.1 s-maxage overrides max-age in a shared cache', async (t) => {
        const { app, origin, get } = await setup(t, kind, versioned({ 'cache-control': 'max-age=0, s-maxage=60' }))
        await get('/s')
        await untilStored(app)
        t.equal((await get('/s')).headers['x-cache'], 'HIT')
        t.equal(origin.count(), 1)
      })

      t.test('4.2.1 Expires minus Date; an invalid Expires is already stale (5.3)', async (t) => {
        const { app, origin, get } = await setup(t, kind, (request, index) => ({
          headers: {
            ...TEXT,
            date: http(Date.now()),
            expires: request.url === '/invalid' ? '0' : http(Date.now() + 60_000)
          },
          body: `v${index}`
        }))
        await get('/expires')
        await get('/invalid')
        await untilStored(app, 2)
        const hit = await get('/expires')
        t.equal(hit.headers['x-cache'], 'HIT')
        t.match(hit.headers['cache-status'], /ttl=(58|59|60)$/)
        t.equal((await get('/invalid')).headers['cache-status'], 'fastify-response-cache; fwd=stale; fwd-status=200; stored')
        t.equal(origin.count(), 3)
      })

      t.test('4.2.3 the Age from upstream counts: Age out = upstream age + resident time', async (t) => {
        const { app, origin, get } = await setup(t, kind, (request) => ({
          headers: { ...TEXT, 'cache-control': 'max-age=60', age: request.url === '/old' ? '60' : '30' },
          body: 'aged'
        }))
        await get('/aged')
        await get('/old')
        await untilStored(app, 2)
        const hit = await get('/aged')
        t.equal(hit.headers['x-cache'], 'HIT')
        t.ok(Number(hit.headers.age) >= 30 && Number(hit.headers.age) <= 31, `age ${String(hit.headers.age)}`)
        t.match(hit.headers['cache-status'], /ttl=(28|29|30)$/)
        t.equal((await get('/old')).headers['x-cache'], 'MISS', 'arrived with its whole lifetime used: stale at once')
        t.equal(origin.count(), 3)
      })

      t.test('4.2 a response becomes stale when its age reaches its lifetime', async (t) => {
        const { app, origin, get } = await setup(t, kind, versioned({ 'cache-control': 'max-age=2' }))
        t.equal((await get('/short')).body, 'v1')
        await untilStored(app)
        t.equal((await get('/short')).body, 'v1')
        await sleep(2100)
        const after = await get('/short')
        t.equal(after.body, 'v2')
        t.equal(after.headers['cache-status'], 'fastify-response-cache; fwd=stale; fwd-status=200; stored')
        t.equal(origin.count(), 2)
      })
    })

    t.test('RFC 9111 4.3: validation', async (t) => {
      t.test('4.3.1, 4.3.3, 4.3.4 a stale entry with an ETag is validated; a 304 refreshes its headers and it is served', async (t) => {
        const { app, origin, get } = await setup(t, kind, (request, index) => index === 0
          ? { headers: { ...TEXT, etag: '"r1"', 'cache-control': 'max-age=0', 'x-round': '1', age: '100' }, body: 'the body' }
          : request.headers['if-none-match'] === '"r1"'
            ? { status: 304, headers: { etag: '"r1"', 'cache-control': 'max-age=60', 'x-round': String(index + 1) } }
            : { headers: { ...TEXT, etag: '"r2"' }, body: 'unexpected' })
        await get('/r')
        await untilStored(app)
        const validated = await get('/r')
        t.equal(validated.statusCode, 200)
        t.equal(validated.body, 'the body')
        t.equal(validated.headers['x-cache'], 'REVALIDATED')
        t.equal(validated.headers['cache-status'], 'fastify-response-cache; fwd=stale; fwd-status=304; stored')
        t.equal(validated.headers['x-round'], '2', 'the 304\'s headers replace the stored ones')
        t.equal(validated.headers['content-type'], 'text/plain', 'the stored content-type stays')
        t.equal(validated.headers['cache-control'], 'max-age=60')
        t.ok(['0', '1'].includes(String(validated.headers.age)), 'the age of the confirmation, not of the first response')
        t.equal(origin.requests[1].headers['if-none-match'], '"r1"', 'the handler forwarded the cache\'s validator')
        await untilStored(app, 2)
        const hit = await get('/r')
        t.equal(hit.headers['x-cache'], 'HIT', 'fresh again after the 304')
        t.equal(hit.headers['x-round'], '2')
        t.equal(hit.body, 'the body')
        t.equal(origin.count(), 2)
      })

      t.test('4.3.4 a revalidated entry whose body is stored compressed is served whole, to every client', async (t) => {
        const body = JSON.stringify({ rows: Array.from({ length: 200 }, (_, i) => ({ day: i, runs: i * 3 })) })
        const { app, origin, get } = await setup(t, kind, (_request, index) => index === 0
          ? { headers: { 'content-type': 'application/json', etag: '"j1"', 'cache-control': 'max-age=0' }, body }
          : { status: 304, headers: { etag: '"j1"', 'cache-control': 'max-age=60' } })
        const miss = await get('/j')
        if (kind !== 'memory') t.match(miss.headers.vary, /accept-encoding/, 'stored compressed: the miss says its hits vary on Accept-Encoding')
        await untilStored(app)
        const validated = await get('/j')
        t.equal(validated.headers['x-cache'], 'REVALIDATED')
        t.equal(validated.body, body, 'the stored body, whatever form it is stored in')
        t.equal(validated.headers['content-encoding'], undefined)
        await untilStored(app, 2)
        for (const accept of [undefined, 'br']) {
          const hit = await get('/j', accept === undefined ? {} : { 'accept-encoding': accept })
          t.equal(hit.headers['x-cache'], 'HIT', `${String(accept)}: a hit`)
          const sent = hit.headers['content-encoding'] === 'br' ? brotliDecompressSync(hit.rawPayload).toString() : hit.body
          t.equal(sent, body, `${String(accept)}: the whole body`)
        }
        t.equal(origin.count(), 2)
      })

      t.test('4.3.1 Last-Modified is sent as If-Modified-Since; a 200 replaces the entry', async (t) => {
        const modified = http(Date.now() - 60_000)
        const { app, origin, get } = await setup(t, kind, (_request, index) =>
          ({ headers: { ...TEXT, 'last-modified': modified, 'cache-control': 'max-age=0' }, body: `v${index + 1}` }))
        await get('/lm')
        await untilStored(app)
        const second = await get('/lm')
        t.equal(origin.requests[1].headers['if-modified-since'], modified)
        t.equal(origin.requests[1].headers['if-none-match'], undefined, 'a plugin-made ETag is never sent upstream')
        t.equal(second.body, 'v2', 'the origin sent a full response: it replaces the entry')
        t.equal(second.headers['cache-status'], 'fastify-response-cache; fwd=stale; fwd-status=200; stored')
      })

      t.test('5.2.2.4 no-cache: stored, but validated before every reuse', async (t) => {
        const { app, origin, get } = await setup(t, kind, (request) => request.headers['if-none-match'] === '"n"'
          ? { status: 304, headers: { etag: '"n"', 'cache-control': 'no-cache' } }
          : { headers: { ...TEXT, etag: '"n"', 'cache-control': 'no-cache' }, body: 'checked' })
        await get('/nc')
        await untilStored(app)
        for (let i = 0; i < 2; i++) {
          const response = await get('/nc')
          t.equal(response.body, 'checked')
          t.equal(response.headers['x-cache'], 'REVALIDATED')
          await untilStored(app, 2 + i)
        }
        t.equal(origin.count(), 3, 'every reuse asked the origin')
      })

      t.test('4.3.2 the cache answers the client\'s own conditional requests', async (t) => {
        const modified = http(Date.now() - 60_000)
        const { app, origin, get } = await setup(t, kind, () =>
          ({ headers: { ...TEXT, etag: '"c"', 'last-modified': modified, 'cache-control': 'max-age=60' }, body: 'conditional' }))
        t.equal((await get('/c', { 'if-none-match': '"c"' })).statusCode, 304, 'on a miss')
        await untilStored(app)
        t.equal(origin.requests[0].headers['if-none-match'], undefined, 'the client\'s conditional is not forwarded')
        const inm = await get('/c', { 'if-none-match': 'W/"c"' })
        t.equal(inm.statusCode, 304)
        t.equal(inm.body, '')
        t.equal((await get('/c', { 'if-modified-since': http(Date.now()) })).statusCode, 304)
        t.equal((await get('/c', { 'if-modified-since': http(Date.now() - 120_000) })).statusCode, 200)
        t.equal((await get('/c', { 'if-none-match': '"other"', 'if-modified-since': http(Date.now()) })).statusCode, 200, 'If-None-Match takes precedence')
        t.equal(origin.count(), 1)
      })

      t.test('4.3.4 a 304 that now says no-store: the stored body is served with the new headers, and not stored again', async (t) => {
        const { app, origin, get } = await setup(t, kind, (_request, index) => index === 0
          ? { headers: { ...TEXT, etag: '"e"', 'cache-control': 'max-age=0' }, body: 'body' }
          : { status: 304, headers: { etag: '"e"', 'cache-control': 'no-store', 'x-round': String(index) } })
        await get('/ns')
        await untilStored(app)
        const response = await get('/ns')
        t.equal(response.statusCode, 200)
        t.equal(response.body, 'body')
        t.equal(response.headers['cache-control'], 'no-store')
        t.equal(response.headers['x-round'], '1')
        t.equal(response.headers['cache-status'], 'fastify-response-cache; fwd=stale; fwd-status=304')
        await sleep(30)
        t.equal((await app.cacheService.stats()).stored, 1, 'not stored again')
        t.equal((await get('/ns')).headers['x-round'], '2', 'the old entry is validated again')
        t.equal(origin.count(), 3)
      })

      t.test('4.3.4 a 304 for another representation does not refresh the entry', async (t) => {
        const { app, get } = await setup(t, kind, (_request, index) => index === 0
          ? { headers: { ...TEXT, etag: '"old"', 'cache-control': 'max-age=0' }, body: 'old' }
          : { status: 304, headers: { etag: '"new"', 'cache-control': 'max-age=60' } })
        await get('/rep')
        await untilStored(app)
        const response = await get('/rep')
        t.equal(response.statusCode, 304, 'passed through')
        t.not(response.headers['x-cache'], 'REVALIDATED')
        t.equal((await app.cacheService.stats()).stored, 1, 'nothing stored')
      })
    })

    t.test('RFC 9111 4.4: invalidation by unsafe methods', async (t) => {
      t.test('a successful POST invalidates its URL, and same-host Location and Content-Location', async (t) => {
        const { app, origin, get } = await setup(t, kind, (request, index) => request.method === 'GET'
          ? { headers: { ...TEXT, 'cache-control': 'max-age=600' }, body: `${String(request.url)} ${index}` }
          : request.url === '/fails'
            ? { status: 500 }
            : { status: 201, headers: { location: '/items/2', 'content-location': 'http://elsewhere.example/items/3' } })
        const urls = ['/items', '/items/2', '/items/3', '/fails']
        for (const url of urls) await get(url)
        await untilStored(app, 4)
        t.equal((await app.inject({ method: 'POST', url: '/items' })).statusCode, 201)
        t.equal((await get('/items')).headers['x-cache'], 'MISS', 'the target URI')
        t.equal((await get('/items/2')).headers['x-cache'], 'MISS', 'the Location on the same host')
        t.equal((await get('/items/3')).headers['x-cache'], 'HIT', 'never a Location on another host')
        t.equal((await app.inject({ method: 'PUT', url: '/fails' })).statusCode, 500)
        t.equal((await get('/fails')).headers['x-cache'], 'HIT', 'an error invalidates nothing')
        t.equal(origin.count(), 6)
      })

      t.test('a write the route\'s hooks refuse invalidates nothing; cache: false opts a route out', async (t) => {
        const origin = await startOrigin(t, () => ({ headers: { ...TEXT, 'cache-control': 'max-age=600' }, body: 'kept' }))
        const app = await cachedApp(t, kind)
        proxyTo(app, origin)
        app.post('/guarded/*', {
          preHandler: async (request, reply) => { if (request.headers.authorization === undefined) await reply.code(401).send() }
        }, async () => ({ ok: true }))
        app.delete('/opted-out/*', { config: { cache: false } }, async () => ({ ok: true }))
        for (const url of ['/guarded/x', '/opted-out/x']) await app.inject(url)
        await untilStored(app, 2)
        t.equal((await app.inject({ method: 'POST', url: '/guarded/x' })).statusCode, 401)
        t.equal((await app.inject('/guarded/x')).headers['x-cache'], 'HIT')
        t.equal((await app.inject({ method: 'DELETE', url: '/opted-out/x' })).statusCode, 200)
        t.equal((await app.inject('/opted-out/x')).headers['x-cache'], 'HIT')
        t.equal((await app.inject({ method: 'POST', url: '/guarded/x', headers: { authorization: 'Bearer ok' } })).statusCode, 200)
        t.equal((await app.inject('/guarded/x')).headers['x-cache'], 'MISS', 'an accepted write does invalidate, from another route')
      })

      t.test('PUT, PATCH and DELETE invalidate too; the query string does not matter', async (t) => {
        const { app, get } = await setup(t, kind, (request) => request.method === 'GET'
          ? { headers: { ...TEXT, 'cache-control': 'max-age=600' }, body: 'x' }
          : { status: 204 })
        for (const method of ['PUT', 'PATCH', 'DELETE'] as const) {
          await get('/thing?page=1')
          await until('stored', async () => (await get('/thing?page=1')).headers['x-cache'] === 'HIT')
          t.equal((await app.inject({ method, url: '/thing' })).statusCode, 204)
          t.equal((await get('/thing?page=1')).headers['x-cache'], 'MISS', method)
        }
      })
    })

    t.test('RFC 9111 5.2.1: request directives', async (t) => {
      t.test('by default no-cache, max-age and no-store from clients are ignored: they cannot add origin load', async (t) => {
        const { app, origin, get } = await setup(t, kind, versioned({ 'cache-control': 'max-age=60', etag: '"d"' }))
        await get('/d')
        await untilStored(app)
        for (const cacheControl of ['no-cache', 'max-age=0', 'min-fresh=120', 'no-store']) {
          t.equal((await get('/d', { 'cache-control': cacheControl })).headers['x-cache'], 'HIT', cacheControl)
        }
        t.equal((await get('/d', { pragma: 'no-cache' })).headers['x-cache'], 'HIT', 'Pragma')
        t.equal(origin.count(), 1)
      })

      t.test('when allowed: no-cache and max-age validate, min-fresh too, no-store is not stored', async (t) => {
        const { app, origin, get } = await setup(t, kind, (request) => request.headers['if-none-match'] === '"a"'
          ? { status: 304, headers: { etag: '"a"', 'cache-control': 'max-age=60' } }
          : { headers: { ...TEXT, etag: '"a"', 'cache-control': 'max-age=60' }, body: 'allowed' },
        { requestDirectives: ['no-cache', 'max-age', 'min-fresh', 'no-store', 'max-stale', 'only-if-cached'] })
        await get('/a')
        await untilStored(app)
        const noCache = await get('/a', { 'cache-control': 'no-cache' })
        t.equal(noCache.headers['x-cache'], 'REVALIDATED')
        t.equal(noCache.headers['cache-status'], 'fastify-response-cache; fwd=request; fwd-status=304; stored')
        await untilStored(app, 2)
        t.equal((await get('/a', { 'cache-control': 'max-age=0' })).headers['x-cache'], 'REVALIDATED')
        await untilStored(app, 3)
        t.equal((await get('/a', { 'cache-control': 'min-fresh=120' })).headers['x-cache'], 'REVALIDATED')
        await untilStored(app, 4)
        t.equal((await get('/a', { 'cache-control': 'max-age=60' })).headers['x-cache'], 'HIT')
        t.equal(origin.count(), 4)
        const noStore = await get('/b', { 'cache-control': 'no-store' })
        t.equal(noStore.headers['cache-status'], 'fastify-response-cache; fwd=uri-miss; fwd-status=200; detail=request-no-store')
      })

      t.test('max-stale serves a stale response, never one with must-revalidate, proxy-revalidate or s-maxage', async (t) => {
        const { app, origin, get } = await setup(t, kind, (request) => ({
          headers: {
            ...TEXT,
            'cache-control': request.url === '/stale' ? 'max-age=10' : request.url === '/must' ? 'max-age=10, must-revalidate' : request.url === '/proxy' ? 'max-age=10, proxy-revalidate' : 's-maxage=10',
            age: '15'
          },
          body: 'stale body'
        }))
        for (const url of ['/stale', '/must', '/proxy', '/smax']) await get(url)
        await untilStored(app, 4)
        const stale = await get('/stale', { 'cache-control': 'max-stale=60' })
        t.equal(stale.headers['x-cache'], 'STALE')
        t.equal(stale.body, 'stale body')
        t.ok(Number(stale.headers.age) >= 15, 'its real age')
        t.match(stale.headers['cache-status'], /hit; ttl=-\d+$/, 'a negative ttl says stale (RFC 9211 2.4)')
        t.equal((await get('/stale', { 'cache-control': 'max-stale=1' })).headers['x-cache'], 'MISS', 'staler than accepted')
        for (const url of ['/must', '/proxy', '/smax']) {
          t.equal((await get(url, { 'cache-control': 'max-stale' })).headers['x-cache'], 'MISS', url)
        }
        t.equal(origin.count(), 8)
      })

      t.test('5.2.1.7 only-if-cached: a 504 without a usable response, the response otherwise', async (t) => {
        const { app, origin, get } = await setup(t, kind, versioned({ 'cache-control': 'max-age=60' }))
        const none = await get('/o', { 'cache-control': 'only-if-cached' })
        t.equal(none.statusCode, 504)
        t.equal(none.headers['cache-status'], 'fastify-response-cache; detail=only-if-cached')
        t.equal(origin.count(), 0, 'the origin was not asked')
        await get('/o')
        await untilStored(app)
        const cached = await get('/o', { 'cache-control': 'only-if-cached' })
        t.equal(cached.statusCode, 200)
        t.equal(cached.headers['x-cache'], 'HIT')
      })
    })

    t.test('RFC 9111 5.2.2.2 must-revalidate: a stale response is never served when the origin fails', async (t) => {
      const { app, get } = await setup(t, kind, (_request, index) => index === 0
        ? { headers: { ...TEXT, 'cache-control': 'max-age=0, must-revalidate, stale-if-error=60', etag: '"m"' }, body: 'ok' }
        : { status: 503, body: 'down' })
      await get('/m')
      await untilStored(app)
      const failed = await get('/m')
      t.equal(failed.statusCode, 503)
      t.equal(failed.body, 'down')
    })

    t.test('RFC 5861: the response\'s own stale windows', async (t) => {
      t.test('3 stale-while-revalidate: served stale at once, revalidated in the background', async (t) => {
        const { app, origin, get } = await setup(t, kind, (request, index) => request.headers['if-none-match'] === '"s"'
          ? { status: 304, headers: { etag: '"s"', 'cache-control': 'max-age=60', 'x-refreshed': 'yes' } }
          : { headers: { ...TEXT, etag: '"s"', 'cache-control': 'max-age=10, stale-while-revalidate=60', age: '10' }, body: `v${index + 1}` })
        await get('/swr')
        await untilStored(app)
        const stale = await get('/swr')
        t.equal(stale.headers['x-cache'], 'STALE')
        t.equal(stale.body, 'v1')
        t.ok(Number(stale.headers.age) >= 10)
        await until('the background revalidation stored the refreshed entry', async () => (await get('/swr')).headers['x-cache'] === 'HIT')
        const fresh = await get('/swr')
        t.equal(fresh.headers['x-refreshed'], 'yes')
        t.equal(fresh.body, 'v1', 'confirmed by a 304: the same body')
        t.equal(origin.requests[1].headers['if-none-match'], '"s"', 'the refresh was a conditional request')
        t.equal(origin.count(), 2)
      })

      t.test('3 with @fastify/reply-from: the background revalidation forwards the validators, never the warm token', async (t) => {
        const origin = await startOrigin(t, (request, index) => request.headers['if-none-match'] === '"w"'
          ? { status: 304, headers: { etag: '"w"', 'cache-control': 'max-age=60' } }
          : { headers: { ...TEXT, etag: '"w"', 'cache-control': 'max-age=1, stale-while-revalidate=60', age: '1' }, body: `v${index + 1}` })
        const app = await cachedApp(t, kind)
        await app.register(replyFrom, { base: origin.url })
        app.get('/*', { config: { cache: { mode: 'shared' } } }, (request, reply) => {
          reply.from(request.url, { rewriteRequestHeaders: (request, headers) => ({ ...headers, ...request.cacheValidators }) })
        })
        await app.inject('/warm')
        await untilStored(app)
        t.equal((await app.inject('/warm')).headers['x-cache'], 'STALE')
        await until('revalidated in the background', async () => (await app.inject('/warm')).headers['x-cache'] === 'HIT')
        t.equal(origin.count(), 2)
        t.equal(origin.requests[1].headers['if-none-match'], '"w"')
        t.notOk(origin.requests.some((request) => request.headers['x-cache-warm'] !== undefined), 'the token stayed in the process')
      })

      t.test('4 stale-if-error: a stale response answers in place of a failure', async (t) => {
        const { app, get } = await setup(t, kind, (_request, index) => index === 0
          ? { headers: { ...TEXT, 'cache-control': 'max-age=1, stale-if-error=60', age: '1' }, body: 'last good' }
          : { status: 502, body: 'bad gateway' })
        await get('/sie')
        await untilStored(app)
        const response = await get('/sie')
        t.equal(response.statusCode, 200)
        t.equal(response.body, 'last good')
        t.equal(response.headers['x-cache'], 'STALE')
        t.equal(response.headers['cache-status'], 'fastify-response-cache; fwd=stale; fwd-status=502; detail=stale-if-error')
      })
    })

    t.test('RFC 9213 targeted fields: CDN-Cache-Control when the option names it', async (t) => {
      const answer = versioned({ 'cache-control': 'no-store', 'cdn-cache-control': 'max-age=60' })
      const plain = await setup(t, kind, answer)
      await plain.get('/t')
      await sleep(30)
      t.equal((await plain.get('/t')).headers['x-cache'], 'MISS', 'not targeted: Cache-Control rules')
      const targeted = await setup(t, kind, answer, { targetedCacheControl: ['CDN-Cache-Control'] })
      await targeted.get('/t')
      await untilStored(targeted.app)
      const hit = await targeted.get('/t')
      t.equal(hit.headers['x-cache'], 'HIT')
      t.equal(hit.headers['cache-control'], 'no-store', 'Cache-Control goes on to the client unchanged')
      t.equal(targeted.origin.count(), 1)
    })
  })
}

t.test('app-mode and shared-mode routes side by side: app mode keeps its own headers and semantics', async (t) => {
  const origin = await startOrigin(t, versioned({ 'cache-control': 'no-store' }))
  const app = await cachedApp(t, 'memory')
  proxyTo(app, origin)
  let calls = 0
  app.get('/app-mode', { config: { cache: { ttl: 30 } } }, async (_request, reply) => {
    reply.header('cache-control', 'no-cache')
    return { calls: ++calls }
  })
  app.get('/app-default', { config: { cache: true } }, async () => 'default')
  await app.inject('/app-mode')
  await app.inject('/app-default')
  await untilStored(app, 2)
  const hit = await app.inject({ url: '/app-mode', headers: { 'cache-control': 'no-cache' } })
  t.equal(hit.headers['x-cache'], 'HIT', 'the ttl decides in app mode, not the handler\'s no-cache nor the client\'s')
  t.equal(hit.headers['cache-status'], undefined, 'no Cache-Status in app mode')
  t.equal(calls, 1)
  const plain = await app.inject('/app-default')
  t.equal(plain.headers['cache-control'], 'public, max-age=60', 'the plugin\'s Cache-Control in app mode')
  t.equal((await app.inject({ method: 'POST', url: '/app-default' })).statusCode, 200, 'answered by the gateway\'s write route')
  t.equal((await app.inject('/app-default')).headers['x-cache'], 'HIT', 'app-mode entries carry no URL tag: only their own tags invalidate them')
  const proxied = await app.inject('/elsewhere')
  t.equal(proxied.headers['cache-control'], 'no-store', 'the origin\'s in shared mode')
  t.match(proxied.headers['cache-status'], /detail=no-store$/)
})

t.test('shared mode refuses the options of app mode, and app mode those of shared mode', async (t) => {
  const app = await cachedApp(t, 'memory')
  for (const option of [{ ttl: 5 }, { cacheControl: 'public' }, { staleWhileRevalidate: 5 }, { statuses: [200] }]) {
    t.throws(() => app.get(`/s${Object.keys(option)[0]}`, { config: { cache: { mode: 'shared', ...option } } }, async () => ''),
      { code: 'FST_CACHE_INVALID_OPTION', message: new RegExp(`"config.cache.${Object.keys(option)[0]}" does not apply with mode: 'shared'`) })
  }
  t.throws(() => app.get('/app', { config: { cache: { requestDirectives: ['no-cache'] } } }, async () => ''),
    { code: 'FST_CACHE_INVALID_OPTION', message: /"config.cache.requestDirectives" is for routes with mode: 'shared'/ })
  t.throws(() => app.get('/bad', { config: { cache: { mode: 'shared', requestDirectives: ['no-transform' as 'no-cache'] } } }, async () => ''),
    { code: 'FST_CACHE_INVALID_OPTION', message: /option "config.cache.requestDirectives.0"/ })
  const other = Fastify()
  t.teardown(() => other.close())
  await t.rejects(async () => { await other.register(cache, { keepStale: -1 }) }, { code: 'FST_CACHE_INVALID_OPTION', message: /option "keepStale"/ })
  await t.rejects(async () => { await Fastify().register(cache, { targetedCacheControl: ['bad header'] }) }, { code: 'FST_CACHE_INVALID_OPTION', message: /option "targetedCacheControl.0"/ })
})
