/**
 * One benchmark server: `node --import tsx bench/server.ts <variant>`, started by bench/run.ts over IPC.
 * It listens on a free port of 127.0.0.1, reports `{ port }` to its parent, and exits when the parent goes away
 * (IPC disconnect) or on SIGTERM/SIGINT, closing the app so that `--cpu-prof` can write its profile.
 * Environment: REDIS_URL and BENCH_PREFIX for the variants that use Redis, CLUSTER_NODES (host:port,...) for the cluster,
 * BENCH_PLUGIN (the plugin's compiled entry, see bench/harness.ts; its TypeScript source when unset).
 */
import Fastify, { type FastifyInstance } from 'fastify'
import { Redis } from 'ioredis'
import type * as Plugin from '../lib/index'
import * as alternatives from './alternatives'
import { BENCH_KEYS, PAYLOAD, PAYLOAD_JSON, QUERY_MS, VARIANTS, type Variant, benchId, isVariant } from './payload'

const { default: cache } = require(process.env['BENCH_PLUGIN'] ?? '../lib/index') as typeof Plugin
type CachePluginOptions = Plugin.CachePluginOptions

const TTL_SECONDS = 3600
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

function redisUrl (): string {
  return process.env['REDIS_URL'] ?? 'redis://127.0.0.1:6379'
}

function prefix (): string {
  const value = process.env['BENCH_PREFIX']
  if (value === undefined || value === '') throw new Error('BENCH_PREFIX is not set')
  return value
}

/** The route every variant serves; `cached` opts it in for the whole run. */
function slowRoute (app: FastifyInstance, path: string, cached: boolean): void {
  app.get(path, { config: { cache: cached ? { ttl: TTL_SECONDS } : false } }, async () => {
    await sleep(QUERY_MS)
    return PAYLOAD
  })
}

function fixedRoute (app: FastifyInstance, path: string): void {
  app.get(path, (_request, reply) => { reply.type('application/json').send(PAYLOAD_JSON) })
}

/** The plugin's counters, read by run.ts after a measurement to prove that every request was a hit. */
function statsRoute (app: FastifyInstance): void {
  app.get('/_bench/stats', async () => await app.cacheService.stats())
}

/**
 * The hit-path variants store the body as produced, so that every variant sends the same bytes; (c3) measures what
 * storing it compressed costs a client that does not take brotli (one decompression per hit).
 */
function pluginOptions (variant: 'redis' | 'memory' | 'tiered' | 'cluster' | 'compressed'): CachePluginOptions {
  if (variant === 'memory') return {}
  if (variant === 'compressed') return { redis: redisUrl(), prefix: prefix(), compression: { minBytes: 1024 } }
  const asProduced = { prefix: prefix(), compression: false } as const
  if (variant === 'tiered') return { redis: redisUrl(), memory: {}, ...asProduced }
  if (variant === 'redis') return { redis: redisUrl(), ...asProduced }
  const nodes = process.env['CLUSTER_NODES']
  if (nodes === undefined || nodes === '') throw new Error('CLUSTER_NODES is not set')
  return { redis: { cluster: nodes.split(',') }, ...asProduced }
}

