/**
 * A Redis Sentinel set-up for tests, all on free loopback ports: a master, one replica and 1-3 Sentinels
 * (`redis-server <config> --sentinel`) watching it as `mymaster`, with a short `down-after-milliseconds`, so that a
 * failover after killing the master takes seconds. Its files (Sentinel configs, which Sentinel rewrites, and RDB
 * files of the replica's sync) live in a temp dir that `stop()` removes along with every process.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { createConnection } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Redis } from 'ioredis'
import { RedisProcess, freePort } from './redis'
import { ServerProcess, probePid } from './server-process'

const LOOPBACK = '127.0.0.1'
const READY_TIMEOUT_MS = 10_000

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

export interface SentinelSetOptions {
  /** How many Sentinels, 1 to 3 (quorum: a majority). Default 1. */
  sentinels?: number
  /** Sentinel's `down-after-milliseconds`. Default 1000. */
  downAfterMs?: number
  /** Sentinel's `failover-timeout`. Default 3000. */
  failoverTimeoutMs?: number
}

export interface Address {
  host: string
  port: number
}

/** A short-lived client for one question; never retries. */
async function ask<T> (address: Address, question: (client: Redis) => Promise<T>): Promise<T> {
  const client = new Redis({ ...address, lazyConnect: true, retryStrategy: () => null, maxRetriesPerRequest: 0, connectTimeout: 1000 })
  try {
    await client.connect()
    return await question(client)
  } finally {
    client.disconnect()
  }
}

