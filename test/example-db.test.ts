/**
 * The example's database layer: the same generated dataset and the same SQL give the same answers on PGlite (in this
 * process) and on a real PostgreSQL (TEST_DATABASE_URL, by default the one on 127.0.0.1:5432), each in a schema of its
 * own that is dropped afterwards; writes are refused for agents and workspaces that do not match.
 */
import { randomBytes } from 'node:crypto'
import t from 'tap'
import { Analytics, METRIC_TYPES, TIMEFRAMES } from '../example-server/db/analytics'
import { type SqlDatabase, openDatabase } from '../example-server/db/database'
import { type Teardownable } from './helpers/redis'
import { DATASET_SIZES, datasetSize, demoToken, seedDataset, sha256 } from '../example-server/db/dataset'

const POSTGRES_URL = process.env['TEST_DATABASE_URL'] ?? 'postgres://postgres@127.0.0.1:5432/test'

async function seeded (t: Teardownable, url: string | undefined, anchor: number): Promise<SqlDatabase> {
  const db = await openDatabase({ url, schema: `example_test_${randomBytes(6).toString('hex')}` })
  t.teardown(async () => {
    await db.dropSchema()
    await db.close()
  })
  await seedDataset(db, DATASET_SIZES.small, anchor)
  return db
}

t.test('PGlite and PostgreSQL hold the same dataset and answer every query alike', async (t) => {
  // one anchor for both, and a day in the past for the daily metrics, so that the clock cannot tell them apart
  const anchor = Date.now()
  const [pglite, postgres] = await Promise.all([seeded(t, undefined, anchor), seeded(t, POSTGRES_URL, anchor)])
  t.equal(pglite.kind, 'pglite')
  t.equal(postgres.kind, 'postgres')
  const [a, b] = [new Analytics(pglite), new Analytics(postgres)]

  const counts = 'SELECT (SELECT count(*) FROM agent_runs)::int AS runs, (SELECT count(*) FROM user_daily_activity)::int AS activity, (SELECT count(*) FROM memberships)::int AS memberships'
  const [countsA] = await pglite.query(counts)
  t.same(await postgres.query(counts), [countsA])
  t.ok(Number(countsA?.['runs']) > 4000, 'thousands of runs in the small dataset')

  const directory = await a.loadDirectory()
  t.same(directory.workspaces.map((workspace) => workspace.id), ['ws1', 'ws2', 'ws3'])
  t.equal(directory.agents.get('ws2-agent3'), 'ws2')
  t.equal(directory.tokens.get(sha256(demoToken('u1'))), 'u1', 'tokens are stored as SHA-256 digests')
  t.same([...directory.memberships.get('u7') ?? []].sort(), ['ws1', 'ws2'])

  const day = new Date(anchor - 3 * 86400_000).toISOString().slice(0, 10)
  for (const timeframe of TIMEFRAMES) {
    t.same(await b.executiveMetrics('ws1', timeframe), await a.executiveMetrics('ws1', timeframe), `overview ${timeframe}`)
    t.same(await b.agentAnalytics('ws2-agent1', timeframe), await a.agentAnalytics('ws2-agent1', timeframe), `agent ${timeframe}`)
    t.same(await b.topAgents('ws3', timeframe, 3), await a.topAgents('ws3', timeframe, 3), `top agents ${timeframe}`)
  }
  for (const type of METRIC_TYPES) {
    t.same(await b.workspaceMetric('ws1', type, day), await a.workspaceMetric('ws1', type, day), `metric ${type}`)
  }
  t.same(await b.userActivity('u7', day), await a.userActivity('u7', day))
  t.same(await b.userProfile('u7'), await a.userProfile('u7'))
  t.equal(await a.userProfile('nobody'), undefined)

  const overview = await a.executiveMetrics('ws1', '90d')
  t.ok(overview.total_runs > 1000 && overview.active_agents === 4 && overview.top_agents.length === 3)
  t.equal(overview.total_runs, overview.successful_runs + overview.failed_runs + overview.timed_out_runs)
  const agent = await a.agentAnalytics('ws1-agent1', '24h')
  t.equal(agent.runs_over_time.length, 24)
  t.equal(agent.runs_over_time.reduce((sum, bucket) => sum + bucket.runs, 0), agent.total_runs, 'every run of the day is in a bucket')

  for (const analytics of [a, b]) {
    const before = await analytics.executiveMetrics('ws1', '24h')
    t.equal(await analytics.recordRun({ workspaceId: 'ws1', agentId: 'ws1-agent1', durationMs: 10, outcome: 'failure' }), true)
    t.equal(await analytics.recordRun({ workspaceId: 'ws2', agentId: 'ws1-agent1', durationMs: 10, outcome: 'failure' }), false, 'the agent is not in ws2')
    const after = await analytics.executiveMetrics('ws1', '24h')
    t.equal(after.total_runs, before.total_runs + 1)
    t.equal(after.failed_runs, before.failed_runs + 1)
    t.equal(await analytics.recordActivity({ userId: 'u1', workspaceId: 'ws1', date: '2030-01-01', activeMinutes: 5 }), true)
    t.equal(await analytics.recordActivity({ userId: 'u1', workspaceId: 'ws1', date: '2030-01-01', activeMinutes: 5 }), true)
    t.equal(await analytics.recordActivity({ userId: 'u1', workspaceId: 'ws2', date: '2030-01-01', activeMinutes: 5 }), false, 'u1 is not in ws2')
    t.match(await analytics.userActivity('u1', '2030-01-01'), { events: 2, active_minutes: 10, workspaces: [{ workspace_id: 'ws1', events: 2 }] })
    t.equal(analytics.writes, 5, 'two runs and three activity events, refused ones too')
  }
})

t.test('the dataset is deterministic, and sized by DATASET_SIZE', async (t) => {
  const anchor = Date.UTC(2026, 0, 15, 12)
  const [one, two] = await Promise.all([seeded(t, POSTGRES_URL, anchor), seeded(t, POSTGRES_URL, anchor)])
  const digest = 'SELECT md5(string_agg(agent_id || started_at::text || duration_ms || outcome, \',\' ORDER BY id)) AS digest FROM agent_runs'
  t.same(await one.query(digest), await two.query(digest), 'the same rows, run after run')
  t.equal(datasetSize(undefined), 'medium')
  t.equal(datasetSize('small'), 'small')
  t.throws(() => datasetSize('huge'), /DATASET_SIZE must be small, medium or large/)
  await t.rejects(openDatabase({ schema: 'Robert\'); DROP TABLE students;--' }), /schema must match/)
})