/** Builds the app of one variant; the returned function releases what the variant opened itself. */
async function build (app: FastifyInstance, variant: Variant): Promise<() => Promise<void>> {
  switch (variant) {
    case 'ceiling':
      fixedRoute(app, '/data')
      break
    case 'headers':
      // What a hit costs Node, the kernel and the client for its headers alone: the same ones, with no cache behind.
      app.get('/data', (_request, reply) => {
        reply.type('application/json; charset=utf-8')
          .header('etag', '"d9lW_9exIUjjuTfp"').header('cache-control', 'public, max-age=3600').header('age', '0').header('x-cache', 'HIT')
          .send(PAYLOAD_JSON)
      })
      break
    case 'serialize':
      app.get('/data', async () => PAYLOAD)
      break
    case 'uncached':
      slowRoute(app, '/data', false)
      break
    case 'miss': {
      // Every request its own key: the lookup misses, the handler runs, the response is stored after it is sent.
      await app.register(cache, { redis: redisUrl(), prefix: prefix(), compression: false })
      let request = 0
      app.get('/data', { config: { cache: { ttl: 60, key: () => ['miss', process.pid, ++request] } } }, async () => {
        await sleep(QUERY_MS)
        return PAYLOAD
      })
      statsRoute(app)
      break
    }
    case 'redis':
    case 'memory':
    case 'tiered':
    case 'cluster':
    case 'compressed':
      await app.register(cache, pluginOptions(variant))
      slowRoute(app, '/data', true)
      statsRoute(app)
      break
    case 'optout':
      await app.register(cache)
      fixedRoute(app, '/data')
      slowRoute(app, '/cached', true)
      statsRoute(app)
      break
    case 'floor': {
      // What any cache that keeps its entries in Redis must do before it knows a request is a miss: one round trip.
      const client = new Redis(redisUrl(), { enableOfflineQueue: true, maxRetriesPerRequest: 1, enableAutoPipelining: true })
      const key = prefix() + ':absent'
      app.get('/data', async () => {
        if (await client.get(key) !== null) throw new Error(`${key} is not meant to exist`)
        await sleep(QUERY_MS)
        return PAYLOAD
      })
      return async () => { await client.quit() }
    }
    case 'ioredis': {
      const client = new Redis(redisUrl(), { enableOfflineQueue: true, maxRetriesPerRequest: 1 })
      const key = (id: number): string => `${prefix()}:raw:${id}`
      await Promise.all(Array.from({ length: BENCH_KEYS }, (_, i) => client.set(key(i + 1), PAYLOAD_JSON, 'EX', TTL_SECONDS)))
      app.get('/data', async (request, reply) => {
        const body = await client.get(key(benchId(request.query)))
        if (body === null) throw new Error(`${key(benchId(request.query))} is missing from Redis`)
        reply.type('application/json')
        return body
      })
      return async () => { await client.quit() }
    }
    case 'handwritten':
      return await alternatives.handwritten(app)
    case 'bentocache':
      return await alternatives.bentocache(app, 'l1+l2')
    case 'bentocache-l2':
      return await alternatives.bentocache(app, 'l2')
    case 'dedupe':
      return await alternatives.dedupe(app)
    case 'apicache':
      throw new Error('apicache runs on Express: see main()')
  }
  return async () => {}
}

/** Listens: a Fastify app of the variant, or, for apicache, an Express server. */
async function listen (variant: Variant): Promise<{ port: number, close: () => Promise<void> }> {
  if (variant === 'apicache') {
    const { server, release } = await alternatives.apicache()
    const address = server.address()
    if (address === null || typeof address === 'string') throw new Error('no TCP address')
    return { port: address.port, close: async () => { await new Promise((resolve) => server.close(resolve)); await release() } }
  }
  const app = Fastify({ logger: false })
  const release = await build(app, variant)
  await app.listen({ host: '127.0.0.1', port: 0 })
  const address = app.server.address()
  if (address === null || typeof address === 'string') throw new Error('no TCP address')
  return { port: address.port, close: async () => { await app.close(); await release() } }
}

async function main (): Promise<void> {
  const variant = process.argv[2] ?? ''
  if (!isVariant(variant)) throw new Error(`unknown variant "${variant}"; one of ${Object.keys(VARIANTS).join(', ')}`)
  const { port, close } = await listen(variant)

  let closing = false
  const stop = (): void => {
    if (closing) return
    closing = true
    const force = setTimeout(() => process.exit(1), 3000)
    force.unref()
    close().finally(() => process.exit(0))
  }
  process.on('SIGTERM', stop)
  process.on('SIGINT', stop)
  process.on('disconnect', stop)
  if (process.send === undefined) {
    console.log(`${variant} listening on http://127.0.0.1:${port}`)
  } else {
    process.send({ port })
  }
}

main().catch((error: unknown) => {
  console.error(error)
  process.exit(1)
})
