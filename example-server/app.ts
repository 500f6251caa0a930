/**
 * The demo application: the specification's analytics API over a real SQL database (PGlite in this process, or
 * PostgreSQL), each route cached by the plugin with its own key, TTL and tags, behind the specification's access
 * control; its event handlers, which write and invalidate exactly what they changed; query-result caching through
 * getOrCompute; operations endpoints for an admin token; Prometheus metrics; and a live dashboard.
 * buildApp() returns the app without listening, so that tests can use inject(); server.ts makes it listen.
 */
import { randomBytes } from 'node:crypto'
import { type Static, Type } from '@sinclair/typebox'
import Fastify, { type FastifyInstance, type FastifyRequest, type FastifyServerOptions, LogController } from 'fastify'
import { Redis } from 'ioredis'
import cache, { type CacheKey, type WarmResult, type WarmTarget, stableHash } from '../lib/index'
import { AccessControl } from './auth'
import { registerDashboard } from './dashboard'
import { Analytics, type Directory, METRIC_TYPES, type MetricType, SQL, TIMEFRAMES, type Timeframe } from './db/analytics'
import { type Row, type SqlDatabase, openDatabase } from './db/database'
import { DATASET_SIZES, type DatasetOptions, type DatasetSize, type SeedReport, seedDataset } from './db/dataset'
import { ExampleMetrics } from './metrics'

export interface BuildAppOptions {
  /** A redis:// URL; the in-memory store when omitted. */
  redisUrl?: string
  /** Fastify's logger option: false (the default), true, or logger options (tests pass a stream). */
  logger?: FastifyServerOptions['logger']
  /** Namespace of the cache keys, `example` by default; tests give each app its own. */
  prefix?: string
  /**
   * Keys that encrypt the entries of the sensitive route (`/users/:userId/profile`): base64 of 32 random bytes each,
   * newest first (server.ts reads them from CACHE_ENCRYPTION_KEYS). Without any, that route is served uncached.
   */
  encryptionKeys?: string[]
  /** An open, seeded database to use (and leave open: tests share one). Otherwise the app opens and seeds its own. */
  database?: SqlDatabase
  /** For the app's own database: a postgres:// URL, else PGlite in this process. */
  databaseUrl?: string
  /** For the app's own database: the schema that holds the tables (`example_analytics` by default). */
  databaseSchema?: string
  /** For the app's own database: how much data to generate; `medium` by default. */
  dataset?: DatasetSize | DatasetOptions
  /** The operators' token (at least 16 characters); a random one when omitted (see app.adminToken). */
  adminToken?: string
  /** Warm the dashboards of every active workspace once the app is ready, in the background. */
  warmOnStart?: boolean
  /** Seconds between cleanup passes on Redis (they count the entries for the dashboard); 0 for none. */
  cleanupEverySeconds?: number
}

/** The specification's execute_query_cached: a query's rows, cached by a hash of the statement and its parameters. */
export interface ExecuteQueryCached {
  (sql: string, params: unknown[]): Promise<Row[]>
  key: (sql: string, params: unknown[]) => CacheKey
  /** Drops one cached result; resolves to how many entries existed. */
  invalidate: (sql: string, params: unknown[]) => Promise<number>
}

export interface ExampleDecorations {
  /** The database's queries, counted: tests and the dashboard read `queries` and `writes`. */
  readonly db: Analytics
  readonly executeQueryCached: ExecuteQueryCached
  readonly adminToken: string
  readonly directory: Directory
  readonly metrics: ExampleMetrics
  /** What the app generated at start, when it seeded its own database. */
  readonly seeded: SeedReport | undefined
  /** Warms the common dashboards of the given workspaces, or of every active one. */
  warmWorkspaces: (workspaceIds?: string[]) => Promise<WarmResult & { workspaces: string[] }>
}

export type ExampleApp = FastifyInstance & ExampleDecorations

/** The sensitive route: per-user personal data. */
export const PROFILE_ROUTE = '/users/:userId/profile'

// TTLs of the specification's key strategy.
const TTL_SHORT = 60
const TTL_MEDIUM = 300
const TTL_LONG = 1800

