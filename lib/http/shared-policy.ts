// Pure RFC 9111 decisions of a shared cache, for routes whose responses carry their own caching headers (shared
// mode). No I/O: every function is a function of headers and times, tested exhaustively without a server.

import { type Headers, parseCacheControl, varyNames } from './policy'

export type Directives = Map<string, string | true>

/** Status codes a cache may give a heuristic freshness lifetime (RFC 9110 15.1). */
export const HEURISTICALLY_CACHEABLE: ReadonlySet<number> = new Set([200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501])
/** Heuristic freshness: this fraction of the time since Last-Modified (RFC 9111 4.2.2), at most HEURISTIC_CAP seconds. */
export const HEURISTIC_FRACTION = 0.1
export const HEURISTIC_CAP = 24 * 3600
/** delta-seconds past this are taken as this (RFC 9111 1.2.2). */
const DELTA_SECONDS_MAX = 2147483648

/** The request directives a client may send (RFC 9111 5.2.1). */
export type RequestDirectiveName = 'max-age' | 'min-fresh' | 'max-stale' | 'no-cache' | 'no-store' | 'only-if-cached'
export const REQUEST_DIRECTIVES: readonly RequestDirectiveName[] = ['max-age', 'min-fresh', 'max-stale', 'no-cache', 'no-store', 'only-if-cached']
/** The default: only the directives that cannot make the cache ask the origin more often. */
export const DEFAULT_REQUEST_DIRECTIVES: readonly RequestDirectiveName[] = ['max-stale', 'only-if-cached']

/**
 * The directives that govern the plugin's use of a response: those of the first targeted field present with a
 * non-empty value (RFC 9213 2.2, e.g. CDN-Cache-Control), else Cache-Control. A targeted field also means that
 * Expires is ignored, which `targeted` reports.
 */
export function responseDirectives (headers: Headers, targetedFields: readonly string[]): { directives: Directives, targeted: boolean } {
  for (const field of targetedFields) {
    const directives = parseCacheControl(headers[field])
    if (directives.size > 0) return { directives, targeted: true }
  }
  return { directives: parseCacheControl(headers['cache-control']), targeted: false }
}

/** A delta-seconds argument (RFC 9111 1.2.2): digits only, capped; undefined when absent or invalid. */
export function deltaSeconds (argument: string | true | undefined): number | undefined {
  if (typeof argument !== 'string' || !/^\d+$/.test(argument)) return undefined
  return Math.min(Number(argument), DELTA_SECONDS_MAX)
}

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec']
const IMF_FIXDATE = /^(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), (\d{2}) ([A-Z][a-z]{2}) (\d{4}) (\d{2}):(\d{2}):(\d{2}) GMT$/
const RFC_850 = /^(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday), (\d{2})-([A-Z][a-z]{2})-(\d{2}) (\d{2}):(\d{2}):(\d{2}) GMT$/
const ASCTIME = /^(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) ([A-Z][a-z]{2}) ([ \d]\d) (\d{2}):(\d{2}):(\d{2}) (\d{4})$/

/**
 * An HTTP-date (RFC 9110 5.6.7) in milliseconds, or undefined when absent or not one of its three formats: the
 * IMF-fixdate, the obsolete RFC 850 (a two-digit year more than 50 years ahead is in the past) and asctime (GMT).
 */
export function parseHttpDate (value: Headers[string]): number | undefined {
  if (value === undefined || Array.isArray(value)) return undefined
  const fields = dateFields(String(value).trim())
  if (fields === undefined) return undefined
  const { year, monthName, day, hours, minutes, seconds } = fields
  const month = MONTHS.indexOf(monthName)
  if (month === -1 || day < 1 || hours > 23 || minutes > 59 || seconds > 60) return undefined
  const time = Date.UTC(year, month, day, hours, minutes, Math.min(seconds, 59))
  // Date.UTC rolls 31 Feb over into March: such a date is not one.
  return new Date(time).getUTCDate() === day ? time : undefined
}

interface DateFields { year: number, monthName: string, day: number, hours: number, minutes: number, seconds: number }

function dateFields (text: string): DateFields | undefined {
  const fixdate = IMF_FIXDATE.exec(text)
  if (fixdate !== null) return fieldsOf(Number(fixdate[3]), fixdate[2], fixdate[1], fixdate.slice(4, 7))
  const rfc850 = RFC_850.exec(text)
  if (rfc850 !== null) {
    const now = new Date().getUTCFullYear()
    let year = Math.floor(now / 100) * 100 + Number(rfc850[3])
    if (year > now + 50) year -= 100
    return fieldsOf(year, rfc850[2], rfc850[1], rfc850.slice(4, 7))
  }
  const asctime = ASCTIME.exec(text)
  if (asctime !== null) return fieldsOf(Number(asctime[6]), asctime[1], asctime[2], asctime.slice(3, 6))
  return undefined
}

