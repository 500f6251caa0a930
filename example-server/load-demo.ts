/**
 * `npm run demo:load`: replays a dashboard workload against the example server for a bounded time and prints what
 * the cache did. Workspaces, timeframes, agents, users and days are drawn from Zipf distributions (a few are hot, most
 * are cold, as in real traffic), readers use their own workspace's tokens, and bursts of agent-run and user-activity
 * events invalidate what they change while the load runs.
 *
 * BASE_URL (and ADMIN_TOKEN, for the server's figures) to load a running server; otherwise one is started in this
 * process (PGlite, DATASET_SIZE, medium by default; REDIS_URL and DATABASE_URL as for npm start).
 * DURATION (seconds, 20), CONCURRENCY (16), BURST_EVERY (seconds between event bursts, 2), SEED (1).
 */
import { buildApp } from './app'
import { demoToken, datasetSize, seededRandom } from './db/dataset'

export interface LoadOptions {
  base: string
  adminToken: string
  durationMs: number
  concurrency: number
  /** Milliseconds between bursts of events; 0 for none. */
  burstEveryMs?: number
  seed?: number
  onProgress?: (progress: LoadProgress) => void
  /** Stops early when aborted. */
  signal?: AbortSignal
}

export interface LoadProgress {
  elapsedMs: number
  durationMs: number
  requests: number
  hits: number
  misses: number
}

export interface LoadReport {
  durationMs: number
  requests: number
  /** Responses by x-cache (HIT, STALE, MISS, BYPASS, none), errors apart. */
  outcomes: Record<string, number>
  errors: number
  /** Events sent (agent runs and user activity). */
  events: number
  /** (HIT + STALE) / (HIT + STALE + MISS), as the client saw it. */
  hitRate: number
  /** Distinct cache keys the workload asked for (a first request for each is a miss by nature). */
  distinctRequests: number
  /** Read queries the database ran during the load, and the estimate of what it would have run without the cache. */
  dbQueries: number
  dbQueriesWithoutCache: number
  latencyMs: { p50: number, p90: number, p99: number, max: number }
  /** Tag invalidations the events caused during the load. */
  invalidations: number
}

interface WorkspaceInfo { id: string, active: boolean, agents: string[], members?: string[] }
interface Summary { database: { queries: number }, cache: { hits: number, misses: number, stale: number, invalidations: number } }

const TIMEFRAMES = ['7d', '24h', '30d', '90d'] // by popularity
const OUTCOMES = ['success', 'success', 'success', 'success', 'failure', 'timeout']

/** A Zipf(s) sampler over ranks 0..n-1 (rank 0 the most frequent). */
function zipf (n: number, s: number, random: () => number): () => number {
  const weights = Array.from({ length: n }, (_, k) => 1 / Math.pow(k + 1, s))
  const total = weights.reduce((sum, w) => sum + w, 0)
  const cumulative: number[] = []
  let acc = 0
  for (const w of weights) cumulative.push(acc += w / total)
  return () => {
    const r = random()
    const index = cumulative.findIndex((c) => r <= c)
    return index === -1 ? n - 1 : index
  }
}

function pick<T> (items: readonly T[], rank: () => number): T {
  const item = items[Math.min(items.length - 1, rank())]
  if (item === undefined) throw new Error('nothing to pick from')
  return item
}

function percentile (sorted: number[], q: number): number {
  if (sorted.length === 0) return 0
  return Math.round((sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)] ?? 0) * 10) / 10
}

function day (daysAgo: number): string {
  return new Date(Date.now() - daysAgo * 86400_000).toISOString().slice(0, 10)
}

async function json<T> (base: string, path: string, token: string): Promise<T> {
  const response = await fetch(`${base}${path}`, { headers: { authorization: `Bearer ${token}` } })
  if (!response.ok) throw new Error(`${path}: ${response.status} ${await response.text()}`)
  return await response.json() as T
}

