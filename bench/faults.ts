/**
 * `node --import tsx bench/faults.ts`
 *
 * A load test of the example server under Redis faults. Starts a private redis-server (RedisProcess, on a free
 * loopback port) and the example server (example-server/server.ts, in a child process, on a free loopback port,
 * REDIS_URL pointing at that Redis), warms 20 dashboard URLs until each answers `x-cache: HIT`, then runs autocannon
 * over those URLs while a timeline injects faults into Redis:
 *   8 s kill (SIGKILL) · 14 s restart (empty: no persistence) · 20 s freeze (SIGSTOP) · 24 s unfreeze (SIGCONT) ·
 *   30-35 s slow (DEBUG SLEEP 0.2 in a loop, 50 ms of service between sleeps).
 * A fault pair is left out when the run is too short for it. Every response's status, latency and x-cache header is
 * recorded; a second client polls /cache/stats once a second (circuit state, store error count).
 * Prints Markdown tables: totals, each fault window (responses completed in it), the recovery after each recovery
 * event, and a per-second timeline. A hit is `x-cache: HIT`: read from Redis, or shared with a concurrent request for
 * the same key (request coalescing), i.e. answered without running the handler. Exits 1 when a response was not a
 * 2xx or a request failed.
 * Env: FAULT_DURATION (40 s), FAULT_CONNECTIONS (20), FAULT_KEEP_LOG (keep the server's log file).
 * Everything listens on and talks to 127.0.0.1; the run is bounded in time (duration + 90 s), and the server and
 * Redis are killed at the end, on error, on Ctrl-C and (through watchdogs) when this process is killed.
 */
