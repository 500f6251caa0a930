/**
 * A real Redis Cluster for tests: redis-server processes on free loopback ports (RedisProcess), made a cluster by
 * `redis-cli --cluster create`, with one replica per master. It can kill a master (SIGKILL) and wait for its replica
 * to take over. Everything is stopped, and its directory removed, in teardown. Every wait is bounded and fails
 * naming what it waited for.
 */
import { execFile } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { Cluster, type ClusterOptions, Redis } from 'ioredis'
import { RedisProcess, freePort, type Teardownable } from './redis'

const LOOPBACK = '127.0.0.1'
const CREATE_TIMEOUT_MS = 20_000
const STATE_TIMEOUT_MS = 15_000
const FAILOVER_TIMEOUT_MS = 20_000
/** How long nodes wait for each other before declaring one failed: short, so that a failover takes seconds. */
const NODE_TIMEOUT_MS = 1000

const run = promisify(execFile)
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

export interface ClusterNode {
  readonly proc: RedisProcess
  readonly port: number
}

/** A line of CLUSTER NODES, the parts the helper needs. */
interface NodeLine {
  id: string
  port: number
  flags: string[]
  masterId: string
  slots: string[]
}

export interface RedisClusterOptions {
  masters?: number
  replicasPerMaster?: number
}

export class RedisCluster {
  private readonly killed = new Set<RedisProcess>()

  private constructor (readonly nodes: readonly ClusterNode[], private readonly dir: string) {}

  /** The startup nodes a client is given. */
  get startupNodes (): Array<{ host: string, port: number }> {
    return this.live().map((node) => ({ host: LOOPBACK, port: node.port }))
  }

  /**
   * Starts the servers, creates the cluster and waits until every node reports cluster_state:ok. With a tap test
   * object, everything is stopped in its teardown.
   */
  static async start (t?: Teardownable, options: RedisClusterOptions = {}): Promise<RedisCluster> {
    const masters = options.masters ?? 3
    const replicas = options.replicasPerMaster ?? 1
    const dir = mkdtempSync(join(tmpdir(), 'redis-cluster-'))
    const started = await Promise.allSettled(Array.from({ length: masters * (1 + replicas) }, () => startNode(dir)))
    const nodes = started.flatMap((result) => result.status === 'fulfilled' ? [result.value] : [])
    const cluster = new RedisCluster(nodes, dir)
    t?.teardown(() => cluster.stop())
    const failed = started.find((result) => result.status === 'rejected')
    if (failed !== undefined) {
      await cluster.stop()
      throw new Error(`a cluster node did not start: ${String(failed.reason)}`)
    }
    try {
      await run('redis-cli', [
        '--cluster', 'create', ...nodes.map((node) => `${LOOPBACK}:${node.port}`),
        '--cluster-replicas', String(replicas), '--cluster-yes'
      ], { timeout: CREATE_TIMEOUT_MS })
      await cluster.waitForState(cluster.nodes, STATE_TIMEOUT_MS)
      await cluster.waitForTopology(masters, masters * replicas, STATE_TIMEOUT_MS)
    } catch (error) {
      await cluster.stop()
      throw new Error(`the Redis Cluster could not be created: ${error instanceof Error ? error.message : String(error)}`)
    }
    return cluster
  }

  /** A connected ioredis Cluster client; quit in teardown when given a test object. */
  async client (t?: Teardownable, options: ClusterOptions = {}): Promise<Cluster> {
    const client = new Cluster(this.startupNodes, { ...options, lazyConnect: true })
    t?.teardown(() => { client.disconnect() })
    await client.connect()
    return client
  }

  /** A plain client to one node, for CLUSTER commands; disconnected in teardown. */
  nodeClient (t: Teardownable, node: ClusterNode): Redis {
    const client = new Redis(node.port, LOOPBACK, { maxRetriesPerRequest: 1, lazyConnect: true })
    t.teardown(() => { client.disconnect() })
    return client
  }

  /** The current masters (from a live node's view), with their ports. */
  async masters (): Promise<NodeLine[]> {
    return (await this.topology()).filter((line) => line.flags.includes('master') && !line.flags.includes('fail') && line.slots.length > 0)
  }

  /** The node (process) listening on a port. */
  nodeAt (port: number): ClusterNode {
    const node = this.nodes.find((candidate) => candidate.port === port)
    if (node === undefined) throw new Error(`no cluster node on port ${port}`)
    return node
  }

  /** The port of the master serving a slot. */
  async masterOfSlot (slot: number): Promise<number> {
    for (const master of await this.masters()) {
      for (const range of master.slots) {
        const [from, to] = range.split('-').map(Number)
        if (from !== undefined && slot >= from && slot <= (to ?? from)) return master.port
      }
    }
    throw new Error(`no master serves slot ${slot}`)
  }

  /**
   * Kills a master with SIGKILL and waits until one of its replicas serves its slots and every live node reports
   * cluster_state:ok again; resolves to the port of the new master.
   */
  async killMaster (port: number): Promise<number> {
    const victim = this.nodeAt(port)
    const before = await this.topology()
    const line = before.find((candidate) => candidate.port === port)
    if (line === undefined || !line.flags.includes('master')) throw new Error(`the node on port ${port} is not a master`)
    const replicas = before.filter((candidate) => candidate.masterId === line.id).map((candidate) => candidate.port)
    if (replicas.length === 0) throw new Error(`the master on port ${port} has no replica to fail over to`)
    victim.proc.killNow()
    this.killed.add(victim.proc)
    return await this.waitForFailover(replicas)
  }

