/**
 * The demo in example-server/: its routes on the memory store and on Redis through inject(), and the real
 * `npm start` command as a child process answering over HTTP.
 */
import { randomBytes } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import type { LightMyRequestResponse } from 'fastify'
import t from 'tap'
import { type BuildAppOptions, type ExampleApp, PROFILE_ROUTE, buildApp } from '../example-server/app'
import { SQL } from '../example-server/data'
import { type CacheKey, stableHash } from '../lib/index'
import { SERVER_TEST_TIMEOUT_MS, runUntilExit, startServer, waitForStored } from './helpers/example-server'
import type { Redis } from 'ioredis'
import { type Teardownable, createClient, deleteByPrefix, redisUrl, uniquePrefix } from './helpers/redis'

const QUERY_DELAY_MS = 20
const OVERVIEW = '/executive/overview?workspace_id=ws1&timeframe=7d'
const OVERVIEW_KEY: CacheKey = ['exec', 'dashboard', 'ws1', '7d']

type StoreKind = 'memory' | 'redis'

interface Overview {
  workspace_id: string
  timeframe: string
  metrics: {
    total_runs: number
    successful_runs: number
    failed_runs: number
    success_rate: number
    avg_duration_ms: number
    top_agents: Array<{ agent_id: string }>
  }
  cached_at: string
}

interface AgentAnalytics {
  agent_id: string
  metrics: { total_runs: number, timed_out_runs: number }
  cached_at: string
}

interface Activity {
  user_id: string
  date: string
  events: number
  workspaces: Array<{ workspace_id: string, events: number }>
  cached_at: string
}

interface RunCount {
  workspace_id: string
  outcome?: string
  run_count: number
}

const AGENT = '/agents/ws1-agent1/analytics?timeframe=7d'
const AGENT_KEY: CacheKey = ['agent', 'analytics', 'ws1-agent1', '7d']
const WS2_OVERVIEW = '/executive/overview?workspace_id=ws2&timeframe=7d'
const WS2_OVERVIEW_KEY: CacheKey = ['exec', 'dashboard', 'ws2', '7d']
const RUN_EVENT = '/events/agent-run-completed'
const ACTIVITY_EVENT = '/events/user-activity'

/** The app on the given store; on Redis under a key prefix of its own, deleted when the test ends. */
async function build (t: Teardownable, store: StoreKind, extra: BuildAppOptions = {}): Promise<ExampleApp> {
  const options: BuildAppOptions = { queryDelayMs: QUERY_DELAY_MS, ...extra }
  if (store === 'memory') {
    const app = await buildApp(options)
    t.teardown(() => app.close())
    return app
  }
  const prefix = uniquePrefix('example-server')
  const client = await createClient()
  const app = await buildApp({ ...options, redisUrl: await redisUrl(), prefix })
  t.teardown(async () => {
    await app.close()
    await deleteByPrefix(client, prefix)
    await client.quit()
  })
  return app
}

/** Misses are stored after the response went out: waits until the entry is there. */
async function post (app: ExampleApp, url: string, payload: object | string): Promise<LightMyRequestResponse> {
  return await app.inject({ method: 'POST', url, payload, headers: { 'content-type': 'application/json' } })
}

async function invalidations (app: ExampleApp): Promise<Record<string, number>> {
  return (await app.cacheService.stats()).invalidations
}

async function waitUntilStored (app: ExampleApp, key: CacheKey): Promise<void> {
  const deadline = Date.now() + 5000
  while (!await app.cacheService.exists(key)) {
    if (Date.now() > deadline) throw new Error(`${JSON.stringify(key)} was not stored within 5 s`)
    await sleep(5)
  }
}

