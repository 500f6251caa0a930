import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify'
import cache, { type CachePluginOptions } from '../../lib/index'
import { createClient, deleteByPrefix, redisUrl, uniquePrefix, type Teardownable } from './redis'

/** `tiered`: Redis with the in-process tier in front of it. */
export type StoreKind = 'memory' | 'redis' | 'tiered'
export const STORE_KINDS: readonly StoreKind[] = ['memory', 'redis', 'tiered']

/**
 * The store deadline of test apps. At the default 250 ms, a stall of a CI machine running test files side by side
 * fails a store call open, which a coalescing test then sees as a second computation. Tests of deadlines set their own.
 */
const TEST_STORE_TIMEOUT_MS = 5000

/**
 * A Fastify app with the plugin registered on the given store, its own key prefix, and a teardown that closes the
 * app and deletes the prefix. Routes are declared by the caller, after this resolves.
 */
export async function cachedApp (
  t: Teardownable, kind: StoreKind, given: CachePluginOptions = {}, server: FastifyServerOptions = {}
): Promise<FastifyInstance> {
  const app = Fastify(server)
  const options = { storeTimeoutMs: TEST_STORE_TIMEOUT_MS, ...given }
  const prefix = options.prefix ?? uniquePrefix('app')
  if (kind !== 'memory') {
    const cleaner = await createClient(t)
    t.teardown(() => deleteByPrefix(cleaner, prefix))
    const tier = kind === 'tiered' ? { memory: {} } : {}
    await app.register(cache, { redis: await redisUrl(), ...tier, ...options, prefix })
  } else {
    await app.register(cache, { ...options, prefix })
  }
  t.teardown(() => app.close())
  return app
}

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

/** Misses are stored after the response has gone out: waits until the app has stored `count` responses in all. */
export async function untilStored (app: FastifyInstance, count = 1, timeoutMs = 3000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while ((await app.cacheService.stats()).stored < count) {
    if (Date.now() > deadline) throw new Error(`expected ${count} stored responses within ${timeoutMs} ms`)
    await sleep(5)
  }
}

/** Polls until check passes; fails naming what was awaited after timeoutMs. */
export async function until (what: string, check: () => boolean | Promise<boolean>, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`)
    await sleep(10)
  }
}