import autocannon from 'autocannon'
import { type ChildProcess, execFileSync, spawn } from 'node:child_process'
import { closeSync, createReadStream, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs'
import { availableParallelism, cpus, loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { createInterface } from 'node:readline'
import type { Readable } from 'node:stream'
import { Redis } from 'ioredis'
import { RedisProcess, freePort } from '../test/helpers/redis'

const ROOT = join(__dirname, '..')
const HOST = '127.0.0.1'
const DURATION_S = integerEnv('FAULT_DURATION', 40, 10)
const CONNECTIONS = integerEnv('FAULT_CONNECTIONS', 20, 1)
const KEEP_LOG = (process.env['FAULT_KEEP_LOG'] ?? '') !== ''
const START_TIMEOUT_MS = 20_000
const STOP_TIMEOUT_MS = 5_000
const HTTP_TIMEOUT_MS = 2_000
/** autocannon's per-request timeout, in seconds. */
const REQUEST_TIMEOUT_S = 10
/** Nothing may run longer than this: the load, then start-up, warm-up, report and clean-up. */
const HARD_DEADLINE_MS = DURATION_S * 1000 + 90_000
const HIT_TARGET = 0.9
/** Hit rate is computed over windows of this length, sliding by RECOVERY_STEP_MS, after each recovery event. */
const RECOVERY_WINDOW_MS = 1000
const RECOVERY_STEP_MS = 100
const SLOW_SLEEP_S = 0.2
const SLOW_GAP_MS = 50

/** 3 workspaces × 4 timeframes of the executive dashboard, and 8 agent analytics pages: 20 URLs. */
const URLS: readonly string[] = [
  ...['ws1', 'ws2', 'ws3'].flatMap((ws) => ['24h', '7d', '30d', '90d'].map((tf) => `/executive/overview?workspace_id=${ws}&timeframe=${tf}`)),
  ...['ws1-agent1', 'ws1-agent2', 'ws2-agent1', 'ws3-agent3'].flatMap((agent) => ['7d', '30d'].map((tf) => `/agents/${agent}/analytics?timeframe=${tf}`))
]

function integerEnv (name: string, fallback: number, min: number): number {
  const text = process.env[name]
  if (text === undefined || text === '') return fallback
  const value = Number(text)
  if (!Number.isInteger(value) || value < min) throw new Error(`${name} must be an integer ≥ ${min}, got "${text}"`)
  return value
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))
const message = (error: unknown): string => error instanceof Error ? error.message : String(error)

// ---------------------------------------------------------------------------
// the example server, in a child process
// ---------------------------------------------------------------------------

/**
 * Runs the server in the background with its output going to the log (stdout and stderr of the wrapper), prints its
 * pid on fd 3, then waits for it; a watchdog kills it (SIGKILL) when our end of the stdin pipe closes, which happens
 * when this process dies in any way, even by SIGKILL. A non-interactive shell gives background jobs /dev/null as
 * stdin, so the pipe reaches the watchdog as fd 4.
 */
const WRAPPER_SCRIPT = [
  '"$@" </dev/null 3>&- &',
  'spid=$!',
  'echo "$spid" >&3',
  'exec 3>&-',
  'exec 4<&0',
  '( read -r _ <&4; kill -9 "$spid" 2>/dev/null ) &',
  'wpid=$!',
  'exec 4<&-',
  'wait "$spid"',
  'code=$?',
  'kill "$wpid" 2>/dev/null',
  'exit "$code"'
].join('\n')

interface ServerProcess {
  port: number
  pid: number
  logFile: string
  stop (): Promise<void>
  killNow (): void
}

/** The example server's routes need a bearer token; the operators' token reads every workspace and /cache/stats. */
const ADMIN_TOKEN = 'bench-admin-token-0123456789'
const AUTHORIZED = { authorization: `Bearer ${ADMIN_TOKEN}` }

async function startServer (redisUrl: string, logFile: string): Promise<ServerProcess> {
  const port = await freePort()
  const logFd = openSync(logFile, 'a')
  const child: ChildProcess = spawn('sh', ['-c', WRAPPER_SCRIPT, 'server-wrapper', process.execPath, '--import', 'tsx', join('example-server', 'server.ts')], {
    cwd: ROOT,
    env: { ...process.env, REDIS_URL: redisUrl, PORT: String(port), HOST, ADMIN_TOKEN, DATASET_SIZE: 'small', WARM_ON_START: '0' },
    stdio: ['pipe', logFd, logFd, 'pipe']
  })
  closeSync(logFd)
  child.stdin?.on('error', () => {})
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  let pid = 0
  const signal = (name: NodeJS.Signals): void => {
    if (pid <= 0) return
    try { process.kill(pid, name) } catch { /* gone */ }
  }
  const server: ServerProcess = {
    port,
    get pid () { return pid },
    logFile,
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) {
        signal('SIGTERM')
        const timer = setTimeout(() => signal('SIGKILL'), STOP_TIMEOUT_MS)
        await exited
        clearTimeout(timer)
      }
      child.stdin?.destroy()
      pid = 0
    },
    killNow: () => {
      signal('SIGKILL')
      child.stdin?.destroy()
    }
  }
  live.server = server
  try {
    pid = await new Promise<number>((resolve, reject) => {
      const stream = child.stdio[3] as Readable | null | undefined
      if (stream === null || stream === undefined) return reject(new Error('no pid pipe'))
      let text = ''
      stream.setEncoding('utf8')
      stream.on('data', (chunk: string) => {
        text += chunk
        const value = Number.parseInt(text, 10)
        if (text.includes('\n') && value > 0) resolve(value)
      })
      child.once('exit', (code) => reject(new Error(`the wrapper exited with code ${String(code)}`)))
    })
    const deadline = Date.now() + START_TIMEOUT_MS
    for (;;) {
      if (child.exitCode !== null) throw new Error(`exited with code ${child.exitCode}`)
      try {
        if ((await get(port, '/health')).status === 200) return server
      } catch (error) {
        if (Date.now() > deadline) throw error
      }
      await sleep(100)
    }
  } catch (error) {
    server.killNow()
    await exited
    throw new Error(`the example server did not start: ${message(error)}\n${tail(logFile)}`)
  }
}

function tail (file: string, chars = 3000): string {
  try {
    return readFileSync(file, 'utf8').slice(-chars)
  } catch {
    return ''
  }
}

async function get (port: number, path: string): Promise<{ status: number, headers: Headers, body: string }> {
  const response = await fetch(`http://${HOST}:${port}${path}`, { signal: AbortSignal.timeout(HTTP_TIMEOUT_MS), headers: AUTHORIZED })
  return { status: response.status, headers: response.headers, body: await response.text() }
}