for (const store of ['memory', 'redis'] as const) {
  t.test(`on the ${store} store`, async (t) => {
    t.test('a repeated request is a HIT that costs no query', async (t) => {
      const app = await build(t, store)
      const first = await app.inject(OVERVIEW)
      t.equal(first.statusCode, 200)
      t.equal(first.headers['x-cache'], 'MISS')
      t.equal(first.headers['cache-control'], 'public, max-age=1800')
      const overview = first.json<Overview>()
      t.equal(overview.workspace_id, 'ws1')
      t.equal(overview.timeframe, '7d')
      t.ok(overview.metrics.total_runs > 0)
      t.ok(Date.now() - Date.parse(overview.cached_at) < 5000, 'cached_at is the time it was computed')
      t.equal(app.db.queries, 1)

      await waitUntilStored(app, OVERVIEW_KEY)
      const ttl = await app.cacheService.ttl(OVERVIEW_KEY)
      t.ok(ttl > 1790 && ttl <= 1800, `stored for the route's ttl of 1800 s, got ${ttl}`)

      const second = await app.inject(OVERVIEW)
      t.equal(second.statusCode, 200)
      t.equal(second.headers['x-cache'], 'HIT')
      t.ok(second.headers['age'] !== undefined)
      t.equal(second.json<Overview>().cached_at, overview.cached_at, 'the cached response shows when it was computed')
      t.equal(second.body, first.body)
      t.equal(app.db.queries, 1, 'the data source answered one query only')
    })

    t.test('an invalid timeframe gets 400 and nothing is cached', async (t) => {
      const app = await build(t, store)
      for (const url of [
        '/executive/overview?workspace_id=ws1&timeframe=1y',
        '/executive/overview?workspace_id=ws1&timeframe=',
        '/executive/overview?timeframe=7d'
      ]) {
        const response = await app.inject(url)
        t.equal(response.statusCode, 400, url)
        t.equal(response.headers['x-cache'], undefined, url)
      }
      await sleep(50)
      t.equal(app.db.queries, 0)
      t.notOk(await app.cacheService.exists(['exec', 'dashboard', 'ws1', '1y']))
      const stats = await app.cacheService.stats()
      t.equal(stats.misses, 0)
      t.equal(stats.stored, 0)
    })

    t.test('the timeframe defaults to 7d, as in the specification', async (t) => {
      const app = await build(t, store)
      const implicit = await app.inject('/executive/overview?workspace_id=ws1')
      t.equal(implicit.statusCode, 200)
      t.equal(implicit.json<Overview>().timeframe, '7d')
      await waitUntilStored(app, OVERVIEW_KEY)
      const explicit = await app.inject(OVERVIEW)
      t.equal(explicit.headers['x-cache'], 'HIT', 'both spellings share one entry')
      t.equal(app.db.queries, 1)
    })

    t.test('each workspace and timeframe has its own entry', async (t) => {
      const app = await build(t, store)
      const ws1 = await app.inject(OVERVIEW)
      const ws2 = await app.inject('/executive/overview?workspace_id=ws2&timeframe=7d')
      const ws1Month = await app.inject('/executive/overview?workspace_id=ws1&timeframe=30d')
      t.same([ws1, ws2, ws1Month].map((response) => response.headers['x-cache']), ['MISS', 'MISS', 'MISS'])
      t.equal(ws2.json<Overview>().workspace_id, 'ws2')
      t.not(ws2.json<Overview>().metrics.total_runs, ws1.json<Overview>().metrics.total_runs)
      t.ok(ws1Month.json<Overview>().metrics.total_runs > ws1.json<Overview>().metrics.total_runs, '30 days hold more runs than 7')
      t.equal(app.db.queries, 3)

      await waitUntilStored(app, OVERVIEW_KEY)
      await waitUntilStored(app, ['exec', 'dashboard', 'ws2', '7d'])
      await waitUntilStored(app, ['exec', 'dashboard', 'ws1', '30d'])
      const again = [
        await app.inject(OVERVIEW),
        await app.inject('/executive/overview?workspace_id=ws2&timeframe=7d'),
        await app.inject('/executive/overview?workspace_id=ws1&timeframe=30d')
      ]
      t.same(again.map((response) => response.headers['x-cache']), ['HIT', 'HIT', 'HIT'])
      t.same(again.map((response) => response.body), [ws1.body, ws2.body, ws1Month.body])
      t.equal(app.db.queries, 3)
    })

    t.test('an unknown workspace gets 404, which is not cached', async (t) => {
      const app = await build(t, store)
      for (let i = 0; i < 2; i++) {
        const response = await app.inject('/executive/overview?workspace_id=ws404&timeframe=7d')
        t.equal(response.statusCode, 404)
        t.equal(response.headers['x-cache'], 'MISS')
        await sleep(20)
      }
      t.equal(app.db.queries, 2)
      t.notOk(await app.cacheService.exists(['exec', 'dashboard', 'ws404', '7d']))
      t.equal((await app.cacheService.stats()).skippedBy['status'], 2)
    })

    t.test('agent analytics are cached per agent and timeframe', async (t) => {
      const app = await build(t, store)
      const url = '/agents/ws1-agent2/analytics?timeframe=24h'
      const key: CacheKey = ['agent', 'analytics', 'ws1-agent2', '24h']
      const first = await app.inject(url)
      t.equal(first.statusCode, 200)
      t.equal(first.headers['x-cache'], 'MISS')
      t.equal(first.headers['cache-control'], 'public, max-age=300')
      const body = first.json<{ agent_id: string, workspace_id: string, metrics: { runs_over_time: unknown[] } }>()
      t.equal(body.agent_id, 'ws1-agent2')
      t.equal(body.workspace_id, 'ws1')
      t.equal(body.metrics.runs_over_time.length, 24, 'hourly buckets for 24h')
      await waitUntilStored(app, key)
      t.ok(await app.cacheService.ttl(key) <= 300)
      const second = await app.inject(url)
      t.equal(second.headers['x-cache'], 'HIT')
      t.equal(second.body, first.body)
      t.equal(app.db.queries, 1)

      t.equal((await app.inject('/agents/ws1-agent99/analytics?timeframe=24h')).statusCode, 404)
      t.equal((await app.inject('/agents/not-an-agent/analytics')).statusCode, 404)
      t.equal((await app.inject('/agents/ws1-agent2/analytics?timeframe=1w')).statusCode, 400)
      await sleep(20)
      t.notOk(await app.cacheService.exists(['agent', 'analytics', 'ws1-agent99', '24h']))
      t.equal(app.db.queries, 3)

      const invalidated = await app.inject({ method: 'POST', url: '/cache/invalidate', payload: { tags: ['agent:ws1-agent2'] } })
      t.same(invalidated.json(), { invalidated: { tags: 1 } })
      t.equal((await app.inject(url)).headers['x-cache'], 'MISS')
    })

    t.test('invalidating a workspace tag recomputes its entries only', async (t) => {
      const app = await build(t, store)
      const first = await app.inject(OVERVIEW)
      await app.inject('/agents/ws1-agent1/analytics?timeframe=7d')
      await app.inject('/executive/overview?workspace_id=ws2&timeframe=7d')
      await waitUntilStored(app, OVERVIEW_KEY)
      await waitUntilStored(app, ['agent', 'analytics', 'ws1-agent1', '7d'])
      await waitUntilStored(app, ['exec', 'dashboard', 'ws2', '7d'])
      t.equal((await app.inject(OVERVIEW)).headers['x-cache'], 'HIT')

      const invalidated = await app.inject({ method: 'POST', url: '/cache/invalidate', payload: { tags: ['ws:ws1'] } })
      t.equal(invalidated.statusCode, 200)
      t.same(invalidated.json(), { invalidated: { tags: 2 } }, 'the ws1 dashboard and the ws1 agent')
      t.equal(invalidated.headers['x-cache'], undefined)

      const queries = app.db.queries
      const recomputed = await app.inject(OVERVIEW)
      t.equal(recomputed.headers['x-cache'], 'MISS')
      t.ok(Date.parse(recomputed.json<Overview>().cached_at) > Date.parse(first.json<Overview>().cached_at), 'a newer cached_at')
      t.equal((await app.inject('/agents/ws1-agent1/analytics?timeframe=7d')).headers['x-cache'], 'MISS')
      t.equal((await app.inject('/executive/overview?workspace_id=ws2&timeframe=7d')).headers['x-cache'], 'HIT')
      t.equal(app.db.queries, queries + 2)
    })

    t.test('invalidation by pattern and by keys', async (t) => {
      const app = await build(t, store)
      const keys: CacheKey[] = [OVERVIEW_KEY, ['exec', 'dashboard', 'ws1', '30d'], ['exec', 'dashboard', 'ws2', '7d']]
      for (const [, , workspace, timeframe] of keys) {
        await app.inject(`/executive/overview?workspace_id=${String(workspace)}&timeframe=${String(timeframe)}`)
      }
      for (const key of keys) await waitUntilStored(app, key)

      const byPattern = await app.inject({ method: 'POST', url: '/cache/invalidate', payload: { pattern: 'exec:dashboard:ws1:*' } })
      t.same(byPattern.json(), { invalidated: { pattern: 2 } })
      t.same(await Promise.all(keys.map((key) => app.cacheService.exists(key))), [false, false, true])

      const byKeys = await app.inject({
        method: 'POST', url: '/cache/invalidate', payload: { keys: ['exec:dashboard:ws2:7d', 'exec:dashboard:ws3:7d'] }
      })
      t.same(byKeys.json(), { invalidated: { keys: 1 } })
      t.notOk(await app.cacheService.exists(['exec', 'dashboard', 'ws2', '7d']))

      for (const payload of [{}, { tags: [] }, { tags: [''] }, { pattern: '' }]) {
        const refused = await app.inject({ method: 'POST', url: '/cache/invalidate', payload })
        t.equal(refused.statusCode, 400, JSON.stringify(payload))
      }
    })

    t.test('an agent-run event refreshes its workspace and agent, and no other', async (t) => {
      const app = await build(t, store)
      const overview = (await app.inject(OVERVIEW)).json<Overview>()
      const agent = (await app.inject(AGENT)).json<AgentAnalytics>()
      const ws2 = await app.inject(WS2_OVERVIEW)
      for (const key of [OVERVIEW_KEY, AGENT_KEY, WS2_OVERVIEW_KEY]) await waitUntilStored(app, key)
      t.equal((await app.inject(OVERVIEW)).headers['x-cache'], 'HIT')
      t.equal(app.db.queries, 3)

      const event = await post(app, RUN_EVENT, { workspace_id: 'ws1', agent_id: 'ws1-agent1', duration_ms: 4321, outcome: 'timeout' })
      t.equal(event.statusCode, 201)
      t.same(event.json(), { ok: true })
      t.equal(event.headers['x-cache'], undefined, 'a write is never cached')
      t.equal(app.db.writes, 1)
      // invalidated before the answer went out: no waiting needed
      t.same(await Promise.all([OVERVIEW_KEY, AGENT_KEY, WS2_OVERVIEW_KEY].map((key) => app.cacheService.exists(key))), [false, false, true])
      t.same(await invalidations(app), { 'ws:ws1': 1, 'agent:ws1-agent1': 1 })

      const recomputed = await app.inject(OVERVIEW)
      t.equal(recomputed.headers['x-cache'], 'MISS')
      const fresh = recomputed.json<Overview>()
      t.ok(Date.parse(fresh.cached_at) > Date.parse(overview.cached_at), 'a newer cached_at')
      t.equal(fresh.metrics.total_runs, overview.metrics.total_runs + 1, 'the new run is counted')
      t.equal(fresh.metrics.successful_runs, overview.metrics.successful_runs)
      t.ok(fresh.metrics.success_rate < overview.metrics.success_rate, 'a timeout lowers the success rate')

      const agentAgain = await app.inject(AGENT)
      t.equal(agentAgain.headers['x-cache'], 'MISS')
      t.equal(agentAgain.json<AgentAnalytics>().metrics.total_runs, agent.metrics.total_runs + 1)
      t.equal(agentAgain.json<AgentAnalytics>().metrics.timed_out_runs, agent.metrics.timed_out_runs + 1)

      const ws2Again = await app.inject(WS2_OVERVIEW)
      t.equal(ws2Again.headers['x-cache'], 'HIT', 'another workspace keeps its entry')
      t.equal(ws2Again.body, ws2.body)
      t.equal(app.db.queries, 5)

      await waitUntilStored(app, OVERVIEW_KEY)
      t.equal((await app.inject(OVERVIEW)).body, recomputed.body, 'the recomputed dashboard is cached again')
    })

    t.test('a refused agent-run event invalidates nothing', async (t) => {
      const app = await build(t, store)
      const overview = await app.inject(OVERVIEW)
      await app.inject(AGENT)
      await waitUntilStored(app, OVERVIEW_KEY)
      await waitUntilStored(app, AGENT_KEY)
      const good = { workspace_id: 'ws1', agent_id: 'ws1-agent1', duration_ms: 100, outcome: 'success' }
      const bad: Array<object | string> = [
        {},
        { ...good, outcome: 'crashed' },
        { ...good, duration_ms: -1 },
        { ...good, duration_ms: 'slow' },
        { ...good, workspace_id: '' },
        { workspace_id: 'ws1', agent_id: 'ws1-agent1', duration_ms: 100 },
        '{"workspace_id":"ws1",'
      ]
      for (const payload of bad) {
        const response = await post(app, RUN_EVENT, payload)
        t.equal(response.statusCode, 400, JSON.stringify(payload))
        t.equal(response.headers['x-cache'], undefined)
      }
      t.equal(app.db.writes, 0, 'the handler never ran')

      // valid, but naming no agent of that workspace: the write finds nothing to record
      for (const payload of [{ ...good, agent_id: 'ws1-agent99' }, { ...good, workspace_id: 'ws2' }]) {
        const response = await post(app, RUN_EVENT, payload)
        t.equal(response.statusCode, 404, JSON.stringify(payload))
      }

      t.same(await invalidations(app), {}, 'no tag was invalidated')
      t.ok(await app.cacheService.exists(OVERVIEW_KEY))
      t.ok(await app.cacheService.exists(AGENT_KEY))
      const again = await app.inject(OVERVIEW)
      t.equal(again.headers['x-cache'], 'HIT')
      t.equal(again.body, overview.body, 'the figures did not change')
      t.equal(app.db.queries, 2)
    })

    t.test('a user-activity event invalidates that user\'s activity only', async (t) => {
      const app = await build(t, store)
      const urls = ['/users/u1/activity?date=2024-05-01', '/users/u1/activity?date=2024-05-02', '/users/u2/activity?date=2024-05-01']
      const keys: CacheKey[] = [['user', 'activity', 'u1', '2024-05-01'], ['user', 'activity', 'u1', '2024-05-02'], ['user', 'activity', 'u2', '2024-05-01']]
      const first = []
      for (const url of urls) first.push(await app.inject(url))
      t.same(first.map((response) => response.headers['x-cache']), ['MISS', 'MISS', 'MISS'])
      t.equal(first[0]?.headers['cache-control'], 'public, max-age=300')
      t.match(first[0]?.json<Activity>(), { user_id: 'u1', date: '2024-05-01', events: 0, workspaces: [] })
      for (const key of keys) await waitUntilStored(app, key)
      const ttl = await app.cacheService.ttl(keys[0] ?? '')
      t.ok(ttl > 290 && ttl <= 300, `stored for 300 s, got ${ttl}`)
      t.equal((await app.inject(urls[0] ?? '')).headers['x-cache'], 'HIT')
      t.equal(app.db.queries, 3)

      const event = await post(app, ACTIVITY_EVENT, { user_id: 'u1', workspace_id: 'ws2', date: '2024-05-01' })
      t.equal(event.statusCode, 201)
      t.same(event.json(), { ok: true })
      t.same(await Promise.all(keys.map((key) => app.cacheService.exists(key))), [false, false, true],
        'every entry of u1 (both days), none of u2')
      t.same(await invalidations(app), { 'user:u1': 1 })

      const again = []
      for (const url of urls) again.push(await app.inject(url))
      t.same(again.map((response) => response.headers['x-cache']), ['MISS', 'MISS', 'HIT'])
      const activity = again[0]?.json<Activity>()
      t.match(activity, { user_id: 'u1', date: '2024-05-01', events: 1, workspaces: [{ workspace_id: 'ws2', events: 1 }] })
      t.ok(Date.parse(activity?.cached_at ?? '') > Date.parse(first[0]?.json<Activity>().cached_at ?? ''), 'a newer cached_at')
      t.equal(again[1]?.json<Activity>().events, 0, 'the other day had no event')
      t.equal(again[2]?.body, first[2]?.body)
      t.equal(app.db.queries, 5)

      // refused events: nothing recorded, nothing invalidated
      for (const payload of [
        { user_id: 'u2', workspace_id: 'ws1', date: '2024-13-01' },
        { user_id: 'u2', workspace_id: 'ws1' },
        { user_id: '', workspace_id: 'ws1', date: '2024-05-01' }
      ]) {
        t.equal((await post(app, ACTIVITY_EVENT, payload)).statusCode, 400, JSON.stringify(payload))
      }
      t.equal((await post(app, ACTIVITY_EVENT, { user_id: 'u2', workspace_id: 'ws404', date: '2024-05-01' })).statusCode, 404)
      t.same(await invalidations(app), { 'user:u1': 1 })
      t.equal((await app.inject(urls[2] ?? '')).headers['x-cache'], 'HIT')

      t.equal((await app.inject('/users/u1/activity')).statusCode, 400, 'the date is required')
      t.equal((await app.inject('/users/u1/activity?date=2024-02-30')).statusCode, 400, 'and must be a real day')
    })

    t.test('query results are cached by statement and parameters', async (t) => {
      const app = await build(t, store)
      const url = '/workspaces/ws1/run-count'
      const key = app.executeQueryCached.key(SQL.runCount, ['ws1'])
      t.same(key, ['query', stableHash({ sql: SQL.runCount, params: ['ws1'] })])

      // concurrent callers share one query, later ones read the cache
      const concurrent = await Promise.all([app.inject(url), app.inject(url), app.inject(url)])
      const count = concurrent[0]?.json<RunCount>().run_count ?? 0
      t.ok(count > 0)
      for (let i = 0; i < 3; i++) concurrent.push(await app.inject(url))
      for (const response of concurrent) {
        t.equal(response.statusCode, 200)
        t.same(response.json(), { workspace_id: 'ws1', run_count: count })
        t.equal(response.headers['x-cache'], undefined, 'the route is not cached; the query result is')
      }
      t.equal(app.db.queries, 1, 'one query for six reads')
      t.ok(await app.cacheService.exists(key))
      const ttl = await app.cacheService.ttl(key)
      t.ok(ttl > 50 && ttl <= 60, `stored for 60 s, got ${ttl}`)
      t.same(await app.executeQueryCached(SQL.runCount, ['ws1']), [{ count }], 'a direct call shares the entry')
      t.equal(app.db.queries, 1)

      // other parameters, other entries
      const ws2 = (await app.inject('/workspaces/ws2/run-count')).json<RunCount>()
      const successes = (await app.inject(`${url}?outcome=success`)).json<RunCount>()
      t.not(ws2.run_count, count)
      t.equal(successes.outcome, 'success')
      t.ok(successes.run_count > 0 && successes.run_count < count)
      t.equal(app.db.queries, 3)

      t.equal(await app.executeQueryCached.invalidate(SQL.runCount, ['ws1']), 1)
      t.equal(await app.executeQueryCached.invalidate(SQL.runCount, ['ws1']), 0, 'already gone')
      t.equal((await app.inject(url)).json<RunCount>().run_count, count)
      t.equal(app.db.queries, 4, 'queried again after invalidate()')
      await app.inject(url)
      await app.inject(`${url}?outcome=success`)
      t.equal(app.db.queries, 4, 'and cached again; the other entries were kept')

      // the ws:<id> tag: an agent-run event drops every query result of its workspace
      const event = await post(app, RUN_EVENT, { workspace_id: 'ws1', agent_id: 'ws1-agent3', duration_ms: 800, outcome: 'success' })
      t.equal(event.statusCode, 201)
      t.notOk(await app.cacheService.exists(key))
      t.same((await app.inject(url)).json(), { workspace_id: 'ws1', run_count: count + 1 })
      t.same((await app.inject(`${url}?outcome=success`)).json(), { workspace_id: 'ws1', outcome: 'success', run_count: successes.run_count + 1 })
      t.equal(app.db.queries, 6)
      t.same((await app.inject('/workspaces/ws2/run-count')).json(), ws2, 'another workspace keeps its result')
      t.equal(app.db.queries, 6)

      // once the TTL is over, one query again
      t.ok(await app.cacheService.expire(key, 1))
      await sleep(1100)
      t.equal((await app.inject(url)).json<RunCount>().run_count, count + 1)
      await app.inject(url)
      t.equal(app.db.queries, 7, 'one query after expiry')

      t.equal((await app.inject('/workspaces/ws404/run-count')).statusCode, 404)
      t.equal((await app.inject(`${url}?outcome=crashed`)).statusCode, 400)
      t.equal(app.db.queries, 7, 'refused requests cost no query')
    })

    t.test('/cache/stats counts the hits', async (t) => {
      const app = await build(t, store)
      await app.inject(OVERVIEW)
      await waitUntilStored(app, OVERVIEW_KEY)
      await app.inject(OVERVIEW)
      await app.inject(OVERVIEW)
      const response = await app.inject('/cache/stats')
      t.equal(response.statusCode, 200)
      t.equal(response.headers['x-cache'], undefined, 'the stats are never cached')
      const stats = response.json<Awaited<ReturnType<ExampleApp['cacheService']['stats']>>>()
      t.match(stats, { hits: 2, misses: 1, stored: 1, store: { kind: store } })
      t.equal(stats.hitRate, 2 / 3)
      t.match(stats.routes['/executive/overview'], { hits: 2, misses: 1 })
      t.equal(app.db.queries, 1)
    })

    t.test('/health', async (t) => {
      const app = await build(t, store)
      const response = await app.inject('/health')
      t.equal(response.statusCode, 200)
      t.same(response.json(), { status: 'ok', queries: 0 })
    })
  })
}

