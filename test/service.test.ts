import Fastify, { type FastifyInstance } from 'fastify'
import type { Redis } from 'ioredis'
import t from 'tap'
import cache, { type CachePluginOptions, type CacheService } from '../lib/index'
import { RedisProcess, createClient, deleteByPrefix, redisUrl, uniquePrefix } from './helpers/redis'

// Real Redis servers, expiry waits and fault injection: more than the default 30 s on a busy machine.
t.setTimeout(120_000)

type TestContext = Parameters<Parameters<typeof t.test>[0]>[0]
type Kind = 'memory' | 'redis'
const KINDS: readonly Kind[] = ['memory', 'redis']

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

interface Setup {
  app: FastifyInstance
  service: CacheService
  prefix: string
  /** A separate client on the same Redis (redis kind only), to look at the raw keys. */
  raw?: Redis
}

/** An app with the plugin on the given store, under its own prefix; closed and cleaned up in teardown. */
async function setup (t: TestContext, kind: Kind, options: CachePluginOptions = {}): Promise<Setup> {
  const app = Fastify()
  const prefix = options.prefix ?? uniquePrefix(`service-${kind}`)
  let raw: Redis | undefined
  if (kind === 'redis') {
    raw = await createClient(t)
    const cleaner = raw
    t.teardown(() => deleteByPrefix(cleaner, prefix))
    await app.register(cache, { redis: await redisUrl(), ...options, prefix })
  } else {
    await app.register(cache, { ...options, prefix })
  }
  t.teardown(() => app.close())
  await app.ready()
  return { app, service: app.cacheService, prefix, raw }
}

/** Resolves to how long the promise took to settle, in milliseconds, and its outcome. */
async function timed<T> (promise: Promise<T>): Promise<{ ms: number, value?: T, error?: unknown }> {
  const start = Date.now()
  try {
    const value = await promise
    return { ms: Date.now() - start, value }
  } catch (error) {
    return { ms: Date.now() - start, error }
  }
}

function codeOf (error: unknown): unknown {
  return typeof error === 'object' && error !== null ? (error as { code?: unknown }).code : undefined
}

const STORE_FAILURE = /^FST_CACHE_STORE_(ERROR|TIMEOUT)$/

