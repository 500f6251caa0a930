// The pure RFC 9111 decisions of shared mode, case by case, from the RFC's text. Section numbers are RFC 9111's
// unless another RFC is named.
import t from 'tap'
import type { Headers } from '../lib/http/policy'
import {
  type SharedFreshness,
  DEFAULT_REQUEST_DIRECTIVES,
  HEURISTIC_CAP,
  REQUEST_DIRECTIVES,
  deltaSeconds,
  designates,
  freshnessLifetime,
  initialAgeMs,
  mayServeOnError,
  notModifiedSince,
  parseHttpDate,
  requestDirectives,
  responseDirectives,
  reuseOf,
  sharedFreshness,
  sharedUnstorableReason,
  updatedHeaders,
  validatorsOf,
  withheldFields
} from '../lib/http/shared-policy'

const NOW = Date.parse('Sun, 29 Nov 2026 12:00:00 GMT')
const http = (ms: number): string => new Date(ms).toUTCString()

function facts (headers: Headers, status = 200, targeted: readonly string[] = []) {
  const { directives, targeted: isTargeted } = responseDirectives(headers, targeted)
  return { status, headers, directives, targeted: isTargeted }
}
const storable = (headers: Headers, status = 200, requestHeaders: Headers = {}): string | undefined =>
  sharedUnstorableReason({ ...facts(headers, status), requestHeaders })
const lifetime = (headers: Headers, status = 200, targeted: readonly string[] = []): number =>
  freshnessLifetime(facts(headers, status, targeted), NOW)

t.test('1.2.2 delta-seconds: digits only, capped at 2^31', async (t) => {
  t.equal(deltaSeconds('60'), 60)
  t.equal(deltaSeconds('0'), 0)
  t.equal(deltaSeconds('99999999999'), 2147483648)
  for (const bad of ['-1', '1.5', 'abc', '', ' 5', true, undefined] as const) t.equal(deltaSeconds(bad), undefined, `${String(bad)} is invalid`)
})

t.test('HTTP-date: the IMF-fixdate and obsolete formats; junk is undefined', async (t) => {
  t.equal(parseHttpDate('Sun, 29 Nov 2026 12:00:00 GMT'), NOW)
  t.equal(parseHttpDate('Sunday, 29-Nov-26 12:00:00 GMT'), NOW, 'RFC 850')
  t.equal(parseHttpDate('Sun Nov 29 12:00:00 2026'), NOW, 'asctime, which is in GMT')
  t.equal(parseHttpDate('Sun Nov  1 12:00:00 2026'), Date.parse('Sun, 01 Nov 2026 12:00:00 GMT'), 'asctime pads the day with a space')
  t.equal(parseHttpDate('  Sun, 29 Nov 2026 12:00:00 GMT '), NOW, 'surrounding whitespace')
  t.equal(parseHttpDate('Sunday, 29-Nov-99 12:00:00 GMT'), Date.parse('Sun, 29 Nov 1999 12:00:00 GMT'), 'RFC 850: a year more than 50 years ahead is in the past')
  const invalid = [
    '0', '-1', 'soon', '', undefined, ['a', 'b'], '2026-11-29T12:00:00Z', 'Sun, 29 Nov 2026 12:00:00 UTC',
    'Sun, 29 Nov 2026 12:00:00 CET', 'Sun 29 Nov 2026 12:00:00 GMT', 'Sun, 29 nov 2026 12:00:00 GMT',
    'Sun, 31 Feb 2026 12:00:00 GMT', 'Sun, 29 Nov 2026 25:00:00 GMT', 'Sun, 29 Nov 26 12:00:00 GMT', '1764417600'
  ] satisfies Headers[string][]
  for (const bad of invalid) t.equal(parseHttpDate(bad), undefined, `${String(bad)}`)
})