/**
 * What browsers may do with an answer, as the specification's frontend does (fresh for 5 minutes, kept for 30): fresh
 * for `maxAge`, then served at once while the browser revalidates it (ETag, If-None-Match) for `swr` more seconds.
 * Private: the answers are per user (their token), so no shared cache may keep them.
 */
const browserCache = (maxAge: number, swr: number): string => `private, max-age=${maxAge}, stale-while-revalidate=${swr}`

/** The dashboards that warming prepares, as in the specification's warm_cache: three timeframes, two views. */
export const WARM_TIMEFRAMES: readonly Timeframe[] = ['24h', '7d', '30d']

const TimeframeSchema = Type.Union(TIMEFRAMES.map((timeframe) => Type.Literal(timeframe)), { default: '7d' })
const Id = Type.String({ minLength: 1, maxLength: 64, pattern: '^[A-Za-z0-9_-]+$' })
const SkipCache = Type.Optional(Type.Boolean())
const Outcome = Type.Union([Type.Literal('success'), Type.Literal('failure'), Type.Literal('timeout')])
/** A calendar day, YYYY-MM-DD (a real one: 2024-02-30 is refused). */
const Day = Type.String({ format: 'date' })

const OverviewQuerySchema = Type.Object({ workspace_id: Id, timeframe: TimeframeSchema, skip_cache: SkipCache })
type OverviewQuery = Static<typeof OverviewQuerySchema>
const TopAgentsQuerySchema = Type.Object({
  workspace_id: Id,
  timeframe: TimeframeSchema,
  limit: Type.Integer({ minimum: 1, maximum: 50, default: 10 }),
  skip_cache: SkipCache
})
type TopAgentsQuery = Static<typeof TopAgentsQuerySchema>
const AgentParamsSchema = Type.Object({ agentId: Id })
type AgentParams = Static<typeof AgentParamsSchema>
const AgentQuerySchema = Type.Object({ timeframe: TimeframeSchema, skip_cache: SkipCache })
type AgentQuery = Static<typeof AgentQuerySchema>
const UserParamsSchema = Type.Object({ userId: Id })
type UserParams = Static<typeof UserParamsSchema>
const ActivityQuerySchema = Type.Object({ date: Day, skip_cache: SkipCache })
type ActivityQuery = Static<typeof ActivityQuerySchema>
const WorkspaceParamsSchema = Type.Object({ workspaceId: Id })
type WorkspaceParams = Static<typeof WorkspaceParamsSchema>
const MetricParamsSchema = Type.Object({ workspaceId: Id, metricType: Type.Union(METRIC_TYPES.map((type) => Type.Literal(type))) })
type MetricParams = Static<typeof MetricParamsSchema>
const MetricQuerySchema = Type.Object({ date: Day, skip_cache: SkipCache })
type MetricQuery = Static<typeof MetricQuerySchema>
const RunCountQuerySchema = Type.Object({ outcome: Type.Optional(Outcome) })
type RunCountQuery = Static<typeof RunCountQuerySchema>

const AgentRunCompletedSchema = Type.Object({
  workspace_id: Id,
  agent_id: Id,
  duration_ms: Type.Integer({ minimum: 0, maximum: 24 * 3600 * 1000 }),
  outcome: Outcome
})
type AgentRunCompleted = Static<typeof AgentRunCompletedSchema>
const UserActivityBodySchema = Type.Object({
  user_id: Id,
  workspace_id: Id,
  date: Day,
  active_minutes: Type.Integer({ minimum: 0, maximum: 1440, default: 1 })
})
type UserActivityBody = Static<typeof UserActivityBodySchema>

const InvalidateBodySchema = Type.Object({
  tags: Type.Optional(Type.Array(Type.String({ minLength: 1 }), { minItems: 1 })),
  pattern: Type.Optional(Type.String({ minLength: 1 })),
  keys: Type.Optional(Type.Array(Type.String({ minLength: 1 }), { minItems: 1 }))
}, { additionalProperties: false, minProperties: 1 })
type InvalidateBody = Static<typeof InvalidateBodySchema>
const WarmBodySchema = Type.Object({ workspace_id: Type.Optional(Id) }, { additionalProperties: false })
type WarmBody = Static<typeof WarmBodySchema>

