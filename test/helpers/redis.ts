/**
 * Real Redis for tests.
 *
 * Where the Redis comes from, first match wins:
 *   1. `REDIS_URL` (e.g. `redis://127.0.0.1:6379`), when set and not empty;
 *   2. a `redis-server` found on the PATH, spawned once per test process on a
 *      free loopback port and killed when the process exits;
 *   3. a testcontainers `redis:7-alpine` container, when Docker works;
 *   4. otherwise an Error telling how to provide one.
 *
 * Tests share that Redis, so each test works under its own key prefix
 * (`uniquePrefix`) and cleans up with `deleteByPrefix`.
 *
 * `RedisProcess` is separate: a private redis-server per test, for
 * fault injection (stop, restart on the same port, freeze with SIGSTOP).
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { accessSync, constants as fsConstants } from 'node:fs'
import { WRAPPER_SCRIPT, probePid, readPid } from './server-process'
import { createConnection, createServer, Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { delimiter, join } from 'node:path'
import { Redis, type RedisOptions } from 'ioredis'
import { escapeGlob } from '../../lib/keys'

/** The part of a tap test object that the helpers use. */
export interface Teardownable {
  teardown (fn: () => unknown): void
}

const LOOPBACK = '127.0.0.1'
const REDIS_IMAGE = 'redis:7-alpine'
const START_TIMEOUT_MS = 10_000
const STOP_TIMEOUT_MS = 5_000

// ---------------------------------------------------------------------------
// small utilities
// ---------------------------------------------------------------------------

const sleep = (ms: number): Promise<void> =>
  new Promise(resolve => setTimeout(resolve, ms))

/** Resolves to true when `promise` settles within `ms`, else false; no timer is left behind. */
async function settlesWithin (promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<boolean>(resolve => {
    timer = setTimeout(() => resolve(false), ms)
  })
  try {
    return await Promise.race([promise.then(() => true, () => true), timeout])
  } finally {
    clearTimeout(timer)
  }
}

function errorMessage (err: unknown): string {
  return err instanceof Error ? err.message : String(err)
}

/** Finds an executable on the PATH, like `command -v`. */
function findOnPath (binary: string): string | undefined {
  for (const dir of (process.env['PATH'] ?? '').split(delimiter)) {
    if (dir === '') continue
    const candidate = join(dir, binary)
    try {
      accessSync(candidate, fsConstants.X_OK)
      return candidate
    } catch {
      // not here
    }
  }
  return undefined
}

/** A free TCP port on the loopback interface (bind port 0, read it, close). */
export async function freePort (): Promise<number> {
  return await new Promise<number>((resolve, reject) => {
    const server = createServer()
    server.unref()
    server.once('error', reject)
    server.listen(0, LOOPBACK, () => {
      const address = server.address()
      if (address === null || typeof address === 'string') {
        server.close()
        reject(new Error('could not read the port of a bound server'))
        return
      }
      const { port } = address
      server.close(err => (err ? reject(err) : resolve(port)))
    })
  })
}

/**
 * Asks the server on `port` for `INFO server` over a raw socket and returns
 * its `process_id`, or undefined when nothing answers properly within
 * `timeoutMs` (not listening, still loading, hung). Never throws.
 */
async function serverPid (port: number, timeoutMs: number): Promise<number | undefined> {
  return await probePid(() => createConnection({ host: LOOPBACK, port }), timeoutMs)
}

// ---------------------------------------------------------------------------
// RedisProcess: a private redis-server
// ---------------------------------------------------------------------------

const MAX_LOG_CHARS = 4000

/** Every RedisProcess with a live redis-server, for the exit hook. */
const live = new Set<RedisProcess>()
let exitHookInstalled = false

function installExitHook (): void {
  if (exitHookInstalled) return
  exitHookInstalled = true
  // 'exit' handlers must be synchronous: kill by pid and let the OS reap.
  // Abrupt deaths (SIGKILL of this process) are covered by the watchdog.
  process.on('exit', () => {
    for (const proc of live) proc.killNow()
  })
}

export interface RedisProcessOptions {
  /** Port to listen on; a free loopback port when omitted. */
  port?: number
  /** Extra redis-server arguments, appended after the defaults. */
  args?: string[]
}

export class RedisProcess {
  readonly port: number
  readonly url: string
  readonly #args: readonly string[]
  #pid = 0
  #child: ChildProcess | undefined
  #exited: Promise<void> = Promise.resolve()
  #log = ''
  #frozen = false

  private constructor (port: number, args: readonly string[]) {
    this.port = port
    this.url = `redis://${LOOPBACK}:${port}`
    this.#args = args
  }

