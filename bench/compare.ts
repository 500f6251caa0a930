/**
 * `npm run bench:compare [-- --runs 3] [-- --variants redis,dedupe]`: the plugin beside the ways people cache a Fastify (or Express) route today,
 * in one run, on the same machine, Redis and load. For bodies of 1 KB and 50 KB of JSON, each variant runs in its
 * own server process (bench/server.ts; the alternatives are in bench/alternatives.ts): start, check the payload,
 * warm up, count the origin's calls, measure, check that the measured load never reached the origin, stop. The order
 * rotates from run to run; the report gives medians of req/s, p50, p99, p99.9 and RSS, each also as a ratio to the
 * ceiling (a) of the same run, writes bench/results/compare.json and draws bench/results/compare.svg (compare-N-keys.*
 * with BENCH_KEYS=N).
 * Env: BENCH_CONNECTIONS (50), BENCH_DURATION (8 s), BENCH_WARMUP (2 s), REDIS_URL (redis://127.0.0.1:6379),
 * BENCH_KEYS (1: how many keys the load spreads over; see bench/payload.ts).
 */
import { randomBytes } from 'node:crypto'
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { isDeepStrictEqual, parseArgs } from 'node:util'
import { Redis } from 'ioredis'
import { type Measurement, askEveryKey, get, killAll, load, startServer } from './harness'
import { BENCH_KEYS, BENCH_PATH, VARIANTS, type Variant, benchPath, buildPayload } from './payload'
import { median } from './statistics'
import { unlinkMatching } from '../test/helpers/redis'

const ALL: readonly Variant[] = [
  'ceiling', 'serialize', 'uncached', 'memory', 'redis', 'tiered', 'ioredis', 'handwritten', 'bentocache', 'bentocache-l2', 'dedupe', 'apicache'
]
/** Variants that serve from the plugin: their counters must show hits only. */
const PLUGIN: readonly Variant[] = ['memory', 'redis', 'tiered']
const SIZES = [1024, 50 * 1024]
const RESULTS = join(__dirname, 'results')
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

const { values: args } = parseArgs({ options: { runs: { type: 'string', default: '3' }, variants: { type: 'string' } } })
/** All of them, or the ceiling and those named with --variants (a quicker look at a few). */
const COMPARED: readonly Variant[] = args.variants === undefined
  ? ALL
  : ALL.filter((variant) => variant === 'ceiling' || (args.variants ?? '').split(',').includes(variant))
const runs = Number(args.runs)
const settings = {
  connections: Number(process.env['BENCH_CONNECTIONS'] ?? 50),
  duration: Number(process.env['BENCH_DURATION'] ?? 8),
  warmup: Number(process.env['BENCH_WARMUP'] ?? 2)
}
const redisUrl = process.env['REDIS_URL'] ?? 'redis://127.0.0.1:6379'
const prefix = `bench:compare-${randomBytes(4).toString('hex')}`

interface Row { rps: number, p50: number, p99: number, p999: number, rss: number }

async function originCalls (port: number, variant: Variant): Promise<number> {
  if (PLUGIN.includes(variant)) {
    const stats = JSON.parse((await get(port, '/_bench/stats')).body) as { misses: number }
    return stats.misses
  }
  if (!['handwritten', 'bentocache', 'bentocache-l2', 'dedupe', 'apicache'].includes(variant)) return 0
  return (JSON.parse((await get(port, '/_bench/calls')).body) as { calls: number }).calls
}

async function measure (variant: Variant, bytes: number): Promise<Measurement> {
  const server = await startServer(variant, { REDIS_URL: redisUrl, BENCH_PREFIX: `${prefix}:${bytes}`, BENCH_BODY_BYTES: String(bytes) })
  try {
    const expected = JSON.stringify(buildPayload(bytes))
    let answer = await get(server.port, BENCH_PATH)
    // The first request of a cached variant is a miss, stored after it was sent: ask again until it hits.
    const deadline = Date.now() + 3000
    while (PLUGIN.includes(variant) && answer.headers.get('x-cache') !== 'HIT' && Date.now() < deadline) {
      await sleep(20)
      answer = await get(server.port, BENCH_PATH)
    }
    // The same document; a library may serialise its keys in another order (async-cache-dedupe sorts them).
    const same = (body: string): boolean => isDeepStrictEqual(JSON.parse(body), JSON.parse(expected))
    if (answer.status !== 200 || !same(answer.body)) throw new Error(`${variant}: not the ${bytes}-byte payload (status ${answer.status})`)
    if (BENCH_KEYS > 1) await askEveryKey(server.port)
    await load(server, benchPath, { connections: settings.connections, duration: settings.warmup })
    if (!same((await get(server.port, BENCH_PATH)).body)) throw new Error(`${variant}: a hit is not the payload`)
    const before = await originCalls(server.port, variant)
    const measured = await load(server, benchPath, settings)
    const after = await originCalls(server.port, variant)
    if (variant !== 'uncached' && after !== before) throw new Error(`${variant}: ${after - before} measured requests reached the origin`)
    return measured
  } finally {
    await server.stop()
  }
}

type Table = Map<Variant, Row & { ratio: number }>

