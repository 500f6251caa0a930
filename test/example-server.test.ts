/**
 * The demo in example-server/: its routes over a real SQL database (PGlite, in this process, seeded once for the
 * file with the small dataset) on the memory store and on Redis through inject(), its access control, its events,
 * and the real `npm start` command as a child process answering over HTTP.
 */
import { randomBytes } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import type { LightMyRequestResponse } from 'fastify'
import t from 'tap'
import { type BuildAppOptions, type ExampleApp, PROFILE_ROUTE, buildApp } from '../example-server/app'
import { SQL } from '../example-server/db/analytics'
import { type SqlDatabase, openDatabase } from '../example-server/db/database'
import { DATASET_SIZES, demoToken, seedDataset } from '../example-server/db/dataset'
import { type CacheKey, stableHash } from '../lib/index'
import { SERVER_TEST_TIMEOUT_MS, runUntilExit, startServer, waitForStored } from './helpers/example-server'
import type { Redis } from 'ioredis'
import { type Teardownable, createClient, deleteByPrefix, redisUrl, uniquePrefix } from './helpers/redis'

// Three `npm start` processes and a PGlite, on a busy CI machine, take longer than tap's default per file.
t.setTimeout(180_000)

const ADMIN = 'test-admin-token-0123456789'
// In the small dataset, u1 and u2 belong to ws1 only, u6 and u10 to ws2 only.
const WS1_USER = 'u1'
const WS1_OTHER_USER = 'u2'
const WS2_USER = 'u6'
/** A member of ws1 and ws2. */
const PROFILE_USER = 'u7'
const OVERVIEW = '/executive/overview?workspace_id=ws1&timeframe=7d'
const OVERVIEW_KEY: CacheKey = ['exec', 'dashboard', 'ws1', '7d']
const WS2_OVERVIEW = '/executive/overview?workspace_id=ws2&timeframe=7d'
const WS2_OVERVIEW_KEY: CacheKey = ['exec', 'dashboard', 'ws2', '7d']
const AGENT = '/agents/ws1-agent1/analytics?timeframe=7d'
const AGENT_KEY: CacheKey = ['agent', 'analytics', 'ws1-agent1', '7d']
const OTHER_AGENT = '/agents/ws1-agent2/analytics?timeframe=7d'
const OTHER_AGENT_KEY: CacheKey = ['agent', 'analytics', 'ws1-agent2', '7d']
const TOP = '/agents/top?workspace_id=ws1&timeframe=7d'
const TOP_KEY: CacheKey = ['agent', 'top', 'ws1', '7d', 10]
const TODAY = new Date().toISOString().slice(0, 10)
const RUNS_METRIC = `/workspaces/ws1/metrics/runs?date=${TODAY}`
const RUNS_METRIC_KEY: CacheKey = ['ws', 'metrics', 'ws1', 'runs', TODAY]
const USERS_METRIC = `/workspaces/ws1/metrics/active-users?date=${TODAY}`
const USERS_METRIC_KEY: CacheKey = ['ws', 'metrics', 'ws1', 'active-users', TODAY]
const RUN_EVENT = '/events/agent-run-completed'
const ACTIVITY_EVENT = '/events/user-activity'

/** Queries per miss of each route: the overview runs its figures and its top agents. */
const OVERVIEW_QUERIES = 2
const AGENT_QUERIES = 2

type StoreKind = 'memory' | 'redis'

interface Overview {
  workspace_id: string
  timeframe: string
  metrics: {
    total_runs: number
    successful_runs: number
    success_rate: number
    active_agents: number
    top_agents: Array<{ agent_id: string }>
  }
  cached_at: string | null
}

