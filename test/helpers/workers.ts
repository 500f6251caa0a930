import { type ChildProcess, spawn } from 'node:child_process'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import type {} from 'tap'
import { until } from './app'
import type { Teardownable } from './redis'

/**
 * Starts test/fixtures/<name>.ts in its own Node process and resolves to the port it listens on (its first line of
 * output, `{"port":N}`). The process is stopped in teardown.
 */
export async function startWorker (t: Teardownable, name: string, env: Record<string, string>): Promise<number> {
  const child: ChildProcess = spawn(process.execPath, ['--import', 'tsx', join(__dirname, '..', 'fixtures', `${name}.ts`)], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'inherit']
  })
  t.teardown(() => { child.kill('SIGTERM') })
  const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream })
  const first = await new Promise<string>((resolve, reject) => {
    lines.once('line', resolve)
    child.once('exit', () => reject(new Error(`the ${name} worker exited before it listened`)))
  })
  return (JSON.parse(first) as { port: number }).port
}

/**
 * Three test/fixtures/instance-worker.ts processes on one prefix (env: REDIS_URL or CLUSTER_NODES, CACHE_PREFIX):
 * each serves a value from its own in-process tier (a HIT), then a change made on any one of them is served by all
 * three within a second, although each holds entries for five minutes: only the bus can make that happen.
 */
export async function threeProcessesAsOneCache (t: tap.Test, env: Record<string, string>): Promise<void> {
  const ports = await Promise.all([1, 2, 3].map(() => startWorker(t, 'instance-worker', env)))
  const read = async (port: number): Promise<{ value: string | null, cache: string | null }> => {
    const response = await fetch(`http://127.0.0.1:${port}/value/7`)
    return { value: ((await response.json()) as { value: string | null }).value, cache: response.headers.get('x-cache') }
  }
  const change = async (port: number, value: string): Promise<void> => {
    await fetch(`http://127.0.0.1:${port}/change/7`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ value }) })
  }
  await change(ports[0], 'v1')
  for (const port of ports) {
    await until(`port ${port} hits v1`, async () => { const r = await read(port); return r.value === 'v1' && r.cache === 'HIT' })
  }
  for (const [round, value] of ['v2', 'v3', 'v4'].entries()) {
    await change(ports[round % 3], value)
    for (const port of ports) await until(`${value} visible on ${port}`, async () => (await read(port)).value === value, 1000)
  }
  let computed = 0
  for (const port of ports) computed += ((await (await fetch(`http://127.0.0.1:${port}/figures`)).json()) as { computed: number }).computed
  t.ok(computed <= 3 * 4, `each change recomputed at most once per instance (${computed} computations for 4 values on 3 instances)`)
}
