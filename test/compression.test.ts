import { brotliCompressSync, brotliDecompressSync, constants, gunzipSync } from 'node:zlib'
import compress from '@fastify/compress'
import type { FastifyInstance } from 'fastify'
import t from 'tap'
import { randomBytes } from 'node:crypto'
import { parseAcceptEncoding } from '../lib/http/policy'
import { cachedApp, untilStored } from './helpers/app'
import { createClient } from './helpers/redis'

/** About 6 KB of JSON with enough repetition to compress well, as analytics answers do. */
const BODY = JSON.stringify({ rows: Array.from({ length: 120 }, (_, i) => ({ day: `2026-01-${String(i % 28 + 1).padStart(2, '0')}`, runs: i * 7, failures: i % 5 })) })

async function appWith (t: tap.Test, kind: 'memory' | 'redis' | 'tiered', options: Parameters<typeof cachedApp>[2] = {}, route: Record<string, unknown> = {}): Promise<FastifyInstance> {
  const app = await cachedApp(t, kind, options)
  app.get('/report', { config: { cache: { key: 'report', ...route } } }, async (_request, reply) => reply.type('application/json').send(BODY))
  app.get('/small', { config: { cache: { key: 'small' } } }, async () => ({ ok: true }))
  return app
}

t.test('Accept-Encoding: which codings a request accepts (RFC 9110 12.5.3)', async (t) => {
  t.same([...parseAcceptEncoding('gzip, deflate, br')].sort(), ['br', 'deflate', 'gzip'])
  t.same([...parseAcceptEncoding('br;q=0, gzip')], ['gzip'])
  t.same([...parseAcceptEncoding('*')], ['br'])
  t.same([...parseAcceptEncoding('*, br;q=0')], [])
  t.same([...parseAcceptEncoding('BR;Q=0.5')], ['br'])
  t.same([...parseAcceptEncoding(undefined)], [])
  t.same([...parseAcceptEncoding('identity')], ['identity'])
})

for (const kind of ['redis', 'tiered'] as const) {
  t.test(`${kind}: a large JSON body is stored compressed and served as it is to clients that accept brotli`, async (t) => {
    const app = await appWith(t, kind)
    const miss = await app.inject('/report')
    t.equal(miss.headers['x-cache'], 'MISS')
    t.equal(miss.body, BODY)
    t.equal(miss.headers['content-encoding'], undefined)
    t.match(miss.headers.vary, /accept-encoding/, 'the first response already says it varies on Accept-Encoding')
    await untilStored(app)

    const br = await app.inject({ url: '/report', headers: { 'accept-encoding': 'gzip, br' } })
    t.equal(br.headers['x-cache'], 'HIT')
    t.equal(br.headers['content-encoding'], 'br')
    t.match(br.headers.vary, /accept-encoding/)
    t.ok(br.rawPayload.length < BODY.length / 3, `sent compressed (${br.rawPayload.length} of ${BODY.length} bytes)`)
    t.equal(brotliDecompressSync(br.rawPayload).toString(), BODY, 'the exact body, once decompressed')
    t.equal(br.headers['content-type'], 'application/json; charset=utf-8')

    for (const accept of [undefined, 'gzip, deflate', 'br;q=0, gzip', 'identity']) {
      const plain = await app.inject({ url: '/report', headers: accept === undefined ? {} : { 'accept-encoding': accept } })
      t.equal(plain.headers['x-cache'], 'HIT', `${String(accept)}: a hit`)
      t.equal(plain.headers['content-encoding'], undefined, `${String(accept)}: not encoded`)
      t.equal(plain.body, BODY, `${String(accept)}: the identity body`)
      t.match(plain.headers.vary, /accept-encoding/)
      t.not(plain.headers.etag, br.headers.etag, `${String(accept)}: another representation, another ETag`)
    }

    const etagBr = String(br.headers.etag)
    t.equal((await app.inject({ url: '/report', headers: { 'accept-encoding': 'br', 'if-none-match': etagBr } })).statusCode, 304)
    const plainEtag = String((await app.inject('/report')).headers.etag)
    t.equal((await app.inject({ url: '/report', headers: { 'if-none-match': plainEtag } })).statusCode, 304)
    t.equal((await app.inject({ url: '/report', headers: { 'accept-encoding': 'br', 'if-none-match': plainEtag } })).statusCode, 200,
      'the identity ETag does not validate the brotli representation')
    t.same(await app.cacheService.get('report'), JSON.parse(BODY), 'cacheService.get reads the decompressed body')
  })
}

t.test('the bytes in Redis are the compressed body', async (t) => {
  const prefix = `test:compression:${randomBytes(4).toString('hex')}`
  const app = await appWith(t, 'redis', { prefix })
  await app.inject('/report')
  await untilStored(app)
  const client = await createClient(t)
  const stored = await client.getBuffer(`${prefix}:e:{report}`)
  t.ok(stored !== null && stored.length < BODY.length / 3, `${stored?.length ?? 0} bytes stored for a ${BODY.length}-byte body`)
})

