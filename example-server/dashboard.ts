/**
 * The live dashboard: GET / (a page, its script and its style, plain files, no build step) and the JSON it polls,
 * GET /dashboard/summary (admin token). The page's own files are cached by the plugin like any route, so browsers get
 * max-age, stale-while-revalidate and an ETag to revalidate with.
 */
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { AccessControl } from './auth'
import type { Analytics, Directory } from './db/analytics'
import type { SqlDatabase } from './db/database'
import type { ExampleMetrics } from './metrics'

export interface DashboardDeps {
  access: AccessControl
  db: Analytics
  directory: Directory
  metrics: ExampleMetrics
  database: SqlDatabase
  requireAdmin: (request: FastifyRequest, reply: FastifyReply) => Promise<void>
}

const PUBLIC = join(__dirname, 'public')
const ASSETS: Record<string, { file: string, type: string }> = {
  '/': { file: 'index.html', type: 'text/html; charset=utf-8' },
  '/dashboard.js': { file: 'dashboard.js', type: 'text/javascript; charset=utf-8' },
  '/dashboard.css': { file: 'dashboard.css', type: 'text/css; charset=utf-8' }
}

/** The routes whose figures the dashboard shows: the cached analytics API. */
const NON_API = new Set(['/', '/dashboard.js', '/dashboard.css'])

export async function registerDashboard (app: FastifyInstance, deps: DashboardDeps): Promise<void> {
  const started = Date.now()
  for (const [url, asset] of Object.entries(ASSETS)) {
    const body = await readFile(join(PUBLIC, asset.file))
    app.get(url, {
      config: { cache: { key: ['static', asset.file], ttl: 60, staleWhileRevalidate: 600 } }
    }, async (_request, reply) => await reply.type(asset.type).send(body))
  }

  app.get('/dashboard/summary', { onRequest: deps.requireAdmin }, async (_request, reply) => {
    const stats = await app.cacheService.stats()
    const latency = deps.metrics.latency()
    const routes = Object.entries(stats.routes)
      .filter(([route]) => !NON_API.has(route))
      .map(([route, counters]) => ({ route, ...counters, latency: latency[route] ?? {} }))
    const store = stats.store
    reply.header('cache-control', 'no-store')
    return {
      at: new Date().toISOString(),
      uptimeSeconds: Math.round((Date.now() - started) / 1000),
      cache: {
        hits: stats.hits,
        misses: stats.misses,
        stale: stats.stale,
        bypass: stats.bypass,
        errors: stats.errors,
        stored: stats.stored,
        hitRate: stats.hitRate,
        lastWarm: stats.lastWarm,
        invalidations: Object.values(stats.invalidations).reduce((sum, count) => sum + count, 0)
      },
      store: {
        kind: store.kind,
        entries: store['entries'] ?? store['entriesCounted'] ?? null,
        bytes: store['bytes'] ?? store['bytesCounted'] ?? null,
        usedMemory: store['used_memory_human'] ?? null
      },
      database: { kind: deps.database.kind, queries: deps.db.queries, writes: deps.db.writes, queryMs: Math.round(deps.db.queryMs) },
      latency: latency['*'] ?? {},
      routes,
      workspaces: deps.directory.workspaces
    }
  })
}
