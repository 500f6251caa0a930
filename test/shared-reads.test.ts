import t from 'tap'
import { SharedReads } from '../lib/stores/shared-reads'

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

t.test('a read started before a change ended is not joined after it, whether the change succeeded or failed', async (t) => {
  const reads = new SharedReads<string>()
  const source = controlledReads()
  const before = reads.share('a', source.start)
  await reads.change(async () => 'written')
  const after = reads.share('a', source.start)
  t.equal(source.started(), 2, 'the read after the change is its own')
  await t.rejects(reads.change(async () => { throw new Error('refused') }), { message: 'refused' })
  const afterFailure = reads.share('a', source.start)
  t.equal(source.started(), 3)
  t.equal(reads.share('a', source.start), afterFailure, 'later reads join the newest one')
  source.finish('value')
  t.same(await Promise.all([before, after, afterFailure]), ['value', 'value', 'value'])
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
