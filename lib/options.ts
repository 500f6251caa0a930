import { Type, type TSchema } from '@sinclair/typebox'
import { Value, type ValueError } from '@sinclair/typebox/value'
import type { FastifyReply, FastifyRequest } from 'fastify'
import type { Cluster, ClusterOptions, Redis, RedisOptions } from 'ioredis'
import { FST_CACHE_INVALID_OPTION } from './errors'
import type { CacheKey } from './keys'
import type { EncryptionOptions } from './encryption'
import type { WarmTarget } from './warm'
import { REQUEST_DIRECTIVES, type RequestDirectiveName } from './http/shared-policy'

/** Where the cache lookup runs. See the README: `handler` is safe by default, `onRequest` is faster for public data. */
export type LookupPhase = 'handler' | 'onRequest'

/** Options a route may override; the plugin's values are the defaults. */
export interface CacheBehaviourOptions {
  /** Seconds a stored response stays fresh. */
  ttl?: number
  /** Status codes that may be stored. 5xx never are. */
  statuses?: number[]
  /** Largest body stored, in bytes. */
  maxEntryBytes?: number
  /** Who may use `?skip_cache=true`. */
  allowBypass?: boolean | ((request: FastifyRequest) => boolean)
  lookup?: LookupPhase
  /** Seconds after freshness during which a stale entry is served at once while one refresh runs (RFC 5861). */
  staleWhileRevalidate?: number
  /** Seconds after freshness during which a stale entry is served when the handler fails (throws or answers 5xx). */
  staleIfError?: number
  /** Milliseconds a concurrent miss waits for the request already computing its key, before running the handler itself. */
  coalesceWaitMs?: number
  /** Encrypt stored responses (AES-256-GCM, with the plugin's `encryption` keys); plaintext entries are then refused. */
  sensitive?: boolean
  /**
   * Store bodies of at least `minBytes` compressed (brotli) in Redis, and send them as they are to clients that accept
   * brotli; `false` stores every body as it is. Never for sensitive routes, nor in the memory store. `quality` is
   * brotli's (0 to 11); by default 10 for bodies up to 16 KiB (at most a few ms of a zlib thread, once per store) and
   * 5 above.
   */
  compression?: { minBytes?: number, quality?: number } | false
  /**
   * Shared mode: the request Cache-Control directives clients may use (RFC 9111 5.2.1); the others are ignored.
   * Default `['max-stale', 'only-if-cached']`, the ones that cannot make the cache ask the origin more often.
   */
  requestDirectives?: RequestDirectiveName[]
  /**
   * Shared mode: targeted cache-control fields the plugin obeys, first present wins, in place of Cache-Control and
   * Expires (RFC 9213), e.g. `['cdn-cache-control']`. Default none.
   */
  targetedCacheControl?: string[]
  /**
   * Shared mode: seconds an entry is kept past its freshness (and its stale windows), so that it can be revalidated
   * with a conditional request, or served to a `max-stale` client, instead of fetched again. Default 300.
   */
  keepStale?: number
}

/** A Redis Cluster for the plugin to connect to: some of its nodes (the rest are discovered), and ioredis options. */
export interface RedisClusterOptions {
  /** Startup nodes: `host:port` strings or `{ host, port }`. */
  cluster: Array<string | { host: string, port: number }>
  /** ioredis Cluster options; those of each node's connection go in `redisOptions`. */
  options?: ClusterOptions
}

