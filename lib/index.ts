import type { FastifyInstance, FastifyPluginAsync } from 'fastify'
import type { Cluster, Redis } from 'ioredis'
import fp from 'fastify-plugin'
import { CircuitBreaker } from './circuit-breaker'
import { KeyRing } from './encryption'
import { GuardedStore } from './guarded-store'
import { ThrottledLog } from './throttled-log'
import { ResponseCache } from './http/hooks'
import { kCacheState } from './http/request-state'
import { attachInvalidation } from './http/invalidates'
import { UNSAFE_METHODS, attachUnsafeInvalidation } from './http/unsafe'
import { Leases } from './http/leases'
import { FST_CACHE_INVALID_OPTION } from './errors'
import { type PluginSettings, compileRoute } from './http/route'
import { type CachePluginOptions, DEFAULTS, PluginOptionsSchema, type RouteCacheOptions, assertValid } from './options'
import { type CacheService, StoreCacheService } from './service'
import { CacheStats } from './stats'
import { type WarmResult, scheduleWarming } from './warm'
import { DeadlineStore } from './stores/deadline'
import { openStore } from './stores/open'
import type { CacheStore } from './stores/store'
import { TieredStore } from './stores/tiered'
import { InvalidationBus } from './bus'
import { entryKey } from './stores/redis-layout'

declare module 'fastify' {
  interface FastifyContextConfig {
    /** Opt this route into response caching: true for the defaults, an object to set them, false to opt out. */
    cache?: boolean | RouteCacheOptions
  }
  interface FastifyInstance {
    cacheService: CacheService
  }
}

const responseCache: FastifyPluginAsync<CachePluginOptions> = async (app: FastifyInstance, options: CachePluginOptions) => {
  assertValid(PluginOptionsSchema, options)
  const settings: PluginSettings = {
    prefix: options.prefix ?? DEFAULTS.prefix,
    ttl: options.ttl ?? DEFAULTS.ttl,
    statuses: options.statuses ?? DEFAULTS.statuses,
    maxEntryBytes: options.maxEntryBytes ?? DEFAULTS.maxEntryBytes,
    allowBypass: options.allowBypass ?? DEFAULTS.allowBypass,
    lookup: options.lookup ?? DEFAULTS.lookup,
    staleWhileRevalidate: options.staleWhileRevalidate ?? DEFAULTS.staleWhileRevalidate,
    staleIfError: options.staleIfError ?? DEFAULTS.staleIfError,
    coalesceWaitMs: options.coalesceWaitMs ?? DEFAULTS.coalesceWaitMs,
    storeTimeoutMs: options.storeTimeoutMs ?? DEFAULTS.storeTimeoutMs,
    connectTimeoutMs: options.connectTimeoutMs ?? DEFAULTS.connectTimeoutMs,
    unkeyedHeaders: options.unkeyedHeaders ?? [],
    sensitive: options.sensitive ?? DEFAULTS.sensitive,
    compression: options.compression ?? DEFAULTS.compression,
    requestDirectives: options.requestDirectives ?? DEFAULTS.requestDirectives,
    targetedCacheControl: options.targetedCacheControl ?? DEFAULTS.targetedCacheControl,
    keepStale: options.keepStale ?? DEFAULTS.keepStale,
    canEncrypt: options.encryption !== undefined
  }
  const keyRing = options.encryption === undefined ? undefined : KeyRing.from(options.encryption)
  const stats = new CacheStats()
  const log = new ThrottledLog(app.log)
  const { store: opened, client, close } = await openStore(app, options, settings)
  const breaker = opened.local || options.circuitBreaker === false
    ? undefined
    : new CircuitBreaker({ ...DEFAULTS.circuitBreaker, ...options.circuitBreaker })
  const remote = opened.local ? opened : new DeadlineStore(opened, settings.storeTimeoutMs, breaker)
  const tier = client !== undefined && options.memory !== undefined
    ? await openTier(app, remote, client, settings, options.memory, log)
    : undefined
  const store = tier ?? remote
  const guarded = new GuardedStore(store, log, stats, breaker)
  const inject = app.inject.bind(app)
  const leases = store.local || options.lease === false
    ? undefined
    : new Leases(guarded, { ...DEFAULTS.lease, ...options.lease }, tier?.nextChange.bind(tier))
  const cache = new ResponseCache(guarded, stats, inject, leases, keyRing, (id) => entryKey(settings.prefix, id), settings.storeTimeoutMs)

  const service = new StoreCacheService(guarded, stats, settings.ttl, inject)
  app.decorate('cacheService', service)
  app.decorateRequest(kCacheState, null)
  app.decorateRequest('cacheValidators', undefined)
  // Shared-mode entries are invalidated by successful unsafe requests on their URL, whichever route answers them.
  let sharedRoutes = 0
  app.addHook('onRoute', (routeOptions) => {
    const config = routeOptions.config?.cache
    const methods = [routeOptions.method].flat()
    if (config !== false && methods.some((method) => UNSAFE_METHODS.has(method))) {
      attachUnsafeInvalidation(routeOptions, service, guarded, () => sharedRoutes > 0)
    }
    if (config === undefined || config === false) return
    const route = compileRoute(config, routeOptions.url, settings, stats)
    if (route.shared !== undefined) sharedRoutes++
    const reads = methods.includes('GET') || methods.includes('HEAD')
    if (route.invalidatesOf !== undefined) {
      if (reads) throw new FST_CACHE_INVALID_OPTION(`route ${routeOptions.url}: option "config.cache.invalidates" is for POST, PUT, PATCH and DELETE routes`)
      attachInvalidation(routeOptions, route, service, guarded)
    }
    if (reads) cache.attach(routeOptions, route)
  })
  scheduleMaintenance(app, service, options)
  app.addHook('onClose', close)
}

