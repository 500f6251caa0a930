import type { FastifyReply, FastifyRequest } from 'fastify'
import { FST_CACHE_INVALID_OPTION } from '../errors'
import { type CacheKey, keyId, tagId } from '../keys'
import { type CacheBehaviourOptions, type CachePluginOptions, DEFAULTS, type LookupPhase, type RouteCacheOptions, RouteOptionsSchema, assertValid } from '../options'
import type { CacheCounters, CacheStats } from '../stats'
import type { Compression } from './encoding'
import { HitRate } from './hit-rate'
import type { StoragePolicy } from './policy'
import type { RequestDirectiveName } from './shared-policy'
import { requestUrlTag } from './unsafe'

/** What a shared-mode route needs beside the common settings. */
export interface SharedRoute {
  /** The request directives clients may use; the others are ignored. */
  requestDirectives: ReadonlySet<RequestDirectiveName>
  /** Lower-case targeted cache-control fields (RFC 9213) obeyed in place of Cache-Control, first present wins. */
  targeted: readonly string[]
  /** Milliseconds an entry is kept past its freshness and stale windows, to be revalidated or served to max-stale. */
  keepStaleMs: number
}

/** A route's cache options merged with the plugin's, compiled once in onRoute. */
export interface CompiledRoute {
  name: string
  counters: CacheCounters
  /** Whether its lookups mostly hit, which decides whether a plain GET is tried before the full read. */
  hitRate: HitRate
  ttl: number
  storage: StoragePolicy
  /** The Cache-Control sent when the handler set none, for requests without and with credentials. */
  cacheControl: { anonymous: string | undefined, credentialed: string | undefined }
  allowBypass: boolean | ((request: FastifyRequest) => boolean)
  lookup: LookupPhase
  /** Lower-case request header names that are part of the key and of the response's Vary. */
  vary: string[]
  /** Lower-case names of headers that change responses but are not part of this route's key. */
  unkeyed: string[]
  /** The key holds the request's protocol and host (the default key does), so trusted forwarded ones are keyed. */
  keysOrigin: boolean
  /** The query parameters the route reads, when it declared them; a request with others is not cached. */
  query: ReadonlySet<string> | undefined
  /** Milliseconds before expiry within which a hit also refreshes the entry; 0 for never. */
  refreshAheadMs: number
  staleWhileRevalidateMs: number
  /** XFetch's beta; 0 for no early refresh. */
  earlyRefresh: number
  staleIfErrorMs: number
  coalesceWaitMs: number
  /** Entries are encrypted, and plaintext ones refused. */
  sensitive: boolean
  /** How bodies are stored compressed; undefined for never. */
  compression: Compression | undefined
  /** Set in shared mode: freshness comes from each response's headers (RFC 9111), not from the route. */
  shared: SharedRoute | undefined
  keyOf (request: FastifyRequest): string
  tagsOf (request: FastifyRequest): string[] | undefined
  /** The raw tag names a successful write invalidates; undefined when the route invalidates nothing. */
  invalidatesOf: ((request: FastifyRequest, reply: FastifyReply) => string[]) | undefined
}

export type PluginSettings = Required<Omit<CachePluginOptions, 'redis' | 'memory' | 'warm' | 'cleanup' | 'circuitBreaker' | 'lease' | 'encryption'>> & {
  /** The plugin has encryption keys, so routes may be sensitive. */
  canEncrypt: boolean
}

/** Headers that frameworks and proxies honour to change a response, and that web cache poisoning uses (Kettle 2018). */
const POISONING_HEADERS = [
  'x-forwarded-host', 'x-forwarded-proto', 'x-forwarded-scheme', 'x-host', 'x-original-url', 'x-rewrite-url',
  'x-http-method-override'
]

const BYPASS_PARAM = 'skip_cache'
/**
 * How many URLs a route remembers the default key of, and how many characters of them at most (a URL can be 16 KB;
 * the keys themselves are short). Over 5,000 keys, 10,000 instead of 1,000 (with recent-entries.ts) made a Redis hit
 * 0.50 instead of 0.40 to 0.47 × the ceiling (BENCHMARKS.md).
 */
