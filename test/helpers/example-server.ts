/**
 * The example server as `npm start` runs it, in a child process with the environment a test gives, answering over
 * real HTTP on a free loopback port.
 */
import { type ChildProcessByStdio, spawn } from 'node:child_process'
import { once } from 'node:events'
import { resolve } from 'node:path'
import type { Readable } from 'node:stream'
import { setTimeout as sleep } from 'node:timers/promises'
import { type Teardownable, freePort } from './redis'

const ROOT = resolve(__dirname, '..', '..')
export const START_TIMEOUT_MS = 60_000
/** For a tap test that starts the server: its start, on a busy machine, plus the test itself. */
export const SERVER_TEST_TIMEOUT_MS = 2 * START_TIMEOUT_MS

export interface RunningServer {
  base: string
  /** Everything the server wrote so far. */
  output: () => string
  /** SIGTERM, then the exit code. */
  stop: () => Promise<number | null>
}

/**
 * Runs `npm start`'s command with the given environment and waits until it has logged that it is ready and /health
 * answers. Always killed at teardown.
 */
export async function startServer (t: Teardownable, env: Record<string, string | undefined>): Promise<RunningServer> {
  const { child, port, output } = await spawnServer(env)
  const exited = once(child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>
  const running = (): boolean => child.exitCode === null && child.signalCode === null
  t.teardown(async () => {
    if (!running()) return
    child.kill('SIGKILL')
    await exited
  })

  const base = `http://127.0.0.1:${port}`
  // tsx compiles the sources on start: seconds on a busy machine
  const deadline = Date.now() + START_TIMEOUT_MS
  for (;;) {
    if (!running()) throw new Error(`the server exited before answering:\n${output()}`)
    if (Date.now() > deadline) throw new Error(`the server was not ready within ${START_TIMEOUT_MS} ms:\n${output()}`)
    // the ready line, which the tests read, is logged once listen() has resolved
    if (output().includes('example server listening at') &&
      await fetch(`${base}/health`).then((response) => response.ok, () => false)) break
    await sleep(100)
  }
  return {
    base,
    output,
    stop: async () => {
      child.kill('SIGTERM')
      const [code] = await exited
      return code
    }
  }
}

/** Polls /cache/stats (with the admin token) until the server has stored `count` responses. */
export async function waitForStored (base: string, count: number, adminToken: string): Promise<void> {
  const deadline = Date.now() + 5000
  for (;;) {
    const stats = await (await fetch(`${base}/cache/stats`, { headers: { authorization: `Bearer ${adminToken}` } })).json() as { stored: number }
    if (stats.stored >= count) return
    if (Date.now() > deadline) throw new Error(`fewer than ${count} responses stored within 5 s`)
    await sleep(10)
  }
}

/** Runs `npm start`'s command with the given environment until it exits by itself (a start that must fail). */
export async function runUntilExit (env: Record<string, string | undefined>): Promise<{ code: number | null, output: string }> {
  const { child, output } = await spawnServer(env)
  const timer = setTimeout(() => child.kill('SIGKILL'), START_TIMEOUT_MS)
  const [code] = await once(child, 'exit') as [number | null, NodeJS.Signals | null]
  clearTimeout(timer)
  return { code, output: output() }
}

/** `npm start`'s command on a free loopback port, with everything it writes collected. */
async function spawnServer (env: Record<string, string | undefined>): Promise<{ child: ChildProcessByStdio<null, Readable, Readable>, port: number, output: () => string }> {
  const port = await freePort()
  const child = spawn(process.execPath, ['--import', 'tsx', 'example-server/server.ts'], {
    cwd: ROOT,
    env: { ...env, PORT: String(port), HOST: '127.0.0.1' },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  let output = ''
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => { output += chunk })
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => { output += chunk })
  return { child, port, output: () => output }
}
