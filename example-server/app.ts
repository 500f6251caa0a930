/**
 * The demo application: the specification's analytics endpoints over a slow data source, cached by the plugin.
 * buildApp() returns the app without listening, so that tests can use inject(); server.ts makes it listen.
 */
import { type Static, Type } from '@sinclair/typebox'
import Fastify, { type FastifyInstance, type FastifyRequest } from 'fastify'
import cache from '../lib/index'
import { AnalyticsDatabase, workspaceOfAgent } from './data'

export interface BuildAppOptions {
  /** A redis:// URL; the in-memory store when omitted. */
  redisUrl?: string
  logger?: boolean
  /** How long each query of the data source takes; 150 ms by default. */
  queryDelayMs?: number
  /** Namespace of the cache keys, `example` by default; tests give each app its own. */
  prefix?: string
}

/** The app, with the data source it queries, so that tests can count the queries. */
export type ExampleApp = FastifyInstance & { readonly db: AnalyticsDatabase }

// TTLs of the specification's key strategy.
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

function notFound (message: string): { statusCode: number, error: string, message: string } {
  return { statusCode: 404, error: 'Not Found', message }
}

export async function buildApp (options: BuildAppOptions = {}): Promise<ExampleApp> {
  const app: FastifyInstance = Fastify({ logger: options.logger ?? false })
  const db = new AnalyticsDatabase({ queryDelayMs: options.queryDelayMs })
  app.decorate('db', db)

  await app.register(cache, {
    prefix: options.prefix ?? 'example',
    ...(options.redisUrl === undefined ? {} : { redis: options.redisUrl })
  })

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

  // the decorator added above
  return app as ExampleApp
}
