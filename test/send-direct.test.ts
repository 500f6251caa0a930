// sendDirect against a real Redis: the commands of one turn of the event loop leave in one socket write, each gets
// its own reply, and commands sent before the connection is ready still go out once it is.
import type { Socket } from 'node:net'
import { Redis } from 'ioredis'
import t from 'tap'
import { sendDirect } from '../lib/stores/redis-scripts'
import { createClient, deleteByPrefix, redisUrl, uniquePrefix } from './helpers/redis'

/** Counts the writes that reach the socket's handle: one per `_write` or `_writev` call. */
function countWrites (socket: Socket): () => number {
  let writes = 0
  const internals = socket as unknown as Record<'_write' | '_writev', (...args: unknown[]) => void>
  for (const name of ['_write', '_writev'] as const) {
    const original = internals[name].bind(socket)
    internals[name] = (...args) => { writes++; original(...args) }
  }
  return () => writes
}

t.test('the commands of one turn leave in one write, and each gets its own reply', async (t) => {
  const client = await createClient(t)
  const prefix = uniquePrefix('direct')
  t.teardown(() => deleteByPrefix(client, prefix))
  await Promise.all(Array.from({ length: 20 }, async (_, i) => await client.set(`${prefix}:${i}`, `value ${i}`)))
  const writes = countWrites(client.stream as Socket)

  const replies = await Promise.all(Array.from({ length: 20 }, async (_, i) => await sendDirect(client, 'get', [`${prefix}:${i}`])))
  t.same(replies.map(String), Array.from({ length: 20 }, (_, i) => `value ${i}`), 'each command its own reply, as Buffers')
  t.ok(replies.every((reply) => Buffer.isBuffer(reply)))
  t.equal(writes(), 1, 'twenty commands, one write')

  // Commands of later turns are not held back by the first: each turn's go out in its own write.
  for (let turn = 0; turn < 3; turn++) t.equal(String(await sendDirect(client, 'get', [`${prefix}:${turn}`])), `value ${turn}`)
  t.equal(writes(), 4)
})

t.test('a command sent before the connection is ready waits for it, uncorked', async (t) => {
  const client = new Redis(await redisUrl(), { lazyConnect: true })
  t.teardown(() => client.disconnect())
  const connecting = client.connect()
  t.not(client.status, 'ready')
  const reply = sendDirect(client, 'ping', [])
  await connecting
  t.equal(String(await reply), 'PONG')
  t.equal((client.stream as Socket).writableCorked, 0, 'the connection is not left corked')
  t.equal(String(await sendDirect(client, 'ping', [])), 'PONG')
})
