import type { FastifyInstance } from 'fastify'
import t from 'tap'
import { type CachedFunction, type CachedServiceDeps, createCached, stableHash } from '../lib/cached'
import type { CacheKey } from '../lib/keys'
import type { SetOptions } from '../lib/service'
import { STORE_KINDS, type StoreKind, cachedApp, sleep } from './helpers/app'

// Every store test talks to a real Redis on the redis kind.
t.setTimeout(120_000)

type TestContext = Parameters<Parameters<typeof t.test>[0]>[0]

/** A promise with its resolve and reject, to hold a computation open while concurrent calls arrive. */
function deferred<T> (): { promise: Promise<T>, resolve: (value: T) => void, reject: (error: unknown) => void } {
  let resolve!: (value: T) => void
  let reject!: (error: unknown) => void
  const promise = new Promise<T>((_resolve, _reject) => { resolve = _resolve; reject = _reject })
  return { promise, resolve, reject }
}

/** Waits until `done()` holds (the store read before a compute is a network round trip on Redis), then a little more. */
async function until (done: () => boolean, timeoutMs = 3000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!done()) {
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms`)
    await sleep(2)
  }
  await sleep(20) // time for any extra, unwanted run to start
}

async function app (t: TestContext, kind: StoreKind): Promise<FastifyInstance> {
  const instance = await cachedApp(t, kind)
  await instance.ready()
  return instance
}

for (const kind of STORE_KINDS) {
  t.test(`createCached on the ${kind} store`, async (t) => {
    t.test('runs the function once per distinct arguments', async (t) => {
      const { cacheService } = await app(t, kind)
      const calls: number[][] = []
      const add = createCached(cacheService, async (a: number, b: number) => {
        calls.push([a, b])
        return a + b
      }, { name: 'add' })
      const typed: CachedFunction<[number, number], number> = add // R is the awaited result, not a Promise
      t.equal(await typed(1, 2), 3)
      t.equal(await add(1, 2), 3)
      t.equal(await add(2, 1), 3)
      t.equal(await add(2, 1), 3)
      t.equal(await add(1, 2), 3)
      t.strictSame(calls, [[1, 2], [2, 1]], 'one run for (1, 2), one for (2, 1)')
    })

    t.test('the default name is the function name and the default key hashes the arguments', async (t) => {
      const { cacheService } = await app(t, kind)
      let runs = 0
      async function loadUser (id: string): Promise<{ id: string }> {
        runs++
        return { id }
      }
      const cachedLoadUser = createCached(cacheService, loadUser)
      t.strictSame(cachedLoadUser.key('u1'), ['fn', 'loadUser', stableHash(['u1'])])
      t.strictSame(await cachedLoadUser('u1'), { id: 'u1' })
      t.equal(await cacheService.exists(['fn', 'loadUser', stableHash(['u1'])]), true, 'stored under the default key')
      t.strictSame(await cachedLoadUser('u1'), { id: 'u1' })
      t.equal(runs, 1)
    })

    t.test('concurrent calls with the same arguments share one run', async (t) => {
      const { cacheService } = await app(t, kind)
      const gate = deferred<void>()
      let runs = 0
      const slow = createCached(cacheService, async (id: number) => {
        runs++
        await gate.promise
        return { id, at: runs }
      }, { name: 'slow' })
      const pending = Array.from({ length: 10 }, () => slow(7))
      const other = slow(8)
      await until(() => runs >= 2)
      t.equal(runs, 2, 'one run for 7 and one for 8 while the first is still going')
      gate.resolve()
      const results = await Promise.all(pending)
      for (const result of results) t.strictSame(result, { id: 7, at: results[0].at })
      t.equal((await other).id, 8)
      t.strictSame(await slow(7), results[0], 'later calls read the stored result')
      t.equal(runs, 2)
    })

    t.test('results round-trip with their types (Date, Map, Set, BigInt, Buffer)', async (t) => {
      const { cacheService } = await app(t, kind)
      const make = (): unknown => ({
        when: new Date('2024-05-06T07:08:09.010Z'),
        counts: new Map<string, number>([['a', 1], ['b', 2]]),
        members: new Set(['x', 'y']),
        big: 12345678901234567890n,
        bytes: Buffer.from([0, 1, 255]),
        missing: undefined,
        nested: [{ deep: new Date(0) }]
      })
      let runs = 0
      const report = createCached(cacheService, async (day: Date) => {
        runs++
        t.type(day, Date, 'the function gets the caller\'s own arguments')
        return make()
      }, { name: 'report' })
      const day = new Date('2024-05-06T00:00:00.000Z')
      t.strictSame(await report(day), make(), 'the first call returns the computed value')
      const cached = await report(new Date(day.getTime())) as ReturnType<typeof make> & Record<string, unknown>
      t.equal(runs, 1, 'an equal Date argument hits the same entry')
      t.strictSame(cached, make(), 'the cached value equals the computed one')
      t.type(cached.when, Date)
      t.type(cached.counts, Map)
      t.type(cached.members, Set)
      t.equal(cached.big, 12345678901234567890n)
      t.ok(Buffer.isBuffer(cached.bytes))
      t.ok(Object.hasOwn(cached, 'missing'), 'an undefined property survives')
    })

    t.test('object arguments with keys in another order share one entry', async (t) => {
      const { cacheService } = await app(t, kind)
      let runs = 0
      const search = createCached(cacheService, async (filter: Record<string, unknown>, page: number) => {
        runs++
        return { filter, page }
      }, { name: 'search' })
      const first = await search({ status: 'open', owner: { id: 1, team: 'a' } }, 1)
      const second = await search({ owner: { team: 'a', id: 1 }, status: 'open' }, 1)
      t.equal(runs, 1)
      t.strictSame(second, first)
      t.strictSame(search.key({ a: 1, b: 2 }, 1), search.key({ b: 2, a: 1 }, 1))
      await search({ status: 'open', owner: { id: 1, team: 'a' } }, 2)
      await search({ status: 'closed', owner: { id: 1, team: 'a' } }, 1)
      t.equal(runs, 3, 'a different page or value is a different entry')
    })

    t.test('.invalidate(args) deletes that entry only, and the next call recomputes', async (t) => {
      const { cacheService } = await app(t, kind)
      const runs = new Map<string, number>()
      const load = createCached(cacheService, async (id: string, opts: { full: boolean }) => {
        const count = (runs.get(id) ?? 0) + 1
        runs.set(id, count)
        return `${id}#${count}${opts.full ? '+' : ''}`
      }, { name: 'load' })
      t.equal(await load('a', { full: true }), 'a#1+')
      t.equal(await load('b', { full: true }), 'b#1+')
      t.equal(await load.invalidate('a', { full: true }), 1, 'one entry deleted')
      t.equal(await cacheService.exists(load.key('a', { full: true })), false)
      t.equal(await load.invalidate('a', { full: true }), 0, 'nothing left to delete')
      t.equal(await load.invalidate('never', { full: false }), 0, 'never cached')
      t.equal(await load('a', { full: true }), 'a#2+', 'recomputed')
      t.equal(await load('b', { full: true }), 'b#1+', 'the other entry is untouched')
      t.equal(await load('a', { full: true }), 'a#2+', 'cached again')
    })

    t.test('tags: fixed and per-call tags work with cacheService.invalidateTags', async (t) => {
      const { cacheService } = await app(t, kind)
      let runs = 0
      const user = createCached(cacheService, async (id: number) => {
        runs++
        return { id, version: runs }
      }, { name: 'user', tags: (id) => ['users', `user:${id}`] })
      const settings = createCached(cacheService, async () => {
        runs++
        return { theme: 'dark', version: runs }
      }, { name: 'settings', tags: ['settings'] })

      await user(1)
      await user(2)
      await settings()
      t.equal(runs, 3)

      t.equal(await cacheService.invalidateTags('user:1'), 1)
      t.equal((await user(1)).version, 4, 'user 1 recomputed')
      t.equal((await user(2)).version, 2, 'user 2 still cached')
      t.equal((await settings()).version, 3, 'settings still cached')

      t.equal(await cacheService.invalidateTags(['users']), 2, 'both users carry the shared tag')
      t.equal((await user(2)).version, 5)
      t.equal(await cacheService.invalidateTags('settings'), 1)
      t.equal((await settings()).version, 6)
      t.equal(runs, 6)
    })

    t.test('ttl is passed to the store', async (t) => {
      const { cacheService } = await app(t, kind)
      const short = createCached(cacheService, async (x: number) => x * 2, { name: 'short', ttl: 5 })
      const plain = createCached(cacheService, async (x: number) => x * 3, { name: 'plain' })
      await short(1)
      await plain(1)
      const left = await cacheService.ttl(short.key(1))
      t.ok(left > 0 && left <= 5, `short-lived entry has ${left} s left`)
      const defaultLeft = await cacheService.ttl(plain.key(1))
      t.ok(defaultLeft > 5 && defaultLeft <= 60, `the plugin's default ttl applies: ${defaultLeft} s left`)
    })

    t.test('a throwing function is not cached: every concurrent caller rejects, the next call recomputes', async (t) => {
      const { cacheService } = await app(t, kind)
      const gate = deferred<void>()
      let runs = 0
      let fail = true
      const flaky = createCached(cacheService, async (id: number) => {
        runs++
        await gate.promise
        if (fail) throw new Error(`boom ${runs}`)
        return { id, runs }
      }, { name: 'flaky' })

      const pending = Array.from({ length: 5 }, () => flaky(1))
      await until(() => runs >= 1)
      t.equal(runs, 1, 'one run for all concurrent callers')
      gate.resolve()
      const outcomes = await Promise.allSettled(pending)
      for (const outcome of outcomes) {
        t.equal(outcome.status, 'rejected')
        if (outcome.status === 'rejected') t.match(outcome.reason, { message: 'boom 1' })
      }
      t.equal(await cacheService.exists(flaky.key(1)), false, 'nothing stored')

      await t.rejects(flaky(1), { message: 'boom 2' }, 'the next call runs again (and fails again)')
      fail = false
      t.strictSame(await flaky(1), { id: 1, runs: 3 }, 'recomputed once the function succeeds')
      t.strictSame(await flaky(1), { id: 1, runs: 3 }, 'and that result is cached')
      t.equal(runs, 3)
    })

    t.test('a synchronously throwing function rejects rather than throwing', async (t) => {
      const { cacheService } = await app(t, kind)
      let runs = 0
      const sync = createCached(cacheService, (x: number): number => {
        runs++
        if (runs === 1) throw new TypeError('sync boom')
        return x + 1
      }, { name: 'sync' })
      const call = sync(1)
      t.type(call, Promise)
      await t.rejects(call, { name: 'TypeError', message: 'sync boom' })
      t.equal(await sync(1), 2)
      t.equal(await sync(1), 2)
      t.equal(runs, 2)
    })

    t.test('an undefined result is returned but not cached', async (t) => {
      const { cacheService } = await app(t, kind)
      let runs = 0
      const nothing = createCached(cacheService, async (_id: number): Promise<undefined> => { runs++ }, { name: 'nothing' })
      t.equal(await nothing(1), undefined)
      t.equal(await nothing(1), undefined)
      t.equal(runs, 2)
      t.equal(await cacheService.exists(nothing.key(1)), false)
    })

    t.test('example: caching query results by SQL and parameters', async (t) => {
      const { cacheService } = await app(t, kind)
      const queries: Array<{ sql: string, params: unknown[] }> = []
      // A stand-in for a database driver: counts the queries it runs.
      async function runQuery (sql: string, params: unknown[]): Promise<Array<Record<string, unknown>>> {
        queries.push({ sql, params })
        return [{ id: params[0], name: `user ${String(params[0])}`, createdAt: new Date(Date.UTC(2024, 0, 1)) }]
      }
      const executeQueryCached = createCached(cacheService, async (sql: string, params: unknown[]) => runQuery(sql, params), {
        name: 'query',
        key: (sql, params) => ['query', stableHash({ sql, params })],
        ttl: 60
      })

      const sql = 'SELECT * FROM users WHERE id = $1'
      const first = await executeQueryCached(sql, [42])
      const second = await executeQueryCached(sql, [42])
      t.equal(queries.length, 1, 'the same query and parameters run once')
      t.strictSame(second, first)
      t.type(second[0].createdAt, Date)

      await executeQueryCached(sql, ['42'])
      await executeQueryCached(sql + ' LIMIT 1', [42])
      t.equal(queries.length, 3, 'a string parameter or other SQL is another entry')

      t.strictSame(executeQueryCached.key(sql, [42]), ['query', stableHash({ sql, params: [42] })])
      t.strictSame(executeQueryCached.key(sql, [42]), ['query', stableHash({ params: [42], sql })], 'key order does not matter')
      const left = await cacheService.ttl(executeQueryCached.key(sql, [42]))
      t.ok(left > 0 && left <= 60, `stored for at most 60 s (${left} s left)`)

      t.equal(await executeQueryCached.invalidate(sql, [42]), 1)
      await executeQueryCached(sql, [42])
      t.equal(queries.length, 4, 're-run after invalidation')
      t.equal(await cacheService.invalidatePattern('query:*'), 3, 'every cached query shares the "query" head')
    })
  })
}

