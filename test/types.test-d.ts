/**
 * Type tests for the public API: compiled (never run for its effects) by test/types.test.ts with tsc, and by
 * `npm run typecheck`. Lines that must not compile carry `// @ts-expect-error`; an unused directive is itself an
 * error, so a type that became too loose fails too. Everything sits in a function that is never called, so that
 * loading this file (tap may) does nothing.
 */
import Fastify, { type FastifyInstance, type FastifyRequest } from 'fastify'
import type { Cluster, Redis } from 'ioredis'
import cache, {
  type CacheKey,
  type CacheMode,
  type CachePluginOptions,
  type CacheValidators,
  type CacheService,
  type CacheStatsSnapshot,
  type KeyBuilder,
  type LookupPhase,
  type RedisClusterOptions,
  type RequestDirectiveName,
  type RouteCacheOptions,
  type SetOptions,
  FST_CACHE_INVALID_OPTION,
  FST_CACHE_STORE_ERROR,
  FST_CACHE_STORE_TIMEOUT
} from '../lib/index'

/** True when A and B are the same type (not merely assignable either way). */
type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends (<T>() => T extends B ? 1 : 2) ? true : false
/** Compiles only when its argument is true. */
function assertTrue<T extends true> (_proof?: T): void {}
/** Compiles only when the value's type is assignable to T; pair with Equal for exactness. */
function expectType<T> (_value: T): void {}
/** Compiles only when the value's type is exactly T. */
function expectExact<T> () {
  return <V>(_value: V & ([Equal<T, V>] extends [true] ? unknown : never)): void => {}
}

