import type { FastifyRequest } from 'fastify'
import t from 'tap'
import { cacheControlFor } from '../lib/http/respond'
import { type CompiledRoute, compileRoute } from '../lib/http/route'
import { DEFAULTS, type RouteCacheOptions } from '../lib/options'
import { CacheStats } from '../lib/stats'
import {
  type Headers,
  type ResponseFacts,
  type StoragePolicy,
  UNSTORED_HEADERS,
  ageSeconds,
  isCredentialed,
  parseCacheControl,
  unstorableReason,
  varyMatches,
  varyNames,
  varyValues
} from '../lib/http/policy'
import { etagFor, ifNoneMatchMatches } from '../lib/http/conditional'

const entries = (map: Map<string, string | true>): Array<[string, string | true]> => [...map.entries()]

// ---------------------------------------------------------------------------
// parseCacheControl
// ---------------------------------------------------------------------------

t.test('parseCacheControl: nothing to parse', async (t) => {
  t.same(entries(parseCacheControl(undefined)), [])
  t.same(entries(parseCacheControl('')), [])
  t.same(entries(parseCacheControl(' , ,, ')), [])
  t.same(entries(parseCacheControl([])), [])
})

t.test('parseCacheControl: directives with and without arguments', async (t) => {
  t.same(entries(parseCacheControl('public, max-age=60')), [['public', true], ['max-age', '60']])
  t.same(entries(parseCacheControl('no-store')), [['no-store', true]])
  t.same(entries(parseCacheControl('max-age=0,must-revalidate')), [['max-age', '0'], ['must-revalidate', true]])
  t.same(entries(parseCacheControl('s-maxage=')), [['s-maxage', '']], 'an empty argument is kept as an empty string')
})

t.test('parseCacheControl: names are case-insensitive, arguments keep their case', async (t) => {
  const map = parseCacheControl('Public, MAX-AGE=60, No-Store, Private="X-User"')
  t.equal(map.get('public'), true)
  t.equal(map.get('max-age'), '60')
  t.equal(map.get('no-store'), true)
  t.equal(map.get('private'), 'X-User')
  t.notOk(map.has('Public'))
})

t.test('parseCacheControl: spaces around items, names and "="', async (t) => {
  const map = parseCacheControl('   public ,   max-age = 60 ,\tno-cache\t, s-maxage =30')
  t.same(entries(map), [['public', true], ['max-age', '60'], ['no-cache', true], ['s-maxage', '30']])
})

t.test('parseCacheControl: quoted arguments lose their quotes', async (t) => {
  t.equal(parseCacheControl('max-age="60"').get('max-age'), '60')
  t.equal(parseCacheControl('private="set-cookie"').get('private'), 'set-cookie')
  t.equal(parseCacheControl('no-cache=""').get('no-cache'), '')
  t.equal(parseCacheControl('ext="a=b"').get('ext'), 'a=b', 'an "=" inside the argument belongs to it')
  t.equal(parseCacheControl('ext=a=b').get('ext'), 'a=b')
})

t.test('parseCacheControl: a quoted argument may hold commas (RFC 9111 5.2.2.4, 5.2.2.7)', async (t) => {
  const map = parseCacheControl('private="set-cookie, x-user", max-age=60')
  t.equal(map.get('private'), 'set-cookie, x-user', 'the whole field-name list is the argument')
  t.equal(map.get('max-age'), '60')
  t.same([...map.keys()].sort(), ['max-age', 'private'], 'no directive is made up from inside the quotes')

  const sneaky = parseCacheControl('no-cache="x, no-store, private, y", public')
  t.notOk(sneaky.has('no-store'), 'a quoted no-store is not a directive')
  t.notOk(sneaky.has('private'), 'a quoted private is not a directive')
  t.equal(sneaky.get('public'), true)
})

t.test('parseCacheControl: arrays and numbers', async (t) => {
  t.same(entries(parseCacheControl(['public', 'max-age=60'])), [['public', true], ['max-age', '60']])
  t.same(entries(parseCacheControl(['public, max-age=60', 'no-transform'])), [['public', true], ['max-age', '60'], ['no-transform', true]])
  t.same(entries(parseCacheControl(['', 'public'])), [['public', true]])
  t.same(entries(parseCacheControl(5)), [['5', true]])
})

t.test('parseCacheControl: a repeated directive keeps the first value (RFC 9111 4.2.1)', async (t) => {
  t.equal(parseCacheControl('max-age=10, max-age=20').get('max-age'), '10')
})

