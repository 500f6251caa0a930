/**
 * `node --import tsx bench/invalidation.ts`
 *
 * Invalidation cost with a large unrelated keyspace: loads 1,000,000 unrelated keys into Redis (under their own
 * unique prefix, with a 1 hour TTL as a safety net), stores through `app.cacheService` 100 entries tagged `t100`
 * (`exec:dashboard:ws42:<i>`) and 10,000 other entries tagged `t10k` plus a per-workspace tag, then times:
 *   - invalidateTags('t100'), re-creating the 100 entries before each run;
 *   - invalidatePattern('exec:dashboard:ws42:*') on the same data, re-creating them before each run;
 *   - a soft invalidateTags('t100', { soft: true });
 *   - invalidateTags('t10k') once (10,000 entries).
 * Each repeated operation gets one untimed warm-up run, then BENCH_RUNS timed runs (median, min, max). The table is
 * printed and written to bench/results/invalidation.md with the machine facts.
 * Env: REDIS_URL (redis://127.0.0.1:6379), BENCH_NOISE_KEYS (1000000), BENCH_RUNS (7).
 * Refuses to run when loading the keys could push Redis past 1 GiB or past its maxmemory. Everything it created is
 * deleted at the end, even on error or Ctrl-C, with SCAN MATCH on its two prefixes + UNLINK (never FLUSHALL/KEYS).
 */
import { randomBytes } from 'node:crypto'
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { availableParallelism, loadavg } from 'node:os'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import Fastify, { type FastifyInstance } from 'fastify'
import { Redis } from 'ioredis'
import cache from '../lib/index'
import { median } from './statistics'
import { deleteByPrefix } from '../test/helpers/redis'

const REDIS_URL = process.env['REDIS_URL'] || 'redis://127.0.0.1:6379'
const NOISE_KEYS = positive('BENCH_NOISE_KEYS', '1000000')
const RUNS = positive('BENCH_RUNS', '7')
const ID = randomBytes(6).toString('hex')
const PREFIX = `bench:inv:${ID}`
const NOISE_PREFIX = `bench:noise:${ID}`
const NOISE_VALUE = 'noise-0123456789'
const NOISE_TTL_SECONDS = 3600
const LOAD_BATCH = 10_000
/** Plugin entries outlive the whole run, so that nothing expires between storing and invalidating. */
const ENTRY_TTL_SECONDS = 3600
/** invalidatePattern SCANs the whole keyspace: far beyond the plugin's default 250 ms store deadline. */
const STORE_TIMEOUT_MS = 60_000
const TAG_ENTRIES = 100
const OTHER_ENTRIES = 10_000
const OTHER_WORKSPACES = 100
const SET_CONCURRENCY = 500
const MEMORY_LIMIT_BYTES = 1024 ** 3
/** A generous estimate of one small key with a TTL (dict entries, key, value object, expires entry, table slots). */
const ESTIMATED_BYTES_PER_KEY = 200
const ESTIMATED_BYTES_PER_ENTRY = 1024
const RESULTS = join(__dirname, 'results', 'invalidation.md')
const COMMAND = 'node --import tsx bench/invalidation.ts'

function positive (name: string, fallback: string): number {
  const text = process.env[name] || fallback
  const value = Number(text)
  if (!Number.isInteger(value) || value < 1) throw new Error(`${name} must be a positive integer, got ${text}`)
  return value
}

let stopping = false
function checkStop (): void {
  if (stopping) throw new Error('interrupted')
}

interface Row {
  operation: string
  counts: number[]
  times: number[]
}

const ms = (value: number): string => value.toFixed(2)

function table (rows: Row[]): string {
  const lines = [
    '| operation | entries invalidated | runs | median ms | min ms | max ms |',
    '| --- | ---: | ---: | ---: | ---: | ---: |'
  ]
  for (const row of rows) {
    const low = Math.min(...row.counts)
    const high = Math.max(...row.counts)
    const counts = low === high ? String(low) : `${low}–${high}`
    lines.push(`| ${row.operation} | ${counts} | ${row.times.length} | ${ms(median(row.times))} | ${ms(Math.min(...row.times))} | ${ms(Math.max(...row.times))} |`)
  }
  return lines.join('\n')
}

function infoField (text: string, name: string): string {
  const match = new RegExp(`^${name}:(.*)$`, 'm').exec(text)
  return match === null ? '' : match[1].trim()
}

async function usedMemory (client: Redis): Promise<{ used: number, human: string, max: number, policy: string }> {
  const text = await client.info('memory')
  return {
    used: Number(infoField(text, 'used_memory')),
    human: infoField(text, 'used_memory_human'),
    max: Number(infoField(text, 'maxmemory')),
    policy: infoField(text, 'maxmemory_policy')
  }
}

const mib = (bytes: number): string => `${(bytes / 1024 ** 2).toFixed(1)} MiB`