/** A service double that records what createCached hands over and computes every time. */
function recordingService (): CachedServiceDeps & { computes: Array<{ key: CacheKey, options?: SetOptions }>, invalidated: unknown[] } {
  const computes: Array<{ key: CacheKey, options?: SetOptions }> = []
  const invalidated: unknown[] = []
  return {
    computes,
    invalidated,
    async getOrCompute<T> (key: CacheKey, compute: () => T | Promise<T>, options?: SetOptions): Promise<T> {
      computes.push({ key, options })
      return await compute()
    },
    async invalidate (keys: string | CacheKey[]): Promise<number> {
      invalidated.push(keys)
      return 0
    }
  }
}

t.test('createCached hands the key, ttl and tags to getOrCompute, and [key] to invalidate', async (t) => {
  const service = recordingService()
  const get = createCached(service, async (id: number, kind: string) => `${kind}:${id}`, {
    name: 'get',
    ttl: 30,
    tags: (id, kind) => [kind, `id:${id}`]
  })
  t.equal(await get(1, 'a'), 'a:1')
  t.strictSame(service.computes, [{ key: ['fn', 'get', stableHash([1, 'a'])], options: { ttl: 30, tags: ['a', 'id:1'] } }])
  t.equal(await get.invalidate(1, 'a'), 0)
  t.strictSame(service.invalidated, [[['fn', 'get', stableHash([1, 'a'])]]], 'a parts key is wrapped in an array')

  const custom = createCached(service, async (id: string) => id, { key: (id) => `item:${id}` })
  await custom.invalidate('x')
  t.strictSame(service.invalidated[1], ['item:x'], 'a string key is also passed as a one-key array')

  const fixed = ['t1']
  const tagged = createCached(service, async () => 1, { name: 'tagged', tags: fixed })
  fixed.push('t2')
  await tagged()
  t.strictSame(service.computes.at(-1)?.options, { ttl: undefined, tags: ['t1'] }, 'fixed tags are copied at creation')
})