t.test('3 storing: what a shared cache may store', async (t) => {
  t.equal(storable({ 'cache-control': 'max-age=60' }), undefined)
  t.equal(storable({}), undefined, '200 is heuristically cacheable (3, RFC 9110 15.1)')
  t.equal(storable({}, 302), 'no-freshness', 'a 302 without explicit freshness is not')
  t.equal(storable({ 'cache-control': 'max-age=60' }, 302), undefined, 'a 302 with max-age is')
  t.equal(storable({ expires: http(NOW + 60000) }, 307), undefined, 'Expires makes any final status storable')
  t.equal(storable({ expires: 'garbage' }, 307), undefined, 'even an invalid Expires (it means stale)')
  t.equal(storable({ 'cache-control': 'public' }, 302), undefined, 'public makes it storable')
  t.equal(storable({ 'cache-control': 's-maxage=60' }, 500), undefined, 'explicit freshness on a 500 is the origin\'s word')
  t.equal(storable({}, 500), 'no-freshness')
  for (const status of [200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501]) t.equal(storable({}, status), undefined, `${status} heuristically`)
  for (const status of [201, 202, 302, 303, 307, 400, 403, 500, 502, 503]) t.equal(storable({}, status), 'no-freshness', `${status} not heuristically`)
  t.equal(storable({ 'cache-control': 'max-age=60' }, 206), 'status', 'partial content is not understood')
  t.equal(storable({ 'cache-control': 'max-age=60' }, 304), 'status')
  t.equal(storable({ 'cache-control': 'max-age=60' }, 101), 'status', 'not final')
})

t.test('5.2.2.5 no-store, 5.2.2.7 private, 5.2.2.3 must-understand', async (t) => {
  t.equal(storable({ 'cache-control': 'no-store, max-age=60' }), 'no-store')
  t.equal(storable({ 'cache-control': 'private, max-age=60' }), 'private')
  t.equal(storable({ 'cache-control': 'private="x-user", max-age=60' }), undefined, 'qualified private is stored without the fields')
  t.equal(storable({ 'cache-control': 'must-understand, no-store, max-age=60' }), undefined, 'must-understand overrides no-store for an understood status')
  t.equal(storable({ 'cache-control': 'must-understand, no-store, max-age=60' }, 299), 'must-understand')
  t.equal(storable({ 'cache-control': 'no-cache' }), undefined, 'no-cache is stored, to be revalidated')
})

t.test('3.5 a request with Authorization: only with public, s-maxage or must-revalidate', async (t) => {
  const auth = { authorization: 'Bearer x' }
  t.equal(storable({ 'cache-control': 'max-age=60' }, 200, auth), 'authorization')
  t.equal(storable({}, 200, auth), 'authorization')
  t.equal(storable({ 'cache-control': 'public, max-age=60' }, 200, auth), undefined)
  t.equal(storable({ 'cache-control': 's-maxage=60' }, 200, auth), undefined)
  t.equal(storable({ 'cache-control': 'must-revalidate, max-age=60' }, 200, auth), undefined)
})

t.test('4.1 Vary: * is never matched, so never stored', async (t) => {
  t.equal(storable({ 'cache-control': 'max-age=60', vary: '*' }), 'vary-star')
  t.equal(storable({ 'cache-control': 'max-age=60', vary: 'accept, *' }), 'vary-star')
  t.equal(storable({ 'cache-control': 'max-age=60', vary: 'accept' }), undefined)
})

t.test('5.2.2.4 / 5.2.2.7 qualified no-cache and private name the fields withheld', async (t) => {
  t.same(withheldFields(facts({ 'cache-control': 'private="X-User, x-session", no-cache="set-cookie2", max-age=5' }).directives), ['x-user', 'x-session', 'set-cookie2'])
  t.same(withheldFields(facts({ 'cache-control': 'private, no-cache' }).directives), [])
})

t.test('4.2.1 freshness lifetime: s-maxage, then max-age, then Expires - Date', async (t) => {
  t.equal(lifetime({ 'cache-control': 'max-age=60, s-maxage=120' }), 120, 's-maxage wins in a shared cache')
  t.equal(lifetime({ 'cache-control': 'max-age=60', expires: http(NOW + 3600_000) }), 60, 'max-age beats Expires')
  t.equal(lifetime({ expires: http(NOW + 30_000), date: http(NOW) }), 30)
  t.equal(lifetime({ expires: http(NOW + 30_000), date: http(NOW - 10_000) }), 40, 'counted from Date, not from now')
  t.equal(lifetime({ expires: http(NOW + 30_000) }), 30, 'from the response time without Date')
  t.equal(lifetime({ expires: http(NOW - 30_000), date: http(NOW) }), 0, 'in the past')
  t.equal(lifetime({ expires: '0' }), 0, 'an invalid Expires means already expired (5.3)')
  t.equal(lifetime({ expires: new Date(NOW + 60_000).toISOString() }), 0, 'so does a date in another format')
  t.equal(lifetime({ 'cache-control': 'max-age=abc' }), 0, 'an invalid max-age means stale (4.2.1)')
  t.equal(lifetime({ 'cache-control': 'max-age=60, max-age=10' }), 60, 'the first of duplicated directives')
  t.equal(lifetime({ 'cache-control': 'max-age="30"' }), 30, 'a quoted value is accepted')
})

