import Fastify from 'fastify'
import t from 'tap'
import { GuardedStore } from '../lib/guarded-store'
import { SharedReads } from '../lib/shared-reads'
import { CacheStats } from '../lib/stats'
import { MemoryStore } from '../lib/stores/memory'
import { ThrottledLog } from '../lib/throttled-log'

/** A read that resolves when told to, and counts how often it started. */
function controlledReads (): { start: () => Promise<string>, started: () => number, finish: (value: string) => void, fail: (error: Error) => void } {
  const pending: Array<{ resolve: (value: string) => void, reject: (error: Error) => void }> = []
  return {
    start: () => new Promise<string>((resolve, reject) => { pending.push({ resolve, reject }) }),
    started: () => pending.length,
    finish: (value) => { for (const read of pending.splice(0)) read.resolve(value) },
    fail: (error) => { for (const read of pending.splice(0)) read.reject(error) }
  }
}

t.test('reads of one key under way are joined; other keys and later reads start their own', async (t) => {
  const reads = new SharedReads<string>()
  const source = controlledReads()
  const joined = [reads.share('a', source.start), reads.share('a', source.start), reads.share('a', source.start)]
  const other = reads.share('b', source.start)
  t.equal(source.started(), 2, 'one read per key')
  source.finish('value')
  t.same(await Promise.all([...joined, other]), ['value', 'value', 'value', 'value'])
  const later = reads.share('a', source.start)
  t.equal(source.started(), 1, 'a read after the last one settled starts anew')
  source.finish('next')
  t.equal(await later, 'next')
})

t.test('a read started before a change completed is not joined after it', async (t) => {
  const reads = new SharedReads<string>()
  const source = controlledReads()
  const before = reads.share('a', source.start)
  reads.changed()
  const after = reads.share('a', source.start)
  t.equal(source.started(), 2, 'the read after the change is its own')
  t.equal(reads.share('a', source.start), after, 'later reads join the newest one')
  source.finish('value')
  t.same(await Promise.all([before, after]), ['value', 'value'])
})

t.test('a failed read fails its joiners, and the next read starts anew', async (t) => {
  const reads = new SharedReads<string>()
  const source = controlledReads()
  const first = reads.share('a', source.start)
  const joiner = reads.share('a', source.start)
  source.fail(new Error('timeout'))
  await t.rejects(first, { message: 'timeout' })
  await t.rejects(joiner, { message: 'timeout' })
  const next = reads.share('a', source.start)
  t.equal(source.started(), 1)
  source.finish('value')
  t.equal(await next, 'value')
})

/** A memory store whose peeks take `delayMs`, as a remote store's do, and are counted. */
class SlowPeeks extends MemoryStore {
  peeks = 0
  override async peek (id: string): Promise<Buffer | undefined> {
    this.peeks++
    const value = await super.peek(id)
    await new Promise((resolve) => setTimeout(resolve, 50))
    return value
  }
}

t.test('the guarded store: concurrent peeks of an id make one store call; one after a write makes its own', async (t) => {
  const store = new SlowPeeks({ maxEntries: 100, maxBytes: 1 << 20 })
  const guarded = new GuardedStore(store, new ThrottledLog(Fastify().log), new CacheStats())
  await store.set('id', Buffer.from('old'), { ttlMs: 60_000 })
  const before = Array.from({ length: 10 }, async () => await guarded.peek('id', 'failed'))
  t.equal(store.peeks, 1, 'ten peeks, one call')
  // Completes while that call is still under way: it may have read the old value, which no later peek may get.
  await guarded.write('set', (s) => s.set('id', Buffer.from('new'), { ttlMs: 60_000 }))
  const after = await guarded.peek('id', 'failed')
  t.equal(store.peeks, 2, 'the peek after the write is its own call')
  t.equal(String(after), 'new')
  t.ok((await Promise.all(before)).every((value) => String(value) === 'old'), 'the peeks before it got what the call read')
})