const REMEMBERED_KEYS = 10_000
const REMEMBERED_CHARS = 2 * 1024 * 1024

export function compileRoute (
  config: true | RouteCacheOptions, url: string, settings: PluginSettings, stats: CacheStats
): CompiledRoute {
  const options: RouteCacheOptions = config === true ? {} : config
  assertValid(RouteOptionsSchema, options, 'config.cache.', `route ${url}`)
  const vary = (options.vary ?? []).map((name) => name.toLowerCase())
  const ttl = options.ttl ?? settings.ttl
  const sensitive = options.sensitive ?? settings.sensitive
  if (sensitive && !settings.canEncrypt) {
    throw new FST_CACHE_INVALID_OPTION(`route ${url}: a sensitive route needs the plugin option "encryption" with at least one key`)
  }
  const shared = compileShared(options, url, settings)
  if (shared !== undefined) {
    const base = common(options, url, settings, stats, vary, sensitive)
    const tagsOf = base.tagsOf
    return {
      ...base,
      // Every entry carries its URL's tag, which unsafe requests on the URL invalidate (RFC 9111 4.4).
      tagsOf: (request) => [...(tagsOf(request) ?? []), tagId(requestUrlTag(request))],
      ttl: 0,
      storage: { statuses: new Set(), maxEntryBytes: options.maxEntryBytes ?? settings.maxEntryBytes },
      cacheControl: { anonymous: undefined, credentialed: undefined },
      refreshAheadMs: 0,
      earlyRefresh: 0,
      staleWhileRevalidateMs: 0,
      staleIfErrorMs: 0,
      shared
    }
  }
  if (options.refreshAhead !== undefined && options.refreshAhead >= ttl) {
    throw new FST_CACHE_INVALID_OPTION(`route ${url}: option "config.cache.refreshAhead" must be less than the ttl (${ttl}), got ${options.refreshAhead}`)
  }
  return {
    ...common(options, url, settings, stats, vary, sensitive),
    ttl,
    storage: {
      statuses: new Set(options.statuses ?? settings.statuses),
      maxEntryBytes: options.maxEntryBytes ?? settings.maxEntryBytes
    },
    cacheControl: compileCacheControl(options.cacheControl, ttl, (options.staleWhileRevalidate ?? settings.staleWhileRevalidate), (options.staleIfError ?? settings.staleIfError)),
    refreshAheadMs: (options.refreshAhead ?? 0) * 1000,
    earlyRefresh: options.earlyRefresh ?? 0,
    staleWhileRevalidateMs: (options.staleWhileRevalidate ?? settings.staleWhileRevalidate) * 1000,
    staleIfErrorMs: (options.staleIfError ?? settings.staleIfError) * 1000,
    shared: undefined
  }
}

type CommonSettings = Omit<CompiledRoute, 'ttl' | 'storage' | 'cacheControl' | 'refreshAheadMs' | 'earlyRefresh' | 'staleWhileRevalidateMs' | 'staleIfErrorMs' | 'shared'>

/** What both modes compile the same way. */
function common (
  options: RouteCacheOptions, url: string, settings: PluginSettings, stats: CacheStats, vary: string[], sensitive: boolean
): CommonSettings {
  return {
    name: url,
    counters: stats.route(url),
    hitRate: new HitRate(),
    allowBypass: options.allowBypass ?? settings.allowBypass,
    lookup: options.lookup ?? settings.lookup,
    vary,
    unkeyed: [...new Set([...POISONING_HEADERS, ...settings.unkeyedHeaders.map((name) => name.toLowerCase())])]
      .filter((name) => !vary.includes(name)),
    keysOrigin: options.key === undefined,
    query: options.query === undefined ? undefined : new Set(options.query),
    coalesceWaitMs: options.coalesceWaitMs ?? settings.coalesceWaitMs,
    sensitive,
    compression: compileCompression(options.compression ?? settings.compression, sensitive),
    keyOf: compileKey(options.key, url, vary),
    tagsOf: compileTags(options.tags),
    invalidatesOf: compileInvalidates(options.invalidates)
  }
}