  /** Resolves once a replica among `replicas` is a master with slots and every live node is ok; to its port. */
  async waitForFailover (replicas: readonly number[], timeoutMs = FAILOVER_TIMEOUT_MS): Promise<number> {
    const deadline = Date.now() + timeoutMs
    while (Date.now() < deadline) {
      const promoted = (await this.masters().catch(() => [])).find((master) => replicas.includes(master.port))
      if (promoted !== undefined) {
        await this.waitForState(this.live(), Math.max(1000, deadline - Date.now()))
        return promoted.port
      }
      await sleep(100)
    }
    throw new Error(`no replica among ${replicas.join(', ')} was promoted within ${timeoutMs} ms`)
  }

  /** Stops every node (by pid) and removes the cluster's directory. */
  async stop (): Promise<void> {
    await Promise.all(this.nodes.map((node) => node.proc.stop().catch(() => {})))
    rmSync(this.dir, { recursive: true, force: true })
  }

  private live (): ClusterNode[] {
    return this.nodes.filter((node) => !this.killed.has(node.proc) && node.proc.running)
  }

  private async topology (): Promise<NodeLine[]> {
    let lastError: unknown
    for (const node of this.live()) {
      try {
        return parseNodes(await command(node.port, ['CLUSTER', 'NODES']))
      } catch (error) {
        lastError = error
      }
    }
    throw new Error(`no live node answered CLUSTER NODES: ${String(lastError)}`)
  }

  private async waitForState (nodes: readonly ClusterNode[], timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs
    const pending = new Set(nodes.map((node) => node.port))
    while (pending.size > 0) {
      for (const port of [...pending]) {
        const info = await command(port, ['CLUSTER', 'INFO']).catch(() => '')
        if (/cluster_state:ok/.test(info)) pending.delete(port)
      }
      if (pending.size === 0) return
      if (Date.now() > deadline) throw new Error(`cluster_state:ok not reported by ${[...pending].join(', ')} within ${timeoutMs} ms`)
      await sleep(100)
    }
  }

  /** True when every replica has finished its sync with its master (a replica never synced cannot take over). */
  private async replicasInSync (lines: readonly NodeLine[]): Promise<boolean> {
    for (const line of lines.filter((candidate) => candidate.flags.includes('slave'))) {
      const info = await command(line.port, ['INFO', 'replication']).catch(() => '')
      if (!/master_link_status:up/.test(info)) return false
    }
    return true
  }

  private async waitForTopology (masters: number, replicas: number, timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      const lines = await this.topology()
      const seenMasters = lines.filter((line) => line.flags.includes('master') && line.slots.length > 0).length
      const seenReplicas = lines.filter((line) => line.flags.includes('slave')).length
      if (seenMasters === masters && seenReplicas === replicas && await this.replicasInSync(lines)) return
      if (Date.now() > deadline) throw new Error(`expected ${masters} masters and ${replicas} replicas, saw ${seenMasters} and ${seenReplicas}`)
      await sleep(100)
    }
  }
}

async function startNode (dir: string): Promise<ClusterNode> {
  let lastError: unknown
  // A port found free may be taken before redis-server binds it: a few tries.
  for (let attempt = 0; attempt < 3; attempt++) {
    const port = await freePort()
    try {
      const proc = await RedisProcess.start({
        port,
        args: [
          '--cluster-enabled', 'yes',
          '--cluster-config-file', join(dir, `nodes-${port}.conf`),
          '--cluster-node-timeout', String(NODE_TIMEOUT_MS),
          // A replica may take over however long it was cut off, and syncs at once rather than after 5 s.
          '--cluster-replica-validity-factor', '0',
          '--repl-diskless-sync-delay', '0',
          '--dir', dir
        ]
      })
      return { proc, port }
    } catch (error) {
      lastError = error
    }
  }
  throw lastError
}

/** One command to one node, on a short-lived connection. */
async function command (port: number, args: string[]): Promise<string> {
  const client = new Redis(port, LOOPBACK, { maxRetriesPerRequest: 0, retryStrategy: () => null, connectTimeout: 1000, lazyConnect: true })
  client.on('error', () => {})
  try {
    await client.connect()
    return String(await client.call(args[0] ?? '', ...args.slice(1)))
  } finally {
    client.disconnect()
  }
}

function parseNodes (text: string): NodeLine[] {
  return text.trim().split('\n').filter(Boolean).map((row) => {
    const [id = '', address = '', flags = '', masterId = '', , , , , ...slots] = row.trim().split(' ')
    const port = Number(/:(\d+)/.exec(address)?.[1] ?? 0)
    return { id, port, flags: flags.split(','), masterId, slots: slots.filter((slot) => !slot.startsWith('[')) }
  })
}

/** Deletes every key under `<prefix>:` on every master (SCAN on each, UNLINK one key at a time: keys span slots). */
export async function deleteByPrefixOnCluster (client: Cluster, prefix: string): Promise<void> {
  const match = prefix.replace(/[*?[\]\\]/g, '\\$&') + ':*'
  for (const node of client.nodes('master')) {
    let cursor = '0'
    do {
      const [next, keys] = await node.scan(cursor, 'MATCH', match, 'COUNT', 1000)
      cursor = next
      await Promise.all(keys.map((key) => client.unlink(key)))
    } while (cursor !== '0')
  }
}