function fieldsOf (year: number, monthName: string, day: string, time: string[]): DateFields {
  const [hours, minutes, seconds] = time.map(Number)
  return { year, monthName, day: Number(day.trim()), hours, minutes, seconds }
}

export type SharedUnstorableReason =
  | 'status' | 'no-store' | 'private' | 'authorization' | 'no-freshness' | 'must-understand' | 'vary-star'

export interface SharedResponseFacts {
  status: number
  headers: Headers
  requestHeaders: Headers
  directives: Directives
  /** The directives came from a targeted field: Expires does not count. */
  targeted: boolean
}

/** Status codes whose semantics the plugin understands as a cache (RFC 9111 5.2.2.3, must-understand). */
const UNDERSTOOD: ReadonlySet<number> = new Set([200, 203, 204, 300, 301, 302, 303, 307, 308, 404, 405, 410, 414, 501])

/**
 * Why a shared cache must not store the response, or undefined when it may (RFC 9111 3): the status is final and
 * understood (no 206, no 304), no `no-store` (unless `must-understand` with an understood status), no unqualified
 * `private`, a request with Authorization only with `public`, `s-maxage` or `must-revalidate` (3.5), and something
 * that gives it a freshness lifetime: `public`, Expires, `max-age`, `s-maxage`, or a heuristically cacheable status.
 * `Vary: *` can never be matched (4.1), so it is not stored either.
 */
export function sharedUnstorableReason (facts: SharedResponseFacts): SharedUnstorableReason | undefined {
  const { status, directives } = facts
  if (status < 200 || status === 206 || status === 304) return 'status'
  if (directives.has('must-understand')) {
    if (!UNDERSTOOD.has(status)) return 'must-understand'
  } else if (directives.has('no-store')) {
    return 'no-store'
  }
  if (directives.get('private') === true) return 'private'
  if (facts.requestHeaders.authorization !== undefined &&
    !directives.has('public') && !directives.has('s-maxage') && !directives.has('must-revalidate')) return 'authorization'
  const explicit = directives.has('public') || directives.has('max-age') || directives.has('s-maxage') ||
    (!facts.targeted && facts.headers.expires !== undefined)
  if (!explicit && !HEURISTICALLY_CACHEABLE.has(status)) return 'no-freshness'
  if (varyNames(facts.headers.vary).includes('*')) return 'vary-star'
  return undefined
}

/**
 * Header fields named by a qualified `private="..."` or `no-cache="..."` (RFC 9111 5.2.2.4, 5.2.2.7): the response
 * is stored without them, so that they are never reused.
 */
export function withheldFields (directives: Directives): string[] {
  const names: string[] = []
  for (const name of ['private', 'no-cache']) {
    const argument = directives.get(name)
    if (typeof argument === 'string') names.push(...varyNames(argument))
  }
  return names
}

/**
 * The freshness lifetime in seconds (RFC 9111 4.2.1): s-maxage (a shared cache), else max-age, else Expires minus
 * Date (the response time when Date is missing or invalid; an invalid Expires means already expired), else a
 * heuristic (4.2.2) for responses that allow one: a tenth of the time since Last-Modified, capped. A directive with
 * an invalid argument makes the response stale (4.2.1).
 */
export function freshnessLifetime (facts: { status: number, headers: Headers, directives: Directives, targeted: boolean }, responseTime: number): number {
  const { headers, directives } = facts
  for (const name of ['s-maxage', 'max-age']) {
    if (directives.has(name)) return deltaSeconds(directives.get(name)) ?? 0
  }
  if (!facts.targeted && headers.expires !== undefined) {
    const expires = parseHttpDate(headers.expires)
    if (expires === undefined) return 0
    const date = parseHttpDate(headers.date) ?? responseTime
    return Math.max(0, Math.floor((expires - date) / 1000))
  }
  if (!HEURISTICALLY_CACHEABLE.has(facts.status) && !directives.has('public')) return 0
  const lastModified = parseHttpDate(headers['last-modified'])
  if (lastModified === undefined) return 0
  const date = parseHttpDate(headers.date) ?? responseTime
  return Math.min(HEURISTIC_CAP, Math.max(0, Math.floor((date - lastModified) / 1000 * HEURISTIC_FRACTION)))
}

/**
 * The age of the response when it arrived, in milliseconds (RFC 9111 4.2.3): the larger of the apparent age
 * (response time minus Date) and the Age the upstream caches reported plus the time the request took.
 */