t.test('createCached does not bind this: methods need a closure', async (t) => {
  const service = recordingService()
  let seen: unknown = 'not called'
  const holder = {
    value: 5,
    cached: createCached(service, function (this: unknown) {
      seen = this
      return 1
    }, { name: 'unbound' })
  }
  await holder.cached()
  t.equal(seen, undefined, 'the original function gets no this')

  const repo = { prefix: 'p', find (id: string): string { return `${this.prefix}:${id}` } }
  const find = createCached(service, (id: string) => repo.find(id), { name: 'repo.find' })
  t.equal(await find('1'), 'p:1', 'a closure keeps the method\'s receiver')
})

t.test('createCached validates its options at creation', async (t) => {
  const service = recordingService()
  const fn = async (x: number): Promise<number> => x
  const invalidOption = (pattern: RegExp): { code: string, message: RegExp } => ({ code: 'FST_CACHE_INVALID_OPTION', message: pattern })

  for (const ttl of [0, -1, 1.5, NaN, Infinity, '60' as unknown as number]) {
    t.throws(() => createCached(service, fn, { ttl }), invalidOption(/"ttl"/), `ttl ${String(ttl)}`)
  }
  t.doesNotThrow(() => createCached(service, fn, { ttl: 1 }))

  t.throws(() => createCached(service, async (x: number) => x, {}), invalidOption(/"name" or "key"/), 'an inline arrow has no name')
  t.throws(() => createCached(service, (() => async () => 1)()), invalidOption(/"name" or "key"/))
  t.doesNotThrow(() => createCached(service, (() => async () => 1)(), { name: 'one' }), 'a name is enough')
  t.doesNotThrow(() => createCached(service, (() => async () => 1)(), { key: () => ['one'] }), 'a key is enough')
  t.throws(() => createCached(service, fn, { name: '' }), invalidOption(/"name"/))
  t.throws(() => createCached(service, fn, { name: 42 as unknown as string }), invalidOption(/"name"/))
  t.throws(() => createCached(service, fn, { key: 'k' as unknown as () => CacheKey }), invalidOption(/"key"/))
  t.throws(() => createCached(service, fn, { tags: 'users' as unknown as string[] }), invalidOption(/"tags"/))
  t.throws(() => createCached(service, fn, { tags: [''] }), invalidOption(/"tags"/))
  t.throws(() => createCached(service, fn, { tags: [1 as unknown as string] }), invalidOption(/"tags"/))
  t.throws(() => createCached(service, fn, { tags: ['\uD800'] }), invalidOption(/"tags"/), 'a lone surrogate')
  t.throws(() => createCached(service, fn, null as unknown as object), invalidOption(/options/))
  t.throws(() => createCached(service, 'fn' as unknown as () => number), invalidOption(/function/))
  t.throws(() => createCached({} as CachedServiceDeps, fn), invalidOption(/getOrCompute/))
})