interface AgentAnalytics {
  agent_id: string
  workspace_id: string
  metrics: { total_runs: number, timed_out_runs: number, runs_over_time: unknown[] }
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

let shared: SqlDatabase | undefined
/** The file's database, opened and seeded once (PGlite takes seconds to start); tests assert changes, not totals. */
async function database (): Promise<SqlDatabase> {
  if (shared === undefined) {
    shared = await openDatabase()
    await seedDataset(shared, DATASET_SIZES.small)
  }
  return shared
}
t.teardown(async () => { await shared?.close() })

/** The app on the given store; on Redis under a key prefix of its own, deleted when the test ends. */
async function build (t: Teardownable, store: StoreKind, extra: BuildAppOptions = {}): Promise<ExampleApp> {
  const options: BuildAppOptions = { database: await database(), adminToken: ADMIN, ...extra }
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

const bearer = (userOrAdmin: string): Record<string, string> =>
  ({ authorization: `Bearer ${userOrAdmin === 'admin' ? ADMIN : demoToken(userOrAdmin)}` })

async function get (app: ExampleApp, url: string, as = WS1_USER, headers: Record<string, string> = {}): Promise<LightMyRequestResponse> {
  return await app.inject({ url, headers: { ...bearer(as), ...headers } })
}

async function post (app: ExampleApp, url: string, payload: object | string, as = 'admin'): Promise<LightMyRequestResponse> {
  return await app.inject({ method: 'POST', url, payload, headers: { 'content-type': 'application/json', ...bearer(as) } })
}

async function invalidations (app: ExampleApp): Promise<Record<string, number>> {
  return (await app.cacheService.stats()).invalidations
}

/** Misses are stored after the response went out: waits until the entry is there. */
async function waitUntilStored (app: ExampleApp, key: CacheKey): Promise<void> {
  const deadline = Date.now() + 5000
  while (!await app.cacheService.exists(key)) {
    if (Date.now() > deadline) throw new Error(`${JSON.stringify(key)} was not stored within 5 s`)
    await sleep(5)
  }
}

async function present (app: ExampleApp, keys: CacheKey[]): Promise<boolean[]> {
  return await Promise.all(keys.map((key) => app.cacheService.exists(key)))
}

for (const store of ['memory', 'redis'] as const) {
  t.test(`on the ${store} store`, async (t) => {
    t.test('a repeated request is a HIT that costs no query; the browser gets max-age, stale-while-revalidate and an ETag', async (t) => {
      const app = await build(t, store)
      const first = await get(app, OVERVIEW)
      t.equal(first.statusCode, 200)
      t.equal(first.headers['x-cache'], 'MISS')
      t.equal(first.headers['cache-control'], 'private, max-age=300, stale-while-revalidate=1500')
      const overview = first.json<Overview>()
      t.equal(overview.workspace_id, 'ws1')
      t.equal(overview.timeframe, '7d')
      t.ok(overview.metrics.total_runs > 0)
      t.equal(overview.metrics.top_agents.length, 3)
      t.ok(Date.now() - Date.parse(overview.cached_at ?? '') < 5000, 'cached_at is the time it was computed')
      t.equal(app.db.queries, OVERVIEW_QUERIES)

      await waitUntilStored(app, OVERVIEW_KEY)
      const ttl = await app.cacheService.ttl(OVERVIEW_KEY)
      t.ok(ttl > 1790 && ttl <= 1800 + 300, `stored for the route's ttl of 1800 s (and 300 s stale), got ${ttl}`)

      // another member of the workspace shares the entry: access was checked, the data is the workspace's
      const second = await get(app, OVERVIEW, WS1_OTHER_USER)
      t.equal(second.statusCode, 200)
      t.equal(second.headers['x-cache'], 'HIT')
      t.ok(second.headers['age'] !== undefined)
      t.equal(second.json<Overview>().cached_at, overview.cached_at, 'the cached response shows when it was computed')
      t.equal(second.body, first.body)
      t.equal(app.db.queries, OVERVIEW_QUERIES, 'the database answered the first request only')

      const revalidated = await get(app, OVERVIEW, WS1_USER, { 'if-none-match': String(first.headers['etag']) })
      t.equal(revalidated.statusCode, 304, 'ETag revalidation')
      t.equal(revalidated.body, '')
      t.equal(app.db.queries, OVERVIEW_QUERIES)
    })

    t.test('an invalid timeframe gets 400, no token 401: nothing cached, no query', async (t) => {
      const app = await build(t, store)
      for (const url of [
        '/executive/overview?workspace_id=ws1&timeframe=1y',
        '/executive/overview?workspace_id=ws1&timeframe=',
        '/executive/overview?timeframe=7d'
      ]) {
        const response = await get(app, url)
        t.equal(response.statusCode, 400, url)
        t.equal(response.headers['x-cache'], undefined, url)
      }
      for (const headers of [{}, { authorization: 'Bearer nope' }, { authorization: `Basic ${demoToken(WS1_USER)}` }]) {
        const response = await app.inject({ url: OVERVIEW, headers })
        t.equal(response.statusCode, 401, JSON.stringify(headers))
        t.equal(response.headers['www-authenticate'], 'Bearer')
        t.equal(response.headers['x-cache'], undefined)
      }
      await sleep(50)
      t.equal(app.db.queries, 0)
      const stats = await app.cacheService.stats()
      t.equal(stats.misses, 0)
      t.equal(stats.stored, 0)
    })

    t.test('the timeframe defaults to 7d, as in the specification; each workspace and timeframe has its own entry', async (t) => {
      const app = await build(t, store)
      const implicit = await get(app, '/executive/overview?workspace_id=ws1')
      t.equal(implicit.json<Overview>().timeframe, '7d')
      await waitUntilStored(app, OVERVIEW_KEY)
      t.equal((await get(app, OVERVIEW)).headers['x-cache'], 'HIT', 'both spellings share one entry')
      const month = await get(app, '/executive/overview?workspace_id=ws1&timeframe=30d')
      t.equal(month.headers['x-cache'], 'MISS')
      t.ok(month.json<Overview>().metrics.total_runs > implicit.json<Overview>().metrics.total_runs, '30 days hold more runs than 7')
      const ws2 = await get(app, WS2_OVERVIEW, WS2_USER)
      t.equal(ws2.headers['x-cache'], 'MISS')
      t.not(ws2.json<Overview>().metrics.total_runs, implicit.json<Overview>().metrics.total_runs)
      t.equal(app.db.queries, 3 * OVERVIEW_QUERIES)
    })

    t.test('a user never sees another workspace, from the database or from the cache', async (t) => {
      const app = await build(t, store)
      // ws2's entries are in the cache, computed for a member of ws2
      const ws2 = await get(app, WS2_OVERVIEW, WS2_USER)
      await get(app, '/agents/ws2-agent1/analytics?timeframe=7d', WS2_USER)
      await get(app, `/workspaces/ws2/metrics/runs?date=${TODAY}`, WS2_USER)
      await get(app, '/agents/top?workspace_id=ws2&timeframe=7d', WS2_USER)
      await get(app, `/users/${WS2_USER}/activity?date=${TODAY}`, WS2_USER)
      await waitUntilStored(app, WS2_OVERVIEW_KEY)
      await waitUntilStored(app, ['user', 'activity', WS2_USER, TODAY])
      const queries = app.db.queries

      for (const url of [
        WS2_OVERVIEW,
        '/agents/ws2-agent1/analytics?timeframe=7d',
        `/workspaces/ws2/metrics/runs?date=${TODAY}`,
        '/agents/top?workspace_id=ws2&timeframe=7d',
        '/workspaces/ws2/run-count',
        `/users/${WS2_USER}/activity?date=${TODAY}`,
        `/users/${WS2_USER}/profile`,
        '/executive/overview?workspace_id=ws404&timeframe=7d'
      ]) {
        const response = await get(app, url, WS1_USER)
        t.equal(response.statusCode, 403, url)
        t.equal(response.headers['x-cache'], undefined, `${url}: the cache was never asked`)
        t.notMatch(response.body, /total_runs|cached_at|events/, `${url}: no data in the refusal`)
      }
      // a member's skip_cache does not bypass either: only the operator's does
      t.equal((await get(app, `${WS2_OVERVIEW}&skip_cache=true`, WS1_USER)).statusCode, 403)
      t.equal(app.db.queries, queries, 'the database was never asked')
      t.equal((await app.cacheService.stats()).hits, 0, 'nothing was served from the cache')

      const visible = (await get(app, '/workspaces', WS1_USER)).json<{ workspaces: Array<{ id: string, members?: string[] }> }>()
      t.same(visible.workspaces.map((workspace) => workspace.id), ['ws1'])
      t.equal(visible.workspaces[0]?.members, undefined, 'members are for the operator')
      // the member of ws2 still gets its entry
      t.equal((await get(app, WS2_OVERVIEW, WS2_USER)).body, ws2.body)
    })

    t.test('skip_cache bypasses the cache for the operator only', async (t) => {
      const app = await build(t, store)
      await get(app, OVERVIEW)
      await waitUntilStored(app, OVERVIEW_KEY)
      const member = await get(app, `${OVERVIEW}&skip_cache=true`)
      t.equal(member.headers['x-cache'], 'HIT', 'a member\'s skip_cache is ignored')
      const operator = await get(app, `${OVERVIEW}&skip_cache=true`, 'admin')
      t.equal(operator.statusCode, 200)
      t.equal(operator.headers['x-cache'], 'BYPASS')
      t.equal(operator.json<Overview>().cached_at, null, 'cached_at is null when the cache was skipped, as in the specification')
      t.equal(app.db.queries, 2 * OVERVIEW_QUERIES)
    })

    t.test('agent analytics and top agents are cached per agent, workspace, timeframe and limit', async (t) => {
      const app = await build(t, store)
      const url = '/agents/ws1-agent2/analytics?timeframe=24h'
      const first = await get(app, url)
      t.equal(first.headers['x-cache'], 'MISS')
      t.equal(first.headers['cache-control'], 'private, max-age=60, stale-while-revalidate=240')
      const body = first.json<AgentAnalytics>()
      t.equal(body.agent_id, 'ws1-agent2')
      t.equal(body.workspace_id, 'ws1')
      t.equal(body.metrics.runs_over_time.length, 24, 'hourly buckets for 24h')
      t.equal((await get(app, '/agents/ws1-agent2/analytics?timeframe=90d')).json<AgentAnalytics>().metrics.runs_over_time.length, 90)
      await waitUntilStored(app, ['agent', 'analytics', 'ws1-agent2', '24h'])
      t.equal((await get(app, url)).headers['x-cache'], 'HIT')
      t.equal(app.db.queries, 2 * AGENT_QUERIES)

      t.equal((await get(app, '/agents/ws1-agent99/analytics?timeframe=24h')).statusCode, 404)
      t.equal((await get(app, '/agents/ws1-agent2/analytics?timeframe=1w')).statusCode, 400)

      const top = await get(app, TOP)
      t.equal(top.headers['x-cache'], 'MISS')
      const agents = top.json<{ agents: Array<{ agent_id: string, total_runs: number }> }>().agents
      t.equal(agents.length, 4, 'every agent of ws1, up to the default limit of 10')
      t.ok(agents.every((agent, i) => i === 0 || (agents[i - 1]?.total_runs ?? 0) >= agent.total_runs), 'busiest first')
      t.ok(agents.every((agent) => agent.agent_id.startsWith('ws1-')))
      const two = await get(app, '/agents/top?workspace_id=ws1&timeframe=7d&limit=2')
      t.equal(two.headers['x-cache'], 'MISS', 'the limit is part of the key')
      t.equal(two.json<{ agents: unknown[] }>().agents.length, 2)
      await waitUntilStored(app, TOP_KEY)
      t.equal((await get(app, `${TOP}&limit=10`)).headers['x-cache'], 'HIT', 'limit=10 is the default\'s entry')
      t.equal((await get(app, '/agents/top?workspace_id=ws1&limit=51')).statusCode, 400)
      t.equal(app.db.queries, 2 * AGENT_QUERIES + 2)
    })

    t.test('workspace metrics by type and date', async (t) => {
      const app = await build(t, store)
      const runs = await get(app, RUNS_METRIC)
      t.equal(runs.statusCode, 200)
      t.match(runs.json(), { workspace_id: 'ws1', metric_type: 'runs', date: TODAY, values: { total_runs: Number } })
      const users = await get(app, USERS_METRIC)
      t.match(users.json(), { metric_type: 'active-users', values: { dau: Number, wau: Number, mau: Number } })
      const users30 = users.json<{ values: { wau: number, mau: number } }>().values
      t.ok(users30.mau >= users30.wau && users30.mau > 0)
      t.match((await get(app, `/workspaces/ws1/metrics/durations?date=${TODAY}`)).json(), { values: { p50_ms: Number, p99_ms: Number } })
      await waitUntilStored(app, RUNS_METRIC_KEY)
      t.equal((await get(app, RUNS_METRIC)).headers['x-cache'], 'HIT')
      t.equal((await get(app, `/workspaces/ws1/metrics/revenue?date=${TODAY}`)).statusCode, 400)
      t.equal((await get(app, '/workspaces/ws1/metrics/runs')).statusCode, 400, 'the date is required')
      t.equal((await get(app, '/workspaces/ws1/metrics/runs?date=2024-02-30')).statusCode, 400, 'and must be a real day')
      t.equal(app.db.queries, 3)
    })

    t.test('an agent-run event refreshes exactly its workspace\'s run figures and its agent', async (t) => {
      const app = await build(t, store)
      const overview = (await get(app, OVERVIEW)).json<Overview>()
      const agent = (await get(app, AGENT)).json<AgentAnalytics>()
      const otherAgent = await get(app, OTHER_AGENT)
      const top = await get(app, TOP)
      const runsMetric = (await get(app, RUNS_METRIC)).json<{ values: { total_runs: number } }>()
      const usersMetric = await get(app, USERS_METRIC)
      const ws2 = await get(app, WS2_OVERVIEW, WS2_USER)
      const all = [OVERVIEW_KEY, AGENT_KEY, OTHER_AGENT_KEY, TOP_KEY, RUNS_METRIC_KEY, USERS_METRIC_KEY, WS2_OVERVIEW_KEY]
      for (const key of all) await waitUntilStored(app, key)
      const queries = app.db.queries

      const event = await post(app, RUN_EVENT, { workspace_id: 'ws1', agent_id: 'ws1-agent1', duration_ms: 4321, outcome: 'timeout' }, WS1_USER)
      t.equal(event.statusCode, 201)
      t.same(event.json(), { ok: true })
      t.equal(event.headers['x-cache'], undefined, 'a write is never cached')
      t.equal(app.db.writes, 1)
      // invalidated before the answer went out: no waiting needed
      t.same(await present(app, all), [false, false, true, false, false, true, true],
        'the overview, agent, top agents and run metrics of ws1 are gone; the other agent, active users and ws2 stay')
      t.same(await invalidations(app), { 'ws:ws1:runs': 1, 'agent:ws1-agent1': 1 })

      const fresh = await get(app, OVERVIEW)
      t.equal(fresh.headers['x-cache'], 'MISS')
      const figures = fresh.json<Overview>()
      t.ok(Date.parse(figures.cached_at ?? '') > Date.parse(overview.cached_at ?? ''), 'a newer cached_at')
      t.equal(figures.metrics.total_runs, overview.metrics.total_runs + 1, 'the new run is counted')
      t.equal(figures.metrics.successful_runs, overview.metrics.successful_runs)
      const agentAgain = (await get(app, AGENT)).json<AgentAnalytics>()
      t.equal(agentAgain.metrics.total_runs, agent.metrics.total_runs + 1)
      t.equal(agentAgain.metrics.timed_out_runs, agent.metrics.timed_out_runs + 1)
      t.equal((await get(app, RUNS_METRIC)).json<{ values: { total_runs: number } }>().values.total_runs, runsMetric.values.total_runs + 1)
      t.not((await get(app, TOP)).body, top.body)
      t.equal(app.db.queries, queries + OVERVIEW_QUERIES + AGENT_QUERIES + 1 + 1)

      for (const [url, before, as] of [[OTHER_AGENT, otherAgent, WS1_USER], [USERS_METRIC, usersMetric, WS1_USER], [WS2_OVERVIEW, ws2, WS2_USER]] as const) {
        const again = await get(app, url, as)
        t.equal(again.headers['x-cache'], 'HIT', `${url} kept its entry`)
        t.equal(again.body, before.body)
      }
      t.equal(app.db.queries, queries + OVERVIEW_QUERIES + AGENT_QUERIES + 2)
    })

    t.test('a refused agent-run event writes and invalidates nothing', async (t) => {
      const app = await build(t, store)
      const overview = await get(app, OVERVIEW)
      await waitUntilStored(app, OVERVIEW_KEY)
      const good = { workspace_id: 'ws1', agent_id: 'ws1-agent1', duration_ms: 100, outcome: 'success' }
      for (const payload of [{}, { ...good, outcome: 'crashed' }, { ...good, duration_ms: -1 }, { ...good, workspace_id: '' }, '{"workspace_id":"ws1",']) {
        t.equal((await post(app, RUN_EVENT, payload)).statusCode, 400, JSON.stringify(payload))
      }
      t.equal((await post(app, RUN_EVENT, good, WS2_USER)).statusCode, 403, 'a member of another workspace')
      t.equal(app.db.writes, 0, 'the handler never ran')
      for (const payload of [{ ...good, agent_id: 'ws1-agent99' }, { ...good, workspace_id: 'ws2' }]) {
        t.equal((await post(app, RUN_EVENT, payload)).statusCode, 404, JSON.stringify(payload))
      }
      t.same(await invalidations(app), {}, 'no tag was invalidated')
      const again = await get(app, OVERVIEW)
      t.equal(again.headers['x-cache'], 'HIT')
      t.equal(again.body, overview.body)
    })

    t.test('a user-activity event refreshes that user\'s activity and the workspace\'s active users only', async (t) => {
      const app = await build(t, store)
      const day = store === 'memory' ? '2024-05-01' : '2024-06-01' // the stores' runs share the database
      const mine = [`/users/${WS1_USER}/activity?date=${day}`, `/users/${WS1_USER}/activity?date=2024-05-02`]
      const keys: CacheKey[] = [['user', 'activity', WS1_USER, day], ['user', 'activity', WS1_USER, '2024-05-02'], ['user', 'activity', WS1_OTHER_USER, day], USERS_METRIC_KEY, OVERVIEW_KEY]
      const first = [await get(app, mine[0] ?? ''), await get(app, mine[1] ?? '')]
      t.equal(first[0]?.headers['cache-control'], 'private, max-age=60, stale-while-revalidate=240')
      t.match(first[0]?.json<Activity>(), { user_id: WS1_USER, date: day, events: 0, workspaces: [] })
      const other = await get(app, `/users/${WS1_OTHER_USER}/activity?date=${day}`, WS1_OTHER_USER)
      const users = (await get(app, USERS_METRIC)).json<{ values: { dau: number } }>()
      await get(app, OVERVIEW)
      for (const key of keys) await waitUntilStored(app, key)

      const event = await post(app, ACTIVITY_EVENT, { user_id: WS1_USER, workspace_id: 'ws1', date: TODAY, active_minutes: 12 }, WS1_USER)
      t.equal(event.statusCode, 201)
      t.same(await present(app, keys), [false, false, true, false, true], 'every entry of the user and the active users; not the other user, not the runs')
      t.same(await invalidations(app), { [`user:${WS1_USER}`]: 1, 'ws:ws1:users': 1 })
      t.equal((await get(app, `/users/${WS1_OTHER_USER}/activity?date=${day}`, WS1_OTHER_USER)).body, other.body)

      const dayEvent = await post(app, ACTIVITY_EVENT, { user_id: WS1_USER, workspace_id: 'ws1', date: day }, 'admin')
      t.equal(dayEvent.statusCode, 201, 'the operator may send events too')
      const fresh = (await get(app, mine[0] ?? '')).json<Activity>()
      t.match(fresh, { events: 1, workspaces: [{ workspace_id: 'ws1', events: 1 }] })
      t.ok(Date.parse(fresh.cached_at) > Date.parse(first[0]?.json<Activity>().cached_at ?? ''), 'a newer cached_at')
      const usersAgain = (await get(app, USERS_METRIC)).json<{ values: { dau: number } }>()
      t.ok(usersAgain.values.dau >= 1 && usersAgain.values.dau >= users.values.dau, 'today\'s active users count the user')

      // refused: another user's activity, a workspace the user is not in, a bad day
      t.equal((await post(app, ACTIVITY_EVENT, { user_id: WS1_OTHER_USER, workspace_id: 'ws1', date: day }, WS1_USER)).statusCode, 403)
      t.equal((await post(app, ACTIVITY_EVENT, { user_id: WS1_USER, workspace_id: 'ws2', date: day }, WS1_USER)).statusCode, 404)
      t.equal((await post(app, ACTIVITY_EVENT, { user_id: WS1_USER, workspace_id: 'ws1', date: '2024-13-01' }, WS1_USER)).statusCode, 400)
      t.equal((await get(app, `/users/${WS1_USER}/activity`)).statusCode, 400, 'the date is required')
    })

    t.test('query results are cached through getOrCompute by a hash of statement and parameters', async (t) => {
      const app = await build(t, store)
      const url = '/workspaces/ws1/run-count'
      const key = app.executeQueryCached.key(SQL.runCount, ['ws1'])
      t.same(key, ['query', 'result', stableHash({ sql: SQL.runCount, params: ['ws1'] })])

      // concurrent callers share one query, later ones read the cache
      const concurrent = await Promise.all([get(app, url), get(app, url), get(app, url)])
      const count = concurrent[0]?.json<RunCount>().run_count ?? 0
      t.ok(count > 0)
      for (let i = 0; i < 3; i++) concurrent.push(await get(app, url))
      for (const response of concurrent) {
        t.same(response.json(), { workspace_id: 'ws1', run_count: count })
        t.equal(response.headers['x-cache'], undefined, 'the route is not cached; the query result is')
      }
      t.equal(app.db.queries, 1, 'one query for six reads')
      const ttl = await app.cacheService.ttl(key)
      t.ok(ttl > 50 && ttl <= 60, `stored for 60 s, got ${ttl}`)
      t.same(await app.executeQueryCached(SQL.runCount, ['ws1']), [{ count }], 'a direct call shares the entry')

      const successes = (await get(app, `${url}?outcome=success`)).json<RunCount>()
      t.ok(successes.run_count > 0 && successes.run_count < count)
      t.equal(app.db.queries, 2)
      t.equal(await app.executeQueryCached.invalidate(SQL.runCount, ['ws1']), 1)
      t.equal((await get(app, url)).json<RunCount>().run_count, count)
      t.equal(app.db.queries, 3, 'queried again after invalidate()')

      // the workspace's runs tag: an agent-run event drops every query result of its workspace
      t.equal((await post(app, RUN_EVENT, { workspace_id: 'ws1', agent_id: 'ws1-agent3', duration_ms: 800, outcome: 'success' })).statusCode, 201)
      t.notOk(await app.cacheService.exists(key))
      t.same((await get(app, url)).json(), { workspace_id: 'ws1', run_count: count + 1 })
      t.same((await get(app, `${url}?outcome=success`)).json(), { workspace_id: 'ws1', outcome: 'success', run_count: successes.run_count + 1 })
      t.equal(app.db.queries, 5)
      t.equal((await get(app, `${url}?outcome=crashed`)).statusCode, 400)
      t.equal(app.db.queries, 5, 'refused requests cost no query')
    })

    t.test('operations: stats, warm and invalidate need the admin token', async (t) => {
      const app = await build(t, store)
      for (const [method, url] of [['GET', '/cache/stats'], ['POST', '/cache/warm'], ['POST', '/cache/invalidate'], ['GET', '/dashboard/summary']] as const) {
        const response = await app.inject({ method, url, headers: bearer(WS1_USER), ...(method === 'POST' ? { payload: {} } : {}) })
        t.equal(response.statusCode, 401, `${method} ${url} as a member`)
      }

      const warmed = await post(app, '/cache/warm', { workspace_id: 'ws2' })
      t.equal(warmed.statusCode, 200)
      t.match(warmed.json(), { ok: 6, failed: 0, workspaces: ['ws2'] }, 'overview and top agents, for 24h, 7d and 30d')
      t.ok(await app.cacheService.exists(WS2_OVERVIEW_KEY))
      t.equal((await get(app, WS2_OVERVIEW, WS2_USER)).headers['x-cache'], 'HIT', 'a member reads the warmed entry')
      t.equal((await post(app, '/cache/warm', { workspace_id: 'ws404' })).statusCode, 404)
      const all = (await post(app, '/cache/warm', {})).json<{ ok: number, workspaces: string[] }>()
      t.same(all.workspaces, ['ws1', 'ws2', 'ws3'], 'every active workspace')
      t.equal(all.ok, 18)

      const invalidated = await post(app, '/cache/invalidate', { tags: ['ws:ws2'] })
      t.same(invalidated.json(), { invalidated: { tags: 6 } })
      t.notOk(await app.cacheService.exists(WS2_OVERVIEW_KEY))
      t.ok(await app.cacheService.exists(OVERVIEW_KEY), 'ws1 kept its entries')
      t.same((await post(app, '/cache/invalidate', { pattern: 'exec:dashboard:ws1:*' })).json(), { invalidated: { pattern: 3 } })
      t.same((await post(app, '/cache/invalidate', { keys: ['agent:top:ws3:7d:10'] })).json(), { invalidated: { keys: 1 } })
      for (const payload of [{}, { tags: [] }, { tags: [''] }, { pattern: '' }]) {
        t.equal((await post(app, '/cache/invalidate', payload)).statusCode, 400, JSON.stringify(payload))
      }

      const stats = await get(app, '/cache/stats', 'admin')
      t.equal(stats.headers['x-cache'], undefined, 'the stats are never cached')
      t.match(stats.json(), { hits: 1, store: { kind: store }, lastWarm: { ok: 18, failed: 0 } })
      t.match(stats.json<{ routes: Record<string, unknown> }>().routes['/executive/overview'], { hits: 1 })
    })

    t.test('/metrics: cache outcomes per route, request and database latency, query count', async (t) => {
      const app = await build(t, store)
      await get(app, OVERVIEW)
      await waitUntilStored(app, OVERVIEW_KEY)
      await get(app, OVERVIEW)
      const response = await app.inject('/metrics')
      t.equal(response.statusCode, 200)
      t.match(response.headers['content-type'], /^text\/plain/)
      const text = response.body
      t.match(text, 'cache_events_total{route="/executive/overview",event="hits"} 1')
      t.match(text, 'cache_events_total{route="/executive/overview",event="misses"} 1')
      t.match(text, 'cache_events_total{route="/executive/overview",event="errors"} 0')
      t.match(text, 'db_queries_total{query="executiveFigures",result="ok"} 1')
      t.match(text, 'db_queries_total{query="topAgents",result="ok"} 1')
      t.match(text, /http_request_duration_seconds_count\{route="\/executive\/overview",cache="HIT"\} 1/)
      t.match(text, /db_query_duration_seconds_bucket\{le="[^"]+",query="executiveFigures"\}/)
      if (store === 'redis') t.match(text, /cache_store_command_duration_seconds_count\{command="[a-z]+"\} [1-9]/)
    })

    t.test('/health', async (t) => {
      const app = await build(t, store)
      t.same((await app.inject('/health')).json(), { status: 'ok', queries: 0 })
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
  const user = 'u7'
  for (const store of ['memory', 'redis'] as const) {
    t.test(`with encryption keys (${store}): cached per user, for that user only, and refreshed by the user's activity`, async (t) => {
      const app = await build(t, store, { encryptionKeys: [freshKey(), freshKey()] })
      const first = await get(app, `/users/${user}/profile`, user)
      t.equal(first.statusCode, 200)
      t.equal(first.headers['x-cache'], 'MISS')
      t.equal(first.headers['cache-control'], 'private, no-store', 'nothing downstream may store personal data')
      t.match(first.json<Profile>(), { user_id: user, email: `${user}@users.example`, workspaces: ['ws1', 'ws2'] })
      await waitUntilStored(app, ['user', 'profile', user])
      const second = await get(app, `/users/${user}/profile`, user)
      t.equal(second.headers['x-cache'], 'HIT')
      t.equal(second.headers['cache-control'], 'private, no-store')
      t.equal(second.body, first.body)
      t.equal((await get(app, `/users/${user}/profile`, 'u8')).statusCode, 403, 'another user may not read it, cached or not')
      t.equal((await get(app, '/users/u404/profile', 'admin')).statusCode, 404)
      const queries = app.db.queries

      t.equal((await post(app, ACTIVITY_EVENT, { user_id: user, workspace_id: 'ws2', date: '2099-05-01' }, user)).statusCode, 201)
      const after = await get(app, `/users/${user}/profile`, user)
      t.equal(after.headers['x-cache'], 'MISS', 'the activity event invalidated the user tag')
      t.match(after.json<Profile>(), { last_active: '2099-05-01' })
      t.equal(app.db.queries, queries + 1)
    })
  }

  t.test('with encryption keys, Redis holds no plaintext of the profile (and does of a non-sensitive route)', async (t) => {
    const prefix = uniquePrefix('example-server-sensitive')
    const client = await createClient(t)
    const app = await buildApp({ database: await database(), adminToken: ADMIN, redisUrl: await redisUrl(), prefix, encryptionKeys: [freshKey()] })
    t.teardown(async () => {
      await app.close()
      await deleteByPrefix(client, prefix)
    })
    const profile = await get(app, `/users/${user}/profile`, user)
    const activity = await get(app, `/users/${user}/activity?date=2024-05-01`, user)
    await waitUntilStored(app, ['user', 'profile', user])
    await waitUntilStored(app, ['user', 'activity', user, '2024-05-01'])
    t.equal((await get(app, `/users/${user}/profile`, user)).headers['x-cache'], 'HIT', 'the encrypted entry decrypts')

    const stored = await rawValues(client, `${prefix}:*`)
    const cachedAtOf = (body: string): string => (JSON.parse(body) as { cached_at: string }).cached_at
    // the control: a plain entry shows its body, so the search below can find plaintext where there is some
    t.ok(stored.includes(cachedAtOf(activity.body)), 'the non-sensitive entry is stored as it was sent')
    for (const plaintext of [`${user}@users.example`, cachedAtOf(profile.body), '"last_active"']) {
      t.notOk(stored.includes(plaintext), `no ${JSON.stringify(plaintext)} in Redis`)
    }
  })

  t.test('without keys: served uncached, never stored, and the app says once at start why', async (t) => {
    const lines: Array<{ level: number, msg: string, routes?: string[] }> = []
    const app = await build(t, 'redis', { logger: { level: 'info', stream: { write: (line: string) => { lines.push(JSON.parse(line)) } } } })
    for (let i = 0; i < 2; i++) {
      const response = await get(app, `/users/${user}/profile`, user)
      t.equal(response.statusCode, 200)
      t.equal(response.headers['x-cache'], undefined, 'the route is not cached at all')
      t.equal(response.headers['cache-control'], 'private, no-store')
      t.equal(response.json<Profile>().email, `${user}@users.example`)
    }
    t.equal(app.db.queries, 2, 'each request ran the query')
    await sleep(50)
    t.notOk(await app.cacheService.exists(['user', 'profile', user]))
    const warnings = lines.filter((line) => line.msg.includes('sensitive routes are served uncached'))
    t.equal(warnings.length, 1, 'logged once')
    t.match(warnings[0], { level: 40, routes: [PROFILE_ROUTE] })
  })
})

/** The environment of `npm start` in these tests: the small dataset, a known admin token, no Redis unless given. */
function startEnv (extra: Record<string, string>): Record<string, string | undefined> {
  const env: Record<string, string | undefined> = { ...process.env, DATASET_SIZE: 'small', ADMIN_TOKEN: ADMIN, ...extra }
  for (const name of ['REDIS_URL', 'CACHE_ENCRYPTION_KEYS', 'DATABASE_URL', 'DATABASE_SCHEMA', 'WARM_ON_START']) {
    if (!(name in extra)) delete env[name]
  }
  return env
}

const auth = (as: string): { headers: Record<string, string> } => ({ headers: bearer(as) })

t.test('npm start: embedded defaults (PGlite, memory store), warming of the active workspaces on start', { timeout: SERVER_TEST_TIMEOUT_MS }, async (t) => {
  const server = await startServer(t, startEnv({}))
  t.match(server.output(), `example server listening at ${server.base}, caching in memory`)
  t.match(server.output(), '"database":"pglite"')
  t.match(server.output(), '"sensitiveRoutes":"uncached"')
  t.match(server.output(), `dashboard: ${server.base}/ (admin token from ADMIN_TOKEN)`)
  t.notMatch(server.output(), ADMIN, 'a chosen token is never logged')
  t.equal(server.output().split('sensitive routes are served uncached').length - 1, 1, 'without keys, one warning at start')

  // warming runs in the background after listen, and logs its duration
  const deadline = Date.now() + 20_000
  while (!server.output().includes('cache warming on start done in') && Date.now() < deadline) await sleep(100)
  t.match(server.output(), /"workspaces":3,"ok":18,"failed":0,"durationMs":\d+,"errors":\[\],"msg":"cache warming on start done in \d+ ms"/)
  const warmed = await fetch(`${server.base}${OVERVIEW}`, auth(WS1_USER))
  t.equal(warmed.status, 200)
  t.equal(warmed.headers.get('x-cache'), 'HIT', 'the dashboard was warmed')

  const url = `/users/${WS1_USER}/activity?date=${TODAY}`
  const first = await fetch(`${server.base}${url}`, auth(WS1_USER))
  t.equal(first.headers.get('x-cache'), 'MISS')
  const body = await first.text()
  await waitForStored(server.base, 19, ADMIN)
  const second = await fetch(`${server.base}${url}`, auth(WS1_USER))
  t.equal(second.headers.get('x-cache'), 'HIT')
  t.equal(await second.text(), body)
  t.equal((await fetch(`${server.base}${OVERVIEW}`)).status, 401, 'no token, no data')
  const page = await fetch(`${server.base}/`)
  t.equal(page.status, 200)
  t.match(await page.text(), '<canvas id="chart"')

  t.equal(await server.stop(), 0, 'SIGTERM closes the app and exits cleanly')
  t.match(server.output(), '"signal":"SIGTERM"')
})

t.test('npm start: REDIS_URL and DATABASE_URL (the real servers); CACHE_ENCRYPTION_KEYS caches the sensitive route encrypted', { timeout: SERVER_TEST_TIMEOUT_MS }, async (t) => {
  const url = await redisUrl()
  const keys = [freshKey(), freshKey()]
  const schema = `example_test_${randomBytes(6).toString('hex')}`
  const databaseUrl = process.env['TEST_DATABASE_URL'] ?? 'postgres://postgres@127.0.0.1:5432/test'
  const prefix = uniquePrefix('example-start').replace(/[^A-Za-z0-9]/g, '')
  const client = await createClient(t)
  t.teardown(async () => {
    await deleteByPrefix(client, prefix)
    const db = await openDatabase({ url: databaseUrl, schema })
    await db.dropSchema()
    await db.close()
  })
  const server = await startServer(t, startEnv({
    REDIS_URL: url,
    DATABASE_URL: databaseUrl,
    DATABASE_SCHEMA: schema,
    CACHE_PREFIX: prefix,
    WARM_ON_START: '0',
    CACHE_ENCRYPTION_KEYS: ` ${keys[0]} , ${keys[1]}`
  }))
  t.match(server.output(), 'caching in redis')
  t.match(server.output(), '"store":"redis"')
  t.match(server.output(), '"database":"postgres://postgres@127.0.0.1:5432/test"')
  t.match(server.output(), '"sensitiveRoutes":"encrypted (2 keys)"')
  t.notMatch(server.output(), 'sensitive routes are served uncached')

  // the data is in PostgreSQL, in the schema the server was given
  const db = await openDatabase({ url: databaseUrl, schema })
  const [row] = await db.query<{ runs: number }>('SELECT count(*)::int AS runs FROM agent_runs')
  await db.close()
  t.ok((row?.runs ?? 0) > 1000, `the small dataset is in PostgreSQL (${row?.runs} runs)`)

  const path = '/executive/overview?workspace_id=ws3&timeframe=90d'
  t.equal((await fetch(`${server.base}${path}`, auth('u11'))).headers.get('x-cache'), 'MISS')
  await waitForStored(server.base, 1, ADMIN)
  t.equal((await fetch(`${server.base}${path}`, auth('u11'))).headers.get('x-cache'), 'HIT')
  t.ok((await client.dbsize()) > 0 && (await rawValues(client, `${prefix}:*`)).length > 0, 'the entry is in Redis under the prefix')

  const first = await fetch(`${server.base}/users/${PROFILE_USER}/profile`, auth(PROFILE_USER))
  t.equal(first.headers.get('x-cache'), 'MISS')
  const body = await first.text()
  await waitForStored(server.base, 2, ADMIN)
  const second = await fetch(`${server.base}/users/${PROFILE_USER}/profile`, auth(PROFILE_USER))
  t.equal(second.headers.get('x-cache'), 'HIT')
  t.equal(await second.text(), body)
  const stored = await rawValues(client, `${prefix}:*`)
  t.notOk(stored.includes(`${PROFILE_USER}@users.example`), 'as ciphertext: no email')
  t.notOk(stored.includes((JSON.parse(body) as Profile).cached_at), 'no other part of the body either')

  t.equal(await server.stop(), 0)
  for (const key of keys) t.notMatch(server.output(), key, 'the keys are never logged')
})

t.test('npm start: a bad key in CACHE_ENCRYPTION_KEYS stops the start, and the error never shows it', { timeout: SERVER_TEST_TIMEOUT_MS }, async (t) => {
  const short = randomBytes(24).toString('base64') // 24 bytes: not an AES-256 key
  const good = freshKey()
  const { code, output } = await runUntilExit(startEnv({ CACHE_ENCRYPTION_KEYS: `${good},${short}` }))
  t.equal(code, 1)
  t.match(output, 'FST_CACHE_INVALID_OPTION')
  t.match(output, 'encryption.keys.1')
  t.notMatch(output, short)
  t.notMatch(output, good)
  t.notMatch(output, 'example server listening')
})
