/**
 * `node --import tsx bench/warm.ts`
 *
 * Cache warming against a real Redis: an app whose cached route waits 20 ms per request (the origin), warmed with
 * 1,000 distinct URL targets at concurrency 50, three times (fresh URLs each run, so every run warms cold entries),
 * then the same for 1,000 key/compute targets whose compute waits 20 ms. Prints each run and the median; the floor
 * is targets / concurrency × 20 ms = 400 ms. Exits 1 when a target failed or the median reaches 30 s.
 * Env: REDIS_URL (redis://127.0.0.1:6379), BENCH_WARM_TARGETS (1000), BENCH_WARM_CONCURRENCY (50), BENCH_WARM_RUNS (3).
 * Keys live under a unique prefix, deleted with SCAN + UNLINK at the end (never FLUSHALL).
 */
import { randomBytes } from 'node:crypto'
import Fastify, { type FastifyInstance } from 'fastify'
import { Redis } from 'ioredis'
import cache from '../lib/index'
import { type WarmDeps, type WarmResult, type WarmTarget, warmTargets } from '../lib/warm'
import { median } from './statistics'
import { deleteByPrefix } from '../test/helpers/redis'

const REDIS_URL = process.env['REDIS_URL'] || 'redis://127.0.0.1:6379'
const TARGETS = positive('BENCH_WARM_TARGETS', '1000')
const CONCURRENCY = positive('BENCH_WARM_CONCURRENCY', '50')
const RUNS = positive('BENCH_WARM_RUNS', '3')
const ORIGIN_MS = 20
const LIMIT_MS = 30_000
const PREFIX = `bench:warm:${randomBytes(6).toString('hex')}`

function positive (name: string, fallback: string): number {
  const text = process.env[name] || fallback
  const value = Number(text)
  if (!Number.isInteger(value) || value < 1) throw new Error(`${name} must be a positive integer, got ${text}`)
  return value
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

async function buildApp (): Promise<FastifyInstance> {
  const app = Fastify({ logger: { level: 'warn' } })
  await app.register(cache, { redis: REDIS_URL, prefix: PREFIX, ttl: 600 })
  app.get('/origin/:id', { config: { cache: true } }, async (request) => {
    await sleep(ORIGIN_MS)
    return { id: (request.params as { id: string }).id, at: Date.now() }
  })
  await app.ready()
  return app
}

/**
 * Responses are stored after they were sent: waits until the app has stored `count` in all, or until the count has
 * not moved for 2 s (a write that failed, e.g. timed out on a busy machine, is never stored). How many, and the wait.
 */
async function untilStored (app: FastifyInstance, count: number): Promise<{ stored: number, ms: number }> {
  const start = performance.now()
  let stored = 0
  let movedAt = start
  for (;;) {
    const now = (await app.cacheService.stats()).stored
    if (now !== stored) movedAt = performance.now()
    stored = now
    if (stored >= count || performance.now() - movedAt > 2000) return { stored, ms: performance.now() - start }
    await sleep(2)
  }
}

function check (label: string, result: WarmResult): void {
  if (result.failed === 0 && result.ok === TARGETS) return
  console.error(`${label}: ${result.ok} ok, ${result.failed} failed`, result.errors.slice(0, 5))
  process.exitCode = 1
}

async function benchUrls (app: FastifyInstance, deps: WarmDeps): Promise<number[]> {
  const durations: number[] = []
  for (let run = 0; run < RUNS; run++) {
    const targets: WarmTarget[] = Array.from({ length: TARGETS }, (_, i) => `/origin/r${run}-${i}`)
    const before = (await app.cacheService.stats()).stored
    const result = await warmTargets(deps, targets, { concurrency: CONCURRENCY })
    check(`URL run ${run + 1}`, result)
    const { stored, ms } = await untilStored(app, before + TARGETS)
    if (stored < before + TARGETS) {
      console.error(`URL run ${run + 1}: only ${stored - before} of ${TARGETS} warmed responses were stored ` +
        '(the plugin logged why: store writes that failed or timed out)')
      process.exitCode = 1
    }
    const probe = await app.inject(`/origin/r${run}-${TARGETS - 1}`)
    if (probe.headers['x-cache'] !== 'HIT') {
      console.error(`URL run ${run + 1}: a warmed URL is not a hit (${String(probe.headers['x-cache'])})`)
      process.exitCode = 1
    }
    durations.push(result.durationMs)
    console.log(`  URL run ${run + 1}: ${result.durationMs} ms (${result.ok} ok, ${result.failed} failed; ` +
      `${Math.min(stored - before, TARGETS)} stored, the last ${ms.toFixed(0)} ms later)`)
  }
  return durations
}

async function benchKeys (app: FastifyInstance, deps: WarmDeps): Promise<number[]> {
  const durations: number[] = []
  for (let run = 0; run < RUNS; run++) {
    const targets: WarmTarget[] = Array.from({ length: TARGETS }, (_, i) => ({
      key: ['bench', run, i],
      compute: async () => { await sleep(ORIGIN_MS); return { run, i } },
      tags: ['bench']
    }))
    const result = await warmTargets(deps, targets, { concurrency: CONCURRENCY })
    check(`key run ${run + 1}`, result)
    const last = await app.cacheService.get<{ i: number }>(['bench', run, TARGETS - 1])
    if (last?.i !== TARGETS - 1) {
      console.error(`key run ${run + 1}: a warmed key is not readable`)
      process.exitCode = 1
    }
    durations.push(result.durationMs)
    console.log(`  key/compute run ${run + 1}: ${result.durationMs} ms (${result.ok} ok, ${result.failed} failed)`)
  }
  return durations
}

async function main (): Promise<void> {
  const floor = Math.ceil(TARGETS / CONCURRENCY) * ORIGIN_MS
  console.log(`cache warming: ${TARGETS} targets, concurrency ${CONCURRENCY}, origin ${ORIGIN_MS} ms, ` +
    `${RUNS} runs; Redis ${REDIS_URL}, prefix ${PREFIX}; floor ${floor} ms`)
  const cleaner = new Redis(REDIS_URL, { lazyConnect: true, maxRetriesPerRequest: 1 })
  await cleaner.connect()
  let app: FastifyInstance | undefined
  try {
    app = await buildApp()
    const deps: WarmDeps = { inject: app.inject.bind(app), service: app.cacheService }
    const urls = median(await benchUrls(app, deps))
    const keys = median(await benchKeys(app, deps))
    console.log(`median, ${TARGETS} URL targets:         ${urls} ms (${(floor / urls * 100).toFixed(0)}% of the ideal rate)`)
    console.log(`median, ${TARGETS} key/compute targets: ${keys} ms (${(floor / keys * 100).toFixed(0)}% of the ideal rate)`)
    const verdict = Math.max(urls, keys) < LIMIT_MS ? 'met' : 'MISSED'
    console.log(`target (well under ${LIMIT_MS / 1000} s): ${verdict}`)
    if (verdict !== 'met') process.exitCode = 1
  } finally {
    await app?.close()
    const deleted = await deleteByPrefix(cleaner, PREFIX)
    console.log(`cleaned up ${deleted} keys under ${PREFIX}`)
    await cleaner.quit()
  }
}

main().catch((error: unknown) => {
  console.error(error)
  process.exitCode = 1
})