export interface CachePluginOptions extends CacheBehaviourOptions {
  /**
   * A redis:// URL, ioredis options, a client or a Cluster client (never closed by the plugin), or `{ cluster }` for
   * the plugin to connect to a Redis Cluster. Default: `app.redis`, else memory.
   */
  redis?: string | RedisOptions | Redis | Cluster | RedisClusterOptions
  /** Namespace of every key, e.g. `analytics:prod`. */
  prefix?: string
  /** Milliseconds a store call may take before the request goes on uncached. */
  storeTimeoutMs?: number
  /** Milliseconds registration waits for Redis to answer before the app starts uncached. */
  connectTimeoutMs?: number
  /**
   * Without Redis: the bounds of the in-memory store. With Redis: an in-process tier in front of it (L1), kept
   * coherent across instances by Redis pub/sub; `ttl` is the most seconds an entry is held there (default 10).
   */
  memory?: { maxEntries?: number, maxBytes?: number, ttl?: number }
  /** Warming right after ready (in the background) and on a schedule with jitter. */
  warm?: {
    onReady?: WarmTarget[]
    schedule?: { intervalMs: number, jitterMs?: number, targets: WarmTarget[] }
    concurrency?: number
  }
  /** A cleanup pass on a schedule (see cacheService.cleanup). */
  cleanup?: { intervalMs: number }
  /**
   * Request headers that change responses without being part of any key, beyond the built-in list
   * (X-Forwarded-Host, X-Forwarded-Proto, X-Forwarded-Scheme, X-Host, X-Original-URL, X-Rewrite-URL,
   * X-HTTP-Method-Override): a response to a request carrying one that its route does not key on (`vary`) is never
   * stored, and the attempt is counted and logged as suspected cache poisoning.
   */
  unkeyedHeaders?: string[]
  /** Keys for sensitive routes: base64 of 32 bytes each, newest first (it encrypts; all decrypt, for rotation). */
  encryption?: EncryptionOptions
  /** Stops calling a failing Redis after `failures` consecutive failures, probing it again after `cooldownMs`. */
  circuitBreaker?: { failures?: number, cooldownMs?: number } | false
  /** Across instances sharing Redis, one computes a missing key while the others wait up to `waitMs` for it. */
  lease?: { ttlMs?: number, waitMs?: number } | false
}

/** `app`: the route's options say how long responses are fresh. `shared`: the responses' own headers do (RFC 9111). */
export type CacheMode = 'app' | 'shared'

export interface RouteCacheOptions extends CacheBehaviourOptions {
  /**
   * `shared`: behave as an RFC 9111 shared cache (a CDN inside the app) for a route whose responses carry their own
   * caching headers, typically a proxy: no ttl of its own; see the README's "Shared-cache mode". Default `app`.
   */
  mode?: CacheMode
  /** The key: a string, parts, or a function of the request (it sees validated, typed query and params). */
  key?: CacheKey | KeyBuilder
  /** Tags for invalidation, or a function of the request. */
  tags?: string[] | TagBuilder
  /** Request headers whose values are part of the key; they are also sent in the response's Vary. */
  vary?: string[]
  /** The query parameters the route reads: a request with any other one is not cached (x-cache: BYPASS). */
  query?: string[]
  /** Cache-Control to send when the handler set none; false sends none. Default: public or private, max-age=ttl. */
  cacheControl?: string | false
  /**
   * On a POST, PUT, PATCH or DELETE route: the tags to invalidate after a successful (2xx) response, before it is
   * sent, so that the client's next read is fresh. Never after a failed one.
   */
  invalidates?: string[] | InvalidationBuilder
  /**
   * Seconds before expiry within which a hit also refreshes the entry in the background (one refresh per key at a
   * time), so that entries that are read keep being fresh and their readers never wait for a miss.
   */
  refreshAhead?: number
  /**
   * Probabilistic early refresh (XFetch, Vattani et al. 2015): a hit refreshes the entry in the background with a
   * probability that grows as expiry nears and with how long the handler took. 1 is the usual value; higher refreshes
   * earlier. Hot keys are then refreshed before they expire, without a stampede at expiry.
   */
  earlyRefresh?: number
}

// Taken from method signatures, whose parameters TypeScript checks bivariantly: a builder may then annotate its
// request more narrowly, e.g. FastifyRequest<{ Querystring: Q }>, since route config cannot see the route's generics.
export type KeyBuilder = { build (request: FastifyRequest): CacheKey }['build']
export type TagBuilder = { build (request: FastifyRequest): string[] }['build']
export type InvalidationBuilder = { build (request: FastifyRequest, reply: FastifyReply): string[] }['build']

const Seconds = Type.Integer({ minimum: 1, maximum: 365 * 24 * 3600 })
const Status = Type.Integer({ minimum: 100, maximum: 499 })

