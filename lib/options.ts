import { Type, type TSchema } from '@sinclair/typebox'
import { Value } from '@sinclair/typebox/value'
import type { FastifyRequest } from 'fastify'
import type { Redis, RedisOptions } from 'ioredis'
import { FST_CACHE_INVALID_OPTION } from './errors'
import type { CacheKey } from './keys'

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
}

export interface CachePluginOptions extends CacheBehaviourOptions {
  /** A redis:// URL, ioredis options, or a client (never closed by the plugin). Default: `app.redis`, else memory. */
  redis?: string | RedisOptions | Redis
  /** Namespace of every key, e.g. `analytics:prod`. */
  prefix?: string
  /** Milliseconds a store call may take before the request goes on uncached. */
  storeTimeoutMs?: number
  /** Milliseconds registration waits for Redis to answer before the app starts uncached. */
  connectTimeoutMs?: number
  /** Bounds of the in-memory store used when there is no Redis. */
  memory?: { maxEntries?: number, maxBytes?: number }
}

export interface RouteCacheOptions extends CacheBehaviourOptions {
  /** The key: a string, parts, or a function of the request (it sees validated, typed query and params). */
  key?: CacheKey | KeyBuilder
  /** Tags for invalidation, or a function of the request. */
  tags?: string[] | TagBuilder
  /** Request headers whose values are part of the key; they are also sent in the response's Vary. */
  vary?: string[]
  /** Cache-Control to send when the handler set none; false sends none. Default: public or private, max-age=ttl. */
  cacheControl?: string | false
}

// Taken from method signatures, whose parameters TypeScript checks bivariantly: a builder may then annotate its
// request more narrowly, e.g. FastifyRequest<{ Querystring: Q }>, since route config cannot see the route's generics.
export type KeyBuilder = { build (request: FastifyRequest): CacheKey }['build']
export type TagBuilder = { build (request: FastifyRequest): string[] }['build']

const Seconds = Type.Integer({ minimum: 1, maximum: 365 * 24 * 3600 })
const Status = Type.Integer({ minimum: 100, maximum: 499 })

const behaviour = {
  ttl: Type.Optional(Seconds),
  statuses: Type.Optional(Type.Array(Status, { minItems: 1 })),
  maxEntryBytes: Type.Optional(Type.Integer({ minimum: 1 })),
  allowBypass: Type.Optional(Type.Union([Type.Boolean(), Type.Function([], Type.Unknown())])),
  lookup: Type.Optional(Type.Union([Type.Literal('handler'), Type.Literal('onRequest')]))
}

export const PluginOptionsSchema = Type.Object({
  ...behaviour,
  redis: Type.Optional(Type.Union([Type.String({ pattern: '^rediss?://' }), Type.Object({})])),
  prefix: Type.Optional(Type.String({ pattern: '^[A-Za-z0-9._-]+(:[A-Za-z0-9._-]+)*$', maxLength: 100 })),
  storeTimeoutMs: Type.Optional(Type.Integer({ minimum: 1, maximum: 60000 })),
  connectTimeoutMs: Type.Optional(Type.Integer({ minimum: 0, maximum: 60000 })),
  memory: Type.Optional(Type.Object({
    maxEntries: Type.Optional(Type.Integer({ minimum: 1 })),
    maxBytes: Type.Optional(Type.Integer({ minimum: 1024 }))
  }, { additionalProperties: false }))
}, { additionalProperties: false })

const KeyPartSchema = Type.Union([Type.String(), Type.Number(), Type.Boolean(), Type.Null(), Type.Undefined(), Type.BigInt()])

export const RouteOptionsSchema = Type.Object({
  ...behaviour,
  key: Type.Optional(Type.Union([Type.String({ minLength: 1 }), Type.Array(KeyPartSchema, { minItems: 1 }), Type.Function([], Type.Unknown())])),
  tags: Type.Optional(Type.Union([Type.Array(Type.String({ minLength: 1 })), Type.Function([], Type.Unknown())])),
  vary: Type.Optional(Type.Array(Type.String({ pattern: '^[A-Za-z0-9!#$%&\'*+.^_`|~-]+$' }))),
  cacheControl: Type.Optional(Type.Union([Type.String({ minLength: 1 }), Type.Literal(false)]))
}, { additionalProperties: false })

/**
 * Throws FST_CACHE_INVALID_OPTION naming the first wrong option, what was expected and what was given, e.g.
 * `option "ttl": expected integer to be greater or equal to 1, got -5`.
 */
export function assertValid (schema: TSchema, value: unknown, prefix = '', owner?: string): void {
  if (Value.Check(schema, value)) return
  const [error] = Value.Errors(schema, value)
  const name = prefix + (error?.path ?? '').replace(/^\//, '').replace(/\//g, '.')
  const message = error?.message ?? 'Invalid'
  const expected = message === 'Unexpected property' ? 'not a known option' : message.charAt(0).toLowerCase() + message.slice(1)
  const where = owner === undefined ? '' : `${owner}: `
  throw new FST_CACHE_INVALID_OPTION(`${where}option "${name === '' ? 'options' : name}": ${expected}, got ${describe(error?.value ?? value)}`)
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
  storeTimeoutMs: 250,
  connectTimeoutMs: 2000,
  memory: { maxEntries: 10_000, maxBytes: 64 * 1024 * 1024 }
}