async function compare (bytes: number): Promise<Table> {
  const perRun: Array<Map<Variant, Measurement>> = []
  for (let run = 0; run < runs; run++) {
    const order = [...COMPARED.slice(run % COMPARED.length), ...COMPARED.slice(0, run % COMPARED.length)]
    const results = new Map<Variant, Measurement>()
    for (const variant of order) {
      process.stderr.write(`${bytes} B, run ${run + 1}/${runs}: ${variant} ... `)
      const measured = await measure(variant, bytes)
      process.stderr.write(`${Math.round(measured.rps)} req/s\n`)
      results.set(variant, measured)
    }
    perRun.push(results)
  }
  const table: Table = new Map()
  for (const variant of COMPARED) {
    const of = (pick: (m: Measurement) => number): number => median(perRun.map((run) => pick(run.get(variant) as Measurement)))
    const ratio = median(perRun.map((run) => (run.get(variant) as Measurement).rps / (run.get('ceiling') as Measurement).rps))
    table.set(variant, { rps: of((m) => m.rps), p50: of((m) => m.p50), p99: of((m) => m.p99), p999: of((m) => m.p999), rss: of((m) => m.rss), ratio })
  }
  return table
}

function markdown (bytes: number, table: Table): string {
  const ceiling = table.get('ceiling') as Row
  const lines = [
    `Body ${bytes.toLocaleString('en')} bytes; medians of ${runs} runs; ratios to (a) of the same run (req/s) or to (a)'s median (latency, RSS).\n`,
    '| | variant | req/s | × (a) | p50 ms | p99 ms | p99.9 ms | p99 × (a) | RSS MiB | RSS × (a) |',
    '| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |'
  ]
  for (const [variant, row] of table) {
    lines.push(`| ${VARIANTS[variant].letter} | ${VARIANTS[variant].what} | ${Math.round(row.rps).toLocaleString('en')} | ${row.ratio.toFixed(3)} | ` +
      `${row.p50.toFixed(2)} | ${row.p99.toFixed(2)} | ${row.p999.toFixed(2)} | ${(row.p99 / ceiling.p99).toFixed(2)} | ` +
      `${(row.rss / 2 ** 20).toFixed(0)} | ${(row.rss / ceiling.rss).toFixed(2)} |`)
  }
  return lines.join('\n')
}

/** Horizontal bars of req/s as a ratio to the ceiling, one group per body size. */
function chart (tables: Array<[number, Table]>): string {
  const barHeight = 16
  const gap = 4
  const labelWidth = 300
  const plotWidth = 460
  const rows = COMPARED.filter((variant) => variant !== 'ceiling')
  const groupHeight = rows.length * (barHeight + gap) + 40
  const height = tables.length * groupHeight + 40
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${labelWidth + plotWidth + 80}" height="${height}" font-family="sans-serif" font-size="12">`,
    '<rect width="100%" height="100%" fill="#ffffff"/>',
    `<text x="10" y="20" font-size="14" font-weight="bold">req/s as a ratio to the ceiling (a), medians of ${runs} runs, ${BENCH_KEYS === 1 ? 'one key' : `${BENCH_KEYS} keys`}</text>`
  ]
  tables.forEach(([bytes, table], group) => {
    const top = 40 + group * groupHeight
    parts.push(`<text x="10" y="${top + 12}" font-weight="bold">${bytes.toLocaleString('en')}-byte body</text>`)
    rows.forEach((variant, i) => {
      const row = table.get(variant) as Row & { ratio: number }
      const y = top + 22 + i * (barHeight + gap)
      const width = Math.max(1, Math.min(1.2, row.ratio) / 1.2 * plotWidth)
      const fill = PLUGIN.includes(variant) ? '#2f855a' : '#718096'
      parts.push(`<text x="${labelWidth - 6}" y="${y + 12}" text-anchor="end">(${VARIANTS[variant].letter}) ${variant}</text>`)
      parts.push(`<rect x="${labelWidth}" y="${y}" width="${width.toFixed(1)}" height="${barHeight}" fill="${fill}"/>`)
      parts.push(`<text x="${(labelWidth + width + 4).toFixed(1)}" y="${y + 12}">${row.ratio.toFixed(2)}</text>`)
    })
    const one = labelWidth + plotWidth / 1.2
    parts.push(`<line x1="${one}" y1="${top + 18}" x2="${one}" y2="${top + 22 + rows.length * (barHeight + gap)}" stroke="#c53030" stroke-dasharray="4 3"/>`)
  })
  parts.push('</svg>')
  return parts.join('\n')
}

async function main (): Promise<void> {
  const tables: Array<[number, Table]> = []
  try {
    for (const bytes of SIZES) tables.push([bytes, await compare(bytes)])
  } finally {
    killAll()
    const redis = new Redis(redisUrl)
    // Every library's keys hold the run's prefix somewhere (async-cache-dedupe's after the function's name).
    await unlinkMatching(redis, `*${prefix}*`)
    redis.disconnect()
  }
  mkdirSync(RESULTS, { recursive: true })
  // A load over many keys, or a few variants, is a result of its own: it does not replace the full one-key chart.
  const name = ['compare', ...BENCH_KEYS === 1 ? [] : [`${BENCH_KEYS}-keys`], ...COMPARED === ALL ? [] : COMPARED.filter((v) => v !== 'ceiling')].join('-')
  writeFileSync(join(RESULTS, `${name}.json`), JSON.stringify({ settings, keys: BENCH_KEYS, runs, tables: tables.map(([bytes, table]) => ({ bytes, rows: Object.fromEntries(table) })) }, null, 2) + '\n')
  writeFileSync(join(RESULTS, `${name}.svg`), chart(tables) + '\n')
  const spread = BENCH_KEYS === 1 ? 'one key' : `${BENCH_KEYS} keys, no two requests in flight on one key`
  console.log(`${settings.connections} connections, ${settings.duration} s per variant after ${settings.warmup} s of warm-up, ${spread}; node ${process.version}\n`)
  for (const [bytes, table] of tables) console.log(markdown(bytes, table) + '\n')
}

process.on('exit', killAll)
main().then(() => process.exit(0), (error: unknown) => {
  console.error(`bench:compare failed: ${error instanceof Error ? error.message : String(error)}`)
  process.exit(1)
})