// ---------------------------------------------------------------------------
// what is alive, for the clean-up
// ---------------------------------------------------------------------------

const live: {
  server?: ServerProcess
  redis?: RedisProcess
  faultClient?: Redis
  load?: { stop (): void }
  timers: NodeJS.Timeout[]
  /** The temporary directory of the server's log, and whether to keep it. */
  logDir?: string
  keepLog: boolean
} = { timers: [], keepLog: KEEP_LOG }

async function cleanup (): Promise<void> {
  for (const timer of live.timers) clearInterval(timer)
  live.load?.stop()
  live.faultClient?.disconnect()
  await Promise.allSettled([live.server?.stop(), live.redis?.stop()])
  if (live.logDir !== undefined) {
    if (live.keepLog) console.error(`server log kept in ${live.logDir}`)
    else rmSync(live.logDir, { recursive: true, force: true })
    live.logDir = undefined
  }
}

function killNow (): void {
  live.server?.killNow()
  live.redis?.killNow() // RedisProcess has its own exit hook and watchdog too
}

// ---------------------------------------------------------------------------
// the fault timeline
// ---------------------------------------------------------------------------

interface FaultEvent {
  name: 'kill' | 'restart' | 'freeze' | 'unfreeze' | 'slow' | 'slow end'
  /** Planned time, ms after the load started. */
  at: number
  /** When the action began and when it was done (restart: Redis answers again), ms after the load started. */
  began?: number
  done?: number
  error?: string
}

function plan (durationMs: number): FaultEvent[] {
  const events: FaultEvent[] = []
  const fits = (end: number): boolean => end + 2000 <= durationMs
  if (fits(14_000)) events.push({ name: 'kill', at: 8000 }, { name: 'restart', at: 14_000 })
  if (fits(24_000)) events.push({ name: 'freeze', at: 20_000 }, { name: 'unfreeze', at: 24_000 })
  if (fits(35_000)) events.push({ name: 'slow', at: 30_000 }, { name: 'slow end', at: 35_000 })
  return events
}

async function runTimeline (redis: RedisProcess, events: FaultEvent[], now: () => number, stopped: () => boolean): Promise<void> {
  for (const event of events) {
    if (event.name === 'slow end') continue // the slow phase ends by itself
    await sleep(Math.max(0, event.at - now()))
    if (stopped()) return
    event.began = now()
    try {
      switch (event.name) {
        case 'kill':
          process.kill(redis.pid, 'SIGKILL')
          break
        case 'restart':
          await redis.restart()
          break
        case 'freeze':
          redis.freeze()
          break
        case 'unfreeze':
          redis.unfreeze()
          break
        case 'slow': {
          const end = events.find((e) => e.name === 'slow end')
          await slowDown(redis, (end?.at ?? event.at) - event.at, now, stopped)
          if (end !== undefined) end.began = end.done = now()
          break
        }
      }
    } catch (error) {
      event.error = message(error)
    }
    event.done = now()
  }
}

/** Redis busy in DEBUG SLEEP most of the time: every command waits up to SLOW_SLEEP_S, one at a time. */
async function slowDown (redis: RedisProcess, forMs: number, now: () => number, stopped: () => boolean): Promise<void> {
  const until = now() + forMs
  const client = new Redis(redis.url, { lazyConnect: true, enableOfflineQueue: false, maxRetriesPerRequest: 0, retryStrategy: () => null })
  client.on('error', () => {})
  live.faultClient = client
  try {
    await client.connect()
    while (now() < until && !stopped()) {
      await client.call('DEBUG', 'SLEEP', String(SLOW_SLEEP_S))
      await sleep(SLOW_GAP_MS)
    }
  } finally {
    client.disconnect()
    live.faultClient = undefined
  }
}

// ---------------------------------------------------------------------------
// the load and what it records
// ---------------------------------------------------------------------------

type Outcome = 'HIT' | 'MISS' | 'other'

