/**
 * The CacheStore contract (lib/stores/store.ts): one suite that every store must pass. A store is handed in by a
 * factory, fresh for each test, with the cleanup that removes whatever the test left in it.
 */
import type {} from 'tap'
import { randomBytes } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import { PEEK_REMOTELY, type CacheStore } from '../lib/stores/store'
import { globToRegExp } from './helpers/glob'
import { idPattern, keyId, tagId } from '../lib/keys'

export interface StoreFixture {
  store: CacheStore
  /** Removes everything the store holds for this test, and releases what the factory opened. */
  cleanup: () => Promise<void>
}

export type StoreFactory = () => Promise<StoreFixture>

/** Long enough that nothing expires while a test runs. */
const LONG_MS = 60_000
/** Short enough to wait out: an entry set with it is gone after EXPIRED_AFTER_MS. */
const SHORT_MS = 150
const EXPIRED_AFTER_MS = 400

const id = (...parts: string[]): string => keyId(parts)
const bytes = (text: string): Buffer => Buffer.from(text)

/** Every byte value, and sequences that are not valid UTF-8 (a lone continuation byte, a truncated sequence...). */
const BINARY = Buffer.concat([
  Buffer.from(Array.from({ length: 256 }, (_, i) => i)),
  Buffer.from([0xff, 0xfe, 0xc3, 0x28, 0x80, 0xe2, 0x82, 0xed, 0xa0, 0x80, 0xf8, 0x88, 0x80, 0x80, 0x80, 0x00])
])