/** Refuses to run when the load could push Redis past MEMORY_LIMIT_BYTES or near its maxmemory. */
async function checkMemory (client: Redis): Promise<void> {
  const memory = await usedMemory(client)
  const projected = memory.used + NOISE_KEYS * ESTIMATED_BYTES_PER_KEY + (OTHER_ENTRIES + TAG_ENTRIES) * ESTIMATED_BYTES_PER_ENTRY
  console.log(`redis used_memory ${memory.human} (${memory.used} bytes), maxmemory ${memory.max === 0 ? 'unset' : mib(memory.max)} (${memory.policy}); projected after load ≈ ${mib(projected)}`)
  if (projected > MEMORY_LIMIT_BYTES) {
    throw new Error(`refusing to run: loading ${NOISE_KEYS} keys could push used_memory to ${mib(projected)}, beyond ${mib(MEMORY_LIMIT_BYTES)}`)
  }
  if (memory.max !== 0 && projected > memory.max * 0.75) {
    throw new Error(`refusing to run: maxmemory is ${mib(memory.max)} (${memory.policy}), too low for ${mib(projected)}; eviction or OOM errors would hit other users`)
  }
}

/** SETs the unrelated keys with a TTL in pipelines of LOAD_BATCH, watching used_memory as it goes. */
async function loadNoise (client: Redis): Promise<void> {
  const started = performance.now()
  for (let first = 0; first < NOISE_KEYS; first += LOAD_BATCH) {
    checkStop()
    const pipeline = client.pipeline()
    for (let n = first; n < Math.min(first + LOAD_BATCH, NOISE_KEYS); n++) {
      pipeline.set(`${NOISE_PREFIX}:${n}`, NOISE_VALUE, 'EX', NOISE_TTL_SECONDS)
    }
    const results = await pipeline.exec() ?? []
    const failed = results.find(([error]) => error !== null)?.[0]
    if (failed !== undefined && failed !== null) throw failed
    if ((first / LOAD_BATCH) % 10 === 9) {
      const { used } = await usedMemory(client)
      if (used > MEMORY_LIMIT_BYTES) throw new Error(`used_memory reached ${mib(used)} while loading; stopping`)
    }
  }
  console.log(`loaded ${NOISE_KEYS} unrelated keys in ${((performance.now() - started) / 1000).toFixed(1)} s`)
}

async function cleanUp (client: Redis): Promise<void> {
  const started = performance.now()
  const noise = await deleteByPrefix(client, NOISE_PREFIX)
  const own = await deleteByPrefix(client, PREFIX)
  console.log(`cleanup: unlinked ${noise} unrelated keys and ${own} plugin keys in ${((performance.now() - started) / 1000).toFixed(1)} s`)
}

const tagKey = (i: number): string => `exec:dashboard:ws42:${i}`
const entryValue = (i: number): { id: number, rows: Array<{ metric: string, value: number }> } =>
  ({ id: i, rows: [{ metric: 'runs', value: i * 7 }, { metric: 'failures', value: i % 3 }, { metric: 'p95', value: 120 + i }] })

async function createTagEntries (app: FastifyInstance): Promise<void> {
  await Promise.all(Array.from({ length: TAG_ENTRIES }, (_, i) => app.cacheService.set(tagKey(i), entryValue(i), { tags: ['t100'] })))
}

/** 10,000 entries over 100 other workspaces (ws100..ws199), all tagged t10k plus their workspace's tag. */
async function createOtherEntries (app: FastifyInstance): Promise<void> {
  for (let first = 0; first < OTHER_ENTRIES; first += SET_CONCURRENCY) {
    checkStop()
    await Promise.all(Array.from({ length: Math.min(SET_CONCURRENCY, OTHER_ENTRIES - first) }, (_, k) => {
      const j = first + k
      const workspace = 100 + (j % OTHER_WORKSPACES)
      const key = `exec:dashboard:ws${workspace}:${Math.floor(j / OTHER_WORKSPACES)}`
      return app.cacheService.set(key, entryValue(j), { tags: ['t10k', `ws${workspace}`] })
    }))
  }
}

async function timed (operation: () => Promise<number>): Promise<{ count: number, time: number }> {
  const started = performance.now()
  const count = await operation()
  return { count, time: performance.now() - started }
}

/** One untimed warm-up, then RUNS timed runs, each after prepare(). */
async function repeat (name: string, prepare: () => Promise<void>, operation: () => Promise<number>): Promise<Row> {
  const row: Row = { operation: name, counts: [], times: [] }
  for (let run = 0; run <= RUNS; run++) {
    checkStop()
    await prepare()
    const { count, time } = await timed(operation)
    if (run === 0) continue
    row.counts.push(count)
    row.times.push(time)
    console.log(`  ${name} run ${run}: ${count} entries in ${ms(time)} ms`)
  }
  return row
}