t.test('createCached rejects a call whose computed tags or key are unusable, without running the function', async (t) => {
  const service = recordingService()
  let runs = 0
  const notArray = createCached(service, async (x: number) => { runs++; return x }, {
    name: 'notArray', tags: () => 'users' as unknown as string[]
  })
  await t.rejects(notArray(1), { code: 'FST_CACHE_INVALID_KEY' })
  const emptyTag = createCached(service, async (x: number) => { runs++; return x }, { name: 'emptyTag', tags: () => [''] })
  await t.rejects(emptyTag(1), { code: 'FST_CACHE_INVALID_KEY' })
  const unhashable = createCached(service, async (_cb: () => void) => { runs++; return 1 }, { name: 'unhashable' })
  await t.rejects(unhashable(() => {}), { code: 'FST_CACHE_UNSERIALIZABLE' })
  t.throws(() => unhashable.key(() => {}), { code: 'FST_CACHE_UNSERIALIZABLE' }, '.key throws synchronously')
  await t.rejects(unhashable.invalidate(() => {}), { code: 'FST_CACHE_UNSERIALIZABLE' })
  t.equal(runs, 0)
  t.equal(service.computes.length, 0)
})

t.test('createCached on a real service: a bad computed key rejects with FST_CACHE_INVALID_KEY', async (t) => {
  const { cacheService } = await app(t, 'memory')
  const bad = createCached(cacheService, async (x: number) => x, { key: () => [] })
  await t.rejects(bad(1), { code: 'FST_CACHE_INVALID_KEY' })
  await t.rejects(bad.invalidate(1), { code: 'FST_CACHE_INVALID_KEY' })
})