export async function runLoad (options: LoadOptions): Promise<LoadReport> {
  const { base, adminToken, durationMs, concurrency } = options
  const random = seededRandom(options.seed ?? 1)
  const { workspaces: all } = await json<{ workspaces: WorkspaceInfo[] }>(base, '/workspaces', adminToken)
  // Popularity is not alphabetical: shuffle the active workspaces once (deterministically), then rank them.
  const workspaces = all.filter((workspace) => workspace.active && (workspace.members?.length ?? 0) > 0)
    .map((workspace) => ({ workspace, order: random() })).sort((a, b) => a.order - b.order).map(({ workspace }) => workspace)
  if (workspaces.length === 0) throw new Error('the server has no active workspace with members')
  const workspaceRank = zipf(workspaces.length, 1.1, random)
  const timeframeRank = zipf(TIMEFRAMES.length, 1.2, random)
  const dayRank = zipf(7, 1.5, random)
  const agentRanks = new Map(workspaces.map((workspace) => [workspace.id, zipf(workspace.agents.length, 1.0, random)]))
  const memberRanks = new Map(workspaces.map((workspace) => [workspace.id, zipf(workspace.members?.length ?? 1, 1.0, random)]))

  const request = (): { path: string, token: string } => {
    const workspace = pick(workspaces, workspaceRank)
    const members = workspace.members ?? []
    const user = pick(members, memberRanks.get(workspace.id) ?? (() => 0))
    const token = demoToken(user)
    const timeframe = pick(TIMEFRAMES, timeframeRank)
    const roll = random()
    if (roll < 0.45) return { path: `/executive/overview?workspace_id=${workspace.id}&timeframe=${timeframe}`, token }
    if (roll < 0.65) return { path: `/agents/top?workspace_id=${workspace.id}&timeframe=${timeframe}`, token }
    if (roll < 0.85) {
      const agent = pick(workspace.agents, agentRanks.get(workspace.id) ?? (() => 0))
      return { path: `/agents/${agent}/analytics?timeframe=${timeframe}`, token }
    }
    if (roll < 0.95) {
      const type = random() < 0.5 ? 'runs' : random() < 0.5 ? 'active-users' : 'durations'
      return { path: `/workspaces/${workspace.id}/metrics/${type}?date=${day(dayRank())}`, token }
    }
    return { path: `/users/${user}/activity?date=${day(dayRank())}`, token }
  }

  const before = await json<Summary>(base, '/dashboard/summary', adminToken)
  const latencies: number[] = []
  const outcomes: Record<string, number> = {}
  const distinct = new Set<string>()
  let errors = 0
  let events = 0
  const started = performance.now()
  const deadline = started + durationMs
  const running = (): boolean => performance.now() < deadline && options.signal?.aborted !== true

  const reader = async (): Promise<void> => {
    while (running()) {
      const { path, token } = request()
      distinct.add(path)
      const sent = performance.now()
      try {
        const response = await fetch(`${base}${path}`, { headers: { authorization: `Bearer ${token}` } })
        await response.arrayBuffer()
        latencies.push(performance.now() - sent)
        if (response.status >= 400) errors++
        else {
          const outcome = response.headers.get('x-cache') ?? 'none'
          outcomes[outcome] = (outcomes[outcome] ?? 0) + 1
        }
      } catch {
        errors++
      }
    }
  }

  const post = async (path: string, body: object): Promise<void> => {
    const response = await fetch(`${base}${path}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${adminToken}`, 'content-type': 'application/json' },
      body: JSON.stringify(body)
    })
    await response.arrayBuffer()
    if (response.ok) events++
    else errors++
  }

  // Bursts: a workspace's agents finish a few runs at once, and a few of its users are active.
  const burster = async (): Promise<void> => {
    const every = options.burstEveryMs ?? 2000
    if (every <= 0) return
    while (running()) {
      await new Promise((resolve) => setTimeout(resolve, every))
      if (!running()) return
      const workspace = pick(workspaces, workspaceRank)
      const runs = 3 + Math.floor(random() * 10)
      const burst: Array<Promise<void>> = []
      for (let i = 0; i < runs; i++) {
        const agent = pick(workspace.agents, agentRanks.get(workspace.id) ?? (() => 0))
        burst.push(post('/events/agent-run-completed', {
          workspace_id: workspace.id, agent_id: agent, duration_ms: 200 + Math.floor(random() * 9000), outcome: pick(OUTCOMES, () => Math.floor(random() * OUTCOMES.length))
        }))
      }
      for (let i = 0; i < 2; i++) {
        const user = pick(workspace.members ?? [], memberRanks.get(workspace.id) ?? (() => 0))
        burst.push(post('/events/user-activity', { user_id: user, workspace_id: workspace.id, date: day(0), active_minutes: 1 + Math.floor(random() * 30) }))
      }
      await Promise.all(burst).catch(() => { errors++ })
    }
  }

  const progress = setInterval(() => {
    options.onProgress?.({
      elapsedMs: Math.min(durationMs, performance.now() - started),
      durationMs,
      requests: latencies.length,
      hits: (outcomes['HIT'] ?? 0) + (outcomes['STALE'] ?? 0),
      misses: outcomes['MISS'] ?? 0
    })
  }, 250)
  try {
    await Promise.all([...Array.from({ length: concurrency }, reader), burster()])
  } finally {
    clearInterval(progress)
  }
  const elapsed = performance.now() - started
  const after = await json<Summary>(base, '/dashboard/summary', adminToken)

  const sorted = latencies.sort((a, b) => a - b)
  const hits = (outcomes['HIT'] ?? 0) + (outcomes['STALE'] ?? 0)
  const misses = outcomes['MISS'] ?? 0
  const dbQueries = after.database.queries - before.database.queries
  // Each miss ran the route's queries; without the cache every cached answer would have too.
  const perMiss = misses === 0 ? 0 : dbQueries / misses
  return {
    durationMs: Math.round(elapsed),
    requests: latencies.length,
    outcomes,
    errors,
    events,
    hitRate: hits + misses === 0 ? 0 : hits / (hits + misses),
    distinctRequests: distinct.size,
    dbQueries,
    dbQueriesWithoutCache: Math.round(dbQueries + hits * perMiss),
    latencyMs: { p50: percentile(sorted, 0.5), p90: percentile(sorted, 0.9), p99: percentile(sorted, 0.99), max: percentile(sorted, 1) },
    invalidations: after.cache.invalidations - before.cache.invalidations
  }
}

