/**
 * The example's analytics dataset: its tables, and a deterministic generator (a seeded PRNG, so that every start and
 * every test sees the same rows relative to the moment they were generated). Workspaces have agents, agents have
 * runs (a start time, a duration and an outcome) over the last 90 days, and users belong to workspaces and have daily
 * activity in them. The rows are made in JavaScript and inserted in batches through unnest(), which both PGlite and
 * PostgreSQL run as one statement per batch.
 */
import { createHash } from 'node:crypto'
import type { SqlDatabase } from './database'

export const SCHEMA_SQL = `
CREATE TABLE workspaces (
  id text PRIMARY KEY,
  name text NOT NULL,
  active boolean NOT NULL
);
CREATE TABLE users (
  id text PRIMARY KEY,
  name text NOT NULL,
  email text NOT NULL,
  token_sha256 text NOT NULL UNIQUE
);
CREATE TABLE memberships (
  user_id text NOT NULL REFERENCES users (id),
  workspace_id text NOT NULL REFERENCES workspaces (id),
  role text NOT NULL,
  PRIMARY KEY (user_id, workspace_id)
);
CREATE TABLE agents (
  id text PRIMARY KEY,
  workspace_id text NOT NULL REFERENCES workspaces (id),
  name text NOT NULL
);
CREATE TABLE agent_runs (
  id bigserial PRIMARY KEY,
  workspace_id text NOT NULL REFERENCES workspaces (id),
  agent_id text NOT NULL REFERENCES agents (id),
  started_at timestamptz NOT NULL,
  duration_ms integer NOT NULL CHECK (duration_ms >= 0),
  outcome text NOT NULL CHECK (outcome IN ('success', 'failure', 'timeout'))
);
CREATE TABLE user_daily_activity (
  user_id text NOT NULL REFERENCES users (id),
  workspace_id text NOT NULL REFERENCES workspaces (id),
  day date NOT NULL,
  events integer NOT NULL,
  active_minutes integer NOT NULL,
  PRIMARY KEY (user_id, workspace_id, day)
);
`

/** Created after the bulk insert, which is faster without them. */
const INDEX_SQL = `
CREATE INDEX agent_runs_workspace_time ON agent_runs (workspace_id, started_at);
CREATE INDEX agent_runs_agent_time ON agent_runs (agent_id, started_at);
CREATE INDEX user_daily_activity_workspace_day ON user_daily_activity (workspace_id, day);
ANALYZE workspaces, users, memberships, agents, agent_runs, user_daily_activity;
`

const TABLES = ['user_daily_activity', 'agent_runs', 'agents', 'memberships', 'users', 'workspaces']

export interface DatasetOptions {
  seed?: number
  workspaces?: number
  agentsPerWorkspace?: number
  usersPerWorkspace?: number
  /** Days of history. */
  days?: number
  /** Each agent runs between min and max times a day (its own rate, drawn once). */
  runsPerAgentPerDay?: { min: number, max: number }
  /** Every n-th workspace is inactive (no runs in the last 30 days, `active` false); 0 for none. */
  inactiveEvery?: number
}

export type DatasetSize = 'small' | 'medium' | 'large'

/** small: about 5,000 runs (tests); medium: about 300,000 (the default); large: about 2.7 million (PostgreSQL). */
export const DATASET_SIZES: Record<DatasetSize, Required<DatasetOptions>> = {
  small: { seed: 20240917, workspaces: 3, agentsPerWorkspace: 4, usersPerWorkspace: 5, days: 90, runsPerAgentPerDay: { min: 2, max: 8 }, inactiveEvery: 0 },
  medium: { seed: 20240917, workspaces: 10, agentsPerWorkspace: 12, usersPerWorkspace: 40, days: 90, runsPerAgentPerDay: { min: 5, max: 50 }, inactiveEvery: 5 },
  large: { seed: 20240917, workspaces: 20, agentsPerWorkspace: 16, usersPerWorkspace: 80, days: 90, runsPerAgentPerDay: { min: 20, max: 150 }, inactiveEvery: 5 }
}

export function datasetSize (value: string | undefined): DatasetSize {
  if (value === undefined || value === '') return 'medium'
  if (value === 'small' || value === 'medium' || value === 'large') return value
  throw new Error(`DATASET_SIZE must be small, medium or large, got ${JSON.stringify(value)}`)
}