  /** pid of the running redis-server (0 once stopped). */
  get pid (): number {
    return this.#pid
  }

  /** True while a redis-server started by this object runs. */
  get running (): boolean {
    return this.#child !== undefined
  }

  /** Recent redis-server log output, for error messages. */
  get log (): string {
    return this.#log
  }

  /**
   * Spawns a redis-server on a free loopback port (or `opts.port`) and
   * resolves once it answers (checked with INFO: the answer must come from
   * this process, so a port already taken by another server fails).
   * Several attempts on fresh ports when `opts.port` is not given.
   */
  static async start (opts: RedisProcessOptions = {}): Promise<RedisProcess> {
    if (findOnPath('redis-server') === undefined) {
      throw new Error('RedisProcess needs redis-server on the PATH (e.g. apt-get install redis-server)')
    }
    // A free port found by binding port 0 may be taken by someone else
    // before redis-server binds it; try a few times when we chose it.
    const attempts = opts.port === undefined ? 3 : 1
    let lastError: unknown
    for (let i = 0; i < attempts; i++) {
      const port = opts.port ?? await freePort()
      const proc = new RedisProcess(port, opts.args ?? [])
      try {
        await proc.#spawn()
        return proc
      } catch (err) {
        lastError = err
      }
    }
    throw lastError
  }