t.test('4.2.2 heuristic freshness: a tenth of Date - Last-Modified, capped, only where allowed', async (t) => {
  const tenDaysAgo = http(NOW - 10 * 24 * 3600_000)
  const hundredSeconds = http(NOW - 100_000)
  t.equal(lifetime({ 'last-modified': hundredSeconds, date: http(NOW) }), 10)
  t.equal(lifetime({ 'last-modified': tenDaysAgo, date: http(NOW) }), HEURISTIC_CAP, 'capped at a day')
  t.equal(lifetime({ 'last-modified': hundredSeconds }, 404), 10, '404 is heuristically cacheable')
  t.equal(lifetime({ 'last-modified': hundredSeconds }, 302), 0, '302 is not')
  t.equal(lifetime({ 'last-modified': hundredSeconds, 'cache-control': 'public' }, 302), 10, 'unless public')
  t.equal(lifetime({}), 0, 'nothing to go on')
  t.equal(lifetime({ 'last-modified': http(NOW + 100_000) }), 0, 'a Last-Modified in the future gives nothing')
  t.equal(lifetime({ 'last-modified': hundredSeconds, 'cache-control': 'max-age=3' }), 3, 'never a heuristic with explicit freshness')
})

t.test('4.2.3 initial age: max(apparent age, Age + response delay)', async (t) => {
  t.equal(initialAgeMs({}, NOW, NOW), 0)
  t.equal(initialAgeMs({ age: '30' }, NOW - 200, NOW), 30_200, 'Age plus the time the request took')
  t.equal(initialAgeMs({ date: http(NOW - 50_000) }, NOW, NOW), 50_000, 'apparent age from Date')
  t.equal(initialAgeMs({ date: http(NOW - 50_000), age: '100' }, NOW, NOW), 100_000, 'the larger one')
  t.equal(initialAgeMs({ date: http(NOW + 50_000) }, NOW, NOW), 0, 'a Date in the future is no negative age')
  t.equal(initialAgeMs({ age: 'abc' }, NOW, NOW), 0, 'an invalid Age is ignored')
  t.equal(initialAgeMs({ age: ['20', '30'] }, NOW, NOW), 20_000, 'the first Age')
})

t.test('sharedFreshness: storedAt is when the age was 0; the revalidation rules and the RFC 5861 windows', async (t) => {
  const at = (cacheControl: string, extra: Headers = {}) => sharedFreshness(facts({ 'cache-control': cacheControl, ...extra }), NOW, NOW)
  t.same(at('max-age=60', { age: '10' }), { storedAt: NOW - 10_000, ttl: 60 })
  t.same(at('no-cache, max-age=60'), { storedAt: NOW, ttl: 60, revalidate: 'always' }, '5.2.2.4')
  t.same(at('no-cache="x-a", max-age=60'), { storedAt: NOW, ttl: 60 }, 'a qualified no-cache withholds fields, not the response')
  t.same(at('must-revalidate, max-age=60, stale-while-revalidate=30'), { storedAt: NOW, ttl: 60, revalidate: 'once-stale' }, '5.2.2.2 voids the stale windows')
  t.same(at('proxy-revalidate, max-age=60'), { storedAt: NOW, ttl: 60, revalidate: 'once-stale' }, '5.2.2.8')
  t.same(at('s-maxage=60'), { storedAt: NOW, ttl: 60, revalidate: 'once-stale' }, '5.2.2.10 s-maxage implies proxy-revalidate')
  t.same(at('max-age=60, stale-while-revalidate=30, stale-if-error=300'), { storedAt: NOW, ttl: 60, staleWhileRevalidate: 30, staleIfError: 300 })
  t.same(at('max-age=60, stale-while-revalidate=x'), { storedAt: NOW, ttl: 60 }, 'an invalid window is no window')
})

