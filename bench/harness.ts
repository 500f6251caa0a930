// The moving parts of bench/run.ts: server child processes, HTTP checks and autocannon loads, all on 127.0.0.1.
import autocannon from 'autocannon'
import { type ChildProcess, execFileSync, spawn } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { availableParallelism } from 'node:os'
import { join } from 'node:path'
import { BENCH_KEYS, type Variant, benchPath } from './payload'

const ROOT = join(__dirname, '..')
const START_TIMEOUT_MS = 20_000
const STOP_TIMEOUT_MS = 10_000
const REQUEST_TIMEOUT_MS = 2_000
const CPUS = availableParallelism()

/** Every server child still alive; killed on any way out (see killAll). */
const live = new Set<ChildProcess>()

export interface Server {
  variant: Variant
  port: number
  pid: number
  /** SIGTERM, then SIGKILL after STOP_TIMEOUT_MS; resolves once the process has exited. */
  stop (): Promise<void>
}

let built = false

/**
 * The plugin as it is published, tsc's output in dist/, built once per benchmark run: the servers load it (BENCH_PLUGIN)
 * instead of the TypeScript source, which tsx compiles with names kept, so that every closure a request creates also
 * calls esbuild's `__name` helper (0.4 µs of a Redis hit in a profile), a cost users never pay. BENCH_SOURCE=1
 * benches the source.
 */
function pluginEnv (): NodeJS.ProcessEnv {
  if (process.env['BENCH_SOURCE'] === '1') return {}
  if (!built) {
    execFileSync(process.execPath, [require.resolve('typescript/bin/tsc'), '-p', 'tsconfig.build.json'], { cwd: ROOT, stdio: 'inherit' })
    built = true
  }
  return { BENCH_PLUGIN: join(ROOT, 'dist', 'index.js') }
}

/**
 * Starts `node [nodeArgs] --import tsx bench/server.ts <variant>` and resolves once it answers HTTP; under `wrapper`
 * (a command and its arguments, such as valgrind's) when given, with longer time to start.
 */
export async function startServer (variant: Variant, env: NodeJS.ProcessEnv, nodeArgs: string[] = [], wrapper: string[] = []): Promise<Server> {
  const [command = process.execPath, ...before] = wrapper.length > 0 ? [...wrapper, process.execPath] : []
  const child = spawn(command, [...before, ...nodeArgs, '--import', 'tsx', join('bench', 'server.ts'), variant], {
    cwd: ROOT, env: { ...process.env, ...pluginEnv(), ...env }, stdio: ['ignore', 'ignore', 'pipe', 'ipc']
  })
  const startTimeoutMs = wrapper.length > 0 ? 10 * START_TIMEOUT_MS : START_TIMEOUT_MS
  live.add(child)
  let stderr = ''
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => { stderr = (stderr + chunk).slice(-4000) })
  const exited = new Promise<void>((resolve) => child.once('exit', () => { live.delete(child); resolve() }))
  const stop = async (): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null) return
    child.kill('SIGTERM')
    const timer = setTimeout(() => child.kill('SIGKILL'), STOP_TIMEOUT_MS)
    await exited
    clearTimeout(timer)
  }
  try {
    const port = await new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no port within ${startTimeoutMs} ms`)), startTimeoutMs)
      child.once('message', (message: { port: number }) => { clearTimeout(timer); resolve(message.port) })
      child.once('exit', (code) => { clearTimeout(timer); reject(new Error(`exited with code ${String(code)}`)) })
    })
    await waitUntilAnswers(port, startTimeoutMs)
    return { variant, port, pid: child.pid ?? 0, stop }
  } catch (error) {
    await stop()
    throw new Error(`server ${variant} did not start: ${(error as Error).message}\n${stderr.trim()}`)
  }
}

/** Synchronous SIGKILL of every child, for the process 'exit' hook and fatal paths. */
export function killAll (): void {
  for (const child of live) child.kill('SIGKILL')
}

export interface Answer {
  status: number
  headers: Headers
  body: string
}

export async function get (port: number, path: string): Promise<Answer> {
  const response = await fetch(`http://127.0.0.1:${port}${path}`, { signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) })
  return { status: response.status, headers: response.headers, body: await response.text() }
}

async function waitUntilAnswers (port: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    try {
      await get(port, '/')
      return
    } catch (error) {
      if (Date.now() > deadline) throw error
      await new Promise((resolve) => setTimeout(resolve, 50))
    }
  }
}

/** Asks for every key of the load once, a few at a time, so that a cached variant has stored them all. */
export async function askEveryKey (port: number): Promise<void> {
  let next = 0
  const worker = async (): Promise<void> => {
    for (let n = next++; n < BENCH_KEYS; n = next++) {
      const answer = await get(port, benchPath(n))
      if (answer.status !== 200) throw new Error(`${benchPath(n)} answered ${answer.status}`)
    }
  }
  await Promise.all(Array.from({ length: 16 }, worker))
}

export interface LoadSettings {
  connections: number
  /** Seconds. */
  duration: number
}

export interface Measurement {
  rps: number
  /** Milliseconds, from every response's own time (autocannon's histogram rounds to whole ms). */
  p50: number
  p99: number
  p999: number
  /** The server's resident memory at the end of the load, in bytes (0 when /proc does not say). */
  rss: number
  mean: number
  requests: number
  /** autocannon's own whole-millisecond percentiles, kept for reference. */
  autocannon: { p50: number, p99: number }
  /** Cores busy during the load: the server, this process (autocannon), Redis, and everything else on the machine. */
  cpu: CpuShare
}