for (const kind of KINDS) {
  t.test(`${kind} store`, async (t) => {
    t.test('JSON values round-trip', async (t) => {
      const { service } = await setup(t, kind)
      const values: Array<[string, unknown]> = [
        ['object', { a: 1, b: [1, 'two', true, null, 2.5], c: { d: 'é ☃ 𝄞', e: {} } }],
        ['array', [1, 2, { x: [] }]],
        ['string', 'hello'],
        ['empty string', ''],
        ['zero', 0],
        ['negative float', -1.25],
        ['true', true],
        ['false', false],
        ['null', null]
      ]
      for (const [name, value] of values) {
        await service.set(['json', name], value)
        t.strictSame(await service.get(['json', name]), value, name)
      }
    })

    t.test('structured values round-trip faithfully', async (t) => {
      const { service } = await setup(t, kind)
      const date = new Date('2024-01-02T03:04:05.678Z')
      const value = {
        date,
        map: new Map<unknown, unknown>([['a', 1], [2, { nested: new Set([1, 2]) }], [date, 'date key']]),
        set: new Set(['x', 'y', 3]),
        big: 123456789012345678901234567890n,
        negBig: -5n,
        buffer: Buffer.from([0, 1, 2, 254, 255]),
        u8: new Uint8Array([1, 2, 3]),
        i32: new Int32Array([-1, 2, 2147483647]),
        f64: new Float64Array([1.5, -2.25, Infinity]),
        b64: new BigInt64Array([1n, -2n]),
        missing: undefined,
        nested: { inner: undefined, list: [undefined, 1, null] },
        special: [NaN, -0, Infinity, -Infinity]
      }
      await service.set('structured', value)
      const back = await service.get<typeof value>('structured')
      if (back === undefined) {
        t.fail('the value was not stored')
        return
      }
      t.not(back, value, 'a copy, not the same object')
      t.ok(back.date instanceof Date, 'Date')
      t.equal(back.date.getTime(), date.getTime())
      t.ok(back.map instanceof Map, 'Map')
      t.equal(back.map.get('a'), 1)
      t.ok((back.map.get(2) as { nested: Set<number> }).nested instanceof Set, 'Set inside a Map value')
      t.strictSame([...(back.map.get(2) as { nested: Set<number> }).nested], [1, 2])
      const dateKey = [...back.map.keys()][2]
      t.ok(dateKey instanceof Date && dateKey.getTime() === date.getTime(), 'Date map key')
      t.ok(back.set instanceof Set, 'Set')
      t.strictSame([...back.set], ['x', 'y', 3])
      t.equal(typeof back.big, 'bigint')
      t.equal(back.big, 123456789012345678901234567890n)
      t.equal(back.negBig, -5n)
      t.ok(Buffer.isBuffer(back.buffer), 'Buffer')
      t.ok(back.buffer.equals(value.buffer))
      t.ok(back.u8 instanceof Uint8Array && !Buffer.isBuffer(back.u8), 'Uint8Array')
      t.strictSame([...back.u8], [1, 2, 3])
      t.ok(back.i32 instanceof Int32Array, 'Int32Array')
      t.strictSame([...back.i32], [-1, 2, 2147483647])
      t.ok(back.f64 instanceof Float64Array, 'Float64Array')
      t.strictSame([...back.f64], [1.5, -2.25, Infinity])
      t.ok(back.b64 instanceof BigInt64Array, 'BigInt64Array')
      t.strictSame([...back.b64], [1n, -2n])
      t.ok(Object.hasOwn(back, 'missing'), 'an undefined property is kept')
      t.equal(back.missing, undefined)
      t.ok(Object.hasOwn(back.nested, 'inner'), 'a nested undefined property is kept')
      t.equal(back.nested.list.length, 3)
      t.ok(Object.hasOwn(back.nested.list, 0), 'an undefined array item is kept')
      t.equal(back.nested.list[0], undefined)
      t.equal(back.nested.list[2], null)
      t.ok(Number.isNaN(back.special[0]), 'NaN')
      t.ok(Object.is(back.special[1], -0), '-0')
      t.equal(back.special[2], Infinity)
      t.equal(back.special[3], -Infinity)

      await service.set('bare-bigint', 42n)
      t.equal(await service.get('bare-bigint'), 42n)
      await service.set('bare-date', date)
      t.equal((await service.get<Date>('bare-date'))?.getTime(), date.getTime())
    })

    t.test('get of a missing key is undefined', async (t) => {
      const { service } = await setup(t, kind)
      t.equal(await service.get('nope'), undefined)
      t.equal(await service.get(['no', 'such', 'key']), undefined)
      t.equal(await service.exists('nope'), false)
      t.equal(await service.ttl('nope'), -2)
    })

    t.test('set with a ttl, ttl(), and expiry', async (t) => {
      const { service } = await setup(t, kind)
      await service.set('long', 'v', { ttl: 30 })
      const left = await service.ttl('long')
      t.ok(left >= 29 && left <= 30, `ttl about 30, got ${left}`)

      await service.set('short', { v: 1 }, { ttl: 1 })
      t.strictSame(await service.get('short'), { v: 1 })
      t.equal(await service.exists('short'), true)
      await sleep(1200)
      t.equal(await service.get('short'), undefined, 'gone after its ttl')
      t.equal(await service.exists('short'), false)
      t.equal(await service.ttl('short'), -2)
      t.equal(await service.get('long'), 'v', 'the longer one is still there')
    })

    t.test('the default ttl is the plugin option', async (t) => {
      const { service } = await setup(t, kind, { ttl: 120 })
      await service.set('k', 1)
      const left = await service.ttl('k')
      t.ok(left >= 119 && left <= 120, `ttl about 120, got ${left}`)
      const computed = await service.getOrCompute('computed', () => 2)
      t.equal(computed, 2)
      const left2 = await service.ttl('computed')
      t.ok(left2 >= 119 && left2 <= 120, `getOrCompute uses it too, got ${left2}`)
    })

    t.test('the default ttl is 60 s without the option', async (t) => {
      const { service } = await setup(t, kind)
      await service.set('k', 1)
      const left = await service.ttl('k')
      t.ok(left >= 59 && left <= 60, `ttl about 60, got ${left}`)
    })

    t.test('delete and exists', async (t) => {
      const { service } = await setup(t, kind)
      await service.set('k', 1)
      t.equal(await service.exists('k'), true)
      t.equal(await service.delete('k'), true, 'true when it existed')
      t.equal(await service.exists('k'), false)
      t.equal(await service.get('k'), undefined)
      t.equal(await service.delete('k'), false, 'false the second time')
    })

    t.test('expire changes the ttl; false on a missing key', async (t) => {
      const { service } = await setup(t, kind)
      await service.set('k', 1, { ttl: 10 })
      t.equal(await service.expire('k', 500), true)
      const left = await service.ttl('k')
      t.ok(left >= 499 && left <= 500, `ttl about 500, got ${left}`)
      t.equal(await service.expire('k', 1), true)
      await sleep(1200)
      t.equal(await service.exists('k'), false, 'expires on the new ttl')
      t.equal(await service.expire('missing', 10), false)
      t.equal(await service.exists('missing'), false, 'expire does not create a key')
    })

    t.test('a string key and its parts name the same entry; a part holding ":" is another', async (t) => {
      const { service } = await setup(t, kind)
      await service.set('a:b', 'string')
      t.equal(await service.get(['a', 'b']), 'string', "'a:b' and ['a', 'b'] are the same entry")
      t.equal(await service.get(['a:b']), undefined, "['a:b'] is a different entry")
      await service.set(['a:b'], 'one part')
      t.equal(await service.get(['a:b']), 'one part')
      t.equal(await service.get('a:b'), 'string', 'the one-part entry did not overwrite the two-part one')
      await service.set(['a', 'b'], 'parts')
      t.equal(await service.get('a:b'), 'parts', 'setting by parts overwrites the string key')
      t.equal(await service.delete(['a:b']), true)
      t.equal(await service.get('a:b'), 'parts', 'deleting the one-part key leaves the two-part one')

      await service.set(['n', 1, true], 'typed')
      t.equal(await service.get('n:1:true'), 'typed', 'numbers and booleans are their text')
      await service.set(['x', null], 'null part')
      t.equal(await service.get(['x', 'null']), undefined, "null is not 'null'")
      t.equal(await service.get(['x', '']), undefined, "null is not ''")
      t.equal(await service.get(['x', null]), 'null part')
    })

    t.test('invalidate one key or several, with counts', async (t) => {
      const { service } = await setup(t, kind)
      await service.set('k1', 1)
      await service.set(['k', '2'], 2)
      await service.set('k3', 3)
      await service.set('k4', 4)
      t.equal(await service.invalidate('k1'), 1)
      t.equal(await service.exists('k1'), false)
      t.equal(await service.invalidate('k1'), 0, 'nothing left to delete')
      t.equal(await service.invalidate(['k:2', 'k3', 'missing']), 2, 'counts only what existed')
      t.equal(await service.exists(['k', '2']), false)
      t.equal(await service.exists('k3'), false)
      t.equal(await service.exists('k4'), true, 'others stay')
      t.equal(await service.invalidate([['k4']]), 1, 'keys given as parts')
    })

    t.test('invalidateTags with one and several tags; other tags survive', async (t) => {
      const { service } = await setup(t, kind)
      await service.set('k1', 1, { tags: ['t1'] })
      await service.set('k2', 2, { tags: ['t1', 't2'] })
      await service.set('k3', 3, { tags: ['t2'] })
      await service.set('k4', 4, { tags: ['t3'] })
      await service.set('k5', 5, { tags: ['t4', 'shared:x'] })
      await service.set('k6', 6)

      t.equal(await service.invalidateTags('t1'), 2, 'one tag')
      t.equal(await service.exists('k1'), false)
      t.equal(await service.exists('k2'), false)
      t.equal(await service.exists('k3'), true, 'k3 carries only t2')
      t.equal(await service.invalidateTags('t1'), 0, 'nothing left under t1')

      t.equal(await service.invalidateTags(['t2', 't3']), 2, 'several tags')
      t.equal(await service.exists('k3'), false)
      t.equal(await service.exists('k4'), false)
      t.equal(await service.exists('k5'), true, 'other tags survive')
      t.equal(await service.exists('k6'), true, 'untagged entries survive')

      await service.set('m1', 1, { tags: ['a', 'b'] })
      await service.set('m2', 2, { tags: ['b'] })
      t.equal(await service.invalidateTags(['a', 'b']), 2, 'an entry under two of the tags counts once')
      t.equal(await service.invalidateTags('shared:x'), 1, 'a tag holding ":"')
      t.equal(await service.exists('k5'), false)
      t.equal(await service.invalidateTags(['never', 'used']), 0)
      t.equal(await service.exists('k6'), true)
    })

    t.test('an entry set again with other tags belongs to its new tags only', async (t) => {
      const { service } = await setup(t, kind)
      await service.set('k', 'old', { tags: ['old-tag'] })
      await service.set('k', 'new', { tags: ['new-tag'] })
      t.equal(await service.invalidateTags('old-tag'), 0, 'the old tag no longer names the entry')
      t.equal(await service.get('k'), 'new', 'the entry survives invalidation of a tag it no longer carries')
      t.equal(await service.invalidateTags('new-tag'), 1)
      t.equal(await service.exists('k'), false)

      await service.set('u', 'tagged', { tags: ['gone'] })
      await service.set('u', 'untagged')
      t.equal(await service.invalidateTags('gone'), 0)
      t.equal(await service.get('u'), 'untagged', 'an entry set again without tags carries none')
    })

    t.test('invalidatePattern deletes only matching entries; hostile parts stay apart', async (t) => {
      const { service } = await setup(t, kind)
      const mine: Array<readonly string[]> = [
        ['exec', 'dashboard', 'ws42', 'q1'],
        ['exec', 'dashboard', 'ws42', 'q2'],
        ['exec', 'dashboard', 'ws42', 'q3', 'deep']
      ]
      const others: Array<readonly string[]> = [
        ['exec', 'dashboard', 'ws43', 'q1'],
        ['exec', 'dashboard', 'ws420', 'q1'],
        ['exec', 'dashboard', 'ws4', 'q1'],
        ['exec', 'dashboard', '*', 'q1'],
        ['exec', 'dashboard', 'ws4*', 'q1'],
        ['exec', 'dashboard', 'ws4?', 'q1'],
        ['exec', 'dashboard', 'ws4[0-9]', 'q1'],
        ['exec', 'dashboard', 'ws42:x', 'q1'],
        ['exec', 'dashboard', 'ws42\\', 'q1'],
        ['exec', 'dashboard:ws42', 'q1'],
        ['exec', 'other', 'ws42', 'q1'],
        ['exec', 'dashboard', 'ws42']
      ]
      for (const [i, key] of [...mine, ...others].entries()) await service.set(key, i)

      t.equal(await service.invalidatePattern('exec:dashboard:ws42:*'), 3, 'the count of deleted entries')
      for (const key of mine) t.equal(await service.exists(key), false, `deleted ${JSON.stringify(key)}`)
      for (const key of others) t.equal(await service.exists(key), true, `kept ${JSON.stringify(key)}`)

      // A pattern may not use glob syntax beyond * and ?, nor escape its way to a literal hostile part.
      t.equal(await service.invalidatePattern('exec:dashboard:ws4[0-9]:*'), 1, '[...] is literal, not a class')
      t.equal(await service.exists(['exec', 'dashboard', 'ws43', 'q1']), true, 'ws43 is not matched by a class')
      t.equal(await service.exists(['exec', 'dashboard', 'ws420', 'q1']), true)
      t.equal(await service.exists(['exec', 'dashboard', 'ws4[0-9]', 'q1']), false, 'the literal part it names')
      t.equal(await service.invalidatePattern('exec:dashboard:ws4\\*:*'), 0, 'a backslash is literal too')
      t.equal(await service.invalidatePattern('exec:dashboard:ws42%3Ax:*'), 0, 'an encoded form is not an escape')
      t.equal(await service.exists(['exec', 'dashboard', 'ws42:x', 'q1']), true)
      t.equal(await service.invalidatePattern('exec:dashboard:ws42?:*'), 1, '? matches one character: ws420 only')
      t.equal(await service.exists(['exec', 'dashboard', 'ws420', 'q1']), false)
      for (const key of [['exec', 'dashboard', 'ws4*', 'q1'], ['exec', 'dashboard', 'ws4?', 'q1'], ['exec', 'dashboard', '*', 'q1']]) {
        t.equal(await service.exists(key), true, `hostile ${JSON.stringify(key)} is not matched by ?`)
      }
      t.equal(await service.invalidatePattern('nothing:*'), 0)
    })

    t.test('invalidatePattern stays inside the prefix', async (t) => {
      const a = await setup(t, kind)
      const nested = kind === 'redis' ? await setup(t, kind, { prefix: `${a.prefix}:prod` }) : undefined
      await a.service.set('x:1', 1)
      await a.service.set('y:1', 1)
      if (nested !== undefined) await nested.service.set('x:1', 2)
      t.equal(await a.service.invalidatePattern('*'), 2)
      if (nested !== undefined) {
        t.equal(await nested.service.get('x:1'), 2, "another prefix's entries are untouched")
        t.equal(await nested.service.invalidatePattern('x:*'), 1)
      }
    })

    t.test('getOrCompute computes once, then returns the cached value', async (t) => {
      const { service } = await setup(t, kind)
      let calls = 0
      const compute = async (): Promise<{ n: number, at: Date }> => ({ n: ++calls, at: new Date(0) })
      const first = await service.getOrCompute('goc', compute, { ttl: 30 })
      t.equal(first.n, 1)
      t.equal(calls, 1)
      const second = await service.getOrCompute('goc', compute, { ttl: 30 })
      t.equal(second.n, 1, 'the cached value')
      t.ok(second.at instanceof Date, 'structured values come back from the cache faithfully')
      t.equal(calls, 1, 'compute did not run again')
      t.strictSame(await service.get('goc'), first, 'the value is in the store')
      const left = await service.ttl('goc')
      t.ok(left >= 29 && left <= 30, `stored with its ttl, got ${left}`)
      const stats = await service.stats()
      t.equal(stats.misses, 1, 'one miss')
      t.equal(stats.hits, 1, 'one hit')
    })

    t.test('50 concurrent getOrCompute calls on a cold key compute once', async (t) => {
      const { service } = await setup(t, kind)
      let calls = 0
      const compute = async (): Promise<string> => {
        calls++
        await sleep(50)
        return 'value'
      }
      const results = await Promise.all(Array.from({ length: 50 }, () => service.getOrCompute(['cold', 'key'], compute)))
      t.equal(calls, 1, 'compute ran exactly once')
      t.ok(results.every((result) => result === 'value'), 'every caller got the value')
      t.equal(await service.get('cold:key'), 'value')
    })

    t.test('a compute that throws rejects, caches nothing, and the next call computes again', async (t) => {
      const { service } = await setup(t, kind)
      let calls = 0
      await t.rejects(service.getOrCompute('boom', () => { calls++; throw new Error('sync boom') }), { message: 'sync boom' })
      t.equal(await service.exists('boom'), false, 'nothing cached')
      await t.rejects(service.getOrCompute('boom', async () => { calls++; throw new Error('async boom') }), { message: 'async boom' })
      t.equal(await service.exists('boom'), false, 'nothing cached')
      t.equal(await service.getOrCompute('boom', () => { calls++; return 'fine' }), 'fine')
      t.equal(calls, 3, 'each call after a failure computed again')
      t.equal(await service.get('boom'), 'fine')

      let concurrentCalls = 0
      const failing = async (): Promise<never> => {
        concurrentCalls++
        await sleep(20)
        throw new Error('shared failure')
      }
      const settled = await Promise.allSettled(Array.from({ length: 5 }, () => service.getOrCompute('shared', failing)))
      t.equal(concurrentCalls, 1, 'concurrent callers share the failing call')
      t.ok(settled.every((result) => result.status === 'rejected'), 'and all of them reject')
      t.equal(await service.exists('shared'), false)
    })

    t.test('stats() counts and store figures', async (t) => {
      const { service } = await setup(t, kind)
      await service.getOrCompute('s', () => 1)
      await service.getOrCompute('s', () => 1)
      await service.getOrCompute('s', () => 1)
      const stats = await service.stats()
      t.equal(stats.misses, 1)
      t.equal(stats.hits, 2)
      t.equal(stats.errors, 0)
      t.equal(typeof stats.hitRate, 'number')
      t.equal(stats.store.kind, kind)
      if (kind === 'redis') {
        t.equal(typeof stats.store['used_memory_human'], 'string', 'used_memory_human')
        t.match(stats.store['used_memory_human'], /^\d+(\.\d+)?[BKMGT]?$/)
        for (const name of ['connected_clients', 'total_commands_processed', 'keyspace_hits', 'keyspace_misses', 'evicted_keys', 'expired_keys']) {
          t.equal(typeof stats.store[name], 'number', `${name} is a number`)
        }
        t.ok(Number(stats.store['connected_clients']) >= 1)
        t.ok(Number(stats.store['total_commands_processed']) > 0)
      } else {
        t.equal(stats.store['entries'], 1)
        t.equal(typeof stats.store['bytes'], 'number')
        t.equal(typeof stats.store['evicted_keys'], 'number')
        t.equal(typeof stats.store['expired_keys'], 'number')
      }
    })

    t.test('an invalid ttl rejects with FST_CACHE_INVALID_OPTION', async (t) => {
      const { service } = await setup(t, kind)
      for (const ttl of [0, -1, 1.5, NaN, Infinity]) {
        await t.rejects(service.set('bad', 1, { ttl }), { code: 'FST_CACHE_INVALID_OPTION' }, `set ttl ${ttl}`)
        t.equal(await service.exists('bad'), false, `nothing stored with ttl ${ttl}`)
      }
      await service.set('good', 1)
      for (const seconds of [0, -1, 1.5]) {
        await t.rejects(service.expire('good', seconds), { code: 'FST_CACHE_INVALID_OPTION' }, `expire ${seconds}`)
      }
      t.equal(await service.exists('good'), true, 'a rejected expire changed nothing')
    })

    t.test('getOrCompute with an invalid ttl rejects with FST_CACHE_INVALID_OPTION', async (t) => {
      const { service } = await setup(t, kind)
      for (const ttl of [0, -1, 1.5]) {
        await t.rejects(service.getOrCompute(['bad', String(ttl)], () => 'v', { ttl }), { code: 'FST_CACHE_INVALID_OPTION' },
          `ttl ${ttl} is a programming error, not a store failure to swallow`)
        t.equal(await service.exists(['bad', String(ttl)]), false)
      }
    })

    t.test('an unserializable value rejects with a coded error', async (t) => {
      const { service } = await setup(t, kind)
      const values: Array<[string, unknown]> = [
        ['a function', () => 1],
        ['a function inside an object', { a: 1, f () { return 1 } }],
        ['a symbol', Symbol('s')],
        ['a class instance', new (class Thing { x = 1 })()]
      ]
      for (const [name, value] of values) {
        await t.rejects(service.set('bad', value), { code: 'FST_CACHE_UNSERIALIZABLE' }, name)
        t.equal(await service.exists('bad'), false, `nothing stored for ${name}`)
      }
      const cyclic: Record<string, unknown> = {}
      cyclic['self'] = cyclic
      await t.rejects(service.set('bad', cyclic), { code: 'FST_CACHE_UNSERIALIZABLE' }, 'a cycle')
      await t.rejects(service.getOrCompute('bad-goc', () => () => 1), { code: 'FST_CACHE_UNSERIALIZABLE' }, 'getOrCompute too')
    })

    t.test('bad keys, tags and patterns reject with FST_CACHE_INVALID_KEY', async (t) => {
      const { service } = await setup(t, kind)
      await t.rejects(service.get(''), { code: 'FST_CACHE_INVALID_KEY' })
      await t.rejects(service.set([], 1), { code: 'FST_CACHE_INVALID_KEY' })
      await t.rejects(service.set(['a', {} as unknown as string], 1), { code: 'FST_CACHE_INVALID_KEY' })
      await t.rejects(service.set('a', 1, { tags: [''] }), { code: 'FST_CACHE_INVALID_KEY' })
      await t.rejects(service.invalidatePattern(''), { code: 'FST_CACHE_INVALID_KEY' })
    })

    t.test('long keys are stored and found, and patterns on their leading parts match them', async (t) => {
      const { service } = await setup(t, kind)
      const long = ['exec', 'dashboard', 'ws42', 'x'.repeat(500)]
      const other = ['exec', 'dashboard', 'ws42', 'x'.repeat(499) + 'y']
      await service.set(long, 'long')
      await service.set(other, 'other')
      t.equal(await service.get(long), 'long')
      t.equal(await service.get(other), 'other', 'two long keys with the same head stay apart')
      t.equal(await service.invalidatePattern('exec:dashboard:ws42:*'), 2)
    })
  })
}