function bar (progress: LoadProgress): string {
  const width = 30
  const done = Math.round(width * progress.elapsedMs / progress.durationMs)
  const lookups = progress.hits + progress.misses
  const rate = lookups === 0 ? '  –  ' : `${(progress.hits / lookups * 100).toFixed(1)}%`
  return `[${'#'.repeat(done)}${'-'.repeat(width - done)}] ${(progress.elapsedMs / 1000).toFixed(1)}/${progress.durationMs / 1000} s  ` +
    `${progress.requests} requests  hit rate ${rate}`
}

export function formatReport (report: LoadReport): string {
  const saved = report.dbQueriesWithoutCache - report.dbQueries
  const lines = [
    `requests          ${report.requests} in ${(report.durationMs / 1000).toFixed(1)} s (${Math.round(report.requests / report.durationMs * 1000)}/s), ${report.errors} errors`,
    `x-cache           ${Object.entries(report.outcomes).map(([name, count]) => `${name} ${count}`).join(', ')}`,
    `hit rate          ${(report.hitRate * 100).toFixed(1)}%  (target > 80%)`,
    `database queries  ${report.dbQueries} run, about ${report.dbQueriesWithoutCache} without the cache: ${saved} saved (${report.dbQueriesWithoutCache === 0 ? 0 : Math.round(saved / report.dbQueriesWithoutCache * 100)}%)`,
    `latency           p50 ${report.latencyMs.p50} ms, p90 ${report.latencyMs.p90} ms, p99 ${report.latencyMs.p99} ms, max ${report.latencyMs.max} ms`,
    `misses, why       ${report.distinctRequests} distinct requests (each one's first is a miss unless warmed); ` +
      `${report.events} events caused ${report.invalidations} tag invalidations`
  ]
  return lines.join('\n')
}

function numberFrom (name: string, fallback: number): number {
  const value = process.env[name]
  if (value === undefined || value === '') return fallback
  const number = Number(value)
  if (!Number.isFinite(number) || number < 0) throw new Error(`${name} must be a non-negative number, got ${JSON.stringify(value)}`)
  return number
}

async function main (): Promise<void> {
  const durationMs = numberFrom('DURATION', 20) * 1000
  const concurrency = Math.max(1, Math.floor(numberFrom('CONCURRENCY', 16)))
  const burstEveryMs = numberFrom('BURST_EVERY', 2) * 1000
  const seed = numberFrom('SEED', 1)
  let base = process.env['BASE_URL'] ?? ''
  let adminToken = process.env['ADMIN_TOKEN'] ?? ''
  let close = async (): Promise<void> => {}
  if (base === '') {
    const dataset = datasetSize(process.env['DATASET_SIZE'])
    process.stderr.write(`starting the example server in this process (${process.env['DATABASE_URL'] ? 'PostgreSQL' : 'PGlite'}, ${dataset} dataset, ${process.env['REDIS_URL'] ? 'Redis' : 'memory store'})...\n`)
    const app = await buildApp({
      dataset,
      databaseUrl: process.env['DATABASE_URL'] || undefined,
      redisUrl: process.env['REDIS_URL'] || undefined
    })
    base = await app.listen({ port: 0, host: '127.0.0.1' })
    adminToken = app.adminToken
    close = async () => { await app.close() }
    const warmed = await app.warmWorkspaces()
    process.stderr.write(`${base}: dataset ${JSON.stringify(app.seeded)}; warmed ${warmed.ok} entries of ${warmed.workspaces.length} active workspaces in ${warmed.durationMs} ms\n`)
  } else if (adminToken === '') {
    throw new Error('with BASE_URL, set ADMIN_TOKEN to the server\'s admin token (the demo reads its figures and sends events)')
  }

  const tty = process.stderr.isTTY
  let lastLine = 0
  process.stderr.write(`loading ${base} for ${durationMs / 1000} s with ${concurrency} readers, a burst of events every ${burstEveryMs / 1000} s\n`)
  try {
    const report = await runLoad({
      base,
      adminToken,
      durationMs,
      concurrency,
      burstEveryMs,
      seed,
      onProgress: (progress) => {
        if (tty) process.stderr.write(`\r${bar(progress)}`)
        else if (progress.elapsedMs - lastLine >= 5000) {
          lastLine = progress.elapsedMs
          process.stderr.write(`${bar(progress)}\n`)
        }
      }
    })
    if (tty) process.stderr.write('\n')
    process.stdout.write(`${formatReport(report)}\n`)
  } finally {
    await close()
  }
}

if (require.main === module) {
  main().catch((error: unknown) => {
    console.error(error)
    process.exit(1)
  })
}
