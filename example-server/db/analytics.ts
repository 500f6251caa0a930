/**
 * The example's queries, in SQL that PGlite and PostgreSQL both run, behind typed methods. Every statement is counted
 * (reads and writes apart) and timed, so that the dashboard, /metrics and the tests can see how much work the cache
 * takes off the database.
 */
import type { Row, SqlDatabase } from './database'

export const TIMEFRAMES = ['24h', '7d', '30d', '90d'] as const
export type Timeframe = typeof TIMEFRAMES[number]
const TIMEFRAME_INTERVAL: Record<Timeframe, string> = { '24h': '24 hours', '7d': '7 days', '30d': '30 days', '90d': '90 days' }
const TIMEFRAME_HOURS: Record<Timeframe, number> = { '24h': 24, '7d': 7 * 24, '30d': 30 * 24, '90d': 90 * 24 }

export const METRIC_TYPES = ['runs', 'durations', 'active-users'] as const
export type MetricType = typeof METRIC_TYPES[number]

export type RunOutcome = 'success' | 'failure' | 'timeout'

export interface RunFigures {
  total_runs: number
  successful_runs: number
  failed_runs: number
  timed_out_runs: number
  /** Percent, two decimals. */
  success_rate: number
  avg_duration_ms: number
  p95_duration_ms: number
}

export interface ExecutiveMetrics extends RunFigures {
  active_agents: number
  top_agents: TopAgent[]
}

export interface TopAgent {
  agent_id: string
  name: string
  total_runs: number
  successful_runs: number
  success_rate: number
  avg_duration_ms: number
}

export interface AgentMetrics extends RunFigures {
  /** Runs per day (per hour for 24h), oldest first; `hours_ago` is where the bucket starts. */
  runs_over_time: Array<{ hours_ago: number, runs: number, successful_runs: number }>
}

export interface UserActivity {
  user_id: string
  date: string
  /** Events of that user on that day, in all their workspaces. */
  events: number
  active_minutes: number
  workspaces: Array<{ workspace_id: string, events: number, active_minutes: number }>
}

export interface UserProfile {
  user_id: string
  name: string
  email: string
  workspaces: string[]
  /** The latest day with activity (YYYY-MM-DD), or null. */
  last_active: string | null
}

/** The statements of the query-result route: real SQL, whose results are cached by a hash of statement and parameters. */
export const SQL = {
  runCount: 'SELECT count(*)::int AS count FROM agent_runs WHERE workspace_id = $1',
  runCountByOutcome: 'SELECT count(*)::int AS count FROM agent_runs WHERE workspace_id = $1 AND outcome = $2'
} as const

const FIGURES = `
  count(*)::int AS total_runs,
  (count(*) FILTER (WHERE outcome = 'success'))::int AS successful_runs,
  (count(*) FILTER (WHERE outcome = 'failure'))::int AS failed_runs,
  (count(*) FILTER (WHERE outcome = 'timeout'))::int AS timed_out_runs,
  coalesce(round(avg(duration_ms)), 0)::int AS avg_duration_ms,
  coalesce(percentile_disc(0.95) WITHIN GROUP (ORDER BY duration_ms), 0)::int AS p95_duration_ms`