interface Records {
  /** ms after the load started, when the response was complete. */
  end: number[]
  latency: number[]
  status: number[]
  outcome: Outcome[]
  /** Requests that failed (connection error or timeout): when, and why. */
  failures: Array<{ at: number, error: string }>
}

/** The part of an autocannon client that setupClient uses. */
interface LoadClient {
  on (event: 'headers', listener: (info: { headers: string[] }) => void): void
  on (event: 'response', listener: (status: number, bytes: number, latency: number) => void): void
  setRequests (requests: Array<{ method: string, path: string, headers?: Record<string, string> }>): void
}

interface StatsSample {
  at: number
  circuit?: string
  errors?: number
  failed?: string
}

async function pollStats (port: number, at: number): Promise<StatsSample> {
  try {
    const answer = await get(port, '/cache/stats')
    const stats = JSON.parse(answer.body) as { errors?: number, store?: { circuit?: string } }
    return { at, circuit: stats.store?.circuit, errors: stats.errors }
  } catch (error) {
    return { at, failed: message(error) }
  }
}

interface LoadResult {
  records: Records
  samples: StatsSample[]
  events: FaultEvent[]
  autocannon: { requests: number, errors: number, timeouts: number, non2xx: number, durationS: number }
  elapsedMs: number
}

async function runLoad (server: ServerProcess, redis: RedisProcess): Promise<LoadResult> {
  const records: Records = { end: [], latency: [], status: [], outcome: [], failures: [] }
  const samples: StatsSample[] = []
  let clients = 0
  let t0 = performance.now()
  const now = (): number => performance.now() - t0

  const setupClient = (client: LoadClient): void => {
    // Each connection starts at a different URL, so that misses are spread over the keys.
    const first = clients++ % URLS.length
    client.setRequests(URLS.map((_, i) => ({ method: 'GET', path: URLS[(first + i) % URLS.length] ?? '/', headers: AUTHORIZED })))
    let outcome: Outcome = 'other'
    client.on('headers', (info) => {
      outcome = 'other'
      const headers = info.headers
      for (let i = 0; i < headers.length; i += 2) {
        if (headers[i]?.toLowerCase() !== 'x-cache') continue
        const value = headers[i + 1]
        outcome = value === 'HIT' ? 'HIT' : value === 'MISS' ? 'MISS' : 'other'
      }
    })
    client.on('response', (status, _bytes, latency) => {
      records.end.push(now())
      records.latency.push(latency)
      records.status.push(status)
      records.outcome.push(outcome)
    })
  }
  const options = {
    url: `http://${HOST}:${server.port}`,
    connections: CONNECTIONS,
    duration: DURATION_S,
    pipelining: 1,
    timeout: REQUEST_TIMEOUT_S,
    headers: AUTHORIZED,
    requests: URLS.map((path) => ({ method: 'GET', path, headers: AUTHORIZED })),
    setupClient
  }

  const events = plan(DURATION_S * 1000)
  let stopped = false
  t0 = performance.now()
  const instance = autocannon(options)
  live.load = instance as unknown as { stop (): void }
  instance.on('reqError', (error: Error) => { records.failures.push({ at: now(), error: error.message }) })
  const ticker = setInterval(() => {
    pollStats(server.port, now()).then((sample) => samples.push(sample), () => {})
  }, 1000)
  live.timers.push(ticker)
  const timeline = runTimeline(redis, events, now, () => stopped)
  try {
    const result = await instance
    return {
      records,
      samples,
      events,
      autocannon: { requests: result.requests.total, errors: result.errors, timeouts: result.timeouts, non2xx: result.non2xx, durationS: result.duration },
      elapsedMs: now()
    }
  } finally {
    stopped = true
    clearInterval(ticker)
    await timeline
  }
}

// ---------------------------------------------------------------------------
// figures
// ---------------------------------------------------------------------------

function percentile (sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return NaN
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))] ?? NaN
}

interface Slice {
  requests: number
  rps: number
  hitRate: number
  p50: number
  p99: number
  max: number
  non2xx: number
  failures: number
}

/**
 * Responses completed within [from, to). By completion, not by start: a request caught by a fault (say, one that
 * waited out the 250 ms store deadline) counts in the fault's window, like the per-second figures.
 */