interface Profile {
  user_id: string
  email: string
  workspaces: string[]
  last_active: string | null
  cached_at: string
}

/** A fresh key, as `openssl rand -base64 32` makes: keys are made at test time, never kept in the repository. */
const freshKey = (): string => randomBytes(32).toString('base64')

/**
 * Every value stored under keys matching `match`, as Redis holds them (strings, and the members of sets): whatever
 * the store's layout, plaintext of a response would show in here.
 */
async function rawValues (client: Redis, match: string): Promise<Buffer> {
  const values: Buffer[] = []
  let cursor = '0'
  do {
    const [next, keys] = await client.scan(cursor, 'MATCH', match, 'COUNT', 1000)
    cursor = next
    for (const key of keys) {
      const type = await client.type(key)
      if (type === 'string') values.push(await client.getBuffer(key) ?? Buffer.alloc(0))
      else if (type === 'set') values.push(...await client.smembersBuffer(key))
      else if (type === 'hash') values.push(...Object.values(await client.hgetallBuffer(key)))
    }
  } while (cursor !== '0')
  return Buffer.concat(values)
}

t.test('the sensitive profile route', async (t) => {
  for (const store of ['memory', 'redis'] as const) {
    t.test(`with encryption keys (${store}): cached per user, and refreshed by the user's activity`, async (t) => {
      const app = await build(t, store, { encryptionKeys: [freshKey(), freshKey()] })
      const first = await app.inject('/users/u7/profile')
      t.equal(first.statusCode, 200)
      t.equal(first.headers['x-cache'], 'MISS')
      t.equal(first.headers['cache-control'], 'private, no-store', 'nothing downstream may store personal data')
      t.match(first.json<Profile>(), { user_id: 'u7', email: 'u7@users.example', workspaces: [], last_active: null })
      await waitUntilStored(app, ['user', 'profile', 'u7'])
      const second = await app.inject('/users/u7/profile')
      t.equal(second.headers['x-cache'], 'HIT')
      t.equal(second.headers['cache-control'], 'private, no-store')
      t.equal(second.body, first.body)
      const other = await app.inject('/users/u8/profile')
      t.equal(other.headers['x-cache'], 'MISS', 'another user has an entry of their own')
      t.equal(other.json<Profile>().email, 'u8@users.example')
      t.equal(app.db.queries, 2)

      t.equal((await post(app, ACTIVITY_EVENT, { user_id: 'u7', workspace_id: 'ws2', date: '2024-05-01' })).statusCode, 201)
      const after = await app.inject('/users/u7/profile')
      t.equal(after.headers['x-cache'], 'MISS', 'the activity event invalidated the user tag')
      t.match(after.json<Profile>(), { workspaces: ['ws2'], last_active: '2024-05-01' })
    })
  }

  t.test('with encryption keys, Redis holds no plaintext of the profile (and does of a non-sensitive route)', async (t) => {
    const prefix = uniquePrefix('example-server-sensitive')
    const client = await createClient(t)
    const app = await buildApp({ queryDelayMs: QUERY_DELAY_MS, redisUrl: await redisUrl(), prefix, encryptionKeys: [freshKey()] })
    t.teardown(async () => {
      await app.close()
      await deleteByPrefix(client, prefix)
    })
    const profile = await app.inject('/users/u7/profile')
    const activity = await app.inject('/users/u7/activity?date=2024-05-01')
    await waitUntilStored(app, ['user', 'profile', 'u7'])
    await waitUntilStored(app, ['user', 'activity', 'u7', '2024-05-01'])
    t.equal((await app.inject('/users/u7/profile')).headers['x-cache'], 'HIT', 'the encrypted entry decrypts')

    const stored = await rawValues(client, `${prefix}:*`)
    const cachedAt = (body: string): string => (JSON.parse(body) as { cached_at: string }).cached_at
    // the control: a plain entry shows its body, so the search below can find plaintext where there is some
    t.ok(stored.includes(cachedAt(activity.body)), 'the non-sensitive entry is stored as it was sent')
    for (const plaintext of ['u7@users.example', cachedAt(profile.body), '"last_active"']) {
      t.notOk(stored.includes(plaintext), `no ${JSON.stringify(plaintext)} in Redis`)
    }
  })

  t.test('without keys: served uncached, never stored, and the app says once at start why', async (t) => {
    const lines: Array<{ level: number, msg: string, routes?: string[] }> = []
    const app = await build(t, 'redis', { logger: { level: 'info', stream: { write: (line: string) => { lines.push(JSON.parse(line)) } } } })
    for (let i = 0; i < 2; i++) {
      const response = await app.inject('/users/u7/profile')
      t.equal(response.statusCode, 200)
      t.equal(response.headers['x-cache'], undefined, 'the route is not cached at all')
      t.equal(response.headers['cache-control'], 'private, no-store')
      t.equal(response.json<Profile>().email, 'u7@users.example')
    }
    t.equal(app.db.queries, 2, 'each request ran the query')
    await sleep(50)
    t.notOk(await app.cacheService.exists(['user', 'profile', 'u7']))
    const warnings = lines.filter((line) => line.msg.includes('sensitive routes are served uncached'))
    t.equal(warnings.length, 1, 'logged once')
    t.match(warnings[0], { level: 40, routes: [PROFILE_ROUTE] })
  })
})