export async function typeChecks (redisClient: Redis, clusterClient: Cluster): Promise<void> {
  const app = Fastify()

  // ---- plugin options ----
  await app.register(cache)
  await app.register(cache, {})
  await app.register(cache, {
    redis: 'redis://127.0.0.1:6379',
    prefix: 'analytics:prod',
    ttl: 60,
    statuses: [200, 404],
    maxEntryBytes: 1024,
    allowBypass: (request: FastifyRequest) => request.headers['x-admin'] === '1',
    lookup: 'onRequest',
    storeTimeoutMs: 250,
    connectTimeoutMs: 2000,
    memory: { maxEntries: 100, maxBytes: 1 << 20, ttl: 10 },
    compression: { minBytes: 2048, quality: 11 }
  })
  await app.register(cache, { compression: false })
  // @ts-expect-error compression is false or { minBytes, quality }
  await app.register(cache, { compression: true })
  await app.register(cache, { redis: { host: '127.0.0.1', port: 6379, connectionName: 'x' } })
  await app.register(cache, { redis: redisClient, allowBypass: false })
  // A Redis Cluster: a client (never closed by the plugin), or nodes for the plugin to connect to.
  await app.register(cache, { redis: clusterClient })
  await app.register(cache, { redis: { cluster: ['127.0.0.1:7000', { host: '127.0.0.1', port: 7001 }] } })
  await app.register(cache, { redis: { cluster: ['127.0.0.1:7000'], options: { scaleReads: 'master', redisOptions: { password: 'x' } } } })
  const clusterOption: RedisClusterOptions = { cluster: [{ host: 'redis-0', port: 6379 }] }
  expectType<CachePluginOptions['redis']>(clusterOption)
  // @ts-expect-error cluster nodes are host:port strings or { host, port }, not bare ports
  await app.register(cache, { redis: { cluster: [7000] } })
  // @ts-expect-error cluster options are ioredis Cluster options
  await app.register(cache, { redis: { cluster: ['127.0.0.1:7000'], options: { scaleReads: 42 } } })
  const options: CachePluginOptions = { ttl: 5 }
  await app.register(cache, options)
  const phase: LookupPhase = 'handler'
  expectType<CachePluginOptions['lookup']>(phase)

  // @ts-expect-error redis is a URL, ioredis options or a client, not a port number
  await app.register(cache, { redis: 6379 })
  // @ts-expect-error lookup is 'handler' or 'onRequest'
  await app.register(cache, { lookup: 'sometimes' })
  // @ts-expect-error ttl is a number of seconds
  await app.register(cache, { ttl: '60' })
  // @ts-expect-error an unknown option
  await app.register(cache, { tll: 60 })

  // ---- route config ----
  app.get<{ Querystring: { ws: string } }>('/typed', {
    config: {
      cache: {
        key: (req: FastifyRequest<{ Querystring: { ws: string } }>) => ['a', req.query.ws],
        ttl: 5,
        tags: ['x']
      }
    }
  }, async (request) => request.query.ws)

  app.get<{ Querystring: { ws: string } }>('/typed-tags', {
    config: {
      cache: {
        tags: (req: FastifyRequest<{ Querystring: { ws: string } }>) => [`ws:${req.query.ws}`]
      }
    }
  }, async (request) => request.query.ws)
  app.get('/simple', { config: { cache: true } }, async () => 'x')
  app.get('/off', { config: { cache: false } }, async () => 'x')
  app.get('/full', {
    config: {
      cache: {
        key: 'exec:dashboard',
        tags: (request) => [request.url],
        vary: ['accept-language'],
        statuses: [200],
        maxEntryBytes: 1000,
        cacheControl: false,
        allowBypass: true,
        lookup: 'handler'
      }
    }
  }, async () => 'x')
  app.get('/parts', { config: { cache: { key: ['a', 1, true, null, undefined, 2n] } } }, async () => 'x')
  app.get('/key-string', { config: { cache: { key: (request) => `user:${request.id}` } } }, async () => 'x')

  app.get('/bad-ttl', {
    config: {
      // @ts-expect-error ttl is a number, not a string
      cache: { ttl: '5' }
    }
  }, async () => 'x')
  app.get('/bad-key', {
    config: {
      // @ts-expect-error a key builder returns a string or parts, not an object
      cache: { key: () => ({ id: 1 }) }
    }
  }, async () => 'x')
  app.get('/bad-lookup', {
    config: {
      // @ts-expect-error lookup is 'handler' or 'onRequest'
      cache: { lookup: 'always' }
    }
  }, async () => 'x')
  app.get('/bad-tags', {
    config: {
      // @ts-expect-error tags are strings
      cache: { tags: [1] }
    }
  }, async () => 'x')
  // ---- shared-cache mode ----
  await app.register(cache, { requestDirectives: ['max-stale'], targetedCacheControl: ['cdn-cache-control'], keepStale: 60 })
  app.get('/proxy/*', {
    config: { cache: { mode: 'shared', requestDirectives: ['no-cache', 'only-if-cached'], targetedCacheControl: ['cdn-cache-control'], keepStale: 0 } }
  }, async (request) => {
    expectExact<CacheValidators | undefined>()(request.cacheValidators)
    const headers: Record<string, string> = { accept: 'application/json', ...request.cacheValidators }
    return headers
  })
  const mode: CacheMode = 'shared'
  expectType<RouteCacheOptions['mode']>(mode)
  assertTrue<Equal<CacheValidators, { 'if-none-match'?: string, 'if-modified-since'?: string }>>()
  assertTrue<Equal<RequestDirectiveName, 'max-age' | 'min-fresh' | 'max-stale' | 'no-cache' | 'no-store' | 'only-if-cached'>>()
  app.get('/bad-mode', {
    config: {
      // @ts-expect-error mode is 'app' or 'shared'
      cache: { mode: 'proxy' }
    }
  }, async () => 'x')
  app.get('/bad-directive', {
    config: {
      // @ts-expect-error not a request directive
      cache: { mode: 'shared', requestDirectives: ['no-transform'] }
    }
  }, async () => 'x')

  const routeOptions: RouteCacheOptions = { ttl: 1 }
  expectType<RouteCacheOptions>(routeOptions)
  const builder: KeyBuilder = (request) => ['a', request.url]
  expectType<(request: FastifyRequest) => CacheKey>(builder)

  // ---- the service ----
  const service = app.cacheService
  expectExact<CacheService>()(service)
  expectExact<Promise<number | undefined>>()(service.get<number>('k'))
  expectExact<Promise<unknown>>()(service.get('k'))
  expectExact<Promise<void>>()(service.set('k', { any: 'value' }, { ttl: 5, tags: ['t'] }))
  expectExact<Promise<void>>()(service.set(['a', 1, null], 1))
  expectExact<Promise<boolean>>()(service.delete('k'))
  expectExact<Promise<boolean>>()(service.exists(['k']))
  expectExact<Promise<boolean>>()(service.expire('k', 10))
  expectExact<Promise<number>>()(service.ttl('k'))
  expectExact<Promise<{ n: number }>>()(service.getOrCompute('k', () => ({ n: 1 })))
  expectExact<Promise<string>>()(service.getOrCompute('k', async () => 'x', { ttl: 5 }))
  expectExact<Promise<number>>()(service.invalidate('k'))
  expectExact<Promise<number>>()(service.invalidate(['k1', ['k', 2]]))
  expectExact<Promise<number>>()(service.invalidateTags('t'))
  expectExact<Promise<number>>()(service.invalidateTags(['t1', 't2']))
  expectExact<Promise<number>>()(service.invalidatePattern('exec:*'))
  expectExact<Promise<CacheStatsSnapshot>>()(service.stats())
  const stats = await service.stats()
  expectExact<number>()(stats.hits)
  expectExact<number>()(stats.hitRate)
  expectExact<string>()(stats.store.kind)
  expectExact<string | number>()(stats.store['used_memory_human'])
  const setOptions: SetOptions = { ttl: 1 }
  expectType<SetOptions>(setOptions)
  assertTrue<Equal<Awaited<ReturnType<CacheService['get']>>, unknown>>()
  assertTrue<Equal<Parameters<CacheService['delete']>[0], CacheKey>>()

  // @ts-expect-error no such method
  await service.flush()
  // @ts-expect-error set options take a number ttl
  await service.set('k', 1, { ttl: '5' })
  // @ts-expect-error a key is a string or parts, not an object
  await service.get({ id: 1 })
  // @ts-expect-error getOrCompute needs a compute function
  await service.getOrCompute('k', 5)
  // @ts-expect-error the result of get<number> is possibly undefined
  const notUndefined: number = await service.get<number>('k')
  expectType<number>(notUndefined)

  // ---- errors ----
  const error = new FST_CACHE_INVALID_OPTION('x')
  expectExact<'FST_CACHE_INVALID_OPTION'>()(error.code)
  expectType<Error>(new FST_CACHE_STORE_ERROR('set', 'down'))
  expectType<Error>(new FST_CACHE_STORE_TIMEOUT('get', 250))

  // ---- the decorator exists on any instance ----
  const other: FastifyInstance = app
  expectExact<CacheService>()(other.cacheService)
}
