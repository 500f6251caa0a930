/**
 * `npm run bench [-- --runs N] [-- --variants ceiling,memory] [-- --profile memory]`
 *
 * Loads every variant of bench/server.ts, each in its own server process on 127.0.0.1, with autocannon from this
 * process: start, wait until it answers, check it (hits really hit), warm up, measure, check again, kill. Repeats the
 * whole comparison N times (the order rotates from run to run) and reports per variant the medians of req/s, p50, p99
 * and of req/s as a ratio to (a) measured in the same run. Writes bench/results/latest.json and prints Markdown.
 * Env: BENCH_CONNECTIONS (50), BENCH_DURATION (10 s), BENCH_WARMUP (2 s), REDIS_URL (redis://127.0.0.1:6379),
 * BENCH_QUIET_WAIT (60 s: how long to wait at most, before each measurement, for other processes to leave the CPUs
 * idle), BENCH_RETRIES (2: measurements taken again when other processes took CPU during the load; the least
 * disturbed one is kept), BENCH_KEYS (1: how many keys the load spreads over; see bench/payload.ts).
 */
import { execFileSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs'
import { availableParallelism, cpus, totalmem } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { Redis } from 'ioredis'
import type { CacheStatsSnapshot } from '../lib/index'
import { type Measurement, type Server, askEveryKey, get, killAll, load, quiet, startServer } from './harness'
import { ALTERNATIVES, BENCH_KEYS, BENCH_PATH, PAYLOAD_BYTES, PAYLOAD_JSON, VARIANTS, type Variant, benchPath, isVariant } from './payload'
import { flameGraph } from './flame'
import { type Window, markdown, summarize } from './profile'
import { RedisCluster } from '../test/helpers/redis-cluster'
import { median } from './statistics'
import { deleteByPrefix } from '../test/helpers/redis'

const ROOT = join(__dirname, '..')
const RESULTS = join(__dirname, 'results')
const USES_REDIS: readonly Variant[] = ['redis', 'tiered', 'compressed', 'miss', 'floor', 'ioredis']
const CACHED: readonly Variant[] = ['redis', 'memory', 'tiered', 'cluster', 'compressed']
/** Cores other processes may keep busy before a measurement counts as disturbed (see measureQuietly). */
const MAX_OTHER_CORES = 0.25
const TARGETS = [
  { variant: 'redis', of: 'ceiling', min: 0.75, text: '(c) Redis hits ≥ 0.75 × (a)' },
  { variant: 'memory', of: 'ceiling', min: 0.85, text: '(d) memory hits ≥ 0.85 × (a)' },
  { variant: 'tiered', of: 'ceiling', min: 0.9, text: '(d2) in-process tier hits ≥ 0.9 × (a)' },
  { variant: 'optout', of: 'ceiling', min: 0.97, text: '(e) routes not opted in ≥ 0.97 × (a)' },
  { variant: 'ioredis', of: 'serialize', min: 0.88, text: "calibration: (f) one ioredis GET ≈ 0.88 × (a')" },
  { variant: 'miss', of: 'uncached', min: 0.97, text: '(b2) a miss costs at most 3 % over the uncached origin: req/s ≥ 0.97 × (b)' },
  { variant: 'miss', of: 'floor', min: 0.97, text: '(b2) a miss costs at most 3 % over one Redis round trip before the query: req/s ≥ 0.97 × (b3)' }
] as const

const { values: args } = parseArgs({
  options: { runs: { type: 'string', default: '1' }, variants: { type: 'string' }, profile: { type: 'string' } }
})
const settings = {
  runs: positive('--runs', args.runs),
  connections: positive('BENCH_CONNECTIONS', process.env['BENCH_CONNECTIONS'] ?? '50'),
  duration: positive('BENCH_DURATION', process.env['BENCH_DURATION'] ?? '10'),
  warmup: positive('BENCH_WARMUP', process.env['BENCH_WARMUP'] ?? '2'),
  /** Seconds to wait at most, before each measurement, for the machine to be idle (other load below 0.25 core). */
  quietWait: positive('BENCH_QUIET_WAIT', process.env['BENCH_QUIET_WAIT'] ?? '60', 0),
  /** Measurements taken again when other processes kept more than 0.25 core busy during the load. */
  retries: positive('BENCH_RETRIES', process.env['BENCH_RETRIES'] ?? '2', 0),
  pipelining: 1,
  redisUrl: process.env['REDIS_URL'] ?? 'redis://127.0.0.1:6379',
  prefix: `bench:run-${Date.now()}-${randomBytes(4).toString('hex')}`
}
const variants = chosenVariants()

function positive (name: string, text: string, min = 1): number {
  const value = Number(text)
  if (!Number.isInteger(value) || value < min) throw new Error(`${name} must be an integer ≥ ${min}, got "${text}"`)
  return value
}

function chosenVariants (): Variant[] {
  if (args.profile !== undefined) return [variantNamed(args.profile)]
  // The alternatives of bench:compare are not part of the hit-path bench unless named.
  if (args.variants === undefined) return (Object.keys(VARIANTS) as Variant[]).filter((name) => !ALTERNATIVES.includes(name))
  const chosen = new Set<Variant>(['ceiling', ...args.variants.split(',').map(variantNamed)])
  return Object.keys(VARIANTS).filter((name): name is Variant => chosen.has(name as Variant))
}

function variantNamed (name: string): Variant {
  if (!isVariant(name)) throw new Error(`unknown variant "${name}"; one of ${Object.keys(VARIANTS).join(', ')}`)
  return name
}

/** Redis's pid when it runs on this machine, to count its CPU apart from the rest. */
let redisPid = 0
/** host:port of each master of the cluster this run starts for variant (c2). */
let clusterNodes = ''

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

/** Fails loudly unless the variant answers the payload, and (c), (d) from the cache, (e) without the plugin. */
async function check (server: Server): Promise<void> {
  const fail = (why: string): never => { throw new Error(`variant ${server.variant}: ${why}`) }
  const deadline = Date.now() + 3000
  let answer = await get(server.port, BENCH_PATH)
  const cached = CACHED.includes(server.variant)
  // The first request of a cached variant is a miss, stored after it was sent: ask again until it hits.
  if (cached) {
    while (answer.headers.get('x-cache') !== 'HIT' && Date.now() < deadline) {
      await sleep(20)
      answer = await get(server.port, BENCH_PATH)
    }
  }
  if (answer.status !== 200 || answer.body !== PAYLOAD_JSON) fail(`answered ${answer.status} with a body that is not the payload`)
  if (!String(answer.headers.get('content-type')).startsWith('application/json')) fail('content-type is not JSON')
  const xCache = answer.headers.get('x-cache')
  if (cached && xCache !== 'HIT') fail(`x-cache is ${String(xCache)}, not HIT`)
  if (server.variant === 'miss' && xCache !== 'MISS') fail(`x-cache is ${String(xCache)}, not MISS`)
  // (a2) sends a hit's headers without a cache.
  if (!cached && server.variant !== 'miss' && server.variant !== 'headers' && xCache !== null) fail(`unexpected x-cache: ${xCache}`)
  if (server.variant === 'optout' && (await get(server.port, '/cached')).headers.get('x-cache') === null) {
    fail('the plugin is not active on the opted-in route /cached')
  }
}

/** After a load: every measured request of (c), (d) was a hit; (e)'s route never went through the plugin. */
async function checkStats (server: Server, measured: Measurement): Promise<void> {
  if (!CACHED.includes(server.variant) && server.variant !== 'optout' && server.variant !== 'miss') return
  const stats = JSON.parse((await get(server.port, '/_bench/stats')).body) as CacheStatsSnapshot
  const fail = (why: string): never => { throw new Error(`variant ${server.variant}: ${why} (stats ${JSON.stringify(stats)})`) }
  if (server.variant === 'miss') {
    if (stats.hits > 0 || stats.misses < measured.requests) fail('not every request was a miss')
    if (stats.errors > 0) fail('store errors')
    return
  }
  if (server.variant === 'optout') {
    if (stats.routes['/data'] !== undefined) fail('the route that did not opt in has cache counters')
    return
  }
  if (stats.misses > BENCH_KEYS || stats.stale + stats.bypass + stats.errors > 0) fail('not every request was a hit')
  if (stats.hits < measured.requests) fail(`${stats.hits} hits for ${measured.requests} measured requests`)
}

const nowUs = (): number => Number(process.hrtime.bigint() / 1000n)

/** Start, check, warm up, check, measure, check, stop. `window` is when the measured load ran (monotonic µs). */
async function measure (variant: Variant, nodeArgs: string[] = []): Promise<Measurement & { window: Window }> {
  const server = await startServer(variant, { REDIS_URL: settings.redisUrl, BENCH_PREFIX: settings.prefix, CLUSTER_NODES: clusterNodes }, nodeArgs)
  try {
    await check(server)
    if (BENCH_KEYS > 1) await askEveryKey(server.port)
    await load(server, benchPath, { connections: settings.connections, duration: settings.warmup })
    await check(server)
    const fromUs = nowUs()
    const measured = await load(server, benchPath, settings, USES_REDIS.includes(variant) ? redisPid : 0)
    const toUs = nowUs()
    await checkStats(server, measured)
    return { ...measured, window: { fromUs, toUs } }
  } finally {
    await server.stop()
  }
}

type RunResult = Partial<Record<Variant, Measurement & { ratio: number }>>

/** Keeps the least disturbed of up to 1 + BENCH_RETRIES measurements: other work on the machine skews req/s. */
async function measureQuietly (variant: Variant): Promise<Measurement> {
  let best: Measurement | undefined
  // (b) waits 20 ms per request and keeps the server mostly idle: other load hardly changes it, so it is not retried.
  const retries = variant === 'uncached' ? 0 : settings.retries
  for (let attempt = 0; attempt <= retries; attempt++) {
    const idle = await quiet(MAX_OTHER_CORES, settings.quietWait * 1000)
    if (idle >= MAX_OTHER_CORES) process.stderr.write(`(machine still busy: ${idle} cores) `)
    const { window: _window, ...measured } = await measure(variant)
    const { rps, cpu } = measured
    process.stderr.write(`${Math.round(rps)} req/s; cores busy: server ${cpu.server} (kernel ${cpu.serverKernel}), autocannon ${cpu.loader}, ` +
      `redis ${cpu.redis}, other processes ${cpu.other}\n`)
    if (best === undefined || cpu.other < best.cpu.other) best = measured
    if (cpu.other < MAX_OTHER_CORES) break
    if (attempt < retries) process.stderr.write('  other processes took CPU during the load; measuring again ... ')
  }
  return best as Measurement
}

async function runOnce (index: number): Promise<RunResult> {
  // Rotating the order spreads drift (heat, other load) over the variants instead of always on the last ones.
  const order = variants.map((_, i) => variants[(i + index) % variants.length] as Variant)
  const measured: Partial<Record<Variant, Measurement>> = {}
  for (const variant of order) {
    process.stderr.write(`run ${index + 1}/${settings.runs}: ${variant} (${VARIANTS[variant].letter}) ... `)
    measured[variant] = await measureQuietly(variant)
    await sleep(500)
  }
  const ceiling = measured.ceiling?.rps ?? NaN
  const result: RunResult = {}
  for (const variant of variants) {
    const m = measured[variant] as Measurement
    result[variant] = { ...m, ratio: m.rps / ceiling }
  }
  return result
}

interface Summary {
  rps: number
  ratio: number
  p50: number
  p99: number
  rpsMin: number
  rpsMax: number
  serverCpu: number
  /** Server CPU time per request, in µs, and the part of it in the kernel. */
  cpuUs: number
  kernelUs: number
  otherCpu: number
}

function summarise (runs: RunResult[]): Partial<Record<Variant, Summary>> {
  const out: Partial<Record<Variant, Summary>> = {}
  for (const variant of variants) {
    const all = runs.map((run) => run[variant] as Measurement & { ratio: number })
    const rps = all.map((m) => m.rps)
    out[variant] = {
      rps: median(rps),
      ratio: median(all.map((m) => m.ratio)),
      p50: median(all.map((m) => m.p50)),
      p99: median(all.map((m) => m.p99)),
      rpsMin: Math.min(...rps),
      rpsMax: Math.max(...rps),
      serverCpu: median(all.map((m) => m.cpu.server)),
      cpuUs: median(all.map((m) => 1e6 * m.cpu.server / m.rps)),
      kernelUs: median(all.map((m) => 1e6 * m.cpu.serverKernel / m.rps)),
      otherCpu: median(all.map((m) => m.cpu.other))
    }
  }
  return out
}

function targets (runs: RunResult[]) {
  return TARGETS.filter((t) => variants.includes(t.variant) && variants.includes(t.of)).map((t) => {
    const ratio = median(runs.map((run) => (run[t.variant]?.rps ?? NaN) / (run[t.of]?.rps ?? NaN)))
    return { ...t, ratio, met: ratio >= t.min }
  })
}

function report (medians: Partial<Record<Variant, Summary>>, goals: ReturnType<typeof targets>): string {
  const lines = [
    `Medians of ${settings.runs} run(s); ${settings.connections} connections, ${settings.duration} s per variant ` +
      `after ${settings.warmup} s warm-up, pipelining 1; ratio = req/s ÷ (a) req/s of the same run.`,
    'Server CPU: cores busy with the server process; µs/req: its CPU time per request (in brackets: of which in the',
    'kernel); other load: cores busy with processes other than the server, autocannon and Redis (other work on the machine).',
    '', '| | Variant | req/s | × (a) | p50 ms | p99 ms | req/s min–max | server CPU | server µs/req | other load |',
    '| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |'
  ]
  for (const variant of variants) {
    const m = medians[variant] as Summary
    lines.push(`| ${VARIANTS[variant].letter} | ${VARIANTS[variant].what} | ${Math.round(m.rps)} | ${m.ratio.toFixed(3)} | ` +
      `${m.p50.toFixed(2)} | ${m.p99.toFixed(2)} | ${Math.round(m.rpsMin)}–${Math.round(m.rpsMax)} | ` +
      `${m.serverCpu.toFixed(2)} | ${m.cpuUs.toFixed(0)} (${m.kernelUs.toFixed(0)}) | ${m.otherCpu.toFixed(2)} |`)
  }
  lines.push('', ...goals.map((g) => `- ${g.text}: ${g.ratio.toFixed(3)} → ${g.met ? 'met' : 'MISSED'}`))
  return lines.join('\n')
}

/** The commit measured, and whether lib/ differed from it (other people edit the tree while a run goes on). */
function revision (): string {
  const git = (...argv: string[]): string => execFileSync('git', argv, { cwd: ROOT, encoding: 'utf8' }).trim()
  try {
    return git('rev-parse', '--short', 'HEAD') + (git('status', '--porcelain', '--', 'lib') === '' ? '' : ' + uncommitted lib/ changes')
  } catch {
    return 'unknown'
  }
}

async function machine (redis: Redis | undefined) {
  const version = (name: string): string => JSON.parse(readFileSync(join(ROOT, 'node_modules', name, 'package.json'), 'utf8')).version
  const info = redis === undefined ? '' : await redis.info('server')
  return {
    nproc: availableParallelism(),
    cpu: cpus()[0]?.model ?? 'unknown',
    memoryGiB: Math.round(totalmem() / 2 ** 30 * 10) / 10,
    node: process.version,
    fastify: version('fastify'),
    ioredis: version('ioredis'),
    autocannon: version('autocannon'),
    redis: /redis_version:(\S+)/.exec(info)?.[1] ?? 'not used'
  }
}

async function connectRedis (): Promise<Redis | undefined> {
  if (!variants.some((variant) => USES_REDIS.includes(variant))) return undefined
  const redis = new Redis(settings.redisUrl, { lazyConnect: true, connectTimeout: 2000, maxRetriesPerRequest: 1, retryStrategy: () => null })
  redis.on('error', () => {})
  try {
    await redis.connect()
    redisPid = Number(/process_id:(\d+)/.exec(await redis.info('server'))?.[1] ?? 0)
    return redis
  } catch (error) {
    redis.disconnect()
    throw new Error(`Redis at ${settings.redisUrl} does not answer (${(error as Error).message}); start one or set REDIS_URL`)
  }
}

async function profile (variant: Variant): Promise<void> {
  const dir = join(RESULTS, 'profiles')
  mkdirSync(dir, { recursive: true })
  for (const name of readdirSync(dir)) if (name.endsWith('.cpuprofile')) rmSync(join(dir, name))
  const measured = await measure(variant, ['--cpu-prof', '--cpu-prof-dir', dir, '--cpu-prof-interval', '100'])
  // CPU.<date>.<time>.<pid>.<thread>.<seq>.cpuprofile: thread 0 is the main thread (1 is tsx's loader thread).
  const main = readdirSync(dir).find((name) => /\.\d+\.0\.\d+\.cpuprofile$/.test(name))
  const file = main === undefined ? undefined : join(dir, main)
  if (file === undefined) throw new Error(`no profile written to ${dir}`)
  console.log(`Profile of ${variant} (${VARIANTS[variant].letter}) under load: ${Math.round(measured.rps)} req/s ` +
    `(slower than unprofiled), ${settings.connections} connections, ${settings.duration} s. File: ${file}\n`)
  console.log(markdown(summarize(file, measured.window), measured.requests))
  const graph = join(RESULTS, `flame-${variant}${BENCH_KEYS > 1 ? `-${BENCH_KEYS}-keys` : ''}.svg`)
  writeFileSync(graph, flameGraph(file, `${variant} (${VARIANTS[variant].letter}) under load, ${BENCH_KEYS} key(s), ` +
    `${Math.round(measured.rps)} req/s while profiled`, measured.window))
  console.log(`\nFlame graph: ${graph}`)
}

async function benchmark (redis: Redis | undefined): Promise<void> {
  if (args.profile !== undefined) return await profile(variants[0] as Variant)
  const startedAt = new Date().toISOString()
  const revisionAtStart = revision()
  const runs: RunResult[] = []
  for (let i = 0; i < settings.runs; i++) runs.push(await runOnce(i))
  const medians = summarise(runs)
  const goals = targets(runs)
  const host = await machine(redis)
  const { prefix: _prefix, ...shown } = settings
  const finishedAt = new Date().toISOString()
  const code = { atStart: revisionAtStart, atEnd: revision() }
  const results = { startedAt, finishedAt, code, argv: process.argv.slice(2), settings: shown, payloadBytes: PAYLOAD_BYTES, machine: host, medians, targets: goals, runs }
  mkdirSync(RESULTS, { recursive: true })
  writeFileSync(join(RESULTS, 'latest.json.tmp'), JSON.stringify(results, null, 2) + '\n')
  renameSync(join(RESULTS, 'latest.json.tmp'), join(RESULTS, 'latest.json'))
  console.log(`Code: ${code.atStart}${code.atEnd === code.atStart ? '' : ` at the start, ${code.atEnd} at the end`}`)
  console.log(`Machine: ${JSON.stringify(host)}\n`)
  console.log(report(medians, goals))
}

// Bounded in time: every measurement gets the quiet wait + warm-up + duration + 20 s of slack (start, checks, stop). The watchdog and
// SIGINT/SIGTERM abort the run the same way an error does: servers killed, this run's Redis keys removed.
const budgetMs = (settings.runs * variants.length * (1 + settings.retries) * (settings.quietWait + settings.warmup + settings.duration + 20) + 30) * 1000
const aborted = new Promise<never>((_resolve, reject) => {
  setTimeout(() => reject(new Error(`over the time budget of ${budgetMs / 1000} s`)), budgetMs).unref()
  for (const signal of ['SIGINT', 'SIGTERM'] as const) process.once(signal, () => reject(new Error(`stopped by ${signal}`)))
})
process.on('exit', killAll)

async function main (): Promise<void> {
  const redis = await connectRedis()
  // Three masters on loopback ports, no replicas (a hit never writes, and replicas would only take CPU here).
  const cluster = variants.includes('cluster') ? await RedisCluster.start(undefined, { masters: 3, replicasPerMaster: 0 }) : undefined
  clusterNodes = cluster?.startupNodes.map((node) => `${node.host}:${node.port}`).join(',') ?? ''
  try {
    await Promise.race([benchmark(redis), aborted])
  } finally {
    killAll()
    await cluster?.stop()
    if (redis !== undefined) {
      process.stderr.write(`removed ${await deleteByPrefix(redis, settings.prefix)} key(s) under ${settings.prefix}\n`)
      redis.disconnect()
    }
  }
}

main().then(() => process.exit(0), (error: unknown) => {
  console.error(`bench failed: ${error instanceof Error ? error.message : String(error)}`)
  process.exit(1)
})
