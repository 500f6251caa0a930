/**
 * The demo application: the specification's analytics endpoints over a slow data source, cached by the plugin, its
 * event handlers that write and invalidate, and its query-result caching (execute_query_cached).
 * buildApp() returns the app without listening, so that tests can use inject(); server.ts makes it listen.
 */
import { type Static, Type } from '@sinclair/typebox'
import Fastify, { type FastifyInstance, type FastifyRequest, type FastifyServerOptions } from 'fastify'
import cache, { type CachedFunction, stableHash } from '../lib/index'
import { AnalyticsDatabase, type QueryRow, SQL, workspaceOfAgent } from './data'

export interface BuildAppOptions {
  /** A redis:// URL; the in-memory store when omitted. */
  redisUrl?: string
  /** Fastify's logger option: false (the default), true, or logger options (tests pass a stream). */
  logger?: FastifyServerOptions['logger']
  /** How long each query of the data source takes; 150 ms by default. */
  queryDelayMs?: number
  /** Namespace of the cache keys, `example` by default; tests give each app its own. */
  prefix?: string
  /**
   * Keys that encrypt the entries of the sensitive route (`/users/:userId/profile`): base64 of 32 random bytes each,
   * newest first (server.ts reads them from CACHE_ENCRYPTION_KEYS). Without any, that route is served uncached.
   */
  encryptionKeys?: string[]
}

/** The specification's execute_query_cached: a query's rows, cached by its statement and parameters. */
export type ExecuteQueryCached = CachedFunction<[sql: string, params: unknown[]], QueryRow[]>

/**
 * The app, with the data source it queries, so that tests can count the queries, and the cached query function, so
 * that they can invalidate one of its entries.
 */
export type ExampleApp = FastifyInstance & { readonly db: AnalyticsDatabase, readonly executeQueryCached: ExecuteQueryCached }

/** The sensitive route: per-user personal data. */
export const PROFILE_ROUTE = '/users/:userId/profile'

// TTLs of the specification's key strategy.
const TTL_SHORT = 60
const TTL_MEDIUM = 300
const TTL_LONG = 1800

const Timeframe = Type.Union([Type.Literal('24h'), Type.Literal('7d'), Type.Literal('30d'), Type.Literal('90d')], { default: '7d' })
const Id = Type.String({ minLength: 1, maxLength: 64 })

const OverviewQuerySchema = Type.Object({ workspace_id: Id, timeframe: Timeframe })
type OverviewQuery = Static<typeof OverviewQuerySchema>

const AgentParamsSchema = Type.Object({ agentId: Id })
type AgentParams = Static<typeof AgentParamsSchema>
const AgentQuerySchema = Type.Object({ timeframe: Timeframe })
type AgentQuery = Static<typeof AgentQuerySchema>

const Outcome = Type.Union([Type.Literal('success'), Type.Literal('failure'), Type.Literal('timeout')])
/** A calendar day, YYYY-MM-DD (a real one: 2024-02-30 is refused). */
const Day = Type.String({ format: 'date' })

const AgentRunCompletedSchema = Type.Object({
  workspace_id: Id,
  agent_id: Id,
  duration_ms: Type.Integer({ minimum: 0, maximum: 24 * 3600 * 1000 }),
  outcome: Outcome
})
type AgentRunCompleted = Static<typeof AgentRunCompletedSchema>

const UserActivityBodySchema = Type.Object({ user_id: Id, workspace_id: Id, date: Day })
type UserActivityBody = Static<typeof UserActivityBodySchema>

const UserParamsSchema = Type.Object({ userId: Id })
type UserParams = Static<typeof UserParamsSchema>
const ActivityQuerySchema = Type.Object({ date: Day })
type ActivityQuery = Static<typeof ActivityQuerySchema>

const WorkspaceParamsSchema = Type.Object({ workspaceId: Id })
type WorkspaceParams = Static<typeof WorkspaceParamsSchema>
const RunCountQuerySchema = Type.Object({ outcome: Type.Optional(Outcome) })
type RunCountQuery = Static<typeof RunCountQuerySchema>

const InvalidateBodySchema = Type.Object({
  tags: Type.Optional(Type.Array(Type.String({ minLength: 1 }), { minItems: 1 })),
  pattern: Type.Optional(Type.String({ minLength: 1 })),
  keys: Type.Optional(Type.Array(Type.String({ minLength: 1 }), { minItems: 1 }))
}, { additionalProperties: false, minProperties: 1 })
type InvalidateBody = Static<typeof InvalidateBodySchema>

