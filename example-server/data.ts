/**
 * A deliberately slow, deterministic stand-in for an analytics database: a few workspaces, their agents and 90 days
 * of agent runs, generated from a seeded PRNG so that every start (and every test) sees the same figures. Each query
 * waits `queryDelayMs` before answering and is counted, so the demo and its tests can see how much load the cache
 * takes off the database. Events write to it (a finished run, a user's activity), which is what invalidation is for;
 * query() answers a few SQL statements by name, for the specification's query-result caching.
 */
import { setTimeout as sleep } from 'node:timers/promises'

export const TIMEFRAMES = ['24h', '7d', '30d', '90d'] as const
export type Timeframe = typeof TIMEFRAMES[number]

const TIMEFRAME_HOURS: Record<Timeframe, number> = { '24h': 24, '7d': 7 * 24, '30d': 30 * 24, '90d': 90 * 24 }
const HISTORY_HOURS = TIMEFRAME_HOURS['90d']

export type RunOutcome = 'success' | 'failure' | 'timeout'

export interface Workspace {
  id: string
  name: string
}

export interface Agent {
  id: string
  workspaceId: string
  name: string
}

interface AgentRun {
  agentId: string
  /** Hours before "now": runs keep their age, so the figures do not depend on the clock. */
  ageHours: number
  durationMs: number
  outcome: RunOutcome
}

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

export interface TopAgent extends RunFigures {
  agent_id: string
  name: string
}

export interface ExecutiveMetrics extends RunFigures {
  active_agents: number
  top_agents: TopAgent[]
}

export interface AgentMetrics extends RunFigures {
  /** Runs per day (per hour for 24h), oldest first; `hours_ago` is where the bucket starts. */
  runs_over_time: Array<{ hours_ago: number, runs: number, successful_runs: number }>
}

/** A run reported by an agent-run-completed event. */
export interface CompletedRun {
  workspaceId: string
  agentId: string
  durationMs: number
  outcome: RunOutcome
}

/** One user-activity event. */
export interface UserActivityEvent {
  userId: string
  workspaceId: string
  /** A calendar day, YYYY-MM-DD. */
  date: string
}

export interface UserActivity {
  user_id: string
  date: string
  /** Events of that user on that day. */
  events: number
  /** Events per workspace, in the order the workspaces were first seen that day. */
  workspaces: Array<{ workspace_id: string, events: number }>
}

/**
 * What the demo treats as personal data: the user's contact address and where they work. Served by a `sensitive`
 * route, so that its cache entries are encrypted at rest.
 */
export interface UserProfile {
  user_id: string
  email: string
  /** Workspaces the user has activity in, sorted. */
  workspaces: string[]
  /** The latest day with activity (YYYY-MM-DD), or null. */
  last_active: string | null
}

/** A row as the query dispatcher returns it. */
export type QueryRow = Record<string, string | number>

/**
 * The "SQL" that query() understands: this data source is not a SQL database, so each statement it answers is named
 * here, verbatim, with its implementation. In every one, $1 is the workspace id.
 */
export const SQL = {
  runCount: 'SELECT count(*) AS count FROM agent_runs WHERE workspace_id = $1',
  runCountByOutcome: 'SELECT count(*) AS count FROM agent_runs WHERE workspace_id = $1 AND outcome = $2'
} as const

export interface AnalyticsDatabaseOptions {
  /** How long each query takes, in milliseconds. */
  queryDelayMs?: number
  seed?: number
  workspaces?: number
  agentsPerWorkspace?: number
}

const DEFAULT_SEED = 20240917
const AGENT_NAMES = ['Triage', 'Summarizer', 'Router', 'Researcher', 'Reviewer', 'Scheduler', 'Translator', 'Auditor']
const WORKSPACE_NAMES = ['Acme Support', 'Globex Research', 'Initech Ops', 'Umbrella Sales', 'Hooli Platform']
const AGENT_ID = /^(ws\d+)-agent\d+$/