t.test('npm start: the server answers over HTTP with the memory store', { timeout: SERVER_TEST_TIMEOUT_MS }, async (t) => {
  const env: Record<string, string | undefined> = { ...process.env }
  delete env['REDIS_URL']
  delete env['CACHE_ENCRYPTION_KEYS']
  const server = await startServer(t, env)
  t.match(server.output(), `example server listening at ${server.base}, caching in memory`)
  t.match(server.output(), '"sensitiveRoutes":"uncached"')
  t.equal(server.output().split('sensitive routes are served uncached').length - 1, 1, 'without keys, one warning at start')

  const first = await fetch(`${server.base}${OVERVIEW}`)
  t.equal(first.status, 200)
  t.equal(first.headers.get('x-cache'), 'MISS')
  const body = await first.text()
  await waitForStored(server.base, 1)
  const second = await fetch(`${server.base}${OVERVIEW}`)
  t.equal(second.headers.get('x-cache'), 'HIT')
  t.equal(await second.text(), body)
  t.same(await (await fetch(`${server.base}/health`)).json(), { status: 'ok', queries: 1 })
  for (let i = 0; i < 2; i++) {
    const profile = await fetch(`${server.base}/users/u7/profile`)
    t.equal(profile.status, 200)
    t.equal(profile.headers.get('x-cache'), null, 'the sensitive route is not cached without keys')
  }
  t.same(await (await fetch(`${server.base}/health`)).json(), { status: 'ok', queries: 3 })

  t.equal(await server.stop(), 0, 'SIGTERM closes the app and exits cleanly')
  t.match(server.output(), '"signal":"SIGTERM"')
})

