/**
 * A deliberately slow, deterministic stand-in for an analytics database: a few workspaces, their agents and 90 days
 * of agent runs, generated from a seeded PRNG so that every start (and every test) sees the same figures. Each query
 * waits `queryDelayMs` before answering and is counted, so the demo and its tests can see how much load the cache
 * takes off the database.
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
  private readonly queryDelayMs: number
  #queries = 0

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

  /** Aggregates over every agent of the workspace; undefined when there is no such workspace. */
  async executiveMetrics (workspaceId: string, timeframe: Timeframe): Promise<ExecutiveMetrics | undefined> {
    await this.query()
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
    await this.query()
    const agent = this.agents.find((candidate) => candidate.id === agentId)
    if (agent === undefined) return undefined
    const runs = this.runsOf(agentId, timeframe)
    return { agent, metrics: { ...figures(runs), runs_over_time: overTime(runs, timeframe) } }
  }

  private async query (): Promise<void> {
    if (this.queryDelayMs > 0) await sleep(this.queryDelayMs)
    this.#queries++
  }

  private runsOf (agentId: string, timeframe: Timeframe): AgentRun[] {
    const hours = TIMEFRAME_HOURS[timeframe]
    return (this.runsByAgent.get(agentId) ?? []).filter((run) => run.ageHours < hours)
  }
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