t.test('RFC 9213 targeted fields: the first present replaces Cache-Control and Expires', async (t) => {
  const headers = { 'cache-control': 'no-store', 'cdn-cache-control': 'max-age=600', expires: http(NOW - 1000) }
  t.equal(storable(headers), 'no-store', 'not targeted: Cache-Control rules')
  const targeted = facts(headers, 200, ['cdn-cache-control'])
  t.equal(targeted.targeted, true)
  t.equal(sharedUnstorableReason({ ...targeted, requestHeaders: {} }), undefined)
  t.equal(lifetime(headers, 200, ['cdn-cache-control']), 600)
  t.equal(lifetime({ 'cdn-cache-control': 'public', expires: http(NOW + 60_000) }, 200, ['cdn-cache-control']), 0, 'Expires is ignored')
  t.equal(lifetime({ 'cache-control': 'max-age=5', 'cdn-cache-control': '' }, 200, ['cdn-cache-control']), 5, 'an empty targeted field falls back')
  t.equal(lifetime({ 'cache-control': 'max-age=5', 'x-edge': 'max-age=7', 'cdn-cache-control': 'max-age=9' }, 200, ['x-edge', 'cdn-cache-control']), 7, 'the list order decides')
})

t.test('5.2.1 request directives: only those allowed are read', async (t) => {
  const all = new Set(REQUEST_DIRECTIVES)
  const defaults = new Set(DEFAULT_REQUEST_DIRECTIVES)
  const header = { 'cache-control': 'max-age=5, min-fresh=10, max-stale=20, no-cache, no-store, only-if-cached' }
  t.same(requestDirectives(header, all), { maxAge: 5, minFresh: 10, maxStale: 20, noCache: true, noStore: true, onlyIfCached: true })
  t.same(requestDirectives(header, defaults), { maxStale: 20, onlyIfCached: true }, 'by default only what cannot add origin load')
  t.same(requestDirectives(header, new Set()), {})
  t.same(requestDirectives({ 'cache-control': 'max-stale' }, defaults), { maxStale: Infinity }, 'max-stale without a value accepts any staleness')
  t.same(requestDirectives({ 'cache-control': 'max-age=x' }, all), {}, 'an invalid argument ignores the directive')
  t.same(requestDirectives({ pragma: 'no-cache' }, all), { noCache: true }, '5.4 Pragma: no-cache without Cache-Control')
  t.same(requestDirectives({ pragma: 'no-cache', 'cache-control': 'max-stale=1' }, all), { maxStale: 1 }, 'Cache-Control wins over Pragma')
})