// ---------------------------------------------------------------------------
// varyNames
// ---------------------------------------------------------------------------

t.test('varyNames', async (t) => {
  t.same(varyNames(undefined), [])
  t.same(varyNames(''), [])
  t.same(varyNames(' , , '), [])
  t.same(varyNames('Accept-Encoding'), ['accept-encoding'])
  t.same(varyNames('Accept-Encoding, User-Agent'), ['accept-encoding', 'user-agent'])
  t.same(varyNames(' ACCEPT ,accept-language,, '), ['accept', 'accept-language'])
  t.same(varyNames(['Accept', 'Origin, Cookie']), ['accept', 'origin', 'cookie'])
  t.same(varyNames('*'), ['*'])
  t.same(varyNames('Accept, *'), ['accept', '*'])
  t.same(varyNames(7), ['7'])
})

// ---------------------------------------------------------------------------
// unstorableReason
// ---------------------------------------------------------------------------

const POLICY: StoragePolicy = { statuses: new Set([200]), maxEntryBytes: 1024 }

function facts (overrides: Partial<ResponseFacts> = {}): ResponseFacts {
  return { method: 'GET', status: 200, headers: { 'content-type': 'application/json' }, bodyBytes: 10, ...overrides }
}

function withHeaders (headers: Headers): ResponseFacts {
  return facts({ headers: { 'content-type': 'text/plain', ...headers } })
}

t.test('unstorableReason: a plain GET 200 is storable', async (t) => {
  t.equal(unstorableReason(facts(), POLICY), undefined)
  t.equal(unstorableReason(facts({ headers: {} }), POLICY), undefined)
  t.equal(unstorableReason(withHeaders({ 'cache-control': 'public, max-age=60' }), POLICY), undefined)
  t.equal(unstorableReason(withHeaders({ 'cache-control': 'no-cache' }), POLICY), undefined)
  t.equal(unstorableReason(withHeaders({ vary: 'Accept-Encoding' }), POLICY), undefined)
  t.equal(unstorableReason(facts({ bodyBytes: 0 }), POLICY), undefined, 'an empty body')
  t.equal(unstorableReason(facts({ bodyBytes: 1024 }), POLICY), undefined, 'exactly maxEntryBytes')
  t.equal(unstorableReason(facts({ status: 404 }), { ...POLICY, statuses: new Set([200, 404]) }), undefined, 'a listed status')
})

t.test('unstorableReason: method', async (t) => {
  for (const method of ['HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS', 'get']) {
    t.equal(unstorableReason(facts({ method }), POLICY), 'method', method)
  }
})

t.test('unstorableReason: status, and 5xx even when listed', async (t) => {
  for (const status of [201, 204, 301, 304, 400, 404, 500]) {
    t.equal(unstorableReason(facts({ status }), POLICY), 'status', `${status} not listed`)
  }
  const listed: StoragePolicy = { ...POLICY, statuses: new Set([200, 500, 502, 503, 504, 599]) }
  for (const status of [500, 502, 503, 504, 599]) {
    t.equal(unstorableReason(facts({ status }), listed), 'status', `${status} listed but still refused`)
  }
})

t.test('unstorableReason: stream and too-large', async (t) => {
  t.equal(unstorableReason(facts({ bodyBytes: undefined }), POLICY), 'stream')
  t.equal(unstorableReason(facts({ bodyBytes: 1025 }), POLICY), 'too-large')
  t.equal(unstorableReason(facts({ bodyBytes: 10 }), { ...POLICY, maxEntryBytes: 9 }), 'too-large')
})

t.test('unstorableReason: set-cookie', async (t) => {
  t.equal(unstorableReason(withHeaders({ 'set-cookie': 'sid=1' }), POLICY), 'set-cookie')
  t.equal(unstorableReason(withHeaders({ 'set-cookie': ['a=1', 'b=2'] }), POLICY), 'set-cookie')
  t.equal(unstorableReason(withHeaders({ 'set-cookie': '' }), POLICY), 'set-cookie', 'even an empty one')
})