t.test('stableHash', async (t) => {
  t.test('is a 43-character base64url SHA-256, deterministic', async (t) => {
    for (const value of [undefined, null, 0, '', {}, [], { a: [1, { b: new Date(0) }] }]) {
      const hash = stableHash(value)
      t.match(hash, /^[A-Za-z0-9_-]{43}$/)
      t.equal(stableHash(value), hash)
    }
    t.equal(stableHash({ sql: 'SELECT 1', params: [] }), stableHash({ sql: 'SELECT 1', params: [] }), 'equal values, equal hashes')
  })

  t.test('does not depend on object key order, at any depth', async (t) => {
    t.equal(stableHash({ a: 1, b: 2 }), stableHash({ b: 2, a: 1 }))
    t.equal(stableHash({ x: { c: 3, d: [{ e: 1, f: 2 }] }, y: 0 }), stableHash({ y: 0, x: { d: [{ f: 2, e: 1 }], c: 3 } }))
    t.equal(stableHash({ 2: 'a', 10: 'b', z: 1 }), stableHash({ z: 1, 10: 'b', 2: 'a' }))
    const bare = Object.assign(Object.create(null) as Record<string, unknown>, { b: 2, a: 1 })
    t.equal(stableHash(bare), stableHash({ a: 1, b: 2 }), 'a null-prototype object hashes as a plain one')
  })

  t.test('arrays keep their order; sets and maps do not depend on insertion order', async (t) => {
    t.not(stableHash([1, 2]), stableHash([2, 1]))
    t.equal(stableHash(new Set([1, 'a', { k: 1 }])), stableHash(new Set([{ k: 1 }, 'a', 1])))
    t.not(stableHash(new Set([1, 2])), stableHash(new Set([1, 2, 3])))
    t.equal(stableHash(new Map<unknown, unknown>([['a', 1], [2, 'b']])), stableHash(new Map<unknown, unknown>([[2, 'b'], ['a', 1]])))
    t.not(stableHash(new Map([['a', 1]])), stableHash(new Map([['a', 2]])))
    t.equal(stableHash(new Date(5)), stableHash(new Date(5)))
    t.not(stableHash(new Date(5)), stableHash(new Date(6)))
  })

  t.test('distinguishes values that JSON conflates', async (t) => {
    const date = new Date('2024-01-02T03:04:05.678Z')
    const pairs: Array<[string, unknown, unknown]> = [
      ['1 vs "1"', 1, '1'],
      ['null vs undefined', null, undefined],
      ['Date vs its ISO string', date, date.toISOString()],
      ['Date vs its time', date, date.getTime()],
      ['[1] vs "1"', [1], '1'],
      ['[1, 2] vs "1,2"', [1, 2], '1,2'],
      ['Map vs object', new Map([['a', 1]]), { a: 1 }],
      ['empty Map vs empty object', new Map(), {}],
      ['Set vs array', new Set([1]), [1]],
      ['1n vs 1', 1n, 1],
      ['1n vs "1"', 1n, '1'],
      ['Buffer vs string', Buffer.from('abc'), 'abc'],
      ['Buffer vs Uint8Array', Buffer.from([1, 2]), new Uint8Array([1, 2])],
      ['Uint8Array vs array', new Uint8Array([1, 2]), [1, 2]],
      ['NaN vs null', NaN, null],
      ['NaN vs "NaN"', NaN, 'NaN'],
      ['-0 vs 0', -0, 0],
      ['Infinity vs null', Infinity, null],
      ['Float64Array -0 vs 0', new Float64Array([-0]), new Float64Array([0])],
      ['invalid Date vs null', new Date(NaN), null],
      ['{ a: undefined } vs {}', { a: undefined }, {}],
      ['[undefined] vs [null]', [undefined], [null]],
      ['[] vs {}', [], {}],
      ['true vs "true"', true, 'true'],
      ['"" vs undefined', '', undefined],
      ['RegExp vs string', /a/g, '/a/g'],
      ['RegExp vs {}', /a/, {}],
      ['nested arrays', [['a'], 'b'], [['a', 'b']]],
      ['string with separators', ['a', 'b'], ['a,b']],
      ['key injection', { a: '1","b":"2' }, { a: '1', b: '2' }],
      ['Set of string vs Set of number', new Set(['1']), new Set([1])],
      ['lone surrogates', '\uD800', '\uDC00']
    ]
    for (const [label, a, b] of pairs) t.not(stableHash(a), stableHash(b), label)

    // And every one of these differs from every other one.
    const values: unknown[] = [
      undefined, null, true, false, 0, -0, 1, -1, 1.5, NaN, Infinity, -Infinity, 1n, 0n, -1n,
      '', '0', '1', 'null', 'undefined', 'true', 'NaN', '[]', '{}', date.toISOString(), date.getTime(),
      [], [undefined], [null], [1], ['1'], [1, 2], [2, 1], [[1], 2], [[1, 2]], {}, { a: undefined }, { a: null },
      { a: 1 }, { a: '1' }, { b: 1 }, { a: { a: 1 } }, date, new Date(0), new Date(NaN), /a/, /a/g, /b/,
      new Map(), new Map([['a', 1]]), new Map([[1, 'a']]), new Set(), new Set([1]), new Set(['1']), new Set([[1]]),
      Buffer.alloc(0), Buffer.from('a'), new Uint8Array(0), new Uint8Array([97]), new Int8Array([97]),
      new Float32Array([1]), new Float64Array([1]), new BigInt64Array([1n]), new ArrayBuffer(1), new DataView(new ArrayBuffer(1))
    ]
    t.equal(new Set(values.map(stableHash)).size, values.length, `${values.length} distinct values, as many hashes`)
  })

  t.test('throws FST_CACHE_UNSERIALIZABLE for functions, symbols, cycles and class instances', async (t) => {
    const unserializable = { code: 'FST_CACHE_UNSERIALIZABLE' }
    t.throws(() => stableHash(() => 1), unserializable, 'function')
    t.throws(() => stableHash({ a: { b: [1, () => 1] } }), { ...unserializable, message: /value\.a\.b\[1\]/ }, 'nested function, with its path')
    t.throws(() => stableHash(Symbol('s')), unserializable, 'symbol')
    t.throws(() => stableHash({ [Symbol('s')]: 1 }), unserializable, 'symbol key')
    const cyclic: Record<string, unknown> = { a: 1 }
    cyclic.self = cyclic
    t.throws(() => stableHash(cyclic), { ...unserializable, message: /circular reference at value\.self/ }, 'cycle')
    const list: unknown[] = []
    list.push([list])
    t.throws(() => stableHash(list), unserializable, 'array cycle')
    const map = new Map<string, unknown>()
    map.set('m', map)
    t.throws(() => stableHash(map), unserializable, 'map cycle')
    class Point { constructor (readonly x: number) {} }
    t.throws(() => stableHash(new Point(1)), { ...unserializable, message: /class Point/ }, 'class instance')
    t.throws(() => stableHash(Object(1)), unserializable, 'boxed number')
    t.throws(() => stableHash(new Error('e')), unserializable, 'error')
    t.throws(() => stableHash(Promise.resolve(1)), unserializable, 'promise')

    const shared = { s: 1 }
    t.doesNotThrow(() => stableHash({ a: shared, b: [shared, shared] }), 'a shared, acyclic reference is fine')
    t.equal(stableHash({ a: shared, b: shared }), stableHash({ a: { s: 1 }, b: { s: 1 } }))
  })
})