/** The in-process tier in front of Redis, and its bus; registration waits a bounded time for the subscription. */
async function openTier (
  app: FastifyInstance, remote: CacheStore, client: Redis | Cluster, settings: PluginSettings,
  memory: NonNullable<CachePluginOptions['memory']>, log: ThrottledLog
): Promise<TieredStore> {
  const { ttl, ...bounds } = { ...DEFAULTS.memory, ...memory }
  const tier = new TieredStore(remote, { ...bounds, ttlMs: ttl * 1000 })
  const bus = InvalidationBus.start(client, settings.prefix, log, tier)
  tier.attach(bus)
  app.addHook('onClose', () => bus.close())
  if (!await bus.ready(settings.connectTimeoutMs)) app.log.warn('cache invalidation bus not subscribed yet; the in-process tier is bypassed until it is')
  return tier
}

/**
 * Warming and cleanup start once the app is ready, in the background: warming goes through app.inject, which waits
 * for ready itself, so awaiting it inside onReady would never finish.
 */
function scheduleMaintenance (app: FastifyInstance, service: CacheService, options: CachePluginOptions): void {
  const { warm, cleanup } = options
  const handles: Array<{ stop: () => void }> = []
  const logWarm = (result: WarmResult): void => {
    const level = result.failed > 0 ? 'warn' : 'info'
    app.log[level]({ ok: result.ok, failed: result.failed, durationMs: result.durationMs, errors: result.errors.slice(0, 5) }, 'cache warming done')
  }
  app.addHook('onReady', async () => {
    const concurrency = warm?.concurrency
    if (warm?.onReady !== undefined) {
      const targets = warm.onReady
      setImmediate(() => { service.warm(targets, { concurrency }).then(logWarm, (error: unknown) => app.log.error({ err: error }, 'cache warming failed')) })
    }
    const schedule = warm?.schedule
    if (schedule !== undefined) {
      handles.push(scheduleWarming(async () => logWarm(await service.warm(schedule.targets, { concurrency })), schedule))
    }
    if (cleanup !== undefined) {
      handles.push(scheduleWarming(async () => app.log.info(await service.cleanup(), 'cache cleanup done'), { intervalMs: cleanup.intervalMs, jitterMs: cleanup.intervalMs / 10 }))
    }
  })
  app.addHook('onClose', async () => { for (const handle of handles) handle.stop() })
}

export default fp(responseCache, { fastify: '5.x', name: 'fastify-response-cache' })
export { responseCache }
export type { CachePluginOptions, RouteCacheOptions, CacheBehaviourOptions, CacheMode, KeyBuilder, TagBuilder, InvalidationBuilder, LookupPhase, RedisClusterOptions } from './options'
export type { CacheValidators, RequestDirectiveName } from './http/shared-policy'
export type { CacheService, SetOptions, InvalidateTagsOptions } from './service'
export type { WarmTarget, WarmOptions, WarmResult, WarmProgress } from './warm'
export type { CachedOptions, CachedFunction } from './cached'
export { stableHash } from './cached'
export type { CleanupReport } from './stores/store'
export type { EncryptionOptions } from './encryption'
export type { CacheKey, KeyPart } from './keys'
export type { CacheStatsSnapshot, CounterSnapshot, CacheCounters } from './stats'
export type { CacheStore, StoreSetOptions } from './stores/store'
export { MemoryStore } from './stores/memory'
export { RedisStore } from './stores/redis'
export * from './errors'