async function until (what: string, check: () => Promise<boolean>, timeoutMs = READY_TIMEOUT_MS): Promise<void> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    if (await check().catch(() => false)) return
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`)
    await sleep(25)
  }
}

/** `SENTINEL REPLICAS` and the like answer flat [name, value, ...] arrays. */
function fields (flat: string[]): Record<string, string> {
  const record: Record<string, string> = {}
  for (let i = 0; i + 1 < flat.length; i += 2) record[flat[i] as string] = flat[i + 1] as string
  return record
}

export class SentinelSet {
  /** The name the Sentinels know the master by. */
  readonly name = 'mymaster'
  readonly master: RedisProcess
  readonly replica: RedisProcess
  readonly #sentinels: Array<{ port: number, server: ServerProcess }>
  readonly #dir: string

  private constructor (dir: string, master: RedisProcess, replica: RedisProcess, sentinels: Array<{ port: number, server: ServerProcess }>) {
    this.#dir = dir
    this.master = master
    this.replica = replica
    this.#sentinels = sentinels
  }

  /** Where the Sentinels listen: what the plugin's `redis.sentinels` takes. */
  get sentinels (): Address[] {
    return this.#sentinels.map(({ port }) => ({ host: LOOPBACK, port }))
  }

  /**
   * Starts the master, the replica (waiting until it is in sync) and the Sentinels (waiting until each knows the
   * replica, and the other Sentinels), so that a failover can happen as soon as the master goes.
   */
  static async start (options: SentinelSetOptions = {}): Promise<SentinelSet> {
    const count = options.sentinels ?? 1
    if (!Number.isInteger(count) || count < 1 || count > 3) throw new Error(`1 to 3 sentinels, got ${count}`)
    const dir = await mkdtemp(join(tmpdir(), 'cache-sentinel-'))
    const started: Array<{ stop: () => Promise<void> }> = []
    try {
      // No delay before a diskless full sync (5 s by default), so the replica is in sync at once.
      const common = ['--dir', dir, '--repl-diskless-sync-delay', '0']
      const master = await RedisProcess.start({ args: common })
      started.push(master)
      const replica = await RedisProcess.start({ args: [...common, '--replicaof', LOOPBACK, String(master.port)] })
      started.push(replica)
      await until('the replica is in sync', async () =>
        /^master_link_status:up\r?$/m.test(await ask({ host: LOOPBACK, port: replica.port }, (client) => client.info('replication'))))

      const sentinels: Array<{ port: number, server: ServerProcess }> = []
      for (let i = 0; i < count; i++) {
        const sentinel = await startSentinel(dir, i, master.port, Math.floor(count / 2) + 1, options)
        started.push(sentinel.server)
        sentinels.push(sentinel)
      }
      const set = new SentinelSet(dir, master, replica, sentinels)
      for (const address of set.sentinels) {
        await until(`sentinel ${address.port} knows the replica and the other sentinels`, async () => await ask(address, async (client) => {
          const replicas = (await client.call('SENTINEL', 'REPLICAS', set.name) as string[][]).map(fields)
          const others = await client.call('SENTINEL', 'SENTINELS', set.name) as string[][]
          return replicas.some((r) => r['port'] === String(replica.port) && r['flags'] === 'slave' && r['master-link-status'] === 'ok') &&
            others.length === count - 1
        }))
      }
      return set
    } catch (err) {
      for (const server of started.reverse()) await server.stop()
      await rm(dir, { recursive: true, force: true })
      throw err
    }
  }

  /** The master's address as the first Sentinel that answers reports it. */
  async masterAddress (): Promise<Address> {
    let lastError: unknown
    for (const address of this.sentinels) {
      try {
        const [host, port] = await ask(address, (client) => client.call('SENTINEL', 'GET-MASTER-ADDR-BY-NAME', this.name)) as [string, string]
        return { host, port: Number(port) }
      } catch (err) {
        lastError = err
      }
    }
    throw lastError
  }

  /** Kills the master (SIGKILL: a crash, no shutdown save or replica hand-over) and waits until it is gone. */
  async crashMaster (): Promise<void> {
    process.kill(this.master.pid, 'SIGKILL')
    await this.master.stop()
  }

  /** Waits until the Sentinels report the replica as the master, and it says so itself. */
  async untilReplicaPromoted (timeoutMs: number): Promise<void> {
    await until('the replica is promoted', async () => {
      const { port } = await this.masterAddress()
      if (port !== this.replica.port) return false
      return /^role:master\r?$/m.test(await ask({ host: LOOPBACK, port }, (client) => client.info('replication')))
    }, timeoutMs)
  }

  /** Stops every process (Sentinels first, so that none starts a failover meanwhile) and removes the temp dir. */
  async stop (): Promise<void> {
    for (const { server } of this.#sentinels) await server.stop()
    await this.replica.stop()
    await this.master.stop()
    await rm(this.#dir, { recursive: true, force: true })
  }
}

async function startSentinel (
  dir: string, index: number, masterPort: number, quorum: number, options: SentinelSetOptions
): Promise<{ port: number, server: ServerProcess }> {
  let lastError: unknown
  for (let attempt = 0; attempt < 3; attempt++) {
    const port = await freePort()
    // Sentinel rewrites its config file (discovered replicas and Sentinels, epochs): one per Sentinel, writable.
    const config = join(dir, `sentinel-${index}-${port}.conf`)
    await writeFile(config, [
      `port ${port}`,
      `bind ${LOOPBACK}`,
      `dir ${dir}`,
      `sentinel monitor mymaster ${LOOPBACK} ${masterPort} ${quorum}`,
      `sentinel down-after-milliseconds mymaster ${options.downAfterMs ?? 1000}`,
      `sentinel failover-timeout mymaster ${options.failoverTimeoutMs ?? 3000}`,
      'sentinel parallel-syncs mymaster 1',
      ''
    ].join('\n'))
    try {
      const server = await ServerProcess.start({
        name: `sentinel on port ${port}`,
        args: [config, '--sentinel', '--loglevel', 'warning'],
        ready: async (pid) => await probePid(() => createConnection({ host: LOOPBACK, port })) === pid
      })
      return { port, server }
    } catch (err) {
      lastError = err
    }
  }
  throw lastError
}