t.test('npm start: with REDIS_URL the server uses Redis; with CACHE_ENCRYPTION_KEYS it caches the sensitive route encrypted', { timeout: SERVER_TEST_TIMEOUT_MS }, async (t) => {
  const url = await redisUrl()
  const keys = [freshKey(), freshKey()]
  const server = await startServer(t, { ...process.env, REDIS_URL: url, CACHE_ENCRYPTION_KEYS: ` ${keys[0]} , ${keys[1]}` })
  t.match(server.output(), 'caching in redis')
  t.match(server.output(), '"store":"redis"')
  t.match(server.output(), '"sensitiveRoutes":"encrypted (2 keys)"')
  t.notMatch(server.output(), 'sensitive routes are served uncached')

  // The demo's prefix is shared with anyone running `npm start` on this Redis: start from a known state, and leave
  // the entries behind no more than a failed run would.
  const path = '/executive/overview?workspace_id=ws3&timeframe=90d'
  const invalidate = async (body: { keys?: string[], tags?: string[] }): Promise<void> => {
    const response = await fetch(`${server.base}/cache/invalidate`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body)
    })
    t.equal(response.status, 200)
  }
  await invalidate({ keys: ['exec:dashboard:ws3:90d'] })
  t.equal((await fetch(`${server.base}${path}`)).headers.get('x-cache'), 'MISS')
  await waitForStored(server.base, 1)
  t.equal((await fetch(`${server.base}${path}`)).headers.get('x-cache'), 'HIT')
  await invalidate({ tags: ['ws:ws3'] }) // the entry and its tag set

  // a user of this run only, so that the search below sees this run's entries
  const userId = `u-${randomBytes(6).toString('hex')}`
  const first = await fetch(`${server.base}/users/${userId}/profile`)
  t.equal(first.headers.get('x-cache'), 'MISS')
  const body = await first.text()
  await waitForStored(server.base, 2)
  const second = await fetch(`${server.base}/users/${userId}/profile`)
  t.equal(second.headers.get('x-cache'), 'HIT')
  t.equal(await second.text(), body)
  const client = await createClient(t)
  const stored = await rawValues(client, `example:*${userId}*`)
  t.ok(stored.length > 0, 'the entry is in Redis')
  t.notOk(stored.includes(`${userId}@users.example`), 'as ciphertext: no email')
  t.notOk(stored.includes((JSON.parse(body) as Profile).cached_at), 'no other part of the body either')
  await invalidate({ tags: [`user:${userId}`] })

  t.equal(await server.stop(), 0)
  for (const key of keys) t.notMatch(server.output(), key, 'the keys are never logged')
})

t.test('npm start: a bad key in CACHE_ENCRYPTION_KEYS stops the start, and the error never shows it', { timeout: SERVER_TEST_TIMEOUT_MS }, async (t) => {
  const env: Record<string, string | undefined> = { ...process.env }
  delete env['REDIS_URL']
  const short = randomBytes(24).toString('base64') // 24 bytes: not an AES-256 key
  const good = freshKey()
  const { code, output } = await runUntilExit({ ...env, CACHE_ENCRYPTION_KEYS: `${good},${short}` })
  t.equal(code, 1)
  t.match(output, 'FST_CACHE_INVALID_OPTION')
  t.match(output, 'encryption.keys.1')
  t.notMatch(output, short)
  t.notMatch(output, good)
  t.notMatch(output, 'example server listening')
})
