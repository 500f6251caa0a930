import { type ChildProcess, spawn } from 'node:child_process'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
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