t.test('unstorableReason: no-store and private, in any case and form', async (t) => {
  for (const value of ['no-store', 'No-Store', 'public, no-store', 'max-age=60,NO-STORE']) {
    t.equal(unstorableReason(withHeaders({ 'cache-control': value }), POLICY), 'no-store', value)
  }
  t.equal(unstorableReason(withHeaders({ 'cache-control': ['public', 'no-store'] }), POLICY), 'no-store', 'in an array')
  for (const value of ['private', 'Private, max-age=60', 'private="set-cookie"', 'max-age=60 , PRIVATE']) {
    t.equal(unstorableReason(withHeaders({ 'cache-control': value }), POLICY), 'private', value)
  }
})

t.test('unstorableReason: Vary: *', async (t) => {
  t.equal(unstorableReason(withHeaders({ vary: '*' }), POLICY), 'vary-star')
  t.equal(unstorableReason(withHeaders({ vary: 'Accept, *' }), POLICY), 'vary-star')
  t.equal(unstorableReason(withHeaders({ vary: ['Accept', ' * '] }), POLICY), 'vary-star')
})

t.test('unstorableReason: an encoded body, but identity is allowed', async (t) => {
  for (const encoding of ['gzip', 'br', 'deflate', 'GZIP', 'gzip, br', ['gzip']]) {
    t.equal(unstorableReason(withHeaders({ 'content-encoding': encoding }), POLICY), 'encoded', String(encoding))
  }
  for (const encoding of ['identity', 'Identity', 'IDENTITY', ['identity']]) {
    t.equal(unstorableReason(withHeaders({ 'content-encoding': encoding }), POLICY), undefined, String(encoding))
  }
})

t.test('unstorableReason: the first reason wins, in a fixed order', async (t) => {
  const everything: ResponseFacts = {
    method: 'POST',
    status: 500,
    bodyBytes: undefined,
    headers: { 'set-cookie': 'a=1', 'cache-control': 'no-store, private', vary: '*', 'content-encoding': 'gzip' }
  }
  t.equal(unstorableReason(everything, POLICY), 'method')
  t.equal(unstorableReason({ ...everything, method: 'GET' }, POLICY), 'status')
  t.equal(unstorableReason({ ...everything, method: 'GET', status: 200 }, POLICY), 'stream')
  t.equal(unstorableReason({ ...everything, method: 'GET', status: 200, bodyBytes: 2000 }, POLICY), 'too-large')
  const small = { ...everything, method: 'GET', status: 200, bodyBytes: 1 }
  t.equal(unstorableReason(small, POLICY), 'set-cookie')
  const { 'set-cookie': _cookie, ...noCookie } = small.headers
  t.equal(unstorableReason({ ...small, headers: noCookie }, POLICY), 'no-store')
  t.equal(unstorableReason({ ...small, headers: { ...noCookie, 'cache-control': 'private' } }, POLICY), 'private')
  t.equal(unstorableReason({ ...small, headers: { ...noCookie, 'cache-control': undefined } }, POLICY), 'vary-star')
  t.equal(unstorableReason({ ...small, headers: { 'content-encoding': 'gzip' } }, POLICY), 'encoded')
})

// ---------------------------------------------------------------------------
// credentials and the default Cache-Control
// ---------------------------------------------------------------------------

t.test('isCredentialed, and the Cache-Control compiled per route from it', async (t) => {
  t.equal(isCredentialed({}), false)
  t.equal(isCredentialed({ accept: '*/*' }), false)
  t.equal(isCredentialed({ authorization: 'Bearer x' }), true)
  t.equal(isCredentialed({ cookie: 'sid=1' }), true)
  t.equal(isCredentialed({ authorization: '' }), true, 'an empty Authorization still counts')
  t.equal(isCredentialed({ authorization: undefined }), false, 'an absent header (undefined) does not count')

  const settings = { ...DEFAULTS, unkeyedHeaders: [], canEncrypt: false }
  const request = (headers: Record<string, string>): FastifyRequest => ({ headers }) as unknown as FastifyRequest
  const route = (config: RouteCacheOptions): CompiledRoute => compileRoute(config, '/r', settings, new CacheStats())
  const plain = route({ ttl: 60 })
  t.equal(cacheControlFor(request({}), plain), 'public, max-age=60')
  t.equal(cacheControlFor(request({ 'user-agent': 'x' }), plain), 'public, max-age=60')
  t.equal(cacheControlFor(request({ authorization: 'Basic abc' }), plain), 'private, max-age=60')
  t.equal(cacheControlFor(request({ cookie: 'a=b' }), plain), 'private, max-age=60')
  const windows = route({ ttl: 5, staleWhileRevalidate: 30, staleIfError: 600 })
  t.equal(cacheControlFor(request({}), windows), 'public, max-age=5, stale-while-revalidate=30, stale-if-error=600')
  t.equal(cacheControlFor(request({ cookie: 'a=b' }), route({ cacheControl: 'public, max-age=9' })), 'public, max-age=9', "the route's own value replaces both")
  t.equal(cacheControlFor(request({}), route({ cacheControl: false })), undefined)
  t.same(parseCacheControl(cacheControlFor(request({}), plain)).get('max-age'), '60', 'it parses back')
})

