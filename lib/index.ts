import type { FastifyInstance, FastifyPluginAsync } from 'fastify'
import fp from 'fastify-plugin'
import { GuardedStore } from './guarded-store'
import { ResponseCache, kCacheState } from './http/hooks'
import { type PluginSettings, compileRoute } from './http/route'
import { type CachePluginOptions, DEFAULTS, PluginOptionsSchema, type RouteCacheOptions, assertValid } from './options'
import { type CacheService, StoreCacheService } from './service'
import { CacheStats } from './stats'
import { openStore } from './stores/open'

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
    storeTimeoutMs: options.storeTimeoutMs ?? DEFAULTS.storeTimeoutMs,
    connectTimeoutMs: options.connectTimeoutMs ?? DEFAULTS.connectTimeoutMs
  }
  const stats = new CacheStats()
  const { store, close } = await openStore(app, options, settings)
  const guarded = new GuardedStore(store, settings.storeTimeoutMs, app.log, stats)
  const cache = new ResponseCache(guarded, stats)

  app.decorate('cacheService', new StoreCacheService(guarded, stats, settings.ttl))
  app.decorateRequest(kCacheState, null)
  app.addHook('onRoute', (routeOptions) => {
    const config = routeOptions.config?.cache
    if (config === undefined || config === false) return
    cache.attach(routeOptions, compileRoute(config, routeOptions.url, settings, stats))
  })
  app.addHook('onClose', close)
}

export default fp(responseCache, { fastify: '5.x', name: 'fastify-response-cache' })
export { responseCache }
export type { CachePluginOptions, RouteCacheOptions, CacheBehaviourOptions, KeyBuilder, TagBuilder, LookupPhase } from './options'
export type { CacheService, SetOptions } from './service'
export type { CacheKey, KeyPart } from './keys'
export type { CacheStatsSnapshot, CounterSnapshot, CacheCounters } from './stats'
export type { CacheStore, StoreSetOptions } from './stores/store'
export { MemoryStore } from './stores/memory'
export { RedisStore } from './stores/redis'
export * from './errors'