const QUERIES = {
  executiveFigures: `SELECT ${FIGURES}, count(DISTINCT agent_id)::int AS active_agents
    FROM agent_runs WHERE workspace_id = $1 AND started_at > now() - $2::interval`,
  topAgents: `SELECT r.agent_id, a.name, count(*)::int AS total_runs,
      (count(*) FILTER (WHERE r.outcome = 'success'))::int AS successful_runs,
      round(avg(r.duration_ms))::int AS avg_duration_ms
    FROM agent_runs r JOIN agents a ON a.id = r.agent_id
    WHERE r.workspace_id = $1 AND r.started_at > now() - $2::interval
    GROUP BY r.agent_id, a.name ORDER BY total_runs DESC, r.agent_id LIMIT $3`,
  agentFigures: `SELECT ${FIGURES} FROM agent_runs WHERE agent_id = $1 AND started_at > now() - $2::interval`,
  agentBuckets: `SELECT floor(extract(epoch FROM now() - started_at) / $3)::int AS bucket, count(*)::int AS runs,
      (count(*) FILTER (WHERE outcome = 'success'))::int AS successful_runs
    FROM agent_runs WHERE agent_id = $1 AND started_at > now() - $2::interval GROUP BY 1`,
  userActivity: `SELECT workspace_id, events, active_minutes FROM user_daily_activity
    WHERE user_id = $1 AND day = $2::date ORDER BY workspace_id`,
  userProfile: `SELECT u.id, u.name, u.email,
      coalesce((SELECT array_agg(m.workspace_id ORDER BY m.workspace_id) FROM memberships m WHERE m.user_id = u.id), '{}') AS workspaces,
      (SELECT max(day)::text FROM user_daily_activity d WHERE d.user_id = u.id) AS last_active
    FROM users u WHERE u.id = $1`,
  metricRuns: `SELECT ${FIGURES} FROM agent_runs WHERE workspace_id = $1
    AND started_at >= ($2::date)::timestamp AT TIME ZONE 'UTC' AND started_at < ($2::date + 1)::timestamp AT TIME ZONE 'UTC'`,
  metricDurations: `SELECT count(*)::int AS runs,
      coalesce(percentile_disc(0.5) WITHIN GROUP (ORDER BY duration_ms), 0)::int AS p50_ms,
      coalesce(percentile_disc(0.9) WITHIN GROUP (ORDER BY duration_ms), 0)::int AS p90_ms,
      coalesce(percentile_disc(0.99) WITHIN GROUP (ORDER BY duration_ms), 0)::int AS p99_ms,
      coalesce(max(duration_ms), 0)::int AS max_ms
    FROM agent_runs WHERE workspace_id = $1
    AND started_at >= ($2::date)::timestamp AT TIME ZONE 'UTC' AND started_at < ($2::date + 1)::timestamp AT TIME ZONE 'UTC'`,
  metricActiveUsers: `SELECT
      (count(DISTINCT user_id) FILTER (WHERE day = $2::date))::int AS dau,
      (count(DISTINCT user_id) FILTER (WHERE day > $2::date - 7))::int AS wau,
      count(DISTINCT user_id)::int AS mau
    FROM user_daily_activity WHERE workspace_id = $1 AND day > $2::date - 30 AND day <= $2::date`,
  recordRun: `INSERT INTO agent_runs (workspace_id, agent_id, started_at, duration_ms, outcome)
    SELECT a.workspace_id, a.id, now(), $3, $4 FROM agents a WHERE a.id = $2 AND a.workspace_id = $1 RETURNING id`,
  recordActivity: `INSERT INTO user_daily_activity (user_id, workspace_id, day, events, active_minutes)
    SELECT m.user_id, m.workspace_id, $3::date, 1, $4 FROM memberships m WHERE m.user_id = $1 AND m.workspace_id = $2
    ON CONFLICT (user_id, workspace_id, day) DO UPDATE
      SET events = user_daily_activity.events + 1, active_minutes = user_daily_activity.active_minutes + excluded.active_minutes
    RETURNING events`
} as const

export type QueryName = keyof typeof QUERIES | 'adHoc'

/** Who may see what, read once at start: a real service would keep this in its session store or its tokens. */
export interface Directory {
  workspaces: Array<{ id: string, name: string, active: boolean }>
  /** agent id -> workspace id */
  agents: Map<string, string>
  /** sha256 of a bearer token -> user id */
  tokens: Map<string, string>
  /** user id -> the workspaces they belong to */
  memberships: Map<string, Set<string>>
}

export interface QueryObserver {
  (name: QueryName, durationMs: number, ok: boolean): void
}