// ---------------------------------------------------------------------------
// age
// ---------------------------------------------------------------------------

t.test('ageSeconds: whole seconds, floored, never negative', async (t) => {
  const stored = 1_700_000_000_000
  t.equal(ageSeconds(stored, stored), 0)
  t.equal(ageSeconds(stored, stored + 1), 0)
  t.equal(ageSeconds(stored, stored + 999), 0)
  t.equal(ageSeconds(stored, stored + 1000), 1)
  t.equal(ageSeconds(stored, stored + 1999), 1)
  t.equal(ageSeconds(stored, stored + 61_500), 61)
  t.equal(ageSeconds(stored, stored + 86_400_000), 86_400)
  t.equal(ageSeconds(stored, stored - 1), 0, 'the clock stepped back a little')
  t.equal(ageSeconds(stored, stored - 3_600_000), 0, 'the clock stepped back an hour')
  t.equal(ageSeconds(stored + 0.5, stored + 1000.4), 0, 'fractional milliseconds floor too')
  for (let i = 0; i < 100; i++) {
    const now = stored + Math.floor((Math.random() - 0.5) * 1e7)
    const age = ageSeconds(stored, now)
    t.ok(Number.isInteger(age) && age >= 0, `integer and not negative (${age})`)
  }
})

// ---------------------------------------------------------------------------
// vary
// ---------------------------------------------------------------------------

t.test('varyValues records the request values of the named headers', async (t) => {
  t.same(varyValues([], { accept: 'x' }), {})
  t.same(varyValues(['accept-language', 'accept-encoding'], { 'accept-language': 'fr', host: 'h' }), {
    'accept-language': 'fr', 'accept-encoding': ''
  })
  t.same(varyValues(['x-list'], { 'x-list': ['a', 'b'] }), { 'x-list': 'a, b' })
  t.same(varyValues(['x-num'], { 'x-num': 5 }), { 'x-num': '5' })
})

t.test('varyMatches', async (t) => {
  t.equal(varyMatches(undefined, {}), true, 'nothing stored: any request matches')
  t.equal(varyMatches({}, { accept: 'x' }), true)
  t.equal(varyMatches({ 'accept-language': 'fr' }, { 'accept-language': 'fr' }), true)
  t.equal(varyMatches({ 'accept-language': 'fr' }, { 'accept-language': 'en' }), false)
  t.equal(varyMatches({ 'accept-language': 'fr' }, {}), false, 'a missing header differs from a value')
  t.equal(varyMatches({ 'accept-language': '' }, {}), true, 'stored absent, requested absent')
  t.equal(varyMatches({ 'accept-language': '' }, { 'accept-language': 'fr' }), false, 'stored absent, requested present')
  t.equal(varyMatches({ a: '1', b: '2' }, { a: '1', b: '2', c: '3' }), true, 'other headers do not matter')
  t.equal(varyMatches({ a: '1', b: '2' }, { a: '1', b: '3' }), false, 'every named header must match')
  t.equal(varyMatches({ 'x-list': 'a, b' }, { 'x-list': ['a', 'b'] }), true, 'arrays compare as their joined value')
  t.equal(varyMatches({ a: 'gzip' }, { a: 'GZIP' }), false, 'values compare exactly')
  const request: Headers = { 'accept-encoding': 'gzip', 'accept-language': 'de' }
  t.equal(varyMatches(varyValues(['accept-encoding', 'accept-language'], request), request), true, 'a request matches what it stored')
})

t.test('UNSTORED_HEADERS lists the hop-by-hop and per-exchange headers', async (t) => {
  for (const name of ['connection', 'keep-alive', 'transfer-encoding', 'te', 'trailer', 'upgrade', 'content-length', 'date', 'age', 'x-cache', 'set-cookie']) {
    t.ok(UNSTORED_HEADERS.has(name), name)
  }
  for (const name of ['content-type', 'etag', 'cache-control', 'vary', 'content-language', 'last-modified']) {
    t.notOk(UNSTORED_HEADERS.has(name), `${name} is stored`)
  }
})