function slice (records: Records, from: number, to: number): Slice {
  const latencies: number[] = []
  let hits = 0
  let non2xx = 0
  for (let i = 0; i < records.end.length; i++) {
    const end = records.end[i] ?? 0
    if (end < from || end >= to) continue
    latencies.push(records.latency[i] ?? 0)
    if (records.outcome[i] === 'HIT') hits++
    const status = records.status[i] ?? 0
    if (status < 200 || status > 299) non2xx++
  }
  latencies.sort((a, b) => a - b)
  const failures = records.failures.filter((f) => f.at >= from && f.at < to).length
  return {
    requests: latencies.length,
    rps: latencies.length / Math.max(0.001, (to - from) / 1000),
    hitRate: latencies.length === 0 ? NaN : hits / latencies.length,
    p50: percentile(latencies, 0.5),
    p99: percentile(latencies, 0.99),
    max: latencies.at(-1) ?? NaN,
    non2xx,
    failures
  }
}

/** Responses completed in [from, to): how many, how many hits. */
function completed (records: Records, from: number, to: number): { count: number, hits: number } {
  let count = 0
  let hits = 0
  for (let i = 0; i < records.end.length; i++) {
    const end = records.end[i] ?? 0
    if (end < from || end >= to) continue
    count++
    if (records.outcome[i] === 'HIT') hits++
  }
  return { count, hits }
}

interface Recovery {
  event: FaultEvent
  at: number
  /** ms from the event to the start of the first 1 s window (sliding by 100 ms) with a hit rate above 90 %. */
  hits: number
  /** Same, for a throughput back to half the steady one (before the first fault). */
  throughput: number
  /** ms from the event to the first /cache/stats sample that shows the circuit closed (1 s polling). */
  closed: number
}

function recovery (records: Records, samples: StatsSample[], event: FaultEvent, steadyRps: number, end: number): Recovery {
  const at = event.done ?? event.at
  let hits = NaN
  let throughput = NaN
  for (let from = at; from + RECOVERY_WINDOW_MS <= end; from += RECOVERY_STEP_MS) {
    const window = completed(records, from, from + RECOVERY_WINDOW_MS)
    if (Number.isNaN(hits) && window.count > 0 && window.hits / window.count > HIT_TARGET) hits = from - at
    if (Number.isNaN(throughput) && window.count / (RECOVERY_WINDOW_MS / 1000) >= steadyRps / 2) throughput = from - at
    if (!Number.isNaN(hits) && !Number.isNaN(throughput)) break
  }
  const closedSample = samples.find((sample) => sample.at >= at && sample.circuit === 'closed')
  return { event, at, hits, throughput, closed: closedSample === undefined ? NaN : closedSample.at - at }
}

const ms = (value: number): string => Number.isNaN(value) ? '–' : value >= 100 ? value.toFixed(0) : value.toFixed(1)
const s = (value: number): string => Number.isNaN(value) ? 'never' : (value / 1000).toFixed(1)
const pct = (value: number): string => Number.isNaN(value) ? '–' : `${(100 * value).toFixed(1)} %`
const int = (value: number): string => value.toLocaleString('en-US')

function row (cells: Array<string | number>): string {
  return `| ${cells.join(' | ')} |`
}

/** A Markdown table: the first `textColumns` columns left-aligned, the others (figures) right-aligned. */
function table (head: string[], rows: Array<Array<string | number>>, textColumns = 1): string {
  return [row(head), row(head.map((_, i) => i < textColumns ? '---' : '---:')), ...rows.map(row)].join('\n')
}

interface Windowed { name: string, from: number, to: number }