export function initialAgeMs (headers: Headers, requestTime: number, responseTime: number): number {
  const date = parseHttpDate(headers.date)
  const apparent = date === undefined ? 0 : Math.max(0, responseTime - date)
  const ageText = Array.isArray(headers.age) ? headers.age[0] : headers.age
  const age = ageText === undefined ? undefined : deltaSeconds(String(ageText).trim())
  const corrected = (age ?? 0) * 1000 + Math.max(0, responseTime - requestTime)
  return Math.max(apparent, corrected)
}

/** When a stored response must be validated with the origin: always (`no-cache`), or once stale. */
export type Revalidate = 'always' | 'once-stale'

/** What a shared entry records about its own freshness, besides its status, headers and body. */
export interface SharedFreshness {
  /** Milliseconds since the epoch when the response's age was 0: now minus its current age. */
  storedAt: number
  /** The freshness lifetime in seconds. */
  ttl: number
  revalidate?: Revalidate
  /** Seconds a stale response may be served while it is revalidated (RFC 5861 3). */
  staleWhileRevalidate?: number
  /** Seconds a stale response may be served when the origin fails (RFC 5861 4). */
  staleIfError?: number
}

/**
 * The freshness facts of a response received at responseTime for a request sent at requestTime. `no-cache`
 * (unqualified) means every reuse is validated (5.2.2.4); `must-revalidate`, `proxy-revalidate` and `s-maxage` mean
 * a stale response is never reused unvalidated by a shared cache (5.2.2.2, 5.2.2.8, 5.2.2.10), which also voids
 * the RFC 5861 windows.
 */
export function sharedFreshness (
  facts: { status: number, headers: Headers, directives: Directives, targeted: boolean }, requestTime: number, responseTime: number
): SharedFreshness {
  const { directives } = facts
  const freshness: SharedFreshness = {
    storedAt: responseTime - initialAgeMs(facts.headers, requestTime, responseTime),
    ttl: freshnessLifetime(facts, responseTime)
  }
  if (directives.get('no-cache') === true) {
    freshness.revalidate = 'always'
  } else if (directives.has('must-revalidate') || directives.has('proxy-revalidate') || directives.has('s-maxage')) {
    freshness.revalidate = 'once-stale'
  } else {
    const whileRevalidate = deltaSeconds(directives.get('stale-while-revalidate'))
    const ifError = deltaSeconds(directives.get('stale-if-error'))
    if (whileRevalidate !== undefined && whileRevalidate > 0) freshness.staleWhileRevalidate = whileRevalidate
    if (ifError !== undefined && ifError > 0) freshness.staleIfError = ifError
  }
  return freshness
}

/** The request directives the route honours, as read from the request (RFC 9111 5.2.1); others are ignored. */
export interface RequestDirectives {
  maxAge?: number
  minFresh?: number
  /** Seconds of staleness the client accepts; Infinity for `max-stale` without a value. */
  maxStale?: number
  noCache?: boolean
  noStore?: boolean
  onlyIfCached?: boolean
}

/**
 * Reads the honoured request directives. `Pragma: no-cache` counts as `no-cache` when there is no Cache-Control
 * (RFC 9111 5.4). An invalid argument ignores the directive, except `max-stale`, whose argument is optional.
 */
export function requestDirectives (headers: Headers, allowed: ReadonlySet<RequestDirectiveName>): RequestDirectives {
  const result: RequestDirectives = {}
  if (allowed.size === 0) return result
  const cacheControl = headers['cache-control']
  const directives = parseCacheControl(cacheControl)
  if (allowed.has('max-age')) result.maxAge = deltaSeconds(directives.get('max-age'))
  if (allowed.has('min-fresh')) result.minFresh = deltaSeconds(directives.get('min-fresh'))
  if (allowed.has('max-stale') && directives.has('max-stale')) {
    const argument = directives.get('max-stale')
    result.maxStale = argument === true ? Infinity : deltaSeconds(argument)
  }
  if (allowed.has('no-cache')) {
    const pragma = cacheControl === undefined && /(^|,)\s*no-cache\s*(,|$)/i.test(String(headers.pragma ?? ''))
    if (directives.has('no-cache') || pragma) result.noCache = true
  }
  if (allowed.has('no-store') && directives.has('no-store')) result.noStore = true
  if (allowed.has('only-if-cached') && directives.has('only-if-cached')) result.onlyIfCached = true
  for (const key of Object.keys(result) as Array<keyof RequestDirectives>) if (result[key] === undefined) delete result[key]
  return result
}

/** How a stored response may answer a request. */
export type Reuse =
  | { kind: 'fresh' }
  /** Stale, and the client (max-stale) or the response (stale-while-revalidate) allows it. */
  | { kind: 'stale', because: 'max-stale' | 'stale-while-revalidate' }
  /** Must be validated with the origin first: stale, or `no-cache` from the response or the client. */
  | { kind: 'validate', because: 'stale' | 'request' }