// The key and tag builders run in the handler, after validation, so the request has the route's shapes. They take a
// plain FastifyRequest: the plugin's KeyBuilder and TagBuilder do not accept one annotated FastifyRequest<{ ... }>.
const overviewQuery = (request: FastifyRequest): OverviewQuery => request.query as OverviewQuery
const agentIdOf = (request: FastifyRequest): string => (request.params as AgentParams).agentId
const agentTimeframe = (request: FastifyRequest): AgentQuery['timeframe'] => (request.query as AgentQuery).timeframe
const userIdOf = (request: FastifyRequest): string => (request.params as UserParams).userId
const activityDate = (request: FastifyRequest): string => (request.query as ActivityQuery).date
const completedRun = (request: FastifyRequest): AgentRunCompleted => request.body as AgentRunCompleted

function notFound (message: string): { statusCode: number, error: string, message: string } {
  return { statusCode: 404, error: 'Not Found', message }
}

export async function buildApp (options: BuildAppOptions = {}): Promise<ExampleApp> {
  const app: FastifyInstance = Fastify({ logger: options.logger ?? false })
  const db = new AnalyticsDatabase({ queryDelayMs: options.queryDelayMs })
  app.decorate('db', db)

  const encryptionKeys = options.encryptionKeys ?? []
  const encrypted = encryptionKeys.length > 0
  await app.register(cache, {
    prefix: options.prefix ?? 'example',
    ...(options.redisUrl === undefined ? {} : { redis: options.redisUrl }),
    ...(encrypted ? { encryption: { keys: encryptionKeys } } : {})
  })
  // The plugin refuses a sensitive route without keys. Personal data must never reach the cache in plaintext, so
  // without keys the route is not cached at all (slower, never less safe), and the log says so once.
  if (!encrypted) {
    app.log.warn({ routes: [PROFILE_ROUTE] }, 'no cache encryption keys (CACHE_ENCRYPTION_KEYS): sensitive routes are served uncached')
  }

  // The specification's execute_query_cached: rows cached by a hash of the statement and its parameters. Every query
  // db.query() answers takes the workspace as $1, so the entries carry its tag and a write to the workspace (an
  // agent-run event) drops them along with its dashboards.
  const executeQueryCached: ExecuteQueryCached = app.cacheService.cached(
    async (sql: string, params: unknown[]) => await db.query(sql, params),
    {
      name: 'query',
      key: (sql, params) => ['query', stableHash({ sql, params })],
      ttl: TTL_SHORT,
      tags: (_sql, params) => [`ws:${String(params[0])}`]
    }
  )
  app.decorate('executeQueryCached', executeQueryCached)
  const knownWorkspace = (workspaceId: string): boolean => db.workspaces.some((workspace) => workspace.id === workspaceId)

  app.get<{ Querystring: OverviewQuery }>('/executive/overview', {
    schema: { querystring: OverviewQuerySchema },
    config: {
      cache: {
        key: (request) => {
          const { workspace_id: workspaceId, timeframe } = overviewQuery(request)
          return ['exec', 'dashboard', workspaceId, timeframe]
        },
        ttl: TTL_LONG,
        tags: (request) => [`ws:${overviewQuery(request).workspace_id}`]
      }
    }
  }, async (request, reply) => {
    const { workspace_id: workspaceId, timeframe } = request.query
    const metrics = await db.executiveMetrics(workspaceId, timeframe)
    if (metrics === undefined) return await reply.code(404).send(notFound(`workspace ${workspaceId} not found`))
    return { workspace_id: workspaceId, timeframe, metrics, cached_at: new Date().toISOString() }
  })

  app.get<{ Params: AgentParams, Querystring: AgentQuery }>('/agents/:agentId/analytics', {
    schema: { params: AgentParamsSchema, querystring: AgentQuerySchema },
    config: {
      cache: {
        key: (request) => ['agent', 'analytics', agentIdOf(request), agentTimeframe(request)],
        ttl: TTL_MEDIUM,
        // Tags are computed from the request alone, so the workspace comes from the id: ws1-agent3 belongs to ws1.
        tags: (request) => {
          const agentId = agentIdOf(request)
          const workspaceId = workspaceOfAgent(agentId)
          return workspaceId === undefined ? [`agent:${agentId}`] : [`agent:${agentId}`, `ws:${workspaceId}`]
        }
      }
    }
  }, async (request, reply) => {
    const { agentId } = request.params
    const { timeframe } = request.query
    const found = await db.agentAnalytics(agentId, timeframe)
    if (found === undefined) return await reply.code(404).send(notFound(`agent ${agentId} not found`))
    const { agent, metrics } = found
    return {
      agent_id: agent.id,
      name: agent.name,
      workspace_id: agent.workspaceId,
      timeframe,
      metrics,
      cached_at: new Date().toISOString()
    }
  })

  app.get<{ Params: UserParams, Querystring: ActivityQuery }>('/users/:userId/activity', {
    schema: { params: UserParamsSchema, querystring: ActivityQuerySchema },
    config: {
      cache: {
        key: (request) => ['user', 'activity', userIdOf(request), activityDate(request)],
        ttl: TTL_MEDIUM,
        tags: (request) => [`user:${userIdOf(request)}`]
      }
    }
  }, async (request) => {
    const activity = await db.userActivity(request.params.userId, request.query.date)
    return { ...activity, cached_at: new Date().toISOString() }
  })

  // Personal data: with keys, its entries are AES-256-GCM ciphertext in Redis; `private, no-store` keeps browsers and
  // shared caches downstream from storing it. The user is in the key, so one user's entry is never another's.
  app.get<{ Params: UserParams }>(PROFILE_ROUTE, {
    schema: { params: UserParamsSchema },
    config: {
      cache: encrypted
        ? {
            sensitive: true,
            key: (request) => ['user', 'profile', userIdOf(request)],
            ttl: TTL_MEDIUM,
            tags: (request) => [`user:${userIdOf(request)}`],
            cacheControl: 'private, no-store'
          }
        : false
    }
  }, async (request, reply) => {
    const profile = await db.userProfile(request.params.userId)
    if (!encrypted) reply.header('cache-control', 'private, no-store')
    return { ...profile, cached_at: new Date().toISOString() }
  })

  // Not route-cached: the count is cached by executeQueryCached, for TTL_SHORT seconds or until the workspace changes.
  app.get<{ Params: WorkspaceParams, Querystring: RunCountQuery }>('/workspaces/:workspaceId/run-count', {
    schema: { params: WorkspaceParamsSchema, querystring: RunCountQuerySchema }
  }, async (request, reply) => {
    const { workspaceId } = request.params
    const { outcome } = request.query
    // The workspaces are fixed at start, so this check needs no query.
    if (!knownWorkspace(workspaceId)) return await reply.code(404).send(notFound(`workspace ${workspaceId} not found`))
    const rows = outcome === undefined
      ? await executeQueryCached(SQL.runCount, [workspaceId])
      : await executeQueryCached(SQL.runCountByOutcome, [workspaceId, outcome])
    return { workspace_id: workspaceId, ...(outcome === undefined ? {} : { outcome }), run_count: Number(rows[0]?.count ?? 0) }
  })

  // The specification's event handlers. An agent run changes its workspace's dashboards, its own analytics and the
  // workspace's query results: the route option invalidates their tags after a 2xx answer, before it is sent, and
  // never after a 4xx (a bad body, an unknown agent).
  app.post<{ Body: AgentRunCompleted }>('/events/agent-run-completed', {
    schema: { body: AgentRunCompletedSchema },
    config: {
      cache: {
        invalidates: (request) => {
          const { workspace_id: workspaceId, agent_id: agentId } = completedRun(request)
          return [`ws:${workspaceId}`, `agent:${agentId}`]
        }
      }
    }
  }, async (request, reply) => {
    const { workspace_id: workspaceId, agent_id: agentId, duration_ms: durationMs, outcome } = request.body
    const recorded = await db.recordRun({ workspaceId, agentId, durationMs, outcome })
    if (!recorded) return await reply.code(404).send(notFound(`agent ${agentId} not found in workspace ${workspaceId}`))
    return await reply.code(201).send({ ok: true })
  })

  // The other way, as in the specification: the handler calls invalidateTags itself, once the write is done.
  app.post<{ Body: UserActivityBody }>('/events/user-activity', {
    schema: { body: UserActivityBodySchema }
  }, async (request, reply) => {
    const { user_id: userId, workspace_id: workspaceId, date } = request.body
    const recorded = await db.recordActivity({ userId, workspaceId, date })
    if (!recorded) return await reply.code(404).send(notFound(`workspace ${workspaceId} not found`))
    await app.cacheService.invalidateTags([`user:${userId}`])
    return await reply.code(201).send({ ok: true })
  })

  app.get('/cache/stats', async () => await app.cacheService.stats())

  // Open to anyone here, as befits a demo; a real service would authenticate it.
  app.post<{ Body: InvalidateBody }>('/cache/invalidate', { schema: { body: InvalidateBodySchema } }, async (request) => {
    const { tags, pattern, keys } = request.body
    const invalidated: { tags?: number, pattern?: number, keys?: number } = {}
    if (tags !== undefined) invalidated.tags = await app.cacheService.invalidateTags(tags)
    if (pattern !== undefined) invalidated.pattern = await app.cacheService.invalidatePattern(pattern)
    if (keys !== undefined) invalidated.keys = await app.cacheService.invalidate(keys)
    return { invalidated }
  })

  app.get('/health', async () => ({ status: 'ok', queries: db.queries }))

  // the decorators added above
  return app as ExampleApp
}