// The key, tag and access builders run after validation, so the request has the route's shapes. They take a plain
// FastifyRequest: the plugin's KeyBuilder and TagBuilder do not accept one annotated FastifyRequest<{ ... }>.
const overviewQuery = (request: FastifyRequest): OverviewQuery => request.query as OverviewQuery
const topQuery = (request: FastifyRequest): TopAgentsQuery => request.query as TopAgentsQuery
const agentIdOf = (request: FastifyRequest): string => (request.params as AgentParams).agentId
const agentTimeframe = (request: FastifyRequest): Timeframe => (request.query as AgentQuery).timeframe
const userIdOf = (request: FastifyRequest): string => (request.params as UserParams).userId
const activityDate = (request: FastifyRequest): string => (request.query as ActivityQuery).date
const workspaceParam = (request: FastifyRequest): string => (request.params as WorkspaceParams).workspaceId
const metricParams = (request: FastifyRequest): MetricParams & MetricQuery => ({ ...(request.params as MetricParams), ...(request.query as MetricQuery) })
const completedRun = (request: FastifyRequest): AgentRunCompleted => request.body as AgentRunCompleted

/** The tags of a workspace's data: everything of it, and what agent runs or user activity change. */
export const tags = {
  workspace: (workspaceId: string) => `ws:${workspaceId}`,
  runs: (workspaceId: string) => `ws:${workspaceId}:runs`,
  users: (workspaceId: string) => `ws:${workspaceId}:users`,
  agent: (agentId: string) => `agent:${agentId}`,
  user: (userId: string) => `user:${userId}`
}

/** The specification answers cached_at: null when asked to skip the cache. */
const cachedAt = (skipCache: boolean | undefined): string | null => skipCache === true ? null : new Date().toISOString()

function notFound (message: string): { statusCode: number, error: string, message: string } {
  return { statusCode: 404, error: 'Not Found', message }
}

async function ownDatabase (options: BuildAppOptions): Promise<{ database: SqlDatabase, seeded: SeedReport }> {
  const database = await openDatabase({ url: options.databaseUrl, schema: options.databaseSchema })
  try {
    const dataset = options.dataset ?? 'medium'
    const seeded = await seedDataset(database, typeof dataset === 'string' ? DATASET_SIZES[dataset] : dataset)
    return { database, seeded }
  } catch (error) {
    await database.close()
    throw error
  }
}