/** mulberry32: a tiny, fast, seedable PRNG; plenty for fake data. */
function seededRandom (seed: number): () => number {
  let state = seed >>> 0
  return () => {
    state = (state + 0x6D2B79F5) >>> 0
    let t = state
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/**
 * The workspace an agent id names (`ws1-agent3` belongs to `ws1`), read from the id alone, without a query; undefined
 * for an id of another shape.
 */
export function workspaceOfAgent (agentId: string): string | undefined {
  return AGENT_ID.exec(agentId)?.[1]
}

export class AnalyticsDatabase {
  readonly workspaces: readonly Workspace[]
  readonly agents: readonly Agent[]
  private readonly runsByAgent = new Map<string, AgentRun[]>()
  /** Activity events by user, then by day. */
  private readonly activity = new Map<string, Map<string, UserActivityEvent[]>>()
  private readonly queryDelayMs: number
  #queries = 0
  #writes = 0

  constructor (options: AnalyticsDatabaseOptions = {}) {
    this.queryDelayMs = options.queryDelayMs ?? 150
    const random = seededRandom(options.seed ?? DEFAULT_SEED)
    const workspaces: Workspace[] = []
    const agents: Agent[] = []
    for (let w = 1; w <= (options.workspaces ?? 3); w++) {
      const workspace = { id: `ws${w}`, name: WORKSPACE_NAMES[(w - 1) % WORKSPACE_NAMES.length] ?? `Workspace ${w}` }
      workspaces.push(workspace)
      for (let a = 1; a <= (options.agentsPerWorkspace ?? 5); a++) {
        const agent = { id: `${workspace.id}-agent${a}`, workspaceId: workspace.id, name: `${AGENT_NAMES[(w + a) % AGENT_NAMES.length]} ${a}` }
        agents.push(agent)
        this.runsByAgent.set(agent.id, generateRuns(agent.id, random))
      }
    }
    this.workspaces = workspaces
    this.agents = agents
  }

  /** How many queries have been answered so far. */
  get queries (): number {
    return this.#queries
  }

  /** How many writes (runs and activity events) have been sent so far, refused ones (no such agent or workspace) too. */
  get writes (): number {
    return this.#writes
  }

  /**
   * Appends a finished run, zero hours old, to the agent's history: it counts in every timeframe from now on.
   * Resolves false (and writes nothing) when the agent does not exist in that workspace.
   */
  async recordRun (run: CompletedRun): Promise<boolean> {
    await this.roundTrip('write')
    const runs = this.runsByAgent.get(run.agentId)
    const agent = this.agents.find((candidate) => candidate.id === run.agentId)
    if (runs === undefined || agent?.workspaceId !== run.workspaceId) return false
    runs.push({ agentId: run.agentId, ageHours: 0, durationMs: run.durationMs, outcome: run.outcome })
    return true
  }

  /** Records one activity event; resolves false (and writes nothing) when the workspace does not exist. */
  async recordActivity (event: UserActivityEvent): Promise<boolean> {
    await this.roundTrip('write')
    if (!this.workspaces.some((workspace) => workspace.id === event.workspaceId)) return false
    let days = this.activity.get(event.userId)
    if (days === undefined) {
      days = new Map()
      this.activity.set(event.userId, days)
    }
    const events = days.get(event.date) ?? []
    events.push({ ...event })
    days.set(event.date, events)
    return true
  }

  /** A user's activity on one day; zero events for a user or day never seen. */
  async userActivity (userId: string, date: string): Promise<UserActivity> {
    await this.roundTrip('query')
    const events = this.activity.get(userId)?.get(date) ?? []
    const perWorkspace = new Map<string, number>()
    for (const event of events) perWorkspace.set(event.workspaceId, (perWorkspace.get(event.workspaceId) ?? 0) + 1)
    return {
      user_id: userId,
      date,
      events: events.length,
      workspaces: Array.from(perWorkspace, ([workspaceId, count]) => ({ workspace_id: workspaceId, events: count }))
    }
  }

  /** A user's profile; every user id has one (the demo has no user table), with the activity recorded so far. */
  async userProfile (userId: string): Promise<UserProfile> {
    await this.roundTrip('query')
    const days = this.activity.get(userId) ?? new Map<string, UserActivityEvent[]>()
    const workspaces = new Set<string>()
    let lastActive: string | null = null
    for (const [date, events] of days) {
      for (const event of events) workspaces.add(event.workspaceId)
      if (events.length > 0 && (lastActive === null || date > lastActive)) lastActive = date
    }
    return { user_id: userId, email: `${userId}@users.example`, workspaces: [...workspaces].sort(), last_active: lastActive }
  }

  /**
   * A tiny dispatcher standing in for a SQL client: answers the statements of `SQL`, verbatim, with their positional
   * parameters, and rejects any other statement or wrong parameters. Counted as one query, like the others.
   */
  async query (sql: string, params: readonly unknown[]): Promise<QueryRow[]> {
    await this.roundTrip('query')
    const [workspaceId, outcome] = params
    const workspaceRuns = (): AgentRun[] => {
      if (typeof workspaceId !== 'string') throw new TypeError(`$1 must be a workspace id (a string), got ${typeof workspaceId}`)
      return this.agents
        .filter((agent) => agent.workspaceId === workspaceId)
        .flatMap((agent) => this.runsByAgent.get(agent.id) ?? [])
    }
    switch (sql) {
      case SQL.runCount:
        if (params.length !== 1) throw new TypeError(`expected 1 parameter, got ${params.length}`)
        return [{ count: workspaceRuns().length }]
      case SQL.runCountByOutcome:
        if (params.length !== 2 || !isOutcome(outcome)) throw new TypeError('expected 2 parameters, $2 an outcome')
        return [{ count: workspaceRuns().filter((run) => run.outcome === outcome).length }]
      default:
        throw new Error(`unsupported query: ${sql}`)
    }
  }

  /** Aggregates over every agent of the workspace; undefined when there is no such workspace. */
  async executiveMetrics (workspaceId: string, timeframe: Timeframe): Promise<ExecutiveMetrics | undefined> {
    await this.roundTrip('query')
    if (!this.workspaces.some((workspace) => workspace.id === workspaceId)) return undefined
    const agents = this.agents.filter((agent) => agent.workspaceId === workspaceId)
    const perAgent = agents.map((agent) => ({ agent, runs: this.runsOf(agent.id, timeframe) }))
    const top = perAgent
      .filter(({ runs }) => runs.length > 0)
      .map(({ agent, runs }) => ({ agent_id: agent.id, name: agent.name, ...figures(runs) }))
      .sort((a, b) => b.total_runs - a.total_runs || a.agent_id.localeCompare(b.agent_id))
    return {
      ...figures(perAgent.flatMap(({ runs }) => runs)),
      active_agents: top.length,
      top_agents: top.slice(0, 3)
    }
  }

  /** One agent's figures and activity over time; undefined when there is no such agent. */
  async agentAnalytics (agentId: string, timeframe: Timeframe): Promise<{ agent: Agent, metrics: AgentMetrics } | undefined> {
    await this.roundTrip('query')
    const agent = this.agents.find((candidate) => candidate.id === agentId)
    if (agent === undefined) return undefined
    const runs = this.runsOf(agentId, timeframe)
    return { agent, metrics: { ...figures(runs), runs_over_time: overTime(runs, timeframe) } }
  }

  /** Every statement, read or write, takes `queryDelayMs` and is counted. */
  private async roundTrip (kind: 'query' | 'write'): Promise<void> {
    if (this.queryDelayMs > 0) await sleep(this.queryDelayMs)
    if (kind === 'query') this.#queries++
    else this.#writes++
  }

  private runsOf (agentId: string, timeframe: Timeframe): AgentRun[] {
    const hours = TIMEFRAME_HOURS[timeframe]
    return (this.runsByAgent.get(agentId) ?? []).filter((run) => run.ageHours < hours)
  }
}

const OUTCOMES: readonly RunOutcome[] = ['success', 'failure', 'timeout']

function isOutcome (value: unknown): value is RunOutcome {
  return OUTCOMES.includes(value as RunOutcome)
}

/** 90 days of runs with an agent-specific rate, success rate and typical duration. */
function generateRuns (agentId: string, random: () => number): AgentRun[] {
  const runsPerDay = 4 + Math.floor(random() * 30)
  const successRate = 0.75 + random() * 0.24
  const timeoutRate = (1 - successRate) * random() * 0.5
  const typicalMs = 400 + Math.floor(random() * 12_000)
  const count = Math.round(runsPerDay * HISTORY_HOURS / 24)
  const runs: AgentRun[] = []
  for (let i = 0; i < count; i++) {
    const roll = random()
    const outcome: RunOutcome = roll < successRate ? 'success' : roll < successRate + timeoutRate ? 'timeout' : 'failure'
    // long-tailed durations: most runs near the typical time, a few much slower
    const durationMs = Math.round(typicalMs * (0.5 + random()) * (random() < 0.05 ? 4 : 1))
    runs.push({ agentId, ageHours: random() * HISTORY_HOURS, durationMs, outcome })
  }
  return runs
}

function figures (runs: readonly AgentRun[]): RunFigures {
  const count = (outcome: RunOutcome): number => runs.filter((run) => run.outcome === outcome).length
  const durations = runs.map((run) => run.durationMs).sort((a, b) => a - b)
  const total = durations.reduce((sum, duration) => sum + duration, 0)
  const successful = count('success')
  return {
    total_runs: runs.length,
    successful_runs: successful,
    failed_runs: count('failure'),
    timed_out_runs: count('timeout'),
    success_rate: runs.length === 0 ? 0 : Math.round(successful / runs.length * 10_000) / 100,
    avg_duration_ms: runs.length === 0 ? 0 : Math.round(total / runs.length),
    p95_duration_ms: durations[Math.ceil(durations.length * 0.95) - 1] ?? 0
  }
}

/** Buckets of one hour for 24h, of one day otherwise; the oldest bucket first. */
function overTime (runs: readonly AgentRun[], timeframe: Timeframe): AgentMetrics['runs_over_time'] {
  const bucketHours = timeframe === '24h' ? 1 : 24
  const length = TIMEFRAME_HOURS[timeframe] / bucketHours
  const buckets = Array.from({ length }, (_, i) => ({ hours_ago: (length - i) * bucketHours, runs: 0, successful_runs: 0 }))
  for (const run of runs) {
    const bucket = buckets[buckets.length - 1 - Math.floor(run.ageHours / bucketHours)]
    if (bucket === undefined) continue
    bucket.runs++
    if (run.outcome === 'success') bucket.successful_runs++
  }
  return buckets
}