const HeaderName = Type.String({ pattern: '^[A-Za-z0-9!#$%&\'*+.^_`|~-]+$' })
const WarmTargetSchema = Type.Union([Type.String({ minLength: 1 }), Type.Object({})])

const behaviour = {
  ttl: Type.Optional(Seconds),
  statuses: Type.Optional(Type.Array(Status, { minItems: 1 })),
  maxEntryBytes: Type.Optional(Type.Integer({ minimum: 1 })),
  allowBypass: Type.Optional(Type.Union([Type.Boolean(), Type.Function([], Type.Unknown())])),
  lookup: Type.Optional(Type.Union([Type.Literal('handler'), Type.Literal('onRequest')])),
  staleWhileRevalidate: Type.Optional(Seconds),
  staleIfError: Type.Optional(Seconds),
  coalesceWaitMs: Type.Optional(Type.Integer({ minimum: 0, maximum: 600000 })),
  sensitive: Type.Optional(Type.Boolean()),
  compression: Type.Optional(Type.Union([Type.Literal(false), Type.Object({
    minBytes: Type.Optional(Type.Integer({ minimum: 0 })),
    quality: Type.Optional(Type.Integer({ minimum: 0, maximum: 11 }))
  }, { additionalProperties: false })])),
  requestDirectives: Type.Optional(Type.Array(Type.Union(REQUEST_DIRECTIVES.map((name) => Type.Literal(name))))),
  targetedCacheControl: Type.Optional(Type.Array(HeaderName)),
  keepStale: Type.Optional(Type.Integer({ minimum: 0, maximum: 365 * 24 * 3600 }))
}

export const PluginOptionsSchema = Type.Object({
  ...behaviour,
  redis: Type.Optional(Type.Union([Type.String({ pattern: '^rediss?://' }), Type.Object({})])),
  prefix: Type.Optional(Type.String({ pattern: '^[A-Za-z0-9._-]+(:[A-Za-z0-9._-]+)*$', maxLength: 100 })),
  storeTimeoutMs: Type.Optional(Type.Integer({ minimum: 1, maximum: 60000 })),
  connectTimeoutMs: Type.Optional(Type.Integer({ minimum: 0, maximum: 60000 })),
  memory: Type.Optional(Type.Object({
    maxEntries: Type.Optional(Type.Integer({ minimum: 1 })),
    maxBytes: Type.Optional(Type.Integer({ minimum: 1024 })),
    ttl: Type.Optional(Seconds)
  }, { additionalProperties: false })),
  warm: Type.Optional(Type.Object({
    onReady: Type.Optional(Type.Array(WarmTargetSchema)),
    schedule: Type.Optional(Type.Object({
      intervalMs: Type.Integer({ minimum: 1000 }),
      jitterMs: Type.Optional(Type.Integer({ minimum: 0 })),
      targets: Type.Array(WarmTargetSchema)
    }, { additionalProperties: false })),
    concurrency: Type.Optional(Type.Integer({ minimum: 1, maximum: 256 }))
  }, { additionalProperties: false })),
  cleanup: Type.Optional(Type.Object({ intervalMs: Type.Integer({ minimum: 1000 }) }, { additionalProperties: false })),
  unkeyedHeaders: Type.Optional(Type.Array(HeaderName)),
  // Checked in detail by KeyRing.from, whose messages never show key material.
  encryption: Type.Optional(Type.Object({})),
  lease: Type.Optional(Type.Union([Type.Literal(false), Type.Object({
    ttlMs: Type.Optional(Type.Integer({ minimum: 100, maximum: 600000 })),
    waitMs: Type.Optional(Type.Integer({ minimum: 0, maximum: 600000 }))
  }, { additionalProperties: false })])),
  circuitBreaker: Type.Optional(Type.Union([Type.Literal(false), Type.Object({
    failures: Type.Optional(Type.Integer({ minimum: 1 })),
    cooldownMs: Type.Optional(Type.Integer({ minimum: 10, maximum: 600000 }))
  }, { additionalProperties: false })]))
}, { additionalProperties: false })