function machineFacts (redisInfo: string, dbsize: number, memoryBefore: string, memoryLoaded: string, load: number[]): string[] {
  const cpuinfo = readFileSync('/proc/cpuinfo', 'utf8')
  const model = /^model name\s*:\s*(.*)$/m.exec(cpuinfo)?.[1].trim() ?? 'unknown'
  return [
    `- nproc: ${availableParallelism()}`,
    `- CPU: ${model}`,
    `- Node: ${process.version}`,
    `- Redis: ${infoField(redisInfo, 'redis_version')} at ${REDIS_URL.replace(/\/\/[^@]*@/, '//')}`,
    `- Keys in the db during the run (DBSIZE): ${dbsize.toLocaleString('en-US')}`,
    `- Redis used_memory: ${memoryBefore} before loading, ${memoryLoaded} with the keys loaded`,
    `- Load average at start: ${load.map((value) => value.toFixed(2)).join(' ')} (a shared, noisy box: other work was running)`
  ]
}

async function main (): Promise<void> {
  const load = loadavg()
  const client = new Redis(REDIS_URL, { maxRetriesPerRequest: 1 })
  let app: FastifyInstance | undefined
  try {
    await checkMemory(client)
    const memoryBefore = (await usedMemory(client)).human
    console.log(`prefixes: ${PREFIX} (plugin), ${NOISE_PREFIX} (unrelated keys)`)
    await loadNoise(client)

    app = Fastify({ logger: false })
    await app.register(cache, { redis: REDIS_URL, prefix: PREFIX, ttl: ENTRY_TTL_SECONDS, storeTimeoutMs: STORE_TIMEOUT_MS })
    await app.ready()
    const service = app.cacheService
    const started = performance.now()
    await createOtherEntries(app)
    await createTagEntries(app)
    console.log(`stored ${OTHER_ENTRIES + TAG_ENTRIES} plugin entries in ${((performance.now() - started) / 1000).toFixed(1)} s`)

    const memoryLoaded = (await usedMemory(client)).human
    const dbsize = await client.dbsize()
    const redisInfo = await client.info('server')
    console.log(`DBSIZE ${dbsize}, used_memory ${memoryLoaded}`)

    const rows: Row[] = []
    const create = (): Promise<void> => createTagEntries(app as FastifyInstance)
    console.log('invalidateTags t100 (hard)')
    rows.push(await repeat("`invalidateTags('t100')`", create, () => service.invalidateTags('t100')))
    console.log('invalidatePattern exec:dashboard:ws42:*')
    rows.push(await repeat("`invalidatePattern('exec:dashboard:ws42:*')`", create, () => service.invalidatePattern('exec:dashboard:ws42:*')))
    console.log('invalidateTags t100 (soft)')
    await create()
    rows.push(await repeat("`invalidateTags('t100', { soft: true })`", async () => {}, () => service.invalidateTags('t100', { soft: true })))
    console.log('invalidateTags t10k (hard, once)')
    checkStop()
    const big = await timed(() => service.invalidateTags('t10k'))
    rows.push({ operation: "`invalidateTags('t10k')`", counts: [big.count], times: [big.time] })

    const text = table(rows)
    console.log('\n' + text + '\n')
    const report = [
      `# Invalidation beside ${NOISE_KEYS.toLocaleString('en-US')} unrelated keys`,
      '',
      `Run ${new Date().toISOString()} with \`${COMMAND}\`.`,
      '',
      text,
      '',
      `Repeated operations: one untimed warm-up, then ${RUNS} timed runs; the 100 \`exec:dashboard:ws42:<i>\` entries ` +
        '(tag `t100`) are re-created before each hard or pattern run. Soft runs mark the same 100 entries stale each ' +
        `time. \`t10k\` tags ${OTHER_ENTRIES.toLocaleString('en-US')} other entries (ws100..ws199), invalidated once at ` +
        'the end. Times are wall-clock around the `app.cacheService` call (performance.now), Redis on the same host.',
      '',
      `The plugin was registered with \`{ redis, prefix, ttl: ${ENTRY_TTL_SECONDS}, storeTimeoutMs: ${STORE_TIMEOUT_MS} }\`: ` +
        'invalidatePattern SCANs the whole keyspace, which takes longer than the default 250 ms store deadline here.',
      '',
      '## Machine',
      '',
      ...machineFacts(redisInfo, dbsize, memoryBefore, memoryLoaded, load),
      ''
    ].join('\n')
    mkdirSync(join(__dirname, 'results'), { recursive: true })
    writeFileSync(RESULTS, report)
    console.log(`written to ${RESULTS}`)
  } finally {
    if (app !== undefined) await app.close().catch((error: unknown) => console.error('closing the app failed:', error))
    await cleanUp(client).catch((error: unknown) => console.error(`cleanup failed (keys expire within ${NOISE_TTL_SECONDS} s):`, error))
    await client.quit().catch(() => client.disconnect())
  }
}

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    if (stopping) {
      console.error(`second ${signal}: exiting without cleanup; the keys expire within ${NOISE_TTL_SECONDS} s`)
      process.exit(130)
    }
    stopping = true
    console.error(`${signal}: stopping after the current step and cleaning up`)
  })
}

main().then(() => process.exit(0), (error: unknown) => {
  console.error(error)
  process.exit(1)
})