/** Options that set freshness or headers the route's responses carry themselves in shared mode. */
const APP_ONLY = ['ttl', 'statuses', 'cacheControl', 'staleWhileRevalidate', 'staleIfError', 'refreshAhead', 'earlyRefresh'] as const
const SHARED_ONLY = ['requestDirectives', 'targetedCacheControl', 'keepStale'] as const

/** The shared-mode settings, or undefined in app mode; options of the other mode are refused, never ignored. */
function compileShared (options: RouteCacheOptions, url: string, settings: PluginSettings): SharedRoute | undefined {
  if (options.mode !== 'shared') {
    const misplaced = SHARED_ONLY.find((name) => options[name] !== undefined)
    if (misplaced !== undefined) {
      throw new FST_CACHE_INVALID_OPTION(`route ${url}: option "config.cache.${misplaced}" is for routes with mode: 'shared'`)
    }
    return undefined
  }
  const misplaced = APP_ONLY.find((name) => options[name] !== undefined)
  if (misplaced !== undefined) {
    throw new FST_CACHE_INVALID_OPTION(`route ${url}: option "config.cache.${misplaced}" does not apply with mode: 'shared', where each response's own headers decide`)
  }
  return {
    requestDirectives: new Set(options.requestDirectives ?? settings.requestDirectives),
    targeted: (options.targetedCacheControl ?? settings.targetedCacheControl).map((name) => name.toLowerCase()),
    keepStaleMs: (options.keepStale ?? settings.keepStale) * 1000
  }
}

/** Never for sensitive routes: the size of a compressed secret can tell what it holds (as in BREACH). */
function compileCompression (compression: CacheBehaviourOptions['compression'], sensitive: boolean): Compression | undefined {
  if (compression === false || compression === undefined || sensitive) return undefined
  return { minBytes: compression.minBytes ?? DEFAULTS.compression.minBytes, quality: compression.quality }
}

/**
 * Public or private with max-age, plus the stale windows the route allows (RFC 5861), so that browsers and CDNs may
 * do what the plugin does; private for credentialed requests, so that no shared cache keeps a per-user answer. A
 * route's own value replaces both; false sends none.
 */

function compileCacheControl (own: string | false | undefined, ttl: number, staleWhileRevalidate: number, staleIfError: number): CompiledRoute['cacheControl'] {
  if (own !== undefined) {
    const value = own === false ? undefined : own
    return { anonymous: value, credentialed: value }
  }
  let windows = ''
  if (staleWhileRevalidate > 0) windows += `, stale-while-revalidate=${staleWhileRevalidate}`
  if (staleIfError > 0) windows += `, stale-if-error=${staleIfError}`
  return { anonymous: `public, max-age=${ttl}${windows}`, credentialed: `private, max-age=${ttl}${windows}` }
}

function compileInvalidates (invalidates: RouteCacheOptions['invalidates']): CompiledRoute['invalidatesOf'] {
  if (invalidates === undefined || typeof invalidates === 'function') return invalidates
  return () => invalidates
}

function compileKey (key: RouteCacheOptions['key'], url: string, vary: string[]): (request: FastifyRequest) => string {
  if (typeof key === 'function') return (request) => keyId(checkedKey(key(request), url))
  if (key !== undefined) {
    const fixed = keyId(key)
    return () => fixed
  }
  // The default key is a function of the origin, the raw URL and the vary headers alone (params and the parsed query
  // come from the URL), so it is remembered per route for the URLs seen most recently: encoding is paid once.
  const known = new Map<string, string>()
  let chars = 0
  return (request) => {
    // The host with its port: it decides the hostname of the key, and Fastify's hostname getter splits it per call.
    let memo = request.protocol + '\n' + request.host + '\n' + request.url
    for (const name of vary) memo += '\n' + String(request.headers[name] ?? '')
    let id = known.get(memo)
    if (id === undefined) {
      id = keyId(defaultKeyParts(request, url, vary))
      const added = memo.length + id.length
      if (known.size >= REMEMBERED_KEYS || chars + added > REMEMBERED_CHARS) {
        known.clear()
        chars = 0
      }
      known.set(memo, id)
      chars += added
    }
    return id
  }
}

