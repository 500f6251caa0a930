import type { FastifyInstance } from 'fastify'
import { Cluster, type ClusterOptions, Redis, type RedisOptions } from 'ioredis'
import { FST_CACHE_INVALID_OPTION } from '../errors'
import type { PluginSettings } from '../http/route'
import { type CachePluginOptions, DEFAULTS, type RedisClusterOptions, RedisClusterSchema, assertValid } from '../options'
import { MemoryStore } from './memory'
import { RedisStore } from './redis'
import type { CacheStore } from './store'

export interface OpenedStore {
  store: CacheStore
  /** The Redis client the store uses, when it uses one (the bus of the in-process tier opens its own beside it). */
  client?: Redis | Cluster
  /** Closes the store and any client the plugin created; a client the user handed in stays open. */
  close: () => Promise<void>
}

function isClient (value: unknown): value is Redis | Cluster {
  return value instanceof Redis || value instanceof Cluster || (typeof value === 'object' && value !== null &&
    typeof (value as Redis).getBuffer === 'function' && typeof (value as Redis).quit === 'function')
}

/** `{ cluster: [...] }`: a Redis Cluster for the plugin to connect to (a client is never a plain object). */
function isClusterConnection (value: unknown): value is RedisClusterOptions {
  return typeof value === 'object' && value !== null && !isClient(value) && Object.hasOwn(value, 'cluster')
}

/**
 * The options of a client the plugin creates: nothing may wait on a dead Redis. Commands fail at once while it is
 * disconnected (no offline queue), each is retried at most once, and reconnection backs off but never stops.
 * Commands issued in the same tick by concurrent requests go out together (auto-pipelining): one socket write and one
 * read for many hits instead of one each, which on loopback is most of a hit's CPU.
 */
function clientOptions (settings: PluginSettings): RedisOptions {
  return {
    enableAutoPipelining: true,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
    connectTimeout: Math.max(settings.connectTimeoutMs, 1000),
    retryStrategy: (attempt) => Math.min(attempt * 100, 2000)
  }
}

/**
 * The same for a Cluster the plugin creates: no offline queue (a command for a slot whose node is down fails rather
 * than waits), one retry per command, bounded connects and slot-map refreshes, and a reconnection that never stops.
 * The user's options come on top; those of each node's connection go in `redisOptions`.
 */
function clusterOptions (settings: PluginSettings, user: ClusterOptions = {}): ClusterOptions {
  const { connectTimeout, retryStrategy, maxRetriesPerRequest, enableAutoPipelining } = clientOptions(settings)
  return {
    enableAutoPipelining,
    enableOfflineQueue: false,
    clusterRetryStrategy: retryStrategy,
    slotsRefreshTimeout: connectTimeout,
    ...user,
    redisOptions: { maxRetriesPerRequest, connectTimeout, ...user.redisOptions }
  }
}

export async function openStore (app: FastifyInstance, options: CachePluginOptions, settings: PluginSettings): Promise<OpenedStore> {
  let client: Redis | Cluster | undefined
  let owned = false
  if (isClient(options.redis)) {
    client = options.redis
  } else if (isClusterConnection(options.redis)) {
    assertValid(RedisClusterSchema, options.redis, 'redis.')
    client = new Cluster(options.redis.cluster, clusterOptions(settings, options.redis.options))
    owned = true
  } else if (typeof options.redis === 'string') {
    client = new Redis(options.redis, clientOptions(settings))
    owned = true
  } else if (options.redis !== undefined) {
    client = new Redis({ ...clientOptions(settings), ...options.redis })
    owned = true
  } else if (app.hasDecorator('redis')) {
    client = (app as unknown as { redis: Redis }).redis
  }

  if (client === undefined) {
    const store = new MemoryStore({ ...DEFAULTS.memory, ...options.memory })
    return { store, close: () => store.close() }
  }

  const redis = client
  // ioredis adds a keyPrefix to the keys it knows of, not to those the plugin's scripts name in their arguments: the
  // entries would be written under one name and looked for under another. The plugin's `prefix` does that job.
  if (redis.options.keyPrefix !== undefined && redis.options.keyPrefix !== '') {
    if (owned) redis.disconnect()
    throw new FST_CACHE_INVALID_OPTION('a Redis client with keyPrefix is not supported: give the plugin a client without one, and the prefix in the option "prefix"')
  }
  if (owned) {
    let lastLogged = 0
    const onError = (error: Error): void => {
      if (Date.now() - lastLogged < 10_000) return
      lastLogged = Date.now()
      app.log.warn({ err: error }, 'cache redis connection error; requests are served uncached until it recovers')
    }
    redis.on('error', onError)
    // A Cluster reports the errors of its nodes' connections apart.
    if (redis.isCluster) redis.on('node error', onError)
  }
  await waitUntilReady(app, redis, settings.connectTimeoutMs)
  const store = new RedisStore(redis, settings.prefix)
  return {
    store,
    client: redis,
    close: async () => {
      await store.close()
      if (owned) await redis.quit().catch(() => redis.disconnect())
    }
  }
}

/** Waits a bounded time for Redis, so that the first requests are cached; a Redis that is late never blocks start-up. */
async function waitUntilReady (app: FastifyInstance, redis: Redis | Cluster, timeoutMs: number): Promise<void> {
  if (redis.status === 'ready') return
  if (redis.status === 'wait') redis.connect().catch(() => {})
  let timer: NodeJS.Timeout | undefined
  let onReady: (() => void) | undefined
  const ready = await Promise.race([
    new Promise<boolean>((resolve) => { onReady = () => resolve(true); redis.once('ready', onReady) }),
    new Promise<boolean>((resolve) => { timer = setTimeout(() => resolve(false), timeoutMs) })
  ])
  clearTimeout(timer)
  if (onReady !== undefined) redis.off('ready', onReady)
  if (!ready) app.log.warn({ timeoutMs }, 'cache redis did not answer in time; starting uncached until it connects')
}