export interface SeedReport {
  workspaces: number
  agents: number
  users: number
  runs: number
  activityRows: number
  durationMs: number
}

const WORKSPACE_NAMES = ['Acme Support', 'Globex Research', 'Initech Ops', 'Umbrella Sales', 'Hooli Platform', 'Stark Labs', 'Wayne Logistics', 'Tyrell Data', 'Cyberdyne QA', 'Soylent Growth']
const AGENT_NAMES = ['Triage', 'Summarizer', 'Router', 'Researcher', 'Reviewer', 'Scheduler', 'Translator', 'Auditor']
const FIRST_NAMES = ['Ada', 'Grace', 'Alan', 'Edsger', 'Barbara', 'Donald', 'Frances', 'Ken', 'Margaret', 'Dennis', 'Radia', 'Linus']
const BATCH = 25_000
const HOUR_MS = 3600_000

/** mulberry32: a tiny, fast, seedable PRNG; plenty for fake data. */
export function seededRandom (seed: number): () => number {
  let state = seed >>> 0
  return () => {
    state = (state + 0x6D2B79F5) >>> 0
    let t = state
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/** The demo's bearer token of a user: deterministic, so that the README can show one. Never use such tokens for real. */
export function demoToken (userId: string): string {
  return `demo-${userId}`
}

export function sha256 (text: string): string {
  return createHash('sha256').update(text).digest('hex')
}

/**
 * Creates the tables (dropping the example's own tables first, if any) and fills them. `anchor` is "now" for the
 * generated history: runs are between `days` days and a few minutes before it.
 */
export async function seedDataset (db: SqlDatabase, options: DatasetOptions = {}, anchor = Date.now()): Promise<SeedReport> {
  const started = performance.now()
  const settings = { ...DATASET_SIZES.small, ...options }
  const random = seededRandom(settings.seed)
  await db.exec(TABLES.map((table) => `DROP TABLE IF EXISTS ${table} CASCADE;`).join('\n'))
  await db.exec(SCHEMA_SQL)

  const workspaces: Array<{ id: string, name: string, active: boolean }> = []
  for (let w = 1; w <= settings.workspaces; w++) {
    const active = settings.inactiveEvery === 0 || w % settings.inactiveEvery !== 0
    workspaces.push({ id: `ws${w}`, name: WORKSPACE_NAMES[(w - 1) % WORKSPACE_NAMES.length] ?? `Workspace ${w}`, active })
  }
  await insert(db, 'workspaces', ['id', 'name', 'active'], ['text', 'text', 'boolean'],
    [workspaces.map((w) => w.id), workspaces.map((w) => w.name), workspaces.map((w) => w.active)])

  // Users: each belongs to one workspace, one in five to a second one as well.
  const users: string[][] = [[], [], [], []]
  const memberships: string[][] = [[], [], []]
  const membersOf = new Map<string, string[]>()
  let userNumber = 0
  for (const workspace of workspaces) {
    for (let u = 0; u < settings.usersPerWorkspace; u++) {
      const id = `u${++userNumber}`
      const first = FIRST_NAMES[Math.floor(random() * FIRST_NAMES.length)] ?? 'Sam'
      users[0]?.push(id)
      users[1]?.push(`${first} ${id.toUpperCase()}`)
      users[2]?.push(`${id}@users.example`)
      users[3]?.push(sha256(demoToken(id)))
      const home = [workspace.id]
      if (random() < 0.2 && workspaces.length > 1) {
        const other = workspaces[Math.floor(random() * workspaces.length)]
        if (other !== undefined && other.id !== workspace.id) home.push(other.id)
      }
      for (const [i, workspaceId] of home.entries()) {
        memberships[0]?.push(id)
        memberships[1]?.push(workspaceId)
        memberships[2]?.push(u === 0 && i === 0 ? 'owner' : 'member')
        membersOf.set(workspaceId, [...(membersOf.get(workspaceId) ?? []), id])
      }
    }
  }
  await insert(db, 'users', ['id', 'name', 'email', 'token_sha256'], ['text', 'text', 'text', 'text'], users)
  await insert(db, 'memberships', ['user_id', 'workspace_id', 'role'], ['text', 'text', 'text'], memberships)

  const agents: string[][] = [[], [], []]
  let runCount = 0
  let runs: Array<Array<string | number>> = [[], [], [], [], []]
  const flushRuns = async (): Promise<void> => {
    if ((runs[0]?.length ?? 0) === 0) return
    await insert(db, 'agent_runs', ['workspace_id', 'agent_id', 'started_at', 'duration_ms', 'outcome'],
      ['text', 'text', 'timestamptz', 'integer', 'text'], runs)
    runs = [[], [], [], [], []]
  }
  for (const [w, workspace] of workspaces.entries()) {
    for (let a = 1; a <= settings.agentsPerWorkspace; a++) {
      const agentId = `${workspace.id}-agent${a}`
      agents[0]?.push(agentId)
      agents[1]?.push(workspace.id)
      agents[2]?.push(`${AGENT_NAMES[(w + a) % AGENT_NAMES.length] ?? 'Agent'} ${a}`)
    }
  }
  await insert(db, 'agents', ['id', 'workspace_id', 'name'], ['text', 'text', 'text'], agents)
  for (const [i, agentId] of (agents[0] ?? []).entries()) {
    const workspace = workspaces.find((candidate) => candidate.id === agents[1]?.[i])
    const { min, max } = settings.runsPerAgentPerDay
    const perDay = min + Math.floor(random() * (max - min + 1))
    const successRate = 0.75 + random() * 0.24
    const timeoutRate = (1 - successRate) * random() * 0.5
    const typicalMs = 400 + Math.floor(random() * 12_000)
    const count = Math.round(perDay * settings.days)
    // an inactive workspace stopped running agents a month ago
    const newestHours = workspace?.active === false ? 30 * 24 : 0.1
    const span = settings.days * 24 - newestHours
    for (let r = 0; r < count; r++) {
      const roll = random()
      const outcome = roll < successRate ? 'success' : roll < successRate + timeoutRate ? 'timeout' : 'failure'
      // long-tailed durations: most runs near the typical time, a few much slower
      const durationMs = Math.round(typicalMs * (0.5 + random()) * (random() < 0.05 ? 4 : 1))
      const ageHours = newestHours + random() * span
      runs[0]?.push(workspace?.id ?? '')
      runs[1]?.push(agentId)
      runs[2]?.push(new Date(anchor - ageHours * HOUR_MS).toISOString())
      runs[3]?.push(durationMs)
      runs[4]?.push(outcome)
      runCount++
      if ((runs[0]?.length ?? 0) >= BATCH) await flushRuns()
    }
  }
  await flushRuns()

  // Daily activity: each member is active on some days, more on weekdays.
  const activity: Array<Array<string | number>> = [[], [], [], [], []]
  const today = new Date(anchor)
  for (const workspace of workspaces) {
    for (const userId of membersOf.get(workspace.id) ?? []) {
      const diligence = 0.3 + random() * 0.6
      for (let d = 0; d < settings.days; d++) {
        const day = new Date(Date.UTC(today.getUTCFullYear(), today.getUTCMonth(), today.getUTCDate() - d))
        const weekday = day.getUTCDay() !== 0 && day.getUTCDay() !== 6
        const stale = workspace.active ? 0 : 30
        if (d < stale || random() > diligence * (weekday ? 1 : 0.3)) continue
        activity[0]?.push(userId)
        activity[1]?.push(workspace.id)
        activity[2]?.push(day.toISOString().slice(0, 10))
        activity[3]?.push(1 + Math.floor(random() * 40))
        activity[4]?.push(5 + Math.floor(random() * 300))
      }
    }
  }
  for (let i = 0; i < (activity[0]?.length ?? 0); i += BATCH) {
    await insert(db, 'user_daily_activity', ['user_id', 'workspace_id', 'day', 'events', 'active_minutes'],
      ['text', 'text', 'date', 'integer', 'integer'], activity.map((column) => column.slice(i, i + BATCH)))
  }
  await db.exec(INDEX_SQL)
  return {
    workspaces: workspaces.length,
    agents: agents[0]?.length ?? 0,
    users: userNumber,
    runs: runCount,
    activityRows: activity[0]?.length ?? 0,
    durationMs: Math.round(performance.now() - started)
  }
}

/** One INSERT ... SELECT FROM unnest($1::type[], ...) of whole columns. */
async function insert (db: SqlDatabase, table: string, columns: string[], types: string[], values: unknown[][]): Promise<void> {
  const arrays = types.map((type, i) => `$${i + 1}::${type}[]`).join(', ')
  await db.query(`INSERT INTO ${table} (${columns.join(', ')}) SELECT * FROM unnest(${arrays})`, values)
}