t.test('4.2 / 4.2.4 / 5.2.1 reuse decisions', async (t) => {
  const entry = (extra: Partial<SharedFreshness> = {}): SharedFreshness => ({ storedAt: NOW - 30_000, ttl: 60, ...extra })
  t.same(reuseOf(entry(), NOW, {}), { kind: 'fresh' }, 'age 30 of 60')
  t.same(reuseOf(entry({ ttl: 30 }), NOW, {}), { kind: 'validate', because: 'stale' }, 'age equal to the lifetime is stale')
  t.same(reuseOf(entry(), NOW, {}, true), { kind: 'validate', because: 'stale' }, 'soft-invalidated')
  t.same(reuseOf(entry({ revalidate: 'always' }), NOW, {}), { kind: 'validate', because: 'stale' }, 'no-cache: validated even fresh')
  t.same(reuseOf(entry(), NOW, { noCache: true }), { kind: 'validate', because: 'request' }, '5.2.1.4')
  t.same(reuseOf(entry(), NOW, { maxAge: 10 }), { kind: 'validate', because: 'request' }, '5.2.1.1 older than the client accepts')
  t.same(reuseOf(entry(), NOW, { maxAge: 30 }), { kind: 'fresh' })
  t.same(reuseOf(entry(), NOW, { minFresh: 40 }), { kind: 'validate', because: 'request' }, '5.2.1.3 not fresh enough for the client')
  t.same(reuseOf(entry(), NOW, { minFresh: 30 }), { kind: 'fresh' })
  const stale = entry({ ttl: 10 })
  t.same(reuseOf(stale, NOW, { maxStale: 20 }), { kind: 'stale', because: 'max-stale' }, '5.2.1.2 stale by 20 s, accepted')
  t.same(reuseOf(stale, NOW, { maxStale: 19 }), { kind: 'validate', because: 'stale' })
  t.same(reuseOf(stale, NOW, { maxStale: Infinity }), { kind: 'stale', because: 'max-stale' })
  for (const revalidate of ['once-stale', 'always'] as const) {
    t.same(reuseOf({ ...stale, revalidate }, NOW, { maxStale: Infinity }), { kind: 'validate', because: 'stale' }, `max-stale never overrides ${revalidate}`)
    t.same(reuseOf({ ...stale, revalidate, staleWhileRevalidate: 60 }, NOW, {}), { kind: 'validate', because: 'stale' }, `nor does stale-while-revalidate (${revalidate})`)
  }
  t.same(reuseOf({ ...stale, staleWhileRevalidate: 30 }, NOW, {}), { kind: 'stale', because: 'stale-while-revalidate' }, 'RFC 5861 3')
  t.same(reuseOf({ ...stale, staleWhileRevalidate: 20 }, NOW, {}), { kind: 'validate', because: 'stale' }, 'past the window')
  t.same(reuseOf({ ...stale, staleWhileRevalidate: 30 }, NOW, { minFresh: 1 }), { kind: 'validate', because: 'stale' }, 'a client that wants freshness gets no stale')
})

t.test('RFC 5861 4 stale-if-error window', async (t) => {
  const entry: SharedFreshness = { storedAt: NOW - 30_000, ttl: 10, staleIfError: 30 }
  t.equal(mayServeOnError(entry, NOW), true)
  t.equal(mayServeOnError(entry, NOW + 10_000), false, 'past it')
  t.equal(mayServeOnError({ ...entry, staleIfError: undefined }, NOW), false)
  t.equal(mayServeOnError({ ...entry, revalidate: 'once-stale' }, NOW), false, 'must-revalidate forbids it (5.2.2.2)')
})

t.test('4.3.1 validators, 4.3.4 which stored response a 304 designates, 3.2 updating headers', async (t) => {
  const lastModified = http(NOW - 1000)
  t.same(validatorsOf('"a"', { 'last-modified': lastModified }), { 'if-none-match': '"a"', 'if-modified-since': lastModified })
  t.same(validatorsOf(undefined, { 'last-modified': lastModified }), { 'if-modified-since': lastModified })
  t.same(validatorsOf(undefined, { 'last-modified': 'yesterday' }), undefined, 'an invalid date is no validator')
  t.equal(validatorsOf(undefined, {}), undefined)
  t.equal(designates(undefined, '"a"'), true, 'a 304 without ETag')
  t.equal(designates('"a"', '"a"'), true)
  t.equal(designates('W/"a"', '"a"'), true)
  t.equal(designates('"b"', '"a"'), false, 'another representation')
  t.equal(designates('"a"', undefined), false)
  const updated = updatedHeaders(
    { 'content-type': 'text/plain', 'cache-control': 'max-age=1', 'x-kept': 'yes', date: http(NOW - 5000) },
    { 'cache-control': 'max-age=60', date: http(NOW), 'content-length': '0', 'content-type': 'text/html', 'x-new': 'n', age: '3', etag: '"a"' }
  )
  t.same(updated, { 'content-type': 'text/plain', 'cache-control': 'max-age=60', 'x-kept': 'yes', date: http(NOW), 'x-new': 'n' })
})

t.test('RFC 9110 13.1.3 If-Modified-Since, evaluated by the cache', async (t) => {
  t.equal(notModifiedSince(http(NOW), http(NOW - 1000)), true)
  t.equal(notModifiedSince(http(NOW), http(NOW)), true)
  t.equal(notModifiedSince(http(NOW - 2000), http(NOW - 1000)), false)
  t.equal(notModifiedSince('junk', http(NOW)), false)
  t.equal(notModifiedSince(http(NOW), undefined), false)
})