t.test('redis entries live under <prefix>:e:{<id>} and tag sets under <prefix>:t:{<tag>}', async (t) => {
  const { service, prefix, raw } = await setup(t, 'redis')
  if (raw === undefined) throw new Error('no raw client')
  await service.set(['a', 'b'], 1, { tags: ['tag1'] })
  t.equal(await raw.exists(`${prefix}:e:{a:b}`), 1)
  t.equal(await raw.exists(`${prefix}:t:{tag1}`), 1)
  t.strictSame(await raw.smembers(`${prefix}:t:{tag1}`), [`${prefix}:e:{a:b}`], 'the tag set names the entry')
  const [, keys] = await raw.scan('0', 'MATCH', `${prefix}:e:*`, 'COUNT', 1000)
  t.strictSame(keys, [`${prefix}:e:{a:b}`], 'one entry key')
})

t.test('a Redis that is down: reads fail open, writes reject with a coded error', async (t) => {
  const redis = await RedisProcess.start()
  t.teardown(() => redis.stop())
  const app = Fastify()
  await app.register(cache, { redis: redis.url, prefix: uniquePrefix('service-down'), storeTimeoutMs: 200 })
  t.teardown(() => app.close())
  await app.ready()
  const service = app.cacheService

  await service.set('k', 'before', { tags: ['tag'] })
  t.equal(await service.get('k'), 'before', 'works while Redis is up')
  const errorsBefore = (await service.stats()).errors

  await redis.stop()

  t.equal(await service.get('k'), undefined, 'get resolves undefined')
  t.equal(await service.exists('k'), false, 'exists resolves false')
  t.equal(await service.ttl('k'), -2, 'ttl resolves -2')

  const writes: Array<[string, () => Promise<unknown>]> = [
    ['set', () => service.set('k', 'after')],
    ['delete', () => service.delete('k')],
    ['invalidate', () => service.invalidate(['k', 'j'])],
    ['invalidateTags', () => service.invalidateTags('tag')],
    ['invalidatePattern', () => service.invalidatePattern('k*')],
    ['expire', () => service.expire('k', 10)]
  ]
  for (const [name, write] of writes) {
    const { ms, error } = await timed(write())
    t.ok(error instanceof Error, `${name} rejects`)
    t.match(codeOf(error), STORE_FAILURE, `${name} rejects with a store error code, got ${String(codeOf(error))}`)
    t.ok(ms < 2000, `${name} settles promptly (${ms} ms)`)
  }

  let computed = 0
  t.equal(await service.getOrCompute('k', () => ++computed), 1, 'getOrCompute returns the computed value')
  t.equal(await service.getOrCompute('k', () => ++computed), 2, 'and computes again, as nothing could be cached')

  const stats = await service.stats()
  t.ok(stats.errors > errorsBefore, `stats().errors grows (${errorsBefore} -> ${stats.errors})`)
  t.ok(stats.errors >= errorsBefore + 9, 'each failed call is counted')
  t.equal(stats.store.kind, 'redis')
})

