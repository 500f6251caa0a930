import type { FastifyReply, FastifyRequest } from 'fastify'
import { FST_CACHE_INVALID_OPTION } from '../errors'
import { type CacheKey, keyId, tagId } from '../keys'
import { type CachePluginOptions, type LookupPhase, type RouteCacheOptions, RouteOptionsSchema, assertValid } from '../options'
import type { CacheCounters, CacheStats } from '../stats'
import type { StoragePolicy } from './policy'

/** A route's cache options merged with the plugin's, compiled once in onRoute. */
export interface CompiledRoute {
  name: string
  counters: CacheCounters
  ttl: number
  storage: StoragePolicy
  cacheControl: string | false | undefined
  allowBypass: boolean | ((request: FastifyRequest) => boolean)
  lookup: LookupPhase
  /** Lower-case request header names that are part of the key and of the response's Vary. */
  vary: string[]
  /** Milliseconds before expiry within which a hit also refreshes the entry; 0 for never. */
  refreshAheadMs: number
  staleWhileRevalidateMs: number
  /** XFetch's beta; 0 for no early refresh. */
  earlyRefresh: number
  staleIfErrorMs: number
  coalesceWaitMs: number
  keyOf (request: FastifyRequest): string
  tagsOf (request: FastifyRequest): string[] | undefined
  /** The raw tag names a successful write invalidates; undefined when the route invalidates nothing. */
  invalidatesOf: ((request: FastifyRequest, reply: FastifyReply) => string[]) | undefined
}

export type PluginSettings = Required<Omit<CachePluginOptions, 'redis' | 'memory' | 'warm' | 'cleanup' | 'circuitBreaker' | 'lease'>>

const BYPASS_PARAM = 'skip_cache'

export function compileRoute (
  config: true | RouteCacheOptions, url: string, settings: PluginSettings, stats: CacheStats
): CompiledRoute {
  const options: RouteCacheOptions = config === true ? {} : config
  assertValid(RouteOptionsSchema, options, 'config.cache.', `route ${url}`)
  const vary = (options.vary ?? []).map((name) => name.toLowerCase())
  const ttl = options.ttl ?? settings.ttl
  if (options.refreshAhead !== undefined && options.refreshAhead >= ttl) {
    throw new FST_CACHE_INVALID_OPTION(`route ${url}: option "config.cache.refreshAhead" must be less than the ttl (${ttl}), got ${options.refreshAhead}`)
  }
  return {
    name: url,
    counters: stats.route(url),
    ttl,
    storage: {
      statuses: new Set(options.statuses ?? settings.statuses),
      maxEntryBytes: options.maxEntryBytes ?? settings.maxEntryBytes
    },
    cacheControl: options.cacheControl,
    allowBypass: options.allowBypass ?? settings.allowBypass,
    lookup: options.lookup ?? settings.lookup,
    vary,
    refreshAheadMs: (options.refreshAhead ?? 0) * 1000,
    earlyRefresh: options.earlyRefresh ?? 0,
    staleWhileRevalidateMs: (options.staleWhileRevalidate ?? settings.staleWhileRevalidate) * 1000,
    staleIfErrorMs: (options.staleIfError ?? settings.staleIfError) * 1000,
    coalesceWaitMs: options.coalesceWaitMs ?? settings.coalesceWaitMs,
    keyOf: compileKey(options.key, url, vary),
    tagsOf: compileTags(options.tags),
    invalidatesOf: compileInvalidates(options.invalidates)
  }
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
  return (request) => keyId(defaultKeyParts(request, url, vary))
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
 * The default key: what the router matched (the route pattern and its decoded params) and the parsed query the
 * handler sees, sorted, without skip_cache, plus the declared vary headers. Reordered or re-encoded query strings
 * and raw path variants therefore share one entry.
 */
export function defaultKeyParts (request: FastifyRequest, url: string, vary: string[]): string[] {
  const parts = ['http', url, canonicalPairs(request.params), canonicalPairs(request.query, BYPASS_PARAM)]
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
