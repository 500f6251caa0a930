/**
 * A redis-server (or a Sentinel: `redis-server <config> --sentinel`) with the arguments the caller gives, for set-ups
 * that RedisProcess does not cover: no plain port (TLS only), a config file first on the command line (Sentinel).
 * Readiness is the caller's probe, usually `probePid`: the process must answer INFO with its own pid, so a port
 * already taken by another server fails the start.
 *
 * As in RedisProcess, a watchdog subshell kills the server (SIGKILL) when the test process dies in any way, and a
 * process 'exit' hook kills what is still running.
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { Socket } from 'node:net'

const START_TIMEOUT_MS = 10_000
const STOP_TIMEOUT_MS = 5_000
const MAX_LOG_CHARS = 4000

/**
 * Runs `redis-server` in the background and prints its pid, then waits for
 * it; a watchdog subshell kills redis-server (SIGKILL) as soon as our stdin
 * reaches EOF, which happens when the Node process dies in any way, even by
 * SIGKILL. The non-interactive shell gives background jobs /dev/null as
 * stdin, so the pipe is handed to the watchdog as fd 3.
 */
export const WRAPPER_SCRIPT = [
  'redis-server "$@" 1>&2 &',
  'rpid=$!',
  'echo "$rpid"',
  'exec 3<&0',
  '( read -r _ <&3; kill -9 "$rpid" 2>/dev/null ) &',
  'wpid=$!',
  'exec 3<&-',
  'wait "$rpid"',
  'code=$?',
  'kill "$wpid" 2>/dev/null',
  'exit "$code"'
].join('\n')

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

const live = new Set<ServerProcess>()
let exitHookInstalled = false

function installExitHook (): void {
  if (exitHookInstalled) return
  exitHookInstalled = true
  process.on('exit', () => {
    for (const server of live) server.kill()
  })
}

/**
 * Sends `INFO server` on the socket that `connect` opens (plain or TLS; written at once, both buffer until
 * connected) and resolves to the `process_id` it answers, or undefined on any failure or after `timeoutMs`.
 */
export async function probePid (connect: () => Socket, timeoutMs = 500): Promise<number | undefined> {
  return await new Promise<number | undefined>((resolve) => {
    let reply = Buffer.alloc(0)
    let settled = false
    const socket = connect()
    const finish = (pid: number | undefined): void => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      socket.destroy()
      resolve(pid)
    }
    const timer = setTimeout(() => finish(undefined), timeoutMs)
    socket.on('data', (chunk: Buffer) => {
      reply = Buffer.concat([reply, chunk])
      const headerEnd = reply.indexOf('\r\n')
      if (headerEnd === -1) return
      const header = reply.subarray(0, headerEnd).toString('latin1')
      if (!header.startsWith('$')) return finish(undefined) // e.g. -LOADING
      const length = Number.parseInt(header.slice(1), 10)
      if (reply.length < headerEnd + 2 + length) return
      const body = reply.subarray(headerEnd + 2, headerEnd + 2 + length).toString('latin1')
      const match = /^process_id:(\d+)\r?$/m.exec(body)
      finish(match?.[1] === undefined ? undefined : Number(match[1]))
    })
    socket.once('error', () => finish(undefined))
    socket.once('close', () => finish(undefined))
    socket.write('INFO server\r\n')
  })
}

export interface ServerProcessOptions {
  /** The whole redis-server command line after the program name. */
  args: string[]
  /** True once the server with this pid answers as it should. */
  ready: (pid: number) => Promise<boolean>
  /** For error messages, e.g. `sentinel on port 26379`. */
  name: string
}

export class ServerProcess {
  readonly name: string
  #pid = 0
  #child: ChildProcess | undefined
  #exited: Promise<void> = Promise.resolve()
  #log = ''

  private constructor (name: string) {
    this.name = name
  }

  /** pid of the running server (0 once stopped). */
  get pid (): number {
    return this.#pid
  }

  get running (): boolean {
    return this.#child !== undefined
  }

  /** Recent server output (its log goes to stderr), for error messages. */
  get log (): string {
    return this.#log
  }