/**
 * Whether a stored response may be reused now, given its freshness, whether it was soft-invalidated, and the
 * client's honoured directives (RFC 9111 4.2, 4.2.4, 5.2.1). `max-stale` never overrides a `once-stale` (must-
 * revalidate, proxy-revalidate, s-maxage) or `always` (no-cache) response, and neither do the RFC 5861 windows.
 */
export function reuseOf (entry: SharedFreshness, now: number, request: RequestDirectives, invalidated = false): Reuse {
  if (request.noCache === true) return { kind: 'validate', because: 'request' }
  if (entry.revalidate === 'always') return { kind: 'validate', because: 'stale' }
  const age = Math.max(0, now - entry.storedAt)
  const left = entry.ttl * 1000 - age
  if (request.maxAge !== undefined && age > request.maxAge * 1000) return { kind: 'validate', because: 'request' }
  if (left > 0 && !invalidated) {
    if (request.minFresh !== undefined && left < request.minFresh * 1000) return { kind: 'validate', because: 'request' }
    return { kind: 'fresh' }
  }
  if (entry.revalidate === 'once-stale') return { kind: 'validate', because: 'stale' }
  const staleness = Math.max(0, -left)
  if (request.maxStale !== undefined && staleness <= request.maxStale * 1000) return { kind: 'stale', because: 'max-stale' }
  if (request.minFresh === undefined && entry.staleWhileRevalidate !== undefined && staleness < entry.staleWhileRevalidate * 1000) {
    return { kind: 'stale', because: 'stale-while-revalidate' }
  }
  return { kind: 'validate', because: 'stale' }
}

/** Whether a stale response may still answer in place of an origin failure (RFC 5861 4). */
export function mayServeOnError (entry: SharedFreshness, now: number): boolean {
  if (entry.revalidate !== undefined || entry.staleIfError === undefined) return false
  return now < entry.storedAt + (entry.ttl + entry.staleIfError) * 1000
}

/**
 * Header fields a 304 never replaces in the stored response (RFC 9111 3.2): those of the exchange, and those that
 * describe the stored content, which a 304 has none of (a framework may give its empty body a Content-Type).
 */
const NOT_UPDATED: ReadonlySet<string> = new Set([
  'connection', 'keep-alive', 'transfer-encoding', 'te', 'trailer', 'upgrade', 'proxy-connection',
  'content-length', 'content-encoding', 'content-type', 'content-range', 'x-cache', 'cache-status', 'set-cookie', 'age'
])

/**
 * The stored header fields updated by a 304 (RFC 9111 4.3.4, 3.2): each field of the 304 replaces the stored one,
 * except the framing and those of one exchange.
 */
export function updatedHeaders (stored: Record<string, string | string[]>, notModified: Headers): Record<string, string | string[]> {
  const updated = { ...stored }
  for (const name in notModified) {
    const value = notModified[name]
    if (value === undefined || NOT_UPDATED.has(name) || name === 'etag') continue
    updated[name] = typeof value === 'number' ? String(value) : value
  }
  return updated
}

/** The validators for a conditional request about a stored response (RFC 9111 4.3.1), or undefined when it has none. */
export interface CacheValidators {
  'if-none-match'?: string
  'if-modified-since'?: string
}

export function validatorsOf (originEtag: string | undefined, headers: Record<string, string | string[]>): CacheValidators | undefined {
  const validators: CacheValidators = {}
  if (originEtag !== undefined) validators['if-none-match'] = originEtag
  const lastModified = headers['last-modified']
  if (typeof lastModified === 'string' && parseHttpDate(lastModified) !== undefined) validators['if-modified-since'] = lastModified
  return Object.keys(validators).length === 0 ? undefined : validators
}

/**
 * If-Modified-Since evaluated by the cache (RFC 9110 13.1.3): true when the stored response's Last-Modified is not
 * later than the client's date. Only used without If-None-Match, which takes precedence.
 */
export function notModifiedSince (ifModifiedSince: Headers[string], lastModified: Headers[string]): boolean {
  const since = parseHttpDate(ifModifiedSince)
  const modified = parseHttpDate(lastModified)
  return since !== undefined && modified !== undefined && modified <= since
}

/** Does a 304's ETag designate the stored response (RFC 9111 4.3.4)? A 304 without one is taken to. */
export function designates (notModifiedEtag: Headers[string], storedEtag: string | undefined): boolean {
  if (notModifiedEtag === undefined) return true
  if (storedEtag === undefined) return false
  const strip = (tag: string): string => tag.trim().replace(/^W\//, '')
  return strip(String(notModifiedEtag)) === strip(storedEtag)
}
