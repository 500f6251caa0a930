/**
 * The alternatives bench:compare puts beside the plugin, each the way its documentation shows, around the same slow
 * route (20 ms, then the payload) and on the same Redis. Each counts the times its route really ran
 * (`GET /_bench/calls`), so that the orchestrator can check that every measured request was a hit.
 */
import type { Server } from 'node:http'
import type { FastifyInstance } from 'fastify'
import { Redis } from 'ioredis'
import { PAYLOAD, QUERY_MS, benchId } from './payload'

const TTL_SECONDS = 3600
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

/** The origin every alternative caches: counted, slow, then the payload object. */
function origin (): { query: () => Promise<typeof PAYLOAD>, calls: () => number } {
  let calls = 0
  return {
    query: async () => { calls++; await sleep(QUERY_MS); return PAYLOAD },
    calls: () => calls
  }
}

function client (): Redis {
  return new Redis(process.env['REDIS_URL'] ?? 'redis://127.0.0.1:6379', { maxRetriesPerRequest: 1 })
}

function key (name: string): string {
  return `${process.env['BENCH_PREFIX'] ?? 'bench'}:${name}`
}

export type Release = () => Promise<void>

/** Hand-written in a route: GET; on a hit JSON.parse and reply the object (Fastify serialises it); on a miss, SET EX. */
export async function handwritten (app: FastifyInstance): Promise<Release> {
  const redis = client()
  const { query, calls } = origin()
  app.get('/data', async (request) => {
    const name = key(`handwritten:${benchId(request.query)}`)
    const stored = await redis.get(name)
    if (stored !== null) return JSON.parse(stored) as unknown
    const value = await query()
    await redis.set(name, JSON.stringify(value), 'EX', TTL_SECONDS)
    return value
  })
  app.get('/_bench/calls', async () => ({ calls: calls() }))
  return async () => { await redis.quit() }
}

/** bentocache getOrSet around the handler: its recommended two layers, memory (L1) then Redis (L2). */
export async function bentocache (app: FastifyInstance, layers: 'l1+l2' | 'l2'): Promise<Release> {
  const { BentoCache, bentostore } = await import('bentocache')
  const { redisDriver } = await import('bentocache/drivers/redis')
  const { memoryDriver } = await import('bentocache/drivers/memory')
  const redis = client()
  const store = layers === 'l1+l2'
    ? bentostore().useL1Layer(memoryDriver({ maxSize: '64mb' })).useL2Layer(redisDriver({ connection: redis }))
    : bentostore().useL2Layer(redisDriver({ connection: redis }))
  const bento = new BentoCache({ default: 'bench', prefix: key('bento'), stores: { bench: store } })
  const { query, calls } = origin()
  app.get('/data', async (request) => await bento.getOrSet({ key: `data:${benchId(request.query)}`, factory: query, ttl: `${TTL_SECONDS}s` }))
  app.get('/_bench/calls', async () => ({ calls: calls() }))
  return async () => { await bento.disconnectAll(); redis.disconnect() }
}

/** async-cache-dedupe with its Redis storage: a defined function called by the handler. */
export async function dedupe (app: FastifyInstance): Promise<Release> {
  const { createCache } = await import('async-cache-dedupe')
  const redis = client()
  const { query, calls } = origin()
  const cache = createCache({ ttl: TTL_SECONDS, storage: { type: 'redis', options: { client: redis } } })
    .define('data', async (_name: string) => await query())
  // Its keys are named after the function and its argument only: the argument carries the run's prefix.
  app.get('/data', async (request) => await cache.data(key(`dedupe:${benchId(request.query)}`)))
  app.get('/_bench/calls', async () => ({ calls: calls() }))
  return async () => { await redis.quit() }
}

/**
 * The node_redis calls apicache makes (it was written for node_redis 2 and 3, which no longer install on Node 20
 * cleanly): `connected`, callback-style `hgetall` answering null for a missing key, `hset`, `expire`, `del`, on ioredis.
 */
function nodeRedisShape (redis: Redis): object {
  return {
    get connected () { return redis.status === 'ready' },
    hset: (name: string, field: string, value: string) => redis.hset(name, field, value),
    expire: (name: string, seconds: number, done?: () => void) => { redis.expire(name, Math.ceil(seconds)).then(() => done?.(), () => done?.()) },
    hgetall: (name: string, done: (error: Error | null, value: Record<string, string> | null) => void) => {
      redis.hgetall(name).then((value) => done(null, Object.keys(value).length === 0 ? null : value), (error: Error) => done(error, null))
    },
    del: (name: string) => redis.del(name)
  }
}

/** apicache on Express, with its Redis option. */
export async function apicache (): Promise<{ server: Server, release: Release }> {
  const express = (await import('express')).default
  const apicacheModule = (await import('apicache')).default
  const redis = client()
  const { query, calls } = origin()
  const app = express()
  const middleware = apicacheModule.options({ redisClient: nodeRedisShape(redis) as never, appendKey: () => key('apicache') }).middleware(`${TTL_SECONDS} seconds`)
  app.get('/data', middleware, (_request, response, next) => {
    query().then((value) => { response.type('application/json').send(JSON.stringify(value)) }, next)
  })
  app.get('/_bench/calls', (_request, response) => { response.json({ calls: calls() }) })
  app.get('/', (_request, response) => { response.send('ok') })
  const server = await new Promise<Server>((resolve) => { const listening = app.listen(0, '127.0.0.1', () => resolve(listening)) })
  return { server, release: async () => { await redis.quit() } }
}
