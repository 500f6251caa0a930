import { type Arg, type RedisClient, type Script, isNoScript, sendCommand } from './redis-scripts'

/** One command of a batch: a Lua script with its keys and arguments, or a plain command with its arguments. */
export type Call =
  | { script: Script, keys: readonly string[], args: readonly Arg[] }
  | { command: string, args: readonly Arg[] }

export function isCluster (client: RedisClient): boolean {
  return client.isCluster
}

export interface BatchOptions {
  /** Error replies are handed back in place of their results, as Error objects, instead of rejecting the batch. */
  settle?: boolean
}

/**
 * Runs the calls in one round trip when the client allows it, and resolves to their replies in order (Buffers for
 * bulk strings); rejects with the first error reply, unless `settle`.
 *
 * On a single node they go in one pipeline, executed in the order given: a call sees the effects of the calls before
 * it. A Cluster pipeline must stay within one slot, so there they are sent concurrently instead (each to its slot's
 * node, in parallel), and no order holds between calls of different slots: a caller that needs one awaits a batch
 * before sending the next.
 */
export async function batch (client: RedisClient, calls: readonly Call[], options: BatchOptions = {}): Promise<unknown[]> {
  if (calls.length === 0) return []
  const settle = options.settle === true
  if (isCluster(client)) {
    return await Promise.all(calls.map((call) => runOne(client, call).catch((error: unknown) => {
      if (settle) return error
      throw error
    })))
  }
  return await pipelined(client, calls, false, settle)
}

async function runOne (client: RedisClient, call: Call): Promise<unknown> {
  return 'script' in call ? await call.script.run(client, call.keys, call.args) : await sendCommand(client, call.command, call.args)
}

/**
 * A pipeline on a single node. A script Redis does not know (after a restart or SCRIPT FLUSH) fails with NOSCRIPT
 * without running: that call and every call after it run again, in order, the scripts sent whole, so that the
 * order of effects is still the one given. The calls after a script must therefore be safe to run twice.
 */
async function pipelined (client: RedisClient, calls: readonly Call[], whole: boolean, settle: boolean): Promise<unknown[]> {
  const pipeline = client.pipeline()
  for (const call of calls) {
    if (!('script' in call)) pipeline.callBuffer(call.command, ...call.args)
    else if (whole) pipeline.callBuffer('eval', call.script.source, call.keys.length, ...call.keys, ...call.args)
    else pipeline.callBuffer('evalsha', call.script.sha, call.keys.length, ...call.keys, ...call.args)
  }
  const replies = await pipeline.exec() ?? []
  const retryFrom = whole ? -1 : replies.findIndex(([error]) => isNoScript(error))
  const results: unknown[] = []
  for (let i = 0; i < calls.length; i++) {
    if (i === retryFrom) return [...results, ...await pipelined(client, calls.slice(i), true, settle)]
    const [error, result] = replies[i] ?? [new Error('no reply')]
    if (error === null || error === undefined) results.push(result)
    else if (settle) results.push(error)
    else throw error
  }
  return results
}