t.test('brotli quality: 10 up to 16 KiB and 5 above by default, or the one the options set', async (t) => {
  // Varied numbers, as analytics answers have: on them the qualities give different bytes.
  const rows = (count: number): string => JSON.stringify({ rows: Array.from({ length: count }, (_, i) => ({ day: i % 28, runs: (i * 7919) % 5003, failures: (i * 31) % 17 })) })
  const medium = rows(300)
  const large = rows(1200)
  t.ok(medium.length < 16 * 1024 && large.length > 16 * 1024, `${medium.length} and ${large.length} bytes, either side of 16 KiB`)
  const brotli = (body: string, quality: number): Buffer => brotliCompressSync(body, {
    params: { [constants.BROTLI_PARAM_QUALITY]: quality, [constants.BROTLI_PARAM_SIZE_HINT]: Buffer.byteLength(body) }
  })
  const cases: Array<[string, Parameters<typeof cachedApp>[2], Record<string, unknown>, string, number, number]> = [
    ['default, a body under 16 KiB', {}, {}, medium, 10, 5],
    ['default, a body over 16 KiB', {}, {}, large, 5, 10],
    ['quality 3 on the plugin', { compression: { quality: 3 } }, {}, medium, 3, 10],
    ['quality 11 on the route', {}, { compression: { quality: 11 } }, large, 11, 5]
  ]
  for (const [what, options, route, body, quality, other] of cases) {
    t.notSame(brotli(body, quality), brotli(body, other), `${what}: quality ${quality} and ${other} give different bytes, for the test to tell them apart`)
    const prefix = `test:compression:${randomBytes(4).toString('hex')}`
    const app = await cachedApp(t, 'redis', { prefix, ...options })
    app.get('/report', { config: { cache: { key: 'report', ...route } } }, async (_request, reply) => reply.type('application/json').send(body))
    await app.inject('/report')
    await untilStored(app)
    const hit = await app.inject({ url: '/report', headers: { 'accept-encoding': 'br' } })
    t.equal(hit.headers['content-encoding'], 'br', `${what}: sent as stored`)
    t.same(hit.rawPayload, brotli(body, quality), `${what}: compressed at quality ${quality}`)
  }
})

t.test('not compressed: small bodies, compression: false, the memory store, sensitive routes', async (t) => {
  const key = randomBytes(32).toString('base64')
  const cases: Array<[string, FastifyInstance, string]> = [
    ['a body under minBytes', await appWith(t, 'redis'), '/small'],
    ['compression: false on the plugin', await appWith(t, 'redis', { compression: false }), '/report'],
    ['compression: false on the route', await appWith(t, 'redis', {}, { compression: false }), '/report'],
    ['minBytes above the body', await appWith(t, 'redis', { compression: { minBytes: 100_000 } }), '/report'],
    ['the memory store', await appWith(t, 'memory'), '/report'],
    ['a sensitive route', await appWith(t, 'redis', { encryption: { keys: [key] } }, { sensitive: true }), '/report']
  ]
  const noTransform = await cachedApp(t, 'redis')
  noTransform.get('/report', { config: { cache: { key: 'report' } } }, async (_request, reply) =>
    reply.type('application/json').header('cache-control', 'public, max-age=60, no-transform').send(BODY))
  cases.push(['a response with no-transform', noTransform, '/report'])
  for (const [what, app, url] of cases) {
    await app.inject(url)
    await untilStored(app)
    const hit = await app.inject({ url, headers: { 'accept-encoding': 'br' } })
    t.equal(hit.headers['x-cache'], 'HIT', `${what}: a hit`)
    t.equal(hit.headers['content-encoding'], undefined, `${what}: sent as it was produced`)
    t.notMatch(String(hit.headers.vary ?? ''), /accept-encoding/, `${what}: no Vary on Accept-Encoding`)
  }
})

t.test('with @fastify/compress: a stored brotli body is never encoded twice, identity hits are compressed by it', async (t) => {
  const app = await cachedApp(t, 'redis')
  await app.register(compress, { threshold: 0 })
  app.get('/report', { config: { cache: { key: 'report' } } }, async (_request, reply) => reply.type('application/json').send(BODY))
  const miss = await app.inject({ url: '/report', headers: { 'accept-encoding': 'gzip' } })
  t.equal(gunzipSync(miss.rawPayload).toString(), BODY, 'the miss is gzipped by @fastify/compress')
  await untilStored(app)
  const br = await app.inject({ url: '/report', headers: { 'accept-encoding': 'br' } })
  t.equal(br.headers['x-cache'], 'HIT')
  t.equal(br.headers['content-encoding'], 'br')
  t.equal(brotliDecompressSync(br.rawPayload).toString(), BODY, 'brotli once, not twice')
  const gzip = await app.inject({ url: '/report', headers: { 'accept-encoding': 'gzip' } })
  t.equal(gzip.headers['content-encoding'], 'gzip')
  t.equal(gunzipSync(gzip.rawPayload).toString(), BODY, 'a gzip client gets the identity body gzipped by @fastify/compress')
})