function rate (successful: number, total: number): number {
  return total === 0 ? 0 : Math.round(successful / total * 10_000) / 100
}

function withRate<T extends { successful_runs: number, total_runs: number }> (row: T): T & { success_rate: number } {
  return { ...row, success_rate: rate(row.successful_runs, row.total_runs) }
}

function figuresOf (row: Row | undefined): RunFigures {
  const figures = {
    total_runs: Number(row?.['total_runs'] ?? 0),
    successful_runs: Number(row?.['successful_runs'] ?? 0),
    failed_runs: Number(row?.['failed_runs'] ?? 0),
    timed_out_runs: Number(row?.['timed_out_runs'] ?? 0),
    avg_duration_ms: Number(row?.['avg_duration_ms'] ?? 0),
    p95_duration_ms: Number(row?.['p95_duration_ms'] ?? 0)
  }
  const { total_runs: total, successful_runs: successful, failed_runs: failed, timed_out_runs: timedOut } = figures
  return { total_runs: total, successful_runs: successful, failed_runs: failed, timed_out_runs: timedOut, success_rate: rate(successful, total), avg_duration_ms: figures.avg_duration_ms, p95_duration_ms: figures.p95_duration_ms }
}

export class Analytics {
  #queries = 0
  #writes = 0
  #queryMs = 0

  constructor (readonly db: SqlDatabase, private readonly observe: QueryObserver = () => {}) {}

  /** Read statements run so far. */
  get queries (): number {
    return this.#queries
  }

  /** Write statements run so far (accepted or not). */
  get writes (): number {
    return this.#writes
  }

  /** Milliseconds spent in read statements. */
  get queryMs (): number {
    return this.#queryMs
  }

  async loadDirectory (): Promise<Directory> {
    const [workspaces, agents, users, memberships] = await Promise.all([
      this.db.query<{ id: string, name: string, active: boolean }>('SELECT id, name, active FROM workspaces ORDER BY length(id), id'),
      this.db.query<{ id: string, workspace_id: string }>('SELECT id, workspace_id FROM agents'),
      this.db.query<{ id: string, token_sha256: string }>('SELECT id, token_sha256 FROM users'),
      this.db.query<{ user_id: string, workspace_id: string }>('SELECT user_id, workspace_id FROM memberships')
    ])
    const members = new Map<string, Set<string>>()
    for (const { user_id: userId, workspace_id: workspaceId } of memberships) {
      let set = members.get(userId)
      if (set === undefined) members.set(userId, set = new Set())
      set.add(workspaceId)
    }
    return {
      workspaces,
      agents: new Map(agents.map((agent) => [agent.id, agent.workspace_id])),
      tokens: new Map(users.map((user) => [user.token_sha256, user.id])),
      memberships: members
    }
  }

  async executiveMetrics (workspaceId: string, timeframe: Timeframe): Promise<ExecutiveMetrics> {
    const [[figures], top] = await Promise.all([
      this.read('executiveFigures', [workspaceId, TIMEFRAME_INTERVAL[timeframe]]),
      this.topAgents(workspaceId, timeframe, 3)
    ])
    return { ...figuresOf(figures), active_agents: Number(figures?.['active_agents'] ?? 0), top_agents: top }
  }

  async topAgents (workspaceId: string, timeframe: Timeframe, limit: number): Promise<TopAgent[]> {
    const rows = await this.read('topAgents', [workspaceId, TIMEFRAME_INTERVAL[timeframe], limit])
    return rows.map((row) => withRate({
      agent_id: String(row['agent_id']),
      name: String(row['name']),
      total_runs: Number(row['total_runs']),
      successful_runs: Number(row['successful_runs']),
      avg_duration_ms: Number(row['avg_duration_ms'])
    }))
  }