function windows (events: FaultEvent[], end: number): Windowed[] {
  const when = (name: FaultEvent['name']): number | undefined => {
    const event = events.find((e) => e.name === name)
    return event === undefined ? undefined : (event.done ?? event.began ?? event.at)
  }
  const began = (name: FaultEvent['name']): number | undefined => {
    const event = events.find((e) => e.name === name)
    return event === undefined ? undefined : (event.began ?? event.at)
  }
  const marks: Array<{ name: string, at: number | undefined }> = [
    { name: 'steady (before faults)', at: 0 },
    { name: 'Redis killed', at: began('kill') },
    { name: 'after restart', at: when('restart') },
    { name: 'Redis frozen', at: began('freeze') },
    { name: 'after unfreeze', at: when('unfreeze') },
    { name: 'Redis slow (DEBUG SLEEP)', at: began('slow') },
    { name: 'after slow', at: when('slow end') }
  ]
  const present = marks.filter((m): m is { name: string, at: number } => m.at !== undefined)
  return present.map((m, i) => ({ name: m.name, from: m.at, to: present[i + 1]?.at ?? end }))
}

// ---------------------------------------------------------------------------
// the machine, and the server's log
// ---------------------------------------------------------------------------

/** The commit, and whether lib/ or example-server/ differ from it (read-only git commands). */
function codeVersion (): string {
  try {
    const commit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT, encoding: 'utf8', timeout: 5000 }).trim()
    const changed = execFileSync('git', ['status', '--porcelain', '--', 'lib', 'example-server'], { cwd: ROOT, encoding: 'utf8', timeout: 5000 })
      .split('\n').filter((line) => line.trim() !== '').length
    return changed === 0 ? commit : `${commit} + ${changed} uncommitted file(s) in lib/ and example-server/`
  } catch {
    return 'unknown'
  }
}

async function redisVersion (url: string): Promise<string> {
  const client = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null })
  client.on('error', () => {})
  try {
    await client.connect()
    const info = await client.info('server')
    return /^redis_version:(\S+)/m.exec(info)?.[1] ?? 'unknown'
  } finally {
    client.disconnect()
  }
}

interface CpuShare { machine: number, server: number, loader: number }

/** CPU time of a process (utime + stime), in clock ticks, from /proc/<pid>/stat; 0 when unreadable. */
function processTicks (pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    return Number(rest[11]) + Number(rest[12])
  } catch {
    return 0
  }
}

/**
 * Busy cores, from /proc (Linux; NaN elsewhere): the whole machine, the server, and this process (autocannon).
 * The rest is Redis and whatever else runs on the machine.
 */
function cpuMeter (serverPid: number): () => CpuShare {
  const read = (): { all: number, busy: number, server: number, loader: number } => {
    try {
      const fields = readFileSync('/proc/stat', 'utf8').split('\n')[0]?.trim().split(/\s+/).slice(1).map(Number) ?? []
      const all = fields.slice(0, 8).reduce((sum, value) => sum + value, 0)
      return { all, busy: all - (fields[3] ?? 0) - (fields[4] ?? 0), server: processTicks(serverPid), loader: processTicks(process.pid) }
    } catch {
      return { all: 0, busy: 0, server: 0, loader: 0 }
    }
  }
  const before = read()
  return () => {
    const after = read()
    const wall = (after.all - before.all) / availableParallelism()
    const cores = (ticks: number): number => wall === 0 ? NaN : ticks / wall
    return { machine: cores(after.busy - before.busy), server: cores(after.server - before.server), loader: cores(after.loader - before.loader) }
  }
}

interface LogSummary { warnings: Map<string, number>, serverErrors: string[] }

/** Warnings and errors of the server (pino levels 40+), and every 5xx it logged. */
async function readLog (file: string): Promise<LogSummary> {
  const summary: LogSummary = { warnings: new Map(), serverErrors: [] }
  const lines = createInterface({ input: createReadStream(file, 'utf8'), crlfDelay: Infinity })
  for await (const line of lines) {
    const serious = line.includes('"level":40') || line.includes('"level":50') || line.includes('"level":60')
    const failed = line.includes('"statusCode":5')
    if (!serious && !failed) continue
    try {
      const entry = JSON.parse(line) as { level: number, msg?: string, operation?: string, err?: { message?: string }, res?: { statusCode?: number } }
      if (entry.level >= 40) {
        const what = `${entry.level >= 50 ? 'error' : 'warn'}: ${entry.msg ?? ''}${entry.operation === undefined ? '' : ` (${entry.operation})`}${entry.err?.message === undefined ? '' : ` – ${entry.err.message}`}`
        summary.warnings.set(what, (summary.warnings.get(what) ?? 0) + 1)
      }
      if ((entry.res?.statusCode ?? 0) >= 500 && summary.serverErrors.length < 20) summary.serverErrors.push(line)
    } catch {
      if (!line.startsWith('{') && summary.serverErrors.length < 20) summary.serverErrors.push(line)
    }
  }
  return summary
}