export async function buildApp (options: BuildAppOptions = {}): Promise<ExampleApp> {
  // One line per request would drown the log under the load demo; the dashboard and /metrics show the traffic.
  const app: FastifyInstance = Fastify({
    logger: options.logger ?? false,
    logController: new LogController({ disableRequestLogging: true })
  })
  const adminToken = options.adminToken ?? randomBytes(24).toString('base64url')

  const encryptionKeys = options.encryptionKeys ?? []
  const encrypted = encryptionKeys.length > 0
  // The client is the example's own, so that /metrics can time each Redis command; options as the plugin's own.
  let redis: Redis | undefined
  if (options.redisUrl !== undefined) {
    redis = new Redis(options.redisUrl, {
      enableOfflineQueue: false,
      maxRetriesPerRequest: 1,
      connectTimeout: 2000,
      retryStrategy: (attempt) => Math.min(attempt * 100, 2000),
      lazyConnect: true
    })
    let lastLogged = 0
    redis.on('error', (error: Error) => {
      if (Date.now() - lastLogged < 10_000) return
      lastLogged = Date.now()
      app.log.warn({ err: error }, 'cache redis connection error; requests are served uncached until it recovers')
    })
  }
  const cleanupEvery = options.cleanupEverySeconds ?? 15
  try {
    await app.register(cache, {
      prefix: options.prefix ?? 'example',
      ...(redis === undefined ? {} : { redis }),
      ...(encrypted ? { encryption: { keys: encryptionKeys } } : {}),
      ...(redis !== undefined && cleanupEvery > 0 ? { cleanup: { intervalMs: cleanupEvery * 1000 } } : {}),
      // Only an operator may make a request skip the cache (?skip_cache=true): anyone else could load the database.
      allowBypass: (request) => request.caller?.kind === 'admin'
    })
  } catch (error) {
    redis?.disconnect()
    throw error
  }
  if (redis !== undefined) {
    const client = redis
    app.addHook('onClose', async () => { await client.quit().catch(() => client.disconnect()) })
  }
  const metrics = new ExampleMetrics(app.cacheService)
  if (redis !== undefined) metrics.instrumentRedis(redis)

  if (options.database === undefined) {
    app.log.info({ database: options.databaseUrl === undefined ? 'pglite' : 'postgres', dataset: options.dataset ?? 'medium' }, 'generating the example dataset')
  }
  const own = options.database === undefined ? await ownDatabase(options) : undefined
  if (own !== undefined) app.log.info(own.seeded, `dataset ready in ${own.seeded.durationMs} ms`)
  const database = options.database ?? own?.database
  if (database === undefined) throw new Error('unreachable: no database')
  if (own !== undefined) app.addHook('onClose', async () => { await own.database.close() })
  const db = new Analytics(database, metrics.observeQuery)
  const directory = await db.loadDirectory()
  const access = new AccessControl(directory, adminToken)
  app.decorate('db', db)
  app.decorate('adminToken', adminToken)
  app.decorate('directory', directory)
  app.decorate('metrics', metrics)
  app.decorate('seeded', own?.seeded)
  app.decorateRequest('caller', null)

  app.addHook('onResponse', async (request, reply) => {
    const route = request.routeOptions.url
    if (route === undefined) return
    const outcome = reply.getHeader('x-cache')
    metrics.observeRequest(route, typeof outcome === 'string' ? outcome : 'none', reply.elapsedTime)
  })

  // The plugin refuses a sensitive route without keys. Personal data must never reach the cache in plaintext, so
  // without keys the route is not cached at all (slower, never less safe), and the log says so once.
  if (!encrypted) {
    app.log.warn({ routes: [PROFILE_ROUTE] }, 'no cache encryption keys (CACHE_ENCRYPTION_KEYS): sensitive routes are served uncached')
  }

  // The specification's execute_query_cached: rows cached by a hash of the statement and its parameters (SHA-256, not
  // md5), through getOrCompute: concurrent callers share one query. Every statement here takes the workspace as $1,
  // so the entries carry its tags, and an agent-run event drops them along with its dashboards.
  const queryKey = (sql: string, params: unknown[]): CacheKey => ['query', 'result', stableHash({ sql, params })]
  const executeQueryCached: ExecuteQueryCached = Object.assign(
    async (sql: string, params: unknown[]) => await app.cacheService.getOrCompute(
      queryKey(sql, params),
      async () => await db.query(sql, params),
      { ttl: TTL_SHORT, tags: [tags.workspace(String(params[0])), tags.runs(String(params[0]))] }
    ),
    {
      key: queryKey,
      invalidate: async (sql: string, params: unknown[]) => await app.cacheService.invalidate([queryKey(sql, params)])
    }
  )
  app.decorate('executeQueryCached', executeQueryCached)

  const authenticated = { onRequest: access.authenticate }
  const admin = { onRequest: access.requireAdmin }

  app.get<{ Querystring: OverviewQuery }>('/executive/overview', {
    ...authenticated,
    preHandler: access.workspaceAccess((request) => overviewQuery(request).workspace_id),
    schema: { querystring: OverviewQuerySchema },
    config: {
      cache: {
        key: (request) => {
          const { workspace_id: workspaceId, timeframe } = overviewQuery(request)
          return ['exec', 'dashboard', workspaceId, timeframe]
        },
        query: ['workspace_id', 'timeframe', 'skip_cache'],
        ttl: TTL_LONG,
        staleWhileRevalidate: TTL_MEDIUM,
        tags: (request) => {
          const workspaceId = overviewQuery(request).workspace_id
          return [tags.workspace(workspaceId), tags.runs(workspaceId)]
        },
        cacheControl: browserCache(TTL_MEDIUM, TTL_LONG - TTL_MEDIUM)
      }
    }
  }, async (request) => {
    const { workspace_id: workspaceId, timeframe, skip_cache: skipCache } = request.query
    const metrics = await db.executiveMetrics(workspaceId, timeframe)
    return { workspace_id: workspaceId, timeframe, metrics, cached_at: cachedAt(skipCache) }
  })

  app.get<{ Querystring: TopAgentsQuery }>('/agents/top', {
    ...authenticated,
    preHandler: access.workspaceAccess((request) => topQuery(request).workspace_id),
    schema: { querystring: TopAgentsQuerySchema },
    config: {
      cache: {
        key: (request) => {
          const { workspace_id: workspaceId, timeframe, limit } = topQuery(request)
          return ['agent', 'top', workspaceId, timeframe, limit]
        },
        query: ['workspace_id', 'timeframe', 'limit', 'skip_cache'],
        ttl: TTL_MEDIUM,
        staleWhileRevalidate: TTL_SHORT,
        tags: (request) => {
          const workspaceId = topQuery(request).workspace_id
          return [tags.workspace(workspaceId), tags.runs(workspaceId)]
        },
        cacheControl: browserCache(TTL_SHORT, TTL_MEDIUM - TTL_SHORT)
      }
    }
  }, async (request) => {
    const { workspace_id: workspaceId, timeframe, limit, skip_cache: skipCache } = request.query
    const agents = await db.topAgents(workspaceId, timeframe, limit)
    return { workspace_id: workspaceId, timeframe, limit, agents, cached_at: cachedAt(skipCache) }
  })

  app.get<{ Params: AgentParams, Querystring: AgentQuery }>('/agents/:agentId/analytics', {
    ...authenticated,
    preHandler: access.agentAccess(agentIdOf),
    schema: { params: AgentParamsSchema, querystring: AgentQuerySchema },
    config: {
      cache: {
        key: (request) => ['agent', 'analytics', agentIdOf(request), agentTimeframe(request)],
        query: ['timeframe', 'skip_cache'],
        ttl: TTL_MEDIUM,
        // An agent's runs change its own analytics only: the workspace's `runs` tag is not on it, so one agent's run
        // leaves the other agents' entries cached. The workspace tag drops everything of the workspace.
        tags: (request) => {
          const agentId = agentIdOf(request)
          return [tags.agent(agentId), tags.workspace(access.workspaceOfAgent(agentId) ?? '-')]
        },
        cacheControl: browserCache(TTL_SHORT, TTL_MEDIUM - TTL_SHORT)
      }
    }
  }, async (request) => {
    const { agentId } = request.params
    const { timeframe, skip_cache: skipCache } = request.query
    const metrics = await db.agentAnalytics(agentId, timeframe)
    return { agent_id: agentId, workspace_id: access.workspaceOfAgent(agentId), timeframe, metrics, cached_at: cachedAt(skipCache) }
  })

  app.get<{ Params: UserParams, Querystring: ActivityQuery }>('/users/:userId/activity', {
    ...authenticated,
    preHandler: access.selfAccess(userIdOf),
    schema: { params: UserParamsSchema, querystring: ActivityQuerySchema },
    config: {
      cache: {
        key: (request) => ['user', 'activity', userIdOf(request), activityDate(request)],
        query: ['date', 'skip_cache'],
        ttl: TTL_MEDIUM,
        tags: (request) => [tags.user(userIdOf(request))],
        cacheControl: browserCache(TTL_SHORT, TTL_MEDIUM - TTL_SHORT)
      }
    }
  }, async (request) => {
    const activity = await db.userActivity(request.params.userId, request.query.date)
    return { ...activity, cached_at: cachedAt(request.query.skip_cache) }
  })

  // Personal data: with keys, its entries are AES-256-GCM ciphertext in Redis; `private, no-store` keeps browsers and
  // shared caches downstream from storing it. The user is in the key, so one user's entry is never another's.
  app.get<{ Params: UserParams }>(PROFILE_ROUTE, {
    ...authenticated,
    preHandler: access.selfAccess(userIdOf),
    schema: { params: UserParamsSchema },
    config: {
      cache: encrypted
        ? {
            sensitive: true,
            key: (request) => ['user', 'profile', userIdOf(request)],
            ttl: TTL_MEDIUM,
            tags: (request) => [tags.user(userIdOf(request))],
            cacheControl: 'private, no-store'
          }
        : false
    }
  }, async (request, reply) => {
    const profile = await db.userProfile(request.params.userId)
    if (!encrypted) reply.header('cache-control', 'private, no-store')
    if (profile === undefined) return await reply.code(404).send(notFound(`user ${request.params.userId} not found`))
    return { ...profile, cached_at: new Date().toISOString() }
  })

  app.get<{ Params: MetricParams, Querystring: MetricQuery }>('/workspaces/:workspaceId/metrics/:metricType', {
    ...authenticated,
    preHandler: access.workspaceAccess(workspaceParam),
    schema: { params: MetricParamsSchema, querystring: MetricQuerySchema },
    config: {
      cache: {
        key: (request) => {
          const { workspaceId, metricType, date } = metricParams(request)
          return ['ws', 'metrics', workspaceId, metricType, date]
        },
        query: ['date', 'skip_cache'],
        ttl: TTL_MEDIUM,
        // Active users change with user activity, the other metrics with agent runs.
        tags: (request) => {
          const { workspaceId, metricType } = metricParams(request)
          return [tags.workspace(workspaceId), metricType === 'active-users' ? tags.users(workspaceId) : tags.runs(workspaceId)]
        },
        cacheControl: browserCache(TTL_SHORT, TTL_MEDIUM - TTL_SHORT)
      }
    }
  }, async (request) => {
    const { workspaceId, metricType } = request.params
    const { date, skip_cache: skipCache } = request.query
    const values = await db.workspaceMetric(workspaceId, metricType as MetricType, date)
    return { workspace_id: workspaceId, metric_type: metricType, date, values, cached_at: cachedAt(skipCache) }
  })

  // Not route-cached: the count is cached by executeQueryCached, for TTL_SHORT seconds or until the workspace changes.
  app.get<{ Params: WorkspaceParams, Querystring: RunCountQuery }>('/workspaces/:workspaceId/run-count', {
    ...authenticated,
    preHandler: access.workspaceAccess(workspaceParam),
    schema: { params: WorkspaceParamsSchema, querystring: RunCountQuerySchema }
  }, async (request) => {
    const { workspaceId } = request.params
    const { outcome } = request.query
    const rows = outcome === undefined
      ? await executeQueryCached(SQL.runCount, [workspaceId])
      : await executeQueryCached(SQL.runCountByOutcome, [workspaceId, outcome])
    return { workspace_id: workspaceId, ...(outcome === undefined ? {} : { outcome }), run_count: Number(rows[0]?.['count'] ?? 0) }
  })

  // The workspaces the caller may read, with their agents; the operator also sees the members (the load demo uses them).
  app.get('/workspaces', authenticated, async (request) => {
    const caller = request.caller
    const agentsOf = (workspaceId: string): string[] =>
      [...directory.agents].filter(([, owner]) => owner === workspaceId).map(([agentId]) => agentId)
    const membersOf = (workspaceId: string): string[] =>
      [...directory.memberships].filter(([, workspaces]) => workspaces.has(workspaceId)).map(([userId]) => userId)
    return {
      workspaces: directory.workspaces
        .filter((workspace) => caller !== null && access.canRead(caller, workspace.id))
        .map((workspace) => ({
          ...workspace,
          agents: agentsOf(workspace.id),
          ...(caller?.kind === 'admin' ? { members: membersOf(workspace.id) } : {})
        }))
    }
  })

  // The specification's event handlers. An agent run changes its workspace's aggregates (dashboards, top agents, run
  // metrics, query results: the `runs` tag) and its own agent's analytics, and nothing else: not the other agents, not
  // the active users. The route option invalidates those tags after a 2xx answer, before it is sent, and never after
  // a 4xx (a bad body, an unknown agent).
  app.post<{ Body: AgentRunCompleted }>('/events/agent-run-completed', {
    ...authenticated,
    preHandler: access.workspaceAccess((request) => completedRun(request).workspace_id),
    schema: { body: AgentRunCompletedSchema },
    config: {
      cache: {
        invalidates: (request) => {
          const { workspace_id: workspaceId, agent_id: agentId } = completedRun(request)
          return [tags.runs(workspaceId), tags.agent(agentId)]
        }
      }
    }
  }, async (request, reply) => {
    const { workspace_id: workspaceId, agent_id: agentId, duration_ms: durationMs, outcome } = request.body
    const recorded = await db.recordRun({ workspaceId, agentId, durationMs, outcome })
    if (!recorded) return await reply.code(404).send(notFound(`agent ${agentId} not found in workspace ${workspaceId}`))
    return await reply.code(201).send({ ok: true })
  })

  // The other way, as in the specification: the handler calls invalidateTags itself, once the write is done. User
  // activity changes that user's activity and the workspace's active-user counts (DAU, WAU, MAU) only.
  app.post<{ Body: UserActivityBody }>('/events/user-activity', {
    ...authenticated,
    preHandler: access.selfAccess((request) => (request.body as UserActivityBody).user_id),
    schema: { body: UserActivityBodySchema }
  }, async (request, reply) => {
    const { user_id: userId, workspace_id: workspaceId, date, active_minutes: activeMinutes } = request.body
    const recorded = await db.recordActivity({ userId, workspaceId, date, activeMinutes })
    if (!recorded) return await reply.code(404).send(notFound(`user ${userId} is not a member of workspace ${workspaceId}`))
    await app.cacheService.invalidateTags([tags.user(userId), tags.users(workspaceId)])
    return await reply.code(201).send({ ok: true })
  })

  const warmWorkspaces = async (workspaceIds?: string[]): Promise<WarmResult & { workspaces: string[] }> => {
    const chosen = workspaceIds ?? directory.workspaces.filter((workspace) => workspace.active).map((workspace) => workspace.id)
    const headers = { authorization: `Bearer ${adminToken}` }
    const targets: WarmTarget[] = chosen.flatMap((workspaceId) => WARM_TIMEFRAMES.flatMap((timeframe) => [
      { url: `/executive/overview?workspace_id=${workspaceId}&timeframe=${timeframe}`, headers },
      { url: `/agents/top?workspace_id=${workspaceId}&timeframe=${timeframe}&limit=10`, headers }
    ]))
    const result = await app.cacheService.warm(targets, { concurrency: 4 })
    return { ...result, workspaces: chosen }
  }
  app.decorate('warmWorkspaces', warmWorkspaces)

  app.get('/cache/stats', admin, async () => await app.cacheService.stats())

  app.post<{ Body: WarmBody }>('/cache/warm', { ...admin, schema: { body: WarmBodySchema } }, async (request, reply) => {
    const workspaceId = request.body.workspace_id
    if (workspaceId !== undefined && !access.knowsWorkspace(workspaceId)) {
      return await reply.code(404).send(notFound(`workspace ${workspaceId} not found`))
    }
    return await warmWorkspaces(workspaceId === undefined ? undefined : [workspaceId])
  })

  app.post<{ Body: InvalidateBody }>('/cache/invalidate', { ...admin, schema: { body: InvalidateBodySchema } }, async (request) => {
    const { tags: tagNames, pattern, keys } = request.body
    const invalidated: { tags?: number, pattern?: number, keys?: number } = {}
    if (tagNames !== undefined) invalidated.tags = await app.cacheService.invalidateTags(tagNames)
    if (pattern !== undefined) invalidated.pattern = await app.cacheService.invalidatePattern(pattern)
    if (keys !== undefined) invalidated.keys = await app.cacheService.invalidate(keys)
    return { invalidated }
  })

  // Prometheus scrapes without a token, as usual; the figures name routes, never workspaces or users.
  app.get('/metrics', async (_request, reply) => {
    const body = await metrics.registry.metrics()
    return await reply.header('content-type', metrics.registry.contentType).send(body)
  })

  app.get('/health', async () => ({ status: 'ok', queries: db.queries }))

  await registerDashboard(app, { access, db, directory, metrics, database, requireAdmin: access.requireAdmin })

  if (options.warmOnStart === true) {
    // In the background once the app is ready (the plugin's warm.onReady does the same): listen() does not wait.
    app.addHook('onReady', async () => {
      setImmediate(() => {
        const active = directory.workspaces.filter((workspace) => workspace.active).length
        app.log.info({ workspaces: active }, 'warming the dashboards of the active workspaces')
        warmWorkspaces().then((result) => {
          app.log[result.failed > 0 ? 'warn' : 'info'](
            { workspaces: result.workspaces.length, ok: result.ok, failed: result.failed, durationMs: result.durationMs, errors: result.errors.slice(0, 3) },
            `cache warming on start done in ${result.durationMs} ms`
          )
        }, (error: unknown) => app.log.error({ err: error }, 'cache warming on start failed'))
      })
    })
  }

  // the decorators added above
  return app as ExampleApp
}