function checkedKey (key: CacheKey, url: string): CacheKey {
  if (typeof key !== 'string' && !Array.isArray(key)) {
    throw new FST_CACHE_INVALID_OPTION(`the key builder of route ${url} must return a string or an array of parts`)
  }
  return key
}

function compileTags (tags: RouteCacheOptions['tags']): (request: FastifyRequest) => string[] | undefined {
  if (tags === undefined) return () => undefined
  if (typeof tags === 'function') return (request) => tags(request).map(tagId)
  const fixed = tags.map(tagId)
  return () => fixed
}

/**
 * The default key: the origin the request was addressed to (as Fastify sees it: from X-Forwarded-* only when the app
 * trusts proxies), what the router matched (the route pattern and its decoded params) and the parsed query the
 * handler sees, sorted, without skip_cache, plus the declared vary headers. Reordered or re-encoded query strings
 * and raw path variants therefore share one entry, and one host's responses are never served for another.
 */
export function defaultKeyParts (request: FastifyRequest, url: string, vary: string[]): string[] {
  // The host without its port: instances of one app listen on different ports behind one name.
  const parts = ['http', request.protocol + '://' + request.hostname, url, canonicalPairs(request.params), canonicalPairs(request.query, BYPASS_PARAM)]
  for (const name of vary) {
    const value = request.headers[name]
    parts.push(value === undefined ? '' : Array.isArray(value) ? value.join(', ') : value)
  }
  return parts
}

function canonicalPairs (source: unknown, skip?: string): string {
  if (source === null || typeof source !== 'object') return ''
  const record = source as Record<string, unknown>
  const pairs: string[] = []
  for (const name of Object.keys(record).sort()) {
    if (name === skip) continue
    const value = record[name]
    for (const item of Array.isArray(value) ? value : [value]) {
      const text = typeof item === 'object' && item !== null ? JSON.stringify(item) : String(item)
      pairs.push(encodeURIComponent(name) + '=' + encodeURIComponent(text))
    }
  }
  return pairs.join('&')
}

/** `?skip_cache=true` or `=1`, read from the raw URL so that a query schema that strips unknown fields cannot hide it. */
export function wantsBypass (request: FastifyRequest): boolean {
  const url = request.url
  const start = url.indexOf('?')
  if (start === -1 || !url.includes(BYPASS_PARAM, start)) return false
  const value = new URLSearchParams(url.slice(start + 1)).get(BYPASS_PARAM)
  return value === 'true' || value === '1'
}

export function mayBypass (route: CompiledRoute, request: FastifyRequest): boolean {
  const allow = route.allowBypass
  return typeof allow === 'function' ? allow(request) === true : allow
}

/** A query parameter the route did not declare in its allow-list, if any. */
export function undeclaredQuery (route: CompiledRoute, request: FastifyRequest): string | undefined {
  if (route.query === undefined || request.query === null || typeof request.query !== 'object') return undefined
  for (const name of Object.keys(request.query)) if (name !== BYPASS_PARAM && !route.query.has(name)) return name
  return undefined
}

/** Why a request's response must not be stored whatever it is, or undefined. */
export function unstorableRequest (route: CompiledRoute, request: FastifyRequest): 'unkeyed-header' | 'request-body' | undefined {
  const headers = request.headers
  for (const name of route.unkeyed) {
    const value = headers[name]
    if (value === undefined) continue
    // A forwarded host or protocol that Fastify trusted is what request.host and request.protocol say: keyed.
    if (route.keysOrigin && ((name === 'x-forwarded-host' && value === request.host) || (name === 'x-forwarded-proto' && value === request.protocol))) continue
    return 'unkeyed-header'
  }
  // A GET with a body: the body is not in the key, yet a handler may read it.
  if ((headers['content-length'] !== undefined && headers['content-length'] !== '0') || headers['transfer-encoding'] !== undefined) return 'request-body'
  return undefined
}
