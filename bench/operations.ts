/**
 * `npm run bench:ops [-- --ops N]`: the latency of cacheService operations on Redis, one at a time, beside Redis's
 * own round trip for the same value size, measured in the same run:
 * - `redis-benchmark -c 1 -d <bytes>` GET and SET (one connection, one request at a time: Redis's own figure);
 * - a bare ioredis GET / SET of the same bytes (the client library's round trip);
 * - cacheService.get (a hit), set, getOrCompute (a hit, and a miss that computes at once and stores).
 * Reports p50 and p99 in microseconds. The value is the 1 KB JSON object of the HTTP bench.
 * Env: REDIS_URL (redis://127.0.0.1:6379).
 */
import { execFileSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { parseArgs } from 'node:util'
import Fastify from 'fastify'
import { Redis } from 'ioredis'
import cache from '../lib/index'
import { PAYLOAD, PAYLOAD_JSON } from './payload'
import { percentile } from './statistics'

const { values: args } = parseArgs({ options: { ops: { type: 'string', default: '5000' } } })
const ops = Number(args.ops)
const redisUrl = process.env['REDIS_URL'] ?? 'redis://127.0.0.1:6379'
const prefix = `bench:ops-${randomBytes(4).toString('hex')}`

interface Row { what: string, p50: number, p99: number }

/** Runs `operation` ops times in sequence (after a tenth as warm-up) and returns its latencies' p50 and p99 in µs. */
async function timed (what: string, operation: (i: number) => Promise<unknown>): Promise<Row> {
  for (let i = 0; i < ops / 10; i++) await operation(i)
  const micros: number[] = []
  for (let i = 0; i < ops; i++) {
    const started = process.hrtime.bigint()
    await operation(i)
    micros.push(Number(process.hrtime.bigint() - started) / 1000)
  }
  return { what, p50: percentile(micros, 0.5), p99: percentile(micros, 0.99) }
}

/** redis-benchmark's own percentiles (its CSV gives them in ms) for GET and SET of `bytes`, one client. */
function redisBenchmark (bytes: number): Row[] {
  const { hostname, port } = new URL(redisUrl)
  const csv = execFileSync('redis-benchmark', ['-h', hostname, '-p', port || '6379', '-c', '1', '-n', String(ops), '-d', String(bytes), '-t', 'get,set', '--csv'], { encoding: 'utf8' })
  const rows: Row[] = []
  for (const line of csv.trim().split('\n').slice(1)) {
    const cells = line.split(',').map((cell) => cell.replace(/"/g, ''))
    // test, rps, avg, min, p50, p95, p99, max
    rows.push({ what: `redis-benchmark ${cells[0]} (Redis's own round trip)`, p50: Number(cells[4]) * 1000, p99: Number(cells[6]) * 1000 })
  }
  return rows
}

async function main (): Promise<void> {
  const raw = new Redis(redisUrl)
  // redis-benchmark writes the key `key:__rand_int__`; it is removed afterwards unless it was there before.
  const benchmarkKeyWasThere = await raw.exists('key:__rand_int__') === 1
  const rows: Row[] = redisBenchmark(PAYLOAD_JSON.length)
  if (!benchmarkKeyWasThere) await raw.del('key:__rand_int__')
  const rawKey = `${prefix}:raw`
  rows.push(await timed('ioredis SET (bare client)', () => raw.set(rawKey, PAYLOAD_JSON, 'EX', 60)))
  rows.push(await timed('ioredis GET (bare client)', () => raw.getBuffer(rawKey)))

  const app = Fastify()
  await app.register(cache, { redis: redisUrl, prefix })
  await app.ready()
  const service = app.cacheService
  rows.push(await timed('cacheService.set', () => service.set('report:1', PAYLOAD, { ttl: 60 })))
  rows.push(await timed('cacheService.set with 2 tags', () => service.set('report:2', PAYLOAD, { ttl: 60, tags: ['ws:1', 'report'] })))
  rows.push(await timed('cacheService.get (hit)', () => service.get('report:1')))
  rows.push(await timed('cacheService.get (hit, tagged entry)', () => service.get('report:2')))
  rows.push(await timed('cacheService.getOrCompute (hit)', () => service.getOrCompute('report:1', () => PAYLOAD, { ttl: 60 })))
  rows.push(await timed('cacheService.getOrCompute (miss: computes, stores)', (i) => service.getOrCompute(['miss', i], () => PAYLOAD, { ttl: 60 })))
  await service.invalidatePattern('*')
  await app.close()
  await raw.del(rawKey)
  raw.disconnect()

  const version = execFileSync('redis-server', ['--version'], { encoding: 'utf8' }).trim()
  console.log(`${ops} operations each, one at a time, value ${PAYLOAD_JSON.length} bytes of JSON; ${version.split(' ').slice(0, 3).join(' ')}; node ${process.version}\n`)
  console.log('| operation | p50 µs | p99 µs |\n| --- | ---: | ---: |')
  for (const row of rows) console.log(`| ${row.what} | ${row.p50.toFixed(0)} | ${row.p99.toFixed(0)} |`)
}

main().catch((error: unknown) => { console.error(error); process.exit(1) })