  /** Spawns the server and resolves once `ready` says so; kills it and throws, with its output, otherwise. */
  static async start (options: ServerProcessOptions): Promise<ServerProcess> {
    const server = new ServerProcess(options.name)
    await server.#spawn(options)
    return server
  }

  /** SIGTERM, then SIGKILL if it has not exited within 5 s. */
  async stop (): Promise<void> {
    if (this.#child === undefined) return
    this.#signal('SIGTERM')
    const exited = await Promise.race([this.#exited.then(() => true), sleep(STOP_TIMEOUT_MS).then(() => false)])
    if (!exited) {
      this.#signal('SIGKILL')
      await this.#exited
    }
  }

  /** SIGKILL, at once (a crash; also the 'exit' hook). `stop()` afterwards waits until it is gone. */
  kill (): void {
    this.#signal('SIGKILL')
  }

  #signal (signal: NodeJS.Signals): void {
    if (this.#pid <= 0) return
    try {
      process.kill(this.#pid, signal)
    } catch {
      // already gone
    }
  }

  async #spawn (options: ServerProcessOptions): Promise<void> {
    installExitHook()
    const child = spawn('sh', ['-c', WRAPPER_SCRIPT, 'redis-server-wrapper', ...options.args], {
      stdio: ['pipe', 'pipe', 'pipe']
    })
    child.stdin?.on('error', () => {})
    child.stderr?.setEncoding('utf8')
    child.stderr?.on('data', (chunk: string) => {
      this.#log = (this.#log + chunk).slice(-MAX_LOG_CHARS)
    })
    this.#child = child
    live.add(this)
    this.#exited = new Promise<void>((resolve) => {
      child.once('exit', () => {
        this.#child = undefined
        this.#pid = 0
        live.delete(this)
        child.stdin?.destroy()
        resolve()
      })
    })
    try {
      this.#pid = await readPid(child)
      const deadline = Date.now() + START_TIMEOUT_MS
      while (!await options.ready(this.#pid)) {
        if (this.#child === undefined) throw new Error('redis-server exited')
        if (Date.now() > deadline) throw new Error(`not ready within ${START_TIMEOUT_MS} ms`)
        await sleep(25)
      }
      // Once up, neither the child nor its pipes keep the test process alive: the exit hook and the watchdog do.
      child.unref()
      for (const stream of [child.stdin, child.stdout, child.stderr]) {
        if (stream instanceof Socket) stream.unref()
      }
    } catch (err) {
      this.kill()
      child.kill('SIGKILL')
      await this.#exited
      throw new Error(
        `${options.name} did not start: ${err instanceof Error ? err.message : String(err)}` +
        (this.#log === '' ? '' : `\n--- redis-server output ---\n${this.#log.trim()}`)
      )
    }
  }
}

/** The wrapper prints the server's pid on its first line; rejects if it exits or fails to start before that. */
export async function readPid (child: ChildProcess): Promise<number> {
  const stdout = child.stdout
  if (stdout === null) throw new Error('no stdout from the wrapper shell')
  stdout.setEncoding('utf8')
  return await new Promise<number>((resolve, reject) => {
    let text = ''
    const onData = (chunk: string): void => {
      text += chunk
      const newline = text.indexOf('\n')
      if (newline === -1) return
      cleanup()
      const pid = Number.parseInt(text.slice(0, newline), 10)
      if (Number.isInteger(pid) && pid > 0) resolve(pid)
      else reject(new Error(`unexpected wrapper output: ${JSON.stringify(text)}`))
    }
    const onExit = (code: number | null, signal: NodeJS.Signals | null): void => {
      cleanup()
      reject(new Error(`the wrapper shell exited early (code ${String(code)}, signal ${String(signal)})`))
    }
    const onError = (err: Error): void => {
      cleanup()
      reject(err)
    }
    const cleanup = (): void => {
      stdout.off('data', onData)
      child.off('exit', onExit)
      child.off('error', onError)
      stdout.resume() // the wrapper prints nothing else; drain anyway
    }
    stdout.on('data', onData)
    child.once('exit', onExit)
    child.once('error', onError)
  })
}