export async function storeContract (t: tap.Test, name: string, makeStore: StoreFactory): Promise<void> {
  async function open (t: tap.Test): Promise<CacheStore> {
    const { store, cleanup } = await makeStore()
    t.teardown(cleanup)
    return store
  }

  await t.test(`${name}: CacheStore contract`, async (t) => {
    t.test('describes itself', async (t) => {
      const store = await open(t)
      t.type(store.kind, 'string')
      t.ok(store.kind.length > 0)
      t.type(store.local, 'boolean')
    })

    t.test('get returns exactly the bytes that were set', async (t) => {
      const store = await open(t)
      const values: Array<[string, Buffer]> = [
        ['every byte and invalid UTF-8', BINARY],
        ['empty buffer', Buffer.alloc(0)],
        ['text', bytes('héllo ☃ 𝄞')],
        ['256 KiB of random bytes', randomBytes(256 * 1024)],
        ['a slice of a larger buffer', Buffer.concat([bytes('xxxx'), BINARY, bytes('yyyy')]).subarray(4, 4 + BINARY.length)]
      ]
      for (const [label, value] of values) {
        const key = id('roundtrip', label)
        await store.set(key, value, { ttlMs: LONG_MS })
        const got = await store.get(key)
        t.ok(Buffer.isBuffer(got), `${label}: a Buffer comes back`)
        t.equal(got?.length, value.length, `${label}: same length`)
        t.ok(got !== null && got.equals(value), `${label}: same bytes`)
      }
      // An empty value is a value, not a miss.
      t.equal(await store.exists(id('roundtrip', 'empty buffer')), true)
    })

    t.test('a missing id reads as null / false / -2 / 0', async (t) => {
      const store = await open(t)
      const missing = id('never', 'set')
      t.equal(await store.get(missing), null)
      t.equal(await store.exists(missing), false)
      t.equal(await store.ttl(missing), -2)
      t.equal(await store.expire(missing, 60), false)
      t.equal(await store.delete([missing]), 0)
      t.equal(await store.exists(missing), false, 'expire() did not create it')
    })

    t.test('peek() answers the current value of an untagged entry, and never one that was invalidated or deleted', async (t) => {
      const store = await open(t)
      // peekSync, where a store has it, must agree with peek, or say that only peek can tell.
      const both = async (key: string): Promise<Buffer | undefined> => {
        const here = store.peekSync?.(key) ?? PEEK_REMOTELY
        const peeked = await store.peek(key)
        if (here !== PEEK_REMOTELY) t.same(here, peeked, `peekSync agrees with peek for ${key}`)
        return peeked
      }
      const plain = id('peek', 'plain')
      const tagged = id('peek', 'tagged')
      const tag = tagId('peek-tag')
      t.equal(await both(plain), undefined, 'nothing before a write')
      await store.set(plain, bytes('v1'), { ttlMs: LONG_MS })
      await store.set(tagged, bytes('t1'), { ttlMs: LONG_MS, tags: [tag] })
      // A store with an in-process copy fills it on the full read; the peek then answers from it.
      await store.read(plain, [])
      await store.read(tagged, [tag])
      t.same(await both(plain), bytes('v1'), 'an untagged entry is answered by the plain read')
      const taggedPeek = await both(tagged)
      t.ok(taggedPeek === undefined || taggedPeek.equals(bytes('t1')), 'a tagged entry: the full read must tell, or the current value')
      await store.set(plain, bytes('v2'), { ttlMs: LONG_MS })
      const rewritten = await both(plain)
      t.ok(rewritten === undefined || rewritten.equals(bytes('v2')), 'after a rewrite: never the old value')
      await store.invalidateTags([tag])
      t.equal(await both(tagged), undefined, 'never an entry whose tag was invalidated')
      await store.delete([plain])
      t.equal(await both(plain), undefined, 'never a deleted entry')
    })

    t.test('an entry expires after its TTL', async (t) => {
      const store = await open(t)
      const short = id('ttl', 'short')
      const long = id('ttl', 'long')
      await store.set(short, bytes('soon gone'), { ttlMs: SHORT_MS })
      await store.set(long, bytes('stays'), { ttlMs: LONG_MS })
      t.same(await store.get(short), bytes('soon gone'), 'present before the TTL')
      t.equal(await store.exists(short), true)
      await sleep(EXPIRED_AFTER_MS)
      t.equal(await store.get(short), null, 'gone after the TTL')
      t.equal(await store.exists(short), false)
      t.equal(await store.ttl(short), -2)
      t.equal(await store.expire(short, 60), false, 'an expired entry cannot be revived')
      t.equal(await store.delete([short]), 0, 'an expired entry is not counted as deleted')
      t.same(await store.get(long), bytes('stays'), 'a longer-lived entry is still there')
    })

    t.test('ttl() reports whole seconds left: -2 when missing, positive while present', async (t) => {
      const store = await open(t)
      const key = id('ttl', 'seconds')
      t.equal(await store.ttl(key), -2)
      await store.set(key, bytes('x'), { ttlMs: 10_000 })
      const seconds = await store.ttl(key)
      t.ok(Number.isInteger(seconds), `an integer (${seconds})`)
      t.ok(seconds >= 9 && seconds <= 10, `about 10 seconds (${seconds})`)
      await store.set(key, bytes('x'), { ttlMs: 120_000 })
      const later = await store.ttl(key)
      t.ok(later >= 119 && later <= 120, `an overwrite sets the new TTL (${later})`)
    })

    t.test('ttl() stays positive while the entry exists, even with under a second left', async (t) => {
      const store = await open(t)
      const key = id('ttl', 'subsecond')
      await store.set(key, bytes('x'), { ttlMs: 400 })
      const seconds = await store.ttl(key)
      t.equal(await store.exists(key), true, 'still present')
      t.ok(seconds > 0, `a present entry reports a positive ttl, got ${seconds}`)
    })

    t.test('expire() sets a new TTL on a present entry only', async (t) => {
      const store = await open(t)
      const key = id('expire', 'present')
      await store.set(key, bytes('x'), { ttlMs: SHORT_MS })
      t.equal(await store.expire(key, 100), true)
      const seconds = await store.ttl(key)
      t.ok(seconds >= 99 && seconds <= 100, `ttl follows expire() (${seconds})`)
      await sleep(EXPIRED_AFTER_MS)
      t.same(await store.get(key), bytes('x'), 'outlives its original TTL')

      const shortened = id('expire', 'shortened')
      await store.set(shortened, bytes('y'), { ttlMs: LONG_MS })
      t.equal(await store.expire(shortened, 1), true)
      const left = await store.ttl(shortened)
      t.ok(left >= 0 && left <= 1, `a TTL can be shortened (${left})`)

      t.equal(await store.expire(id('expire', 'missing'), 100), false)
      t.equal(await store.exists(id('expire', 'missing')), false)
    })

    t.test('exists()', async (t) => {
      const store = await open(t)
      const key = id('exists', 'a')
      t.equal(await store.exists(key), false)
      await store.set(key, bytes('a'), { ttlMs: LONG_MS })
      t.equal(await store.exists(key), true)
      t.equal(await store.exists(id('exists', 'b')), false, 'another id is not present')
      await store.delete([key])
      t.equal(await store.exists(key), false)
    })

    t.test('delete() removes the given ids and counts only those that existed', async (t) => {
      const store = await open(t)
      const [a, b, c, missing] = ['a', 'b', 'c', 'missing'].map((p) => id('delete', p))
      for (const key of [a, b, c]) await store.set(key, bytes(key), { ttlMs: LONG_MS })
      t.equal(await store.delete([]), 0, 'nothing to delete')
      t.equal(await store.delete([a, missing, b]), 2)
      t.equal(await store.get(a), null)
      t.equal(await store.get(b), null)
      t.same(await store.get(c), bytes(c), 'an id not named survives')
      t.equal(await store.delete([a, b]), 0, 'already deleted ids are not counted again')
      t.equal(await store.delete([c, c]), 1, 'an id named twice is counted once')
    })

    t.test('an overwrite replaces the value, the TTL and the tags', async (t) => {
      const store = await open(t)
      const [tagA, tagB] = ['tag-a', 'tag-b'].map(tagId)

      const retimed = id('overwrite', 'ttl')
      await store.set(retimed, bytes('first'), { ttlMs: SHORT_MS })
      await store.set(retimed, bytes('second, longer value'), { ttlMs: LONG_MS })
      t.same(await store.get(retimed), bytes('second, longer value'), 'the new value')
      await sleep(EXPIRED_AFTER_MS)
      t.same(await store.get(retimed), bytes('second, longer value'), 'the new TTL applies')

      const retagged = id('overwrite', 'tags')
      await store.set(retagged, bytes('first'), { ttlMs: LONG_MS, tags: [tagA] })
      await store.set(retagged, bytes('second'), { ttlMs: LONG_MS, tags: [tagB] })
      t.equal(await store.invalidateTags([tagA]), 0, 'the old tag no longer names the entry')
      t.same(await store.get(retagged), bytes('second'), 'the entry survives its old tag')
      t.equal(await store.invalidateTags([tagB]), 1, 'the new tag names it')
      t.equal(await store.get(retagged), null)

      const untagged = id('overwrite', 'untagged')
      await store.set(untagged, bytes('tagged'), { ttlMs: LONG_MS, tags: [tagA] })
      await store.set(untagged, bytes('untagged'), { ttlMs: LONG_MS })
      t.equal(await store.invalidateTags([tagA]), 0, 'an overwrite without tags drops the old ones')
      t.same(await store.get(untagged), bytes('untagged'), 'the untagged overwrite survives')
    })

    t.test('invalidateTags() removes exactly the entries that carry any of the tags', async (t) => {
      const store = await open(t)
      const [a, b, c, unused] = ['a', 'b', 'c', 'unused'].map((tag) => tagId(`tag:${tag}`))
      const entries: Array<[string, string[] | undefined]> = [
        [id('tags', 'only-a'), [a]],
        [id('tags', 'only-b'), [b]],
        [id('tags', 'a-and-b'), [a, b]],
        [id('tags', 'only-c'), [c]],
        [id('tags', 'a-and-c'), [c, a]],
        [id('tags', 'a-twice'), [a, a]],
        [id('tags', 'untagged'), undefined],
        [id('tags', 'empty-tags'), []]
      ]
      for (const [key, tags] of entries) await store.set(key, bytes(key), { ttlMs: LONG_MS, tags })

      t.equal(await store.invalidateTags([unused]), 0, 'a tag nobody carries removes nothing')
      t.equal(await store.invalidateTags([]), 0, 'no tags remove nothing')
      t.equal(await store.invalidateTags([a, b]), 5, 'each entry is counted once, however many of the tags it carries')
      for (const [key, tags] of entries) {
        const expected = tags !== undefined && (tags.includes(a) || tags.includes(b))
        t.equal(await store.exists(key), !expected, `${key} ${expected ? 'removed' : 'kept'}`)
      }
      t.equal(await store.invalidateTags([a]), 0, 'invalidating again removes nothing')
      t.equal(await store.invalidateTags([c]), 1, 'the other tag still names its remaining entry')
      t.equal(await store.exists(id('tags', 'only-c')), false)
      t.equal(await store.exists(id('tags', 'untagged')), true)
      t.equal(await store.exists(id('tags', 'empty-tags')), true)

      // A tag can be used again after it was invalidated.
      await store.set(id('tags', 'again'), bytes('again'), { ttlMs: LONG_MS, tags: [a] })
      t.equal(await store.invalidateTags([a]), 1)
      t.equal(await store.exists(id('tags', 'again')), false)
    })

    t.test('invalidateTags() does not count entries that expired or were deleted', async (t) => {
      const store = await open(t)
      const tag = tagId('gone')
      await store.set(id('gone', 'expired'), bytes('x'), { ttlMs: SHORT_MS, tags: [tag] })
      await store.set(id('gone', 'deleted'), bytes('x'), { ttlMs: LONG_MS, tags: [tag] })
      await store.set(id('gone', 'live'), bytes('x'), { ttlMs: LONG_MS, tags: [tag] })
      await store.delete([id('gone', 'deleted')])
      await sleep(EXPIRED_AFTER_MS)
      t.equal(await store.invalidateTags([tag]), 1)
      t.equal(await store.exists(id('gone', 'live')), false)
    })

    t.test('invalidateTags() reaches an entry whose TTL was extended by expire()', async (t) => {
      const store = await open(t)
      const tag = tagId('extended')
      const key = id('extended', '1')
      await store.set(key, bytes('x'), { ttlMs: SHORT_MS, tags: [tag] })
      t.equal(await store.expire(key, 60), true)
      await sleep(EXPIRED_AFTER_MS)
      t.equal(await store.exists(key), true, 'the entry outlived its first TTL')
      t.equal(await store.invalidateTags([tag]), 1, 'its tag still names it')
      t.equal(await store.exists(key), false, 'and invalidating the tag removes it')
    })

    t.test('deletePattern() with * and ? removes only the ids the glob matches, and counts them', async (t) => {
      const store = await open(t)
      const keys = [
        ['exec', 'a'], ['exec', 'b', 'c'], ['exec', ''], ['exec'], ['execx', 'a'], ['x', 'exec', 'a'], ['exec:a'],
        ['ab1'], ['ac1'], ['ab12'], ['a1'], ['xab1']
      ].map((parts) => keyId(parts))
      const live = new Set(keys)
      for (const key of keys) await store.set(key, bytes(key), { ttlMs: LONG_MS })

      async function check (glob: string, expected: string[]): Promise<void> {
        const regexp = globToRegExp(glob)
        t.same(keys.filter((key) => live.has(key) && regexp.test(key)).sort(), [...expected].sort(), `${glob}: the reference matcher agrees`)
        t.equal(await store.deletePattern(glob), expected.length, `${glob}: counts ${expected.length}`)
        for (const key of expected) live.delete(key)
        for (const key of keys) t.equal(await store.exists(key), live.has(key), `${glob}: ${key} ${live.has(key) ? 'kept' : 'removed'}`)
      }

      await check(idPattern('exec:*'), ['exec:a', 'exec:b:c', 'exec:'])
      await check(idPattern('exec:*'), [])
      await check('a?1', ['ab1', 'ac1'])
      await check('?1', ['a1'])
      await check('nothing*', [])
      await check('*', ['exec', 'execx:a', 'x:exec:a', keyId(['exec:a']), 'ab12', 'xab1'])
    })

    t.test('deletePattern() does not count entries that already expired', async (t) => {
      const store = await open(t)
      await store.set(id('pexp', '1'), bytes('x'), { ttlMs: SHORT_MS })
      await store.set(id('pexp', '2'), bytes('x'), { ttlMs: LONG_MS })
      await sleep(EXPIRED_AFTER_MS)
      t.equal(await store.deletePattern(idPattern('pexp:*')), 1)
      t.equal(await store.exists(id('pexp', '2')), false)
    })

    t.test('deletePattern() treats every character but * and ? literally', async (t) => {
      const store = await open(t)
      for (const key of ['ab1', 'ac1', 'a1']) await store.set(key, bytes(key), { ttlMs: LONG_MS })
      t.equal(await store.deletePattern('a[bc]1'), 0, '[bc] is not a character class')
      t.equal(await store.deletePattern('a[^x]1'), 0, '[^x] is not a negated class')
      t.equal(await store.deletePattern('a\\b1'), 0, '\\ is not an escape')
      for (const key of ['ab1', 'ac1', 'a1']) t.equal(await store.exists(key), true, `${key} kept`)
    })

    t.test("ids built from glob-looking input cannot be matched by another tenant's pattern", async (t) => {
      const store = await open(t)
      const tenants = ['ws*', '?x', '[a]', 'a:b', '\\', '%2A', '{t}']
      const keysOf = (tenant: string): string[] =>
        [[tenant, 'k1'], [tenant, 'k2', 'x'], [tenant, '*'], [tenant, '?'], [tenant, '[a]']].map((parts) => keyId(parts))
      const all = tenants.flatMap(keysOf)
      t.equal(new Set(all).size, all.length, 'every key has its own id')

      for (const tenant of tenants) {
        for (const key of all) await store.set(key, bytes(key), { ttlMs: LONG_MS })
        // The safe way to name one tenant: its encoded id, then a wildcard.
        const glob = keyId([tenant]) + ':*'
        t.equal(await store.deletePattern(glob), keysOf(tenant).length, `${glob} removes the tenant's own keys`)
        for (const other of tenants) {
          for (const key of keysOf(other)) {
            t.equal(await store.exists(key), other !== tenant, `${glob} ${other === tenant ? 'removed' : 'left'} ${key}`)
          }
        }
      }

      // A pattern written from the raw tenant name may miss the tenant's own keys (its * and ? are wildcards, its
      // ':' a separator), but it never reaches the keys of any other tenant here.
      for (const tenant of tenants) {
        for (const key of all) await store.set(key, bytes(key), { ttlMs: LONG_MS })
        const glob = idPattern(`${tenant}:*`)
        await store.deletePattern(glob)
        for (const other of tenants) {
          if (other === tenant) continue
          for (const key of keysOf(other)) t.equal(await store.exists(key), true, `${glob} left ${key}`)
        }
      }
    })

    t.test('a write with the stamp of its read succeeds when nothing was invalidated in between', async (t) => {
      const store = await open(t)
      const key = id('stamp', 'ok')
      const tags = [tagId('ws:1'), tagId('agent:2')]
      const { value, stamp } = await store.read(key, tags)
      t.equal(value, null)
      t.equal(await store.set(key, bytes('v1'), { ttlMs: LONG_MS, tags, stamp }), true)
      t.same(await store.get(key), bytes('v1'))
      const again = await store.read(key, tags)
      t.same(again.value, bytes('v1'))
      t.equal(again.stale, false)
      t.equal(await store.set(key, bytes('v2'), { ttlMs: LONG_MS, tags, stamp: again.stamp }), true, 'a later stamp works too')
    })

    t.test('a write is refused when its key or one of its tags was invalidated after its read', async (t) => {
      const store = await open(t)
      const tag = tagId('ws:race')
      const cases: Array<[string, (key: string) => Promise<unknown>]> = [
        ['delete of the key', (key) => store.delete([key])],
        ['delete of the key when it had no entry', async () => {}],
        ['hard invalidation of a tag', () => store.invalidateTags([tag])],
        ['soft invalidation of a tag', () => store.invalidateTags([tag], { soft: true })],
        ['a pattern invalidation', () => store.deletePattern(idPattern('elsewhere:*'))]
      ]
      for (const [label, invalidate] of cases) {
        const key = id('race', label)
        await store.set(key, bytes('old'), { ttlMs: LONG_MS, tags: [tag] })
        const { stamp } = await store.read(key, [tag])
        if (label === 'delete of the key when it had no entry') await store.delete([key])
        else await invalidate(key)
        t.equal(await store.set(key, bytes('computed before'), { ttlMs: LONG_MS, tags: [tag], stamp }), false, `${label}: refused`)
        const after = await store.read(key, [tag])
        t.not(String(after.value), 'computed before', `${label}: the old computation left nothing behind`)
        t.equal(await store.set(key, bytes('fresh'), { ttlMs: LONG_MS, tags: [tag], stamp: after.stamp }), true, `${label}: a read after it may write`)
      }
      t.equal(await store.set(id('race', 'forced'), bytes('x'), { ttlMs: LONG_MS, tags: [tag] }), true, 'a write without a stamp is not conditional')
    })

    t.test('an entry written with the stamp of its read is named by its tags', async (t) => {
      const store = await open(t)
      const [a, b] = [tagId('stamped:a'), tagId('stamped:b')]
      const key = id('stamped', 'tags')
      const { stamp } = await store.read(key, [a, b])
      t.equal(await store.set(key, bytes('v'), { ttlMs: LONG_MS, tags: [a, b], stamp }), true)
      t.same((await store.read(key, [a, b])).value, bytes('v'))
      t.equal(await store.invalidateTags([b]), 1, 'the tag counts it')
      t.equal((await store.read(key, [a, b])).value, null, 'and it is gone')
    })

    t.test('a write is refused when someone else wrote the entry after its read (a late lease holder)', async (t) => {
      const store = await open(t)
      const key = id('cas')
      const late = await store.read(key, [])
      const early = await store.read(key, [])
      t.equal(await store.set(key, bytes('newer'), { ttlMs: LONG_MS, stamp: early.stamp }), true)
      t.equal(await store.set(key, bytes('older'), { ttlMs: LONG_MS, stamp: late.stamp }), false, 'the late write is refused')
      t.same(await store.get(key), bytes('newer'))
      const again = await store.read(key, [])
      await store.set(key, bytes('forced'), { ttlMs: LONG_MS })
      t.equal(await store.set(key, bytes('stale read'), { ttlMs: LONG_MS, stamp: again.stamp }), false, 'also after an unconditional write')
      const current = await store.read(key, [])
      t.equal(await store.set(key, bytes('next'), { ttlMs: LONG_MS, stamp: current.stamp }), true)
    })

    t.test('leases: one holder at a time, released only by its holder, and never longer than their ttl', async (t) => {
      const store = await open(t)
      const key = id('lease')
      t.equal(await store.acquireLease(key, 'a', SHORT_MS), true)
      t.equal(await store.acquireLease(key, 'b', LONG_MS), false, 'held')
      await store.releaseLease(key, 'b')
      t.equal(await store.acquireLease(key, 'c', LONG_MS), false, 'another holder cannot release it')
      await sleep(EXPIRED_AFTER_MS)
      t.equal(await store.acquireLease(key, 'd', LONG_MS), true, 'a holder that never released it blocks no longer than its ttl')
      await store.releaseLease(key, 'd')
      t.equal(await store.acquireLease(key, 'e', LONG_MS), true, 'released by its holder')
    })

    t.test('a read asked to take the lease takes it only when it finds nothing and the lease is free', async (t) => {
      const store = await open(t)
      const key = id('read-lease')
      const first = await store.read(key, [], { token: 'a', ttlMs: LONG_MS })
      t.equal(first.value, null)
      t.equal(first.leaseTaken, true, 'nothing there: taken')
      t.equal(first.leased, true, 'and reported as held')
      t.equal(await store.acquireLease(key, 'x', LONG_MS), false, 'held by the read, for real')
      const second = await store.read(key, [], { token: 'b', ttlMs: LONG_MS })
      t.equal(second.leaseTaken, false, 'held by another: not taken')
      t.equal(second.leased, true)
      t.equal((await store.read(key, [])).leaseTaken ?? false, false, 'not taken when not asked')

      t.equal(await store.set(key, bytes('v'), { ttlMs: LONG_MS, stamp: first.stamp, lease: 'b' }), true)
      t.equal(await store.acquireLease(key, 'y', LONG_MS), false, 'a write gives back only its own lease')
      await store.releaseLease(key, 'y')
      const found = await store.read(key, [], { token: 'c', ttlMs: LONG_MS })
      t.same(found.value, bytes('v'))
      t.equal(found.leaseTaken ?? false, false, 'an entry is there: not taken')

      const other = id('read-lease', 'short')
      t.equal((await store.read(other, [], { token: 'd', ttlMs: SHORT_MS })).leaseTaken, true)
      await sleep(EXPIRED_AFTER_MS)
      t.equal((await store.read(other, [], { token: 'e', ttlMs: LONG_MS })).leaseTaken, true, 'a lease taken by a read lasts its ttl only')
    })

    t.test('a write gives back the lease it names, whether it is stored or refused', async (t) => {
      const store = await open(t)
      const key = id('write-lease')
      const read = await store.read(key, [], { token: 'a', ttlMs: LONG_MS })
      t.equal(read.leaseTaken, true)
      t.equal(await store.set(key, bytes('v'), { ttlMs: LONG_MS, stamp: read.stamp, lease: 'a' }), true)
      t.equal(await store.acquireLease(key, 'b', LONG_MS), true, 'given back with the write')
      await store.releaseLease(key, 'b')

      const refused = id('write-lease', 'refused')
      const stale = await store.read(refused, [], { token: 'c', ttlMs: LONG_MS })
      await store.delete([refused])
      t.equal(await store.set(refused, bytes('late'), { ttlMs: LONG_MS, stamp: stale.stamp, lease: 'c' }), false, 'refused: deleted since its read')
      t.equal(await store.acquireLease(refused, 'd', LONG_MS), true, 'given back all the same')
    })

    t.test('soft invalidation keeps entries, marked stale, until they are rewritten', async (t) => {
      const store = await open(t)
      const tag = tagId('ws:soft')
      await store.set(id('soft', 'a'), bytes('a'), { ttlMs: LONG_MS, tags: [tag] })
      await store.set(id('soft', 'b'), bytes('b'), { ttlMs: LONG_MS, tags: [tagId('other')] })
      t.equal(await store.invalidateTags([tag], { soft: true }), 1)
      const stale = await store.read(id('soft', 'a'), [tag])
      t.same(stale.value, bytes('a'), 'the value is still there')
      t.equal(stale.stale, true)
      t.equal((await store.read(id('soft', 'b'), [])).stale, false, 'entries of other tags are untouched')
      t.equal(await store.set(id('soft', 'a'), bytes('a2'), { ttlMs: LONG_MS, tags: [tag], stamp: stale.stamp }), true)
      const fresh = await store.read(id('soft', 'a'), [tag])
      t.same(fresh.value, bytes('a2'))
      t.equal(fresh.stale, false, 'a rewrite after the soft invalidation is fresh')
      t.equal(await store.invalidateTags([tag]), 1, 'a hard invalidation after a soft one removes it')
      t.equal(await store.get(id('soft', 'a')), null)
    })

    t.test('after a hard invalidation, new entries of the tag are valid again', async (t) => {
      const store = await open(t)
      const tag = tagId('ws:again')
      await store.set(id('again', 'old'), bytes('old'), { ttlMs: LONG_MS, tags: [tag] })
      await store.invalidateTags([tag])
      await store.set(id('again', 'new'), bytes('new'), { ttlMs: LONG_MS, tags: [tag] })
      t.same(await store.get(id('again', 'new')), bytes('new'))
      t.equal(await store.get(id('again', 'old')), null)
      t.equal(await store.invalidateTags([tag]), 1, 'only the live entry is counted')
    })

    t.test('an entry rewritten without a tag is neither counted nor removed by that tag', async (t) => {
      const store = await open(t)
      const old = tagId('old-tag')
      await store.set(id('retag'), bytes('v1'), { ttlMs: LONG_MS, tags: [old] })
      await store.set(id('retag'), bytes('v2'), { ttlMs: LONG_MS, tags: [tagId('new-tag')] })
      t.equal(await store.invalidateTags([old]), 0)
      t.same(await store.get(id('retag')), bytes('v2'))
    })

    t.test('info() returns an object of figures', async (t) => {
      const store = await open(t)
      await store.set(id('info', '1'), bytes('x'), { ttlMs: LONG_MS })
      const info = await store.info()
      t.type(info, 'object')
      t.not(info, null)
      t.notOk(Array.isArray(info))
      for (const [name, value] of Object.entries(info)) {
        t.ok(typeof value === 'string' || typeof value === 'number', `${name} is a string or a number`)
      }
    })
  })
}