export interface CpuShare {
  server: number
  /** The part of `server` spent in the kernel (socket reads and writes, mostly). */
  serverKernel: number
  loader: number
  redis: number
  other: number
}

/** Clock ticks of every CPU together (busy and all) from /proc/stat, and of given processes from /proc/<pid>/stat. */
function ticks (pids: number[]): { all: number, busy: number, procs: number[], kernel: number[] } {
  const fields = readFileSync('/proc/stat', 'utf8').split('\n')[0]?.trim().split(/\s+/).slice(1).map(Number) ?? []
  const all = fields.slice(0, 8).reduce((sum, value) => sum + value, 0)
  const idle = (fields[3] ?? 0) + (fields[4] ?? 0)
  const times = pids.map((pid) => {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
      const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
      return [Number(rest[11]), Number(rest[12])] // utime, stime
    } catch {
      return [0, 0] // not visible here (Redis elsewhere) or gone
    }
  })
  return { all, busy: all - idle, procs: times.map(([user = 0, kernel = 0]) => user + kernel), kernel: times.map(([, kernel = 0]) => kernel) }
}

/**
 * Waits, up to `maxWaitMs`, for a second in which the machine's busy CPU stays below `maxCores` (other sessions'
 * test runs share it). Resolves to the busy cores of the last second measured.
 */
export async function quiet (maxCores: number, maxWaitMs: number): Promise<number> {
  const deadline = Date.now() + maxWaitMs
  for (;;) {
    const before = ticks([])
    await new Promise((resolve) => setTimeout(resolve, 1000))
    const after = ticks([])
    const busy = Math.round(100 * CPUS * (after.busy - before.busy) / (after.all - before.all)) / 100
    if (busy < maxCores || Date.now() >= deadline) return busy
  }
}

function cpuMeter (server: number, redis: number): () => CpuShare {
  const pids = [server, process.pid, redis]
  const before = ticks(pids)
  return () => {
    const after = ticks(pids)
    const wall = (after.all - before.all) / CPUS // ticks of one CPU over the interval
    const cores = (delta: number): number => Math.round(100 * delta / wall) / 100
    const [own = 0, loader = 0, store = 0] = after.procs.map((value, i) => value - (before.procs[i] ?? 0))
    const kernel = (after.kernel[0] ?? 0) - (before.kernel[0] ?? 0)
    return {
      server: cores(own), serverKernel: cores(kernel), loader: cores(loader), redis: cores(store), other: cores(after.busy - before.busy - own - loader - store)
    }
  }
}

function residentBytes (pid: number): number {
  try {
    const kib = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]
    return kib === undefined ? 0 : Number(kib) * 1024
  } catch {
    return 0
  }
}

/**
 * Gives each connection every key's path, starting at its own place in the cycle, spaced evenly: the requests in
 * flight then ask for different keys. (A request rewritten as it is sent would cost the load generator, which shares
 * the machine with the server, more than the server's own work.)
 */
function spread (path: (n: number) => string, connections: number): (client: { setRequests: (requests: Array<{ method: string, path: string }>) => void }) => void {
  let index = 0
  return (client) => {
    const start = Math.floor(index++ * BENCH_KEYS / connections)
    client.setRequests(Array.from({ length: BENCH_KEYS }, (_, n) => ({ method: 'GET', path: path(start + n) })))
  }
}

/** One autocannon load of `path` (or of the paths of every key); fails when any request errs, times out or is not a 2xx. */
export async function load (server: Server, path: string | ((n: number) => string), settings: LoadSettings, redisPid = 0): Promise<Measurement> {
  const port = server.port
  const meter = cpuMeter(server.pid, redisPid)
  const instance = autocannon({
    url: `http://127.0.0.1:${port}${typeof path === 'string' ? path : path(0)}`,
    connections: settings.connections,
    duration: settings.duration,
    pipelining: 1,
    timeout: 10,
    ...(typeof path === 'string' ? {} : { setupClient: spread(path, settings.connections) })
  })
  let times = new Float64Array(1 << 16)
  let count = 0
  instance.on('response', (_client: unknown, _status: number, _bytes: number, responseTime: number) => {
    if (count === times.length) {
      const grown = new Float64Array(times.length * 2)
      grown.set(times)
      times = grown
    }
    times[count++] = responseTime
  })
  const result = await instance
  const cpu = meter()
  if (result.errors + result.timeouts + result.non2xx > 0) {
    throw new Error(`load on ${path} failed: ${result.errors} errors, ${result.timeouts} timeouts, ${result.non2xx} non-2xx`)
  }
  const sorted = times.subarray(0, count).sort()
  const at = (q: number): number => sorted[Math.min(count - 1, Math.floor(q * count))] ?? NaN
  return {
    rps: result.requests.average,
    p50: at(0.5),
    p99: at(0.99),
    p999: at(0.999),
    rss: residentBytes(server.pid),
    mean: sorted.reduce((sum, value) => sum + value, 0) / count,
    requests: result.requests.total,
    autocannon: { p50: result.latency.p50, p99: result.latency.p99 },
    cpu
  }
}