  async agentAnalytics (agentId: string, timeframe: Timeframe): Promise<AgentMetrics> {
    const bucketHours = timeframe === '24h' ? 1 : 24
    const [[figures], buckets] = await Promise.all([
      this.read('agentFigures', [agentId, TIMEFRAME_INTERVAL[timeframe]]),
      this.read('agentBuckets', [agentId, TIMEFRAME_INTERVAL[timeframe], bucketHours * 3600])
    ])
    const length = TIMEFRAME_HOURS[timeframe] / bucketHours
    const overTime = Array.from({ length }, (_, i) => ({ hours_ago: (length - i) * bucketHours, runs: 0, successful_runs: 0 }))
    for (const row of buckets) {
      const slot = overTime[length - 1 - Number(row['bucket'])]
      if (slot === undefined) continue
      slot.runs += Number(row['runs'])
      slot.successful_runs += Number(row['successful_runs'])
    }
    return { ...figuresOf(figures), runs_over_time: overTime }
  }

  async userActivity (userId: string, date: string): Promise<UserActivity> {
    const rows = await this.read('userActivity', [userId, date])
    const workspaces = rows.map((row) => ({ workspace_id: String(row['workspace_id']), events: Number(row['events']), active_minutes: Number(row['active_minutes']) }))
    return {
      user_id: userId,
      date,
      events: workspaces.reduce((sum, row) => sum + row.events, 0),
      active_minutes: workspaces.reduce((sum, row) => sum + row.active_minutes, 0),
      workspaces
    }
  }

  async userProfile (userId: string): Promise<UserProfile | undefined> {
    const [row] = await this.read('userProfile', [userId])
    if (row === undefined) return undefined
    const lastActive = row['last_active']
    return {
      user_id: String(row['id']),
      name: String(row['name']),
      email: String(row['email']),
      workspaces: (row['workspaces'] as string[]).map(String),
      last_active: lastActive === null || lastActive === undefined ? null : String(lastActive)
    }
  }

  async workspaceMetric (workspaceId: string, type: MetricType, date: string): Promise<Record<string, number>> {
    const name = type === 'runs' ? 'metricRuns' : type === 'durations' ? 'metricDurations' : 'metricActiveUsers'
    const [row] = await this.read(name, [workspaceId, date])
    if (type === 'runs') return { ...figuresOf(row) }
    return Object.fromEntries(Object.entries(row ?? {}).map(([key, value]) => [key, Number(value)]))
  }

  /** Records a finished run; false (nothing written) when the agent is not in that workspace. */
  async recordRun (run: { workspaceId: string, agentId: string, durationMs: number, outcome: RunOutcome }): Promise<boolean> {
    const rows = await this.run('recordRun', [run.workspaceId, run.agentId, run.durationMs, run.outcome], true)
    return rows.length === 1
  }

  /** Adds one activity event; false (nothing written) when the user is not a member of the workspace. */
  async recordActivity (event: { userId: string, workspaceId: string, date: string, activeMinutes: number }): Promise<boolean> {
    const rows = await this.run('recordActivity', [event.userId, event.workspaceId, event.date, event.activeMinutes], true)
    return rows.length === 1
  }

  /** Any read statement, for the query-result cache. */
  async query (sql: string, params: readonly unknown[]): Promise<Row[]> {
    return await this.timed('adHoc', sql, params, false)
  }

  private async read (name: keyof typeof QUERIES, params: readonly unknown[]): Promise<Row[]> {
    return await this.run(name, params, false)
  }

  private async run (name: keyof typeof QUERIES, params: readonly unknown[], write: boolean): Promise<Row[]> {
    return await this.timed(name, QUERIES[name], params, write)
  }

  private async timed (name: QueryName, sql: string, params: readonly unknown[], write: boolean): Promise<Row[]> {
    if (write) this.#writes++
    else this.#queries++
    const started = performance.now()
    let ok = false
    try {
      const rows = await this.db.query(sql, params)
      ok = true
      return rows
    } finally {
      const ms = performance.now() - started
      if (!write) this.#queryMs += ms
      this.observe(name, ms, ok)
    }
  }
}
