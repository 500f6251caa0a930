/**
 * `npm run bench:memory [-- --entries N]`: Redis memory per cached response, beside the raw body stored as is.
 * For bodies of about 1 KB and 10 KB of analytics JSON (deterministic, varied numbers and dates, like the example
 * server's answers), stores N responses (10,000 by default) through a cached route with a workspace tag, on a
 * redis-server of its own started for the run (so that nothing else changes its figures), and reads INFO
 * used_memory before and after: bytes per entry, tag bookkeeping included. Then the same bodies with a plain SET.
 */
import { parseArgs } from 'node:util'
import Fastify from 'fastify'
import { Redis } from 'ioredis'
import cache from '../lib/index'
import { RedisProcess } from '../test/helpers/redis'

const { values: args } = parseArgs({ options: { entries: { type: 'string', default: '10000' } } })
const entries = Number(args.entries)
const CONCURRENCY = 200

/** A small deterministic PRNG (mulberry32), so that every run stores the same bodies. */
function random (seed: number): () => number {
  let state = seed >>> 0
  return () => {
    state = (state + 0x6d2b79f5) >>> 0
    let x = Math.imul(state ^ (state >>> 15), 1 | state)
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296
  }
}

/** An analytics answer of about `bytes` bytes of JSON: totals, then daily rows until the size is reached. */
export function analyticsBody (id: number, bytes: number): string {
  const next = random(id + 1)
  const body = {
    workspace_id: `ws${id % 50}`,
    agent_id: `ws${id % 50}-agent${id}`,
    timeframe: '30d',
    metrics: {
      total_runs: Math.floor(next() * 100_000),
      success_rate: Math.round(next() * 10_000) / 10_000,
      avg_duration_ms: Math.round(next() * 50_000) / 10,
      p95_duration_ms: Math.round(next() * 200_000) / 10
    },
    daily: [] as Array<{ date: string, runs: number, failures: number, avg_ms: number }>,
    cached_at: new Date(1_790_000_000_000 + id * 1000).toISOString()
  }
  for (let day = 0; JSON.stringify(body).length < bytes; day++) {
    body.daily.push({
      date: new Date(1_780_000_000_000 + day * 86_400_000).toISOString().slice(0, 10),
      runs: Math.floor(next() * 5000),
      failures: Math.floor(next() * 200),
      avg_ms: Math.round(next() * 50_000) / 10
    })
  }
  return JSON.stringify(body)
}

async function usedMemory (client: Redis): Promise<number> {
  return Number(/used_memory:(\d+)/.exec(await client.info('memory'))?.[1])
}

async function measure (server: RedisProcess, size: number): Promise<string> {
  const client = new Redis(server.url)
  const bodies = Array.from({ length: entries }, (_, i) => analyticsBody(i, size))
  const rawBytes = bodies.reduce((sum, body) => sum + Buffer.byteLength(body), 0) / entries

  const app = Fastify()
  // Memory is measured, not latency: a generous deadline, so that a busy machine cannot make stores fail.
  await app.register(cache, { redis: server.url, prefix: `mem${size}`, storeTimeoutMs: 10_000 })
  app.get<{ Params: { id: string } }>('/agents/:id/analytics', {
    config: {
      cache: {
        ttl: 3600,
        // The key a route declares, as the specification's key strategy does.
        key: (request) => ['agent', 'analytics', (request.params as { id: string }).id, '30d'],
        tags: (request) => [`ws:${Number((request.params as { id: string }).id) % 50}`]
      }
    }
  }, async (request, reply) => reply.type('application/json').send(bodies[Number(request.params.id)]))
  await app.ready()
  const before = await usedMemory(client)
  for (let i = 0; i < entries; i += CONCURRENCY) {
    await Promise.all(Array.from({ length: Math.min(CONCURRENCY, entries - i) }, (_, j) => app.inject(`/agents/${i + j}/analytics`)))
  }
  const deadline = Date.now() + 30_000
  while ((await app.cacheService.stats()).stored < entries) {
    if (Date.now() > deadline) throw new Error(`not every response was stored: ${JSON.stringify(await app.cacheService.stats()).slice(0, 300)}`)
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  const cached = (await usedMemory(client) - before) / entries
  const sample = await app.inject({ url: '/agents/1/analytics', headers: { 'accept-encoding': 'br, gzip' } })
  await app.close()

  const rawBefore = await usedMemory(client)
  for (let i = 0; i < entries; i += CONCURRENCY) {
    const pipeline = client.pipeline()
    for (let j = i; j < Math.min(entries, i + CONCURRENCY); j++) pipeline.set(`raw${size}:agent:analytics:${j}`, bodies[j], 'EX', 3600)
    await pipeline.exec()
  }
  const raw = (await usedMemory(client) - rawBefore) / entries
  client.disconnect()
  return `| ${size.toLocaleString('en')} | ${rawBytes.toFixed(0)} | ${raw.toFixed(0)} | ${cached.toFixed(0)} | ${(cached / raw).toFixed(2)} | ${String(sample.headers['content-encoding'] ?? 'identity')} |`
}

async function main (): Promise<void> {
  const server = await RedisProcess.start()
  try {
    const rows = [await measure(server, 1024), await measure(server, 10 * 1024)]
    console.log(`${entries.toLocaleString('en')} entries per size, each with one of 50 workspace tags; a redis-server of its own; node ${process.version}\n`)
    console.log('| body target bytes | body bytes (mean) | Redis bytes per key, raw SET | Redis bytes per entry, plugin | plugin ÷ raw | a hit for `accept-encoding: br` is sent as |')
    console.log('| ---: | ---: | ---: | ---: | ---: | --- |')
    for (const row of rows) console.log(row)
  } finally {
    await server.stop()
  }
}

main().catch((error: unknown) => { console.error(error); process.exit(1) })