// ---------------------------------------------------------------------------
// conditional requests
// ---------------------------------------------------------------------------

t.test('etagFor: a stable, quoted, strong validator of the body bytes', async (t) => {
  const body = Buffer.from('{"a":1}')
  const etag = etagFor(body)
  t.equal(etagFor(Buffer.from('{"a":1}')), etag, 'stable for the same bytes')
  t.not(etagFor(Buffer.from('{"a":2}')), etag, 'differs when the body differs')
  t.not(etagFor(Buffer.from('{"a":1} ')), etag, 'one more byte differs')
  t.match(etag, /^"[A-Za-z0-9_-]{16}"$/, 'a quoted opaque tag with no quote inside: 96 bits in 16 characters')
  t.notOk(etag.startsWith('W/'), 'strong')
  t.match(etagFor(Buffer.alloc(0)), /^"[A-Za-z0-9_-]+"$/, 'an empty body has one too')
  t.not(etagFor(Buffer.alloc(0)), etagFor(Buffer.alloc(1)))
  t.not(etagFor(Buffer.from([0xff])), etagFor(Buffer.from([0xfe])), 'bytes, not their UTF-8 decoding')
})

t.test('ifNoneMatchMatches: exact and weak comparison', async (t) => {
  const etag = '"abc"'
  t.equal(ifNoneMatchMatches('"abc"', etag), true, 'exact')
  t.equal(ifNoneMatchMatches('W/"abc"', etag), true, 'a weak tag in the request')
  t.equal(ifNoneMatchMatches('"abc"', 'W/"abc"'), true, 'a weak stored tag')
  t.equal(ifNoneMatchMatches('W/"abc"', 'W/"abc"'), true, 'weak on both sides')
  t.equal(ifNoneMatchMatches('"abd"', etag), false)
  t.equal(ifNoneMatchMatches('"ABC"', etag), false, 'case-sensitive')
  t.equal(ifNoneMatchMatches('"abc "', etag), false, 'a space inside the quotes counts')
  t.equal(ifNoneMatchMatches('"a,b"', '"a,b"'), true, 'a comma inside a tag is part of it')
  t.equal(ifNoneMatchMatches('"a,b"', '"a"'), false)
})

t.test('ifNoneMatchMatches: lists', async (t) => {
  const etag = '"abc"'
  t.equal(ifNoneMatchMatches('"x", "abc"', etag), true)
  t.equal(ifNoneMatchMatches('"x","abc","y"', etag), true)
  t.equal(ifNoneMatchMatches('  "x" ,   W/"abc"  ,"y"  ', etag), true, 'spaces and a weak member')
  t.equal(ifNoneMatchMatches('"x", "y", "z"', etag), false)
  t.equal(ifNoneMatchMatches('"a,b", "abc"', etag), true, 'a comma inside an earlier tag')
  t.equal(ifNoneMatchMatches('"a,"abc"', etag), false, 'a broken list does not match by accident')
})

t.test('ifNoneMatchMatches: *', async (t) => {
  t.equal(ifNoneMatchMatches('*', '"abc"'), true)
  t.equal(ifNoneMatchMatches('  *  ', '"abc"'), true)
  t.equal(ifNoneMatchMatches('*', 'W/"abc"'), true)
})

t.test('ifNoneMatchMatches: empty, missing and malformed headers never match', async (t) => {
  const etag = '"abc"'
  for (const header of [undefined, '', ' ', ',', 'abc', '"abc', 'abc"', 'W/', 'W/abc', "'abc'", '**', '""']) {
    t.equal(ifNoneMatchMatches(header, etag), false, JSON.stringify(header))
  }
  t.equal(ifNoneMatchMatches('""', '""'), true, 'an empty opaque tag equals itself')
})

t.test('ifNoneMatchMatches agrees with etagFor', async (t) => {
  const etag = etagFor(Buffer.from('hello'))
  t.equal(ifNoneMatchMatches(etag, etag), true)
  t.equal(ifNoneMatchMatches(`W/${etag}`, etag), true)
  t.equal(ifNoneMatchMatches(`"other", ${etag}`, etag), true)
  t.equal(ifNoneMatchMatches(etagFor(Buffer.from('hello!')), etag), false)
})