t.test('a frozen Redis: a get times out to a miss, a set rejects with FST_CACHE_STORE_TIMEOUT', async (t) => {
  const redis = await RedisProcess.start()
  t.teardown(() => redis.stop())
  const app = Fastify()
  await app.register(cache, { redis: redis.url, prefix: uniquePrefix('service-frozen'), storeTimeoutMs: 200 })
  t.teardown(() => app.close())
  await app.ready()
  const service = app.cacheService
  await service.set('k', 'v')
  t.equal(await service.get('k'), 'v')

  redis.freeze()
  t.teardown(() => { if (redis.running) redis.unfreeze() })

  const get = await timed(service.get('k'))
  t.equal(get.error, undefined, 'get does not reject')
  t.equal(get.value, undefined, 'get resolves undefined')
  t.ok(get.ms < 2000, `get settles in under 2 s (${get.ms} ms)`)

  const exists = await timed(service.exists('k'))
  t.equal(exists.value, false, 'exists resolves false')
  t.ok(exists.ms < 2000, `exists settles in under 2 s (${exists.ms} ms)`)

  const set = await timed(service.set('k', 'new'))
  t.equal(codeOf(set.error), 'FST_CACHE_STORE_TIMEOUT', 'set rejects with FST_CACHE_STORE_TIMEOUT')
  t.ok(set.ms < 2000, `set settles in under 2 s (${set.ms} ms)`)

  const computed = await timed(service.getOrCompute('other', () => 'computed'))
  t.equal(computed.value, 'computed', 'getOrCompute still returns the computed value')
  t.ok(computed.ms < 2000, `getOrCompute settles in under 2 s (${computed.ms} ms)`)

  t.ok((await service.stats()).errors >= 4, 'the timeouts are counted as errors')
})