/** Checked by openStore when `redis` is a `{ cluster }` object rather than a client. */
export const RedisClusterSchema = Type.Object({
  cluster: Type.Array(Type.Union([
    Type.String({ minLength: 1 }),
    Type.Object({ host: Type.String({ minLength: 1 }), port: Type.Integer({ minimum: 1, maximum: 65535 }) })
  ]), { minItems: 1 }),
  options: Type.Optional(Type.Object({}))
}, { additionalProperties: false })

const KeyPartSchema = Type.Union([Type.String(), Type.Number(), Type.Boolean(), Type.Null(), Type.Undefined(), Type.BigInt()])

export const RouteOptionsSchema = Type.Object({
  ...behaviour,
  mode: Type.Optional(Type.Union([Type.Literal('app'), Type.Literal('shared')])),
  key: Type.Optional(Type.Union([Type.String({ minLength: 1 }), Type.Array(KeyPartSchema, { minItems: 1 }), Type.Function([], Type.Unknown())])),
  tags: Type.Optional(Type.Union([Type.Array(Type.String({ minLength: 1 })), Type.Function([], Type.Unknown())])),
  vary: Type.Optional(Type.Array(HeaderName)),
  query: Type.Optional(Type.Array(Type.String({ minLength: 1 }))),
  cacheControl: Type.Optional(Type.Union([Type.String({ minLength: 1 }), Type.Literal(false)])),
  invalidates: Type.Optional(Type.Union([Type.Array(Type.String({ minLength: 1 })), Type.Function([], Type.Unknown())])),
  refreshAhead: Type.Optional(Seconds),
  earlyRefresh: Type.Optional(Type.Number({ exclusiveMinimum: 0, maximum: 100 }))
}, { additionalProperties: false })

/**
 * Throws FST_CACHE_INVALID_OPTION naming the first wrong option, what was expected and what was given, e.g.
 * `option "ttl": expected integer to be greater or equal to 1, got -5`.
 */
export function assertValid (schema: TSchema, value: unknown, prefix = '', owner?: string): void {
  if (Value.Check(schema, value)) return
  const [first] = Value.Errors(schema, value)
  const error = first === undefined ? undefined : deepest(first)
  const name = prefix + (error?.path ?? '').replace(/^\//, '').replace(/\//g, '.')
  const message = error?.message ?? 'Invalid'
  const expected = message === 'Unexpected property' ? 'not a known option' : message.charAt(0).toLowerCase() + message.slice(1)
  const where = owner === undefined ? '' : `${owner}: `
  throw new FST_CACHE_INVALID_OPTION(`${where}option "${name === '' ? 'options' : name}": ${expected}, got ${describe(error?.value ?? value)}`)
}

/** For a union (`false` or an object, say), the error of the variant that got furthest, not "expected union value". */
function deepest (error: ValueError): ValueError {
  const inner = (error.errors ?? []).flatMap((variant) => {
    const found = variant.First()
    return found === undefined ? [] : [deepest(found)]
  })
  return inner.reduce((best, candidate) => candidate.path.length > best.path.length ? candidate : best, error)
}

function describe (value: unknown): string {
  if (typeof value === 'function') return 'a function'
  if (typeof value === 'bigint') return `${value}n`
  try {
    return JSON.stringify(value) ?? String(value)
  } catch {
    return String(value)
  }
}

export const DEFAULTS = {
  prefix: 'cache',
  ttl: 60,
  statuses: [200],
  maxEntryBytes: 1024 * 1024,
  allowBypass: true,
  lookup: 'handler' as LookupPhase,
  staleWhileRevalidate: 0,
  staleIfError: 0,
  coalesceWaitMs: 10_000,
  sensitive: false,
  compression: { minBytes: 1024 },
  requestDirectives: ['max-stale', 'only-if-cached'] as RequestDirectiveName[],
  targetedCacheControl: [] as string[],
  keepStale: 300,
  storeTimeoutMs: 250,
  connectTimeoutMs: 2000,
  memory: { maxEntries: 10_000, maxBytes: 64 * 1024 * 1024, ttl: 10 },
  circuitBreaker: { failures: 5, cooldownMs: 1000 },
  lease: { ttlMs: 10_000, waitMs: 2000 }
}