// ---------------------------------------------------------------------------
// main
// ---------------------------------------------------------------------------

async function warm (server: ServerProcess): Promise<void> {
  for (const url of URLS) {
    const deadline = Date.now() + 10_000
    for (;;) {
      const answer = await get(server.port, url)
      if (answer.status !== 200) throw new Error(`warming ${url}: status ${answer.status}: ${answer.body.slice(0, 200)}`)
      if (answer.headers.get('x-cache') === 'HIT') break
      if (Date.now() > deadline) throw new Error(`warming ${url}: never a HIT (last x-cache: ${String(answer.headers.get('x-cache'))})`)
      await sleep(20)
    }
  }
}

async function main (): Promise<number> {
  const machine = {
    cpus: availableParallelism(),
    cpu: cpus()[0]?.model.trim() ?? 'unknown',
    node: process.version,
    code: codeVersion(),
    load: loadavg().map((value) => value.toFixed(2)).join(' ')
  }
  const logDir = mkdtempSync(join(tmpdir(), 'faults-'))
  live.logDir = logDir
  const logFile = join(logDir, 'server.log')
  try {
    // DEBUG SLEEP is refused by Redis 7 unless enabled; `local` allows it from the loopback only.
    const redis = await RedisProcess.start({ args: ['--enable-debug-command', 'local'] })
    live.redis = redis
    const version = await redisVersion(redis.url)
    const server = await startServer(redis.url, logFile)
    console.error(`redis ${version} on ${redis.url} (pid ${redis.pid}), example server on http://${HOST}:${server.port} (pid ${server.pid}), log ${logFile}`)
    await warm(server)
    console.error(`warmed ${URLS.length} URLs; loading for ${DURATION_S} s with ${CONNECTIONS} connections…`)

    const cpu = cpuMeter(server.pid)
    const result = await runLoad(server, redis)
    const busy = cpu()
    const end = result.elapsedMs
    const { records, events } = result
    const all = slice(records, -Infinity, Infinity)
    const log = await readLog(logFile)

    const out: string[] = []
    const cores = (value: number): string => Number.isNaN(value) ? '?' : value.toFixed(2)
    out.push(`Machine: ${machine.cpus} CPUs (${machine.cpu}), Node ${machine.node}, Redis ${version}; load average before the run ${machine.load}. Code: ${machine.code}.`)
    out.push(`CPU during the load: ${cores(busy.machine)} of ${machine.cpus} cores busy: server ${cores(busy.server)}, autocannon ${cores(busy.loader)}, ` +
      `Redis and other processes ${cores(busy.machine - busy.server - busy.loader)}.`)
    out.push(`Load: ${CONNECTIONS} connections, ${DURATION_S} s, ${URLS.length} URLs (warm), autocannon timeout ${REQUEST_TIMEOUT_S} s. ` +
      'Hit = x-cache: HIT (from Redis, or shared with a concurrent request for the same key).')
    out.push('')
    out.push(table(['total requests', 'req/s', 'non-2xx', 'errors', 'timeouts', 'hit rate', 'p50 ms', 'p99 ms', 'max ms'], [[
      int(result.autocannon.requests), (all.requests / (end / 1000)).toFixed(0), result.autocannon.non2xx, result.autocannon.errors,
      result.autocannon.timeouts, pct(all.hitRate), ms(all.p50), ms(all.p99), ms(all.max)
    ]]))
    out.push('')
    out.push(table(['window', 's', 'requests', 'req/s', 'hit rate', 'p50 ms', 'p99 ms', 'max ms', 'non-2xx', 'errors'],
      windows(events, end).map((w) => {
        const part = slice(records, w.from, w.to)
        return [w.name, `${s(w.from)}–${s(w.to)}`, int(part.requests), part.rps.toFixed(0), pct(part.hitRate), ms(part.p50), ms(part.p99), ms(part.max), part.non2xx, part.failures]
      })))
    out.push('')
    const steady = windows(events, end)[0]
    const steadyRps = steady === undefined ? 0 : slice(records, steady.from, steady.to).rps
    const recoveries = events.filter((e) => e.name === 'restart' || e.name === 'unfreeze' || e.name === 'slow end')
      .map((e) => recovery(records, result.samples, e, steadyRps, end))
    out.push(table(['recovery event', 'at s', 'hit rate > 90 % after, s', 'req/s ≥ ½ steady after, s', 'circuit seen closed after, s'],
      recoveries.map((r) => [r.event.name + (r.event.error === undefined ? '' : ` (failed: ${r.event.error})`), s(r.at), s(r.hits), s(r.throughput), s(r.closed)])))
    out.push('')
    out.push('Per second (responses completed in that second; circuit and store errors from /cache/stats polled once a second):')
    out.push('')
    const seconds: Array<Array<string | number>> = []
    let lastErrors = 0
    for (let second = 0; second * 1000 < end; second++) {
      const from = second * 1000
      const to = from + 1000
      const { count, hits } = completed(records, from, to)
      const latencies: number[] = []
      for (let i = 0; i < records.end.length; i++) {
        const t = records.end[i] ?? 0
        if (t >= from && t < to) latencies.push(records.latency[i] ?? 0)
      }
      latencies.sort((a, b) => a - b)
      const sample = result.samples.filter((x) => x.at >= from && x.at < to + 500).at(0)
      const errors = sample?.errors ?? lastErrors
      const marks = events.filter((e) => (e.began ?? e.at) >= from && (e.began ?? e.at) < to).map((e) => e.name).join(', ')
      seconds.push([second, marks, count, pct(count === 0 ? NaN : hits / count), ms(percentile(latencies, 0.99)),
        sample?.failed === undefined ? (sample?.circuit ?? '–') : 'stats failed', errors - lastErrors])
      lastErrors = errors
    }
    out.push(table(['t s', 'event', 'responses', 'hit rate', 'p99 ms', 'circuit', 'store errors'], seconds, 2))
    out.push('')
    if (log.warnings.size > 0) {
      out.push('Server warnings and errors (rate-limited by the plugin to one per operation per 10 s):')
      for (const [what, count] of log.warnings) out.push(`- ${count} × ${what}`)
      out.push('')
    }
    const failed = records.failures.length > 0 || all.non2xx > 0 || result.autocannon.non2xx > 0
    if (failed) {
      live.keepLog = true
      const statuses = new Map<number, number>()
      for (const status of records.status) if (status < 200 || status > 299) statuses.set(status, (statuses.get(status) ?? 0) + 1)
      out.push(`FAILED: ${all.non2xx} non-2xx (${[...statuses].map(([status, count]) => `${count} × ${status}`).join(', ')}), ${records.failures.length} request errors.`)
      const reasons = new Map<string, number>()
      for (const f of records.failures) reasons.set(f.error, (reasons.get(f.error) ?? 0) + 1)
      for (const [reason, count] of reasons) out.push(`- ${count} × ${reason}`)
      for (const line of log.serverErrors) out.push(`  ${line}`)
    }
    console.log(out.join('\n'))
    return failed ? 1 : 0
  } finally {
    await cleanup()
  }
}

process.on('exit', killNow)
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    console.error(`${signal}: stopping`)
    cleanup().finally(() => process.exit(130))
  })
}
const deadline = setTimeout(() => {
  console.error(`still running after ${HARD_DEADLINE_MS / 1000} s: giving up`)
  killNow()
  process.exit(2)
}, HARD_DEADLINE_MS)
deadline.unref()

main().then((code) => {
  clearTimeout(deadline)
  process.exitCode = code
}, (error: unknown) => {
  console.error(error)
  process.exitCode = 1
}).finally(() => {
  // autocannon and the fault client hold no handles by now; anything left over must not keep the run alive
  setTimeout(() => process.exit(), 1000).unref()
})