  /** Stops redis-server: SIGTERM, then SIGKILL if it has not exited in time. */
  async stop (): Promise<void> {
    if (this.#child === undefined) return
    this.#signal('SIGTERM')
    // a stopped (frozen) process only acts on SIGTERM once continued
    if (this.#frozen) this.#signal('SIGCONT')
    if (!await settlesWithin(this.#exited, STOP_TIMEOUT_MS)) {
      this.#signal('SIGKILL')
      await this.#exited
    }
  }

  /** Stops (if running) and starts again on the same port; waits until it answers. */
  async restart (): Promise<void> {
    await this.stop()
    await this.#spawn()
  }

  /** SIGSTOP: the server keeps its connections but answers nothing. */
  freeze (): void {
    this.#assertRunning('freeze')
    this.#signal('SIGSTOP')
    this.#frozen = true
  }

  /** SIGCONT: undo freeze(). */
  unfreeze (): void {
    this.#assertRunning('unfreeze')
    this.#signal('SIGCONT')
    this.#frozen = false
  }

  /** Synchronous SIGKILL, for the process 'exit' hook. @internal */
  killNow (): void {
    this.#signal('SIGKILL')
    this.#child?.stdin?.destroy()
  }

  #assertRunning (what: string): void {
    if (this.#child === undefined) {
      throw new Error(`RedisProcess.${what}(): redis-server on port ${this.port} is not running`)
    }
  }

  #signal (signal: NodeJS.Signals): void {
    if (this.#pid <= 0) return
    try {
      process.kill(this.#pid, signal)
    } catch {
      // already gone
    }
  }

  async #spawn (): Promise<void> {
    installExitHook()
    this.#log = ''
    this.#frozen = false
    const args = [
      '--port', String(this.port),
      '--bind', LOOPBACK,
      '--save', '',
      '--appendonly', 'no',
      '--daemonize', 'no',
      '--dir', tmpdir(),
      // Its own file: a replica's full sync writes one, which must never be loaded by another server started later.
      '--dbfilename', `test-redis-${process.pid}-${this.port}.rdb`,
      '--loglevel', 'warning',
      ...this.#args,
    ]
    const child = spawn('sh', ['-c', WRAPPER_SCRIPT, 'redis-server-wrapper', ...args], {
      stdio: ['pipe', 'pipe', 'pipe'],
    })
    child.stdin?.on('error', () => {})
    child.stderr?.setEncoding('utf8')
    child.stderr?.on('data', (chunk: string) => {
      this.#log = (this.#log + chunk).slice(-MAX_LOG_CHARS)
    })

    this.#child = child
    live.add(this)
    this.#exited = new Promise<void>(resolve => {
      child.once('exit', () => {
        if (this.#child === child) {
          this.#child = undefined
          this.#pid = 0
          live.delete(this)
        }
        child.stdin?.destroy()
        resolve()
      })
    })

    try {
      this.#pid = await readPid(child)
      await this.#waitUntilReady()
      // Once up, neither the child nor its pipes may keep the test process
      // alive: the exit hook and the watchdog take care of it.
      child.unref()
      for (const stream of [child.stdin, child.stdout, child.stderr]) {
        if (stream instanceof Socket) stream.unref()
      }
    } catch (err) {
      this.killNow()
      await this.#exited
      throw new Error(
        `redis-server on port ${this.port} did not start: ${errorMessage(err)}` +
        (this.#log === '' ? '' : `\n--- redis-server output ---\n${this.#log.trim()}`)
      )
    }
  }

  async #waitUntilReady (): Promise<void> {
    const deadline = Date.now() + START_TIMEOUT_MS
    while (Date.now() < deadline) {
      if (this.#child === undefined) throw new Error('redis-server exited')
      // the answer must come from our process, not from another server
      // that already holds the port
      if (await serverPid(this.port, 500) === this.#pid) return
      await sleep(25)
    }
    throw new Error(`no answer within ${START_TIMEOUT_MS} ms`)
  }
}

// ---------------------------------------------------------------------------
// The shared Redis of this test process
// ---------------------------------------------------------------------------

let urlPromise: Promise<string> | undefined

async function startContainer (): Promise<string> {
  const { GenericContainer } = await import('testcontainers')
  const container = await new GenericContainer(REDIS_IMAGE)
    .withExposedPorts(6379)
    .start()
  // Ryuk removes the container if we die; stop it ourselves when idle.
  process.once('beforeExit', () => {
    container.stop().catch(() => {})
  })
  return `redis://${container.getHost()}:${container.getMappedPort(6379)}`
}

async function resolveRedisUrl (): Promise<string> {
  const fromEnv = process.env['REDIS_URL']
  if (fromEnv !== undefined && fromEnv !== '') return fromEnv

  if (findOnPath('redis-server') !== undefined) {
    const proc = await RedisProcess.start()
    return proc.url
  }

  try {
    return await startContainer()
  } catch (err) {
    throw new Error(
      'No Redis available for the tests. Provide one of: ' +
      'REDIS_URL=redis://127.0.0.1:6379 pointing at a running Redis; ' +
      'redis-server on the PATH (e.g. apt-get install redis-server); ' +
      `or a working Docker engine for testcontainers (${REDIS_IMAGE}). ` +
      `Docker attempt failed with: ${errorMessage(err)}`
    )
  }
}

/**
 * URL of the Redis that this test process uses; resolved once per process
 * (a failed attempt is not cached, so a later call tries again).
 */
export async function redisUrl (): Promise<string> {
  urlPromise ??= resolveRedisUrl().catch((err: unknown) => {
    urlPromise = undefined
    throw err
  })
  return await urlPromise
}

/** Quits a client; falls back to disconnect() when QUIT cannot be sent. */
async function closeClient (client: Redis): Promise<void> {
  if (client.status === 'end') return
  if (client.status !== 'ready') {
    client.disconnect()
    return
  }
  await settlesWithin(client.quit(), 1000)
  client.disconnect() // no-op once QUIT closed the connection
}

/**
 * A connected ioredis client to `redisUrl()`. With a tap test object the
 * client is quit in `t.teardown`; otherwise the caller quits it.
 */
export async function createClient (t?: Teardownable, options: RedisOptions = {}): Promise<Redis> {
  const client = new Redis(await redisUrl(), { ...options, lazyConnect: true })
  try {
    await client.connect()
  } catch (err) {
    client.disconnect()
    throw err
  }
  t?.teardown(() => closeClient(client))
  return client
}

/**
 * A key prefix unique to one test: `test:<name>:<random>`, with the name
 * reduced to the characters A-Za-z0-9._:- (others become `_`).
 */
export function uniquePrefix (name: string): string {
  const safeName = name.replace(/[^A-Za-z0-9._:-]/g, '_').slice(0, 80) || 'anon'
  return `test:${safeName}:${randomBytes(6).toString('hex')}`
}

const SCAN_COUNT = 10_000
const UNLINK_BATCH = 1000

/** SCAN MATCH + UNLINK in batches, never KEYS or FLUSHALL; resolves to how many keys were removed. */
export async function unlinkMatching (client: Redis, match: string): Promise<number> {
  let removed = 0
  let cursor = '0'
  do {
    const [next, keys] = await client.scan(cursor, 'MATCH', match, 'COUNT', SCAN_COUNT)
    cursor = next
    for (let i = 0; i < keys.length; i += UNLINK_BATCH) removed += await client.unlink(...keys.slice(i, i + UNLINK_BATCH))
  } while (cursor !== '0')
  return removed
}

/**
 * Deletes every key under `<prefix>:`, the prefix matched literally (other tests' keys on a shared Redis are safe);
 * resolves to how many there were.
 */
export async function deleteByPrefix (client: Redis, prefix: string): Promise<number> {
  return await unlinkMatching(client, escapeGlob(prefix) + ':*')
}
