/**
 * `npm run bench:bus [-- --rounds N]`: how long after an invalidation on one instance the others serve fresh data.
 *
 * Starts three app processes (test/fixtures/instance-worker.ts: Redis with the in-process tier, memory.ttl 300 s, so
 * only the bus can make a change visible in time) on 127.0.0.1. Each round: every instance holds the value in its
 * tier (checked: a HIT), one instance (in turn) changes the origin and invalidates the tag, and this process polls
 * the two others back to back until each serves the new value. Reports, per reader, the delay from the end of the
 * invalidating request (its response received), and from its start, to the first fresh response: median, p90, max.
 * Env: REDIS_URL (redis://127.0.0.1:6379).
 */
import { performance } from 'node:perf_hooks'
import { randomBytes } from 'node:crypto'
import { parseArgs } from 'node:util'
import { Redis } from 'ioredis'
import { deleteByPrefix } from '../test/helpers/redis'
import { startWorker } from '../test/helpers/workers'
import { percentile } from './statistics'

const { values: args } = parseArgs({ options: { rounds: { type: 'string', default: '60' } } })
const rounds = Number(args.rounds)
const redisUrl = process.env['REDIS_URL'] ?? 'redis://127.0.0.1:6379'
const prefix = `bench:bus-${randomBytes(4).toString('hex')}`
/** Bounded: a reader that never sees the change fails the run instead of spinning. */
const GIVE_UP_MS = 5000

const teardowns: Array<() => unknown> = []
const owner = { teardown: (fn: () => unknown) => { teardowns.push(fn) } }

async function read (port: number): Promise<{ value: string | null, cache: string | null }> {
  const response = await fetch(`http://127.0.0.1:${port}/value/1`)
  return { value: ((await response.json()) as { value: string | null }).value, cache: response.headers.get('x-cache') }
}

async function change (port: number, value: string): Promise<void> {
  const response = await fetch(`http://127.0.0.1:${port}/change/1`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ value })
  })
  if (response.status !== 200) throw new Error(`change answered ${response.status}`)
}

/** Every instance serves `value` from its own tier. */
async function heldEverywhere (ports: number[], value: string): Promise<void> {
  for (const port of ports) {
    const deadline = Date.now() + GIVE_UP_MS
    for (;;) {
      const answer = await read(port)
      if (answer.value === value && answer.cache === 'HIT') break
      if (Date.now() > deadline) throw new Error(`port ${port} does not hold ${value}`)
    }
  }
}

async function firstFresh (port: number, value: string, since: number): Promise<number> {
  for (;;) {
    if ((await read(port)).value === value) return performance.now() - since
    if (performance.now() - since > GIVE_UP_MS) throw new Error(`port ${port} did not serve ${value} within ${GIVE_UP_MS} ms`)
  }
}

async function main (): Promise<void> {
  const env = { REDIS_URL: redisUrl, CACHE_PREFIX: prefix, WORKER_LIFETIME_MS: String(10 * 60_000) }
  const ports = await Promise.all([0, 1, 2].map(() => startWorker(owner, 'instance-worker', env)))
  await change(ports[0], 'v0')
  await heldEverywhere(ports, 'v0')
  const delays: number[] = []
  const fromStart: number[] = []
  for (let round = 1; round <= rounds; round++) {
    const value = `v${round}`
    const writer = ports[round % 3]
    const readers = ports.filter((port) => port !== writer)
    const started = performance.now()
    await change(writer, value)
    const since = performance.now()
    const fresh = await Promise.all(readers.map((port) => firstFresh(port, value, since)))
    delays.push(...fresh)
    fromStart.push(...fresh.map((delay) => delay + since - started))
    await heldEverywhere(ports, value)
  }
  const ms = (x: number): string => x.toFixed(2)
  const row = (what: string, values: number[]): string =>
    `| ${what} | ${values.length} | ${ms(percentile(values, 0.5))} | ${ms(percentile(values, 0.9))} | ${ms(Math.max(...values))} |`
  console.log(`3 instances, ${rounds} rounds, 2 readers a round\n
| delay to the first fresh response, from | samples | median ms | p90 ms | max ms |
| --- | ---: | ---: | ---: | ---: |
${row('the invalidating request\'s response', delays)}
${row('the start of the invalidating request', fromStart)}`)
}

main().catch((error: unknown) => {
  console.error(error)
  process.exitCode = 1
}).finally(async () => {
  for (const fn of teardowns) await fn()
  const client = new Redis(redisUrl)
  await deleteByPrefix(client, prefix)
  client.disconnect()
})
