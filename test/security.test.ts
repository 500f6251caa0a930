// Security properties: keys that cannot be forged or confused, no cache-poisoned denial of service, no per-user
// leaks, and a Redis user with only the commands the plugin needs.
import t, { type Test } from 'tap'
import { request as httpRequest } from 'node:http'
import type { AddressInfo } from 'node:net'
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify'
import { Redis } from 'ioredis'
import cache from '../lib/index'
import { type KeyPart, encodePart, idPattern, keyId } from '../lib/keys'
import { globMatcher } from '../lib/stores/store'
import { STORE_KINDS, cachedApp, sleep, until } from './helpers/app'
import { RedisProcess, createClient, deleteByPrefix, uniquePrefix } from './helpers/redis'

// ---------------------------------------------------------------------------------------------------------------
// 1. Keys: a seeded property test
// ---------------------------------------------------------------------------------------------------------------

/** mulberry32: small, fast, and good enough to drive a property test reproducibly. */
function mulberry32 (seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6D2B79F5) >>> 0
    let x = a
    x = Math.imul(x ^ (x >>> 15), x | 1)
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61)
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296
  }
}

const SEED = process.env['KEY_PROPERTY_SEED'] !== undefined && process.env['KEY_PROPERTY_SEED'] !== ''
  ? Number(process.env['KEY_PROPERTY_SEED']) >>> 0
  : 0x5ECC0DE5
const LISTS = 20_000

/** Characters (astral ones are one entry, two UTF-16 units), including everything Redis or a glob treats specially. */
const NASTY = [
  '*', '?', '[', ']', '\\', ':', '{', '}', '%', '#', '~', '!', "'", '(', ')', '\0', '\r', '\n', ' ', '\t', '\x7f',
  '\x1b', '\u0085', '\u00a0', '\u2028', '\u2029', '\ufeff', '\u0301', 'é', 'ß', '日', 'Ω', '𝄞', '🙂', '\u{10FFFF}',
  '\u{1F600}', 'a', 'b', 'Z', 'u', 'A', '0', '2', '3', '9', '-', '_', '.', '/', '&', '=', '+', '"', '$', '@', '^', '|'
]
/** Pieces that look like encodings, markers or the string forms of other part types. */
const CHUNKS = [
  '%u', '%2A', '%3A', '%25', '%00', '%7B', 'null', 'undefined', 'true', 'false', '1', '-0', '0', 'NaN', 'Infinity',
  'e+21', '::', '#', '*:*', '\\*', '[a-z]', '{tag}', '\r\n'
]
const NUMBERS = [
  0, -0, 1, -1, 1.5, -2.25, 10, 100, 1e21, 1e-7, 123456789, Number.NaN, Number.POSITIVE_INFINITY,
  Number.NEGATIVE_INFINITY, Number.MAX_SAFE_INTEGER, 2 ** 53 + 2, 0.1 + 0.2
]

class KeyGenerator {
  private readonly pool: KeyPart[] = []
  readonly lists: KeyPart[][] = []
  constructor (private readonly random: () => number) {}

  private int (below: number): number {
    return Math.floor(this.random() * below)
  }

  private pick<T> (items: readonly T[]): T {
    return items[this.int(items.length)]
  }

  private number (): number {
    const r = this.random()
    if (r < 0.6) return this.pick(NUMBERS)
    if (r < 0.8) return this.int(100_000) - 50_000
    return (this.random() - 0.5) * 10 ** this.int(30)
  }

  string (): string {
    const r = this.random()
    if (r < 0.03) {
      // a long run, up to 10k characters: one character or one chunk repeated, sometimes with a tail
      const unit = this.random() < 0.5 ? this.pick(NASTY) : this.pick(CHUNKS)
      const count = 1 + this.int(Math.floor(10_000 / unit.length))
      return unit.repeat(count) + (this.random() < 0.3 ? this.pick(NASTY) : '')
    }
    const length = r < 0.15 ? this.int(201) : this.int(13)
    let text = ''
    for (let i = 0; i < length; i++) text += this.random() < 0.8 ? this.pick(NASTY) : this.pick(CHUNKS)
    return text
  }

  part (): KeyPart {
    const r = this.random()
    let part: KeyPart
    if (r < 0.06) part = null
    else if (r < 0.12) part = undefined
    else if (r < 0.22) part = this.number()
    else if (r < 0.27) part = this.random() < 0.5
    else if (r < 0.35) part = String(this.random() < 0.8 ? this.number() : this.random() < 0.5)
    else if (r < 0.55 && this.pool.length > 0) part = this.pick(this.pool)
    else part = this.string()
    if (this.pool.length < 3000) this.pool.push(part)
    else this.pool[this.int(this.pool.length)] = part
    return part
  }

  /** A fresh list, or (30%) a near miss of an earlier one: the collisions worth looking for are between neighbours. */
  list (): KeyPart[] {
    const list = this.lists.length > 0 && this.random() < 0.3 ? this.mutate(this.pick(this.lists)) : this.fresh()
    const clamped = list.length === 0 ? [this.part()] : list.slice(0, 5)
    this.lists.push(clamped)
    return clamped
  }

  private fresh (): KeyPart[] {
    const count = 1 + this.int(5)
    const list: KeyPart[] = []
    for (let i = 0; i < count; i++) list.push(this.part())
    return list
  }

  private mutate (original: readonly KeyPart[]): KeyPart[] {
    const list = [...original]
    const i = this.int(list.length)
    const part = list[i]
    const text = part === null || part === undefined ? '' : String(part)
    switch (this.int(9)) {
      case 0: // the string form of a number or boolean, or the number a numeric string spells
        if (typeof part === 'number' || typeof part === 'boolean') list[i] = String(part)
        else if (typeof part === 'string' && part !== '' && String(Number(part)) === part) list[i] = Number(part)
        else list[i] = this.random() < 0.5 ? 'true' : true
        break
      case 1: // split a part on ':', or join two neighbours with ':'
        if (text.includes(':')) list.splice(i, 1, ...text.split(':'))
        else if (i + 1 < list.length) list.splice(i, 2, text + ':' + String(list[i + 1] ?? ''))
        else list.push(':')
        break
      case 2: // two neighbours glued together, or a part cut in two
        if (i + 1 < list.length) list.splice(i, 2, text + String(list[i + 1] ?? ''))
        else {
          const chars = Array.from(text)
          const at = this.int(chars.length + 1)
          list.splice(i, 1, chars.slice(0, at).join(''), chars.slice(at).join(''))
        }
        break
      case 3:
        list.push(this.pick<KeyPart>(['', null, undefined, '%u', 'null', ':', '*']))
        break
      case 4: // what a missing part could be confused with
        list[i] = this.pick<KeyPart>(['', '%u', 'null', 'undefined', null, undefined, '%25u', 'u'])
        break
      case 5: { // swap two parts
        const j = this.int(list.length)
        ;[list[i], list[j]] = [list[j], list[i]]
        break
      }
      case 6: { // one character changed, added or removed
        const chars = Array.from(text)
        const at = this.int(chars.length + 1)
        const kind = this.int(3)
        if (kind === 0) chars.splice(at, 1)
        else if (kind === 1) chars.splice(at, 0, this.pick(NASTY))
        else chars.splice(at, 1, this.pick(NASTY))
        list[i] = chars.join('')
        break
      }
      case 7: // a part's encoding as a part (a key must not equal the key its encoded form names)
        list[i] = encodePart(text)
        break
      default: // the list as a string key: the same key when no part holds ':', null or undefined
        list.splice(0, list.length, ...list.map((p) => p === null || p === undefined ? '' : String(p)).join(':').split(':'))
    }
    return list
  }
}

/** Numbers and booleans are the same key as their string forms; null and undefined are one "missing" part. */
function canonical (list: readonly KeyPart[]): string {
  return JSON.stringify(list.map((part) => part === null || part === undefined ? null : typeof part === 'string' ? part : String(part)))
}

function short (value: unknown): string {
  const text = JSON.stringify(value, (_k, v: unknown) => typeof v === 'number' && !Number.isFinite(v) ? String(v) : v === undefined ? '<undefined>' : v) ?? String(value)
  return (text.length > 120 ? text.slice(0, 120) + '…' : text).replace(/[\u2028\u2029]/g, (c) => '\\u' + c.charCodeAt(0).toString(16))
}

/** Only printable ASCII, and none of the glob, escape or hash-tag characters. */
const SAFE_ID = /^[\x21-\x7e]*$/
const UNSAFE_ID_CHAR = /[*?[\]\\{}]/
const MAX_ID = 260

t.test(`keys: ${LISTS} random part lists (seed ${SEED}, set KEY_PROPERTY_SEED to vary) never collide, stay short and safe, and literal patterns match only their own key (globMatcher)`, async (t) => {
  const generator = new KeyGenerator(mulberry32(SEED))
  const idOf = new Map<string, string>()
  const keyOf = new Map<string, { canonical: string, list: KeyPart[] }>()
  const failures: string[] = []
  const fail = (message: string): void => { if (failures.length < 20) failures.push(message) }
  let longest = 0
  let hashed = 0
  let repeated = 0

  for (let n = 0; n < LISTS; n++) {
    const list = generator.list()
    const key = canonical(list)
    let id: string
    try {
      id = keyId(list)
    } catch (error) {
      fail(`keyId(${short(list)}) threw ${String(error)}`)
      continue
    }
    longest = Math.max(longest, id.length)
    if (id.includes('#')) hashed++
    if (id.length > MAX_ID) fail(`keyId(${short(list)}) is ${id.length} characters long`)
    if (!SAFE_ID.test(id) || UNSAFE_ID_CHAR.test(id)) fail(`keyId(${short(list)}) = ${short(id)} holds an unsafe character`)
    const earlierId = idOf.get(key)
    if (earlierId !== undefined) {
      repeated++
      if (earlierId !== id) fail(`one key, two ids: ${short(list)} gave ${short(id)} and earlier ${short(earlierId)}`)
      continue
    }
    idOf.set(key, id)
    const other = keyOf.get(id)
    if (other !== undefined) fail(`COLLISION: ${short(list)} and ${short(other.list)} both give ${short(id)}`)
    else keyOf.set(id, { canonical: key, list })
  }
  t.same(failures, [], 'every id is unique per key, at most 260 characters, printable ASCII without * ? [ ] \\ { }')
  t.comment(`${idOf.size} distinct keys, ${repeated} repeats of an earlier key, ${hashed} hashed ids, longest id ${longest}`)
  t.ok(repeated > 500, 'the generator produced enough equal keys written differently (numbers vs strings, string keys vs lists)')
  t.ok(hashed > 100, 'and enough keys long enough to be hashed')

  // Literal patterns: idPattern(s) for a string with no * or ? matches the id of the key s names, and no other.
  const byLength = new Map<number, string[]>()
  for (const id of keyOf.keys()) byLength.set(id.length, [...(byLength.get(id.length) ?? []), id])
  const patternFailures: string[] = []
  let literals = 0
  let selfMatches = 0
  let foreignChecks = 0
  for (const { list } of keyOf.values()) {
    if (list.some((part) => part === null || part === undefined)) continue
    const text = list.map(String).join(':')
    if (text === '' || /[*?]/.test(text)) continue
    literals++
    const named = canonical(text.split(':'))
    const pattern = idPattern(text)
    if (/[*?]/.test(pattern)) {
      patternFailures.push(`idPattern(${short(text)}) = ${short(pattern)} holds a wildcard`)
      continue
    }
    const glob = globMatcher(pattern)
    const ownId = keyId(text)
    if (!ownId.includes('#')) {
      if (glob(ownId)) selfMatches++
      else patternFailures.push(`idPattern(${short(text)}) does not match its own key's id ${short(ownId)}`)
    }
    // A glob without wildcards can only match a string of its own length: test every id of that length.
    for (const id of byLength.get(pattern.length) ?? []) {
      foreignChecks++
      if (glob(id) && keyOf.get(id)?.canonical !== named) {
        patternFailures.push(`idPattern(${short(text)}) matches ${short(id)}, the id of ${short(keyOf.get(id)?.list)}`)
      }
    }
    if (patternFailures.length >= 20) break
  }
  t.same(patternFailures, [], 'a literal pattern matches the id of the key it names and no other')
  t.comment(`${literals} literal patterns, ${selfMatches} matched their own id, ${foreignChecks} same-length ids tested`)
  t.ok(literals > 1000, 'enough literal patterns were tried')

  // Prefix patterns `<first part>:*`: whatever they match has that same first part.
  const byHead = new Map<string, string[]>()
  for (const id of keyOf.keys()) {
    const head = id.slice(0, id.indexOf(':') === -1 ? id.length : id.indexOf(':'))
    byHead.set(head, [...(byHead.get(head) ?? []), id])
  }
  const prefixFailures: string[] = []
  let prefixes = 0
  let missedHashed = 0
  for (const { list } of keyOf.values()) {
    const first = list[0]
    if (list.length < 2 || first === null || first === undefined || /[*?:]/.test(String(first)) || String(first) === '') continue
    prefixes++
    const pattern = idPattern(String(first) + ':*')
    const glob = globMatcher(pattern)
    const literalHead = pattern.slice(0, pattern.indexOf(':'))
    const firstCanonical = canonical([first])
    for (const id of byHead.get(literalHead) ?? []) {
      const owner = keyOf.get(id)
      if (owner === undefined) continue
      const ownerFirst = canonical([owner.list[0]])
      if (glob(id) && ownerFirst !== firstCanonical) {
        prefixFailures.push(`${short(pattern)} matches ${short(id)}, whose first part is ${short(owner.list[0])}`)
      }
    }
    if (!glob(keyId(list))) missedHashed++
    if (prefixFailures.length >= 20) break
  }
  t.same(prefixFailures, [], 'a `<part>:*` pattern only matches keys whose first part is that part')
  t.comment(`${prefixes} prefix patterns; ${missedHashed} did not match their own (hashed) key because its readable head ` +
    'does not hold the first part (documented: only the first ~96 characters of a long key stay matchable)')
})

t.test('keys: the documented equivalences and their limits', async (t) => {
  t.equal(keyId(['a', 1]), keyId(['a', '1']), 'a number is the same key as its string form (documented)')
  t.equal(keyId(['a', true]), keyId(['a', 'true']), 'NOTE: a boolean is the same key as its string form (not documented)')
  t.equal(keyId(['a', 10n]), keyId(['a', '10']), 'NOTE: a bigint is the same key as its string form (not documented)')
  t.equal(keyId(['a', null]), keyId(['a', undefined]), 'null and undefined are one "missing" part')
  t.not(keyId(['a', null]), keyId(['a', 'null']))
  t.not(keyId(['a', null]), keyId(['a', '']))
  t.not(keyId(['a:b']), keyId(['a', 'b']), 'a ":" inside a part is not a separator')
  t.equal(keyId('a:b'), keyId(['a', 'b']), 'a string key is split on ":"')
  for (const lone of ['\uD800', 'x\uDFFFy']) {
    t.throws(() => keyId(['a', lone]), { code: 'FST_CACHE_INVALID_KEY' }, `a lone surrogate (${short(lone)}) is rejected, not merged`)
  }
})

t.test('keys: literal and wildcard patterns in real Redis delete exactly what the memory store matcher (globMatcher) says, never outside the prefix', async (t) => {
  const app = await cachedApp(t, 'redis')
  const admin = await createClient(t)
  t.equal((await app.cacheService.stats()).store.kind, 'redis')
  const generator = new KeyGenerator(mulberry32(SEED ^ 0xABCDEF))
  // short keys only: a hashed id is matched by nothing but its readable head
  const keys = new Map<string, KeyPart[]>()
  while (keys.size < 150) {
    const list = generator.list().map((part) => typeof part === 'string' ? Array.from(part).slice(0, 12).join('') : part)
    const id = keyId(list)
    if (!id.includes('#')) keys.set(id, list)
  }
  for (const list of keys.values()) await app.cacheService.set(list, 1, { ttl: 60 })
  const outsider = uniquePrefix('outside-pattern')
  t.teardown(() => deleteByPrefix(admin, outsider))
  await admin.set(`${outsider}:e:x`, '1', 'PX', 60_000)

  const patterns: string[] = ['?', '[a]', '\\', '%2A', '*:*']
  for (const list of [...keys.values()].slice(0, 40)) {
    const text = list.map((part) => part === null || part === undefined ? '' : String(part)).join(':')
    if (text === '') continue
    patterns.push(text, text.split(':')[0] + ':*', Array.from(text).slice(0, 3).join('') + '*', text.replace(/./u, '?'))
  }
  const remaining = new Set(keys.keys())
  for (const pattern of patterns) {
    const glob = globMatcher(idPattern(pattern))
    const expected = [...remaining].filter((id) => glob(id))
    const count = await app.cacheService.invalidatePattern(pattern)
    for (const id of expected) remaining.delete(id)
    t.equal(count, expected.length, `invalidatePattern(${short(pattern)}) deleted ${expected.length}`)
  }
  for (const [id, list] of keys) {
    if ((await app.cacheService.exists(list)) !== remaining.has(id)) t.fail(`${short(list)} should ${remaining.has(id) ? 'remain' : 'be gone'}`)
  }
  t.equal(await app.cacheService.invalidatePattern('*'), remaining.size, 'finally * deletes the rest')
  t.equal(await admin.get(`${outsider}:e:x`), '1', 'a key under another prefix survived every pattern')
})

t.test('keys: a prefix pattern reaches long (hashed) keys whose named parts fit in the readable head', async (t) => {
  const app = await cachedApp(t, 'redis')
  await app.cacheService.set(['ws42', 'x'.repeat(300)], 1)
  t.match(keyId(['ws42', 'x'.repeat(300)]), /^ws42:#/, 'hashed, with ws42 kept readable')
  t.equal(await app.cacheService.invalidatePattern('ws42:*'), 1)
})

t.test('keys: a prefix pattern reaches long (hashed) keys whose first part does not fit in the readable head', async (t) => {
  // Long parts are hashed one by one, and a literal pattern segment is hashed the same way, so this reaches them.
  const app = await cachedApp(t, 'redis')
  const first = '日'.repeat(11) // 99 characters once encoded
  await app.cacheService.set([first, 'x'.repeat(150)], 1)
  t.equal(await app.cacheService.invalidatePattern(`${first}:*`), 1, 'the entry under that first part was deleted')
  t.equal(await app.cacheService.exists([first, 'x'.repeat(150)]), false, 'and is gone')
})

// ---------------------------------------------------------------------------------------------------------------
// 2. Cache-poisoned denial of service (Nguyen, Lo Iacono, Federrath, CCS 2019): HHO, HMC, HMO
// ---------------------------------------------------------------------------------------------------------------

interface Poison {
  name: string
  method?: 'GET' | 'HEAD'
  headers?: Record<string, string>
  /** The poisoned URL when it differs from the clean one (the query is part of the default key). */
  url?: string
}

const POISONS: Poison[] = [
  { name: 'hho-20kB-header', headers: { 'x-big': 'a'.repeat(20_000) } }, // Header Oversize
  { name: 'hho-many-headers', headers: Object.fromEntries(Array.from({ length: 200 }, (_, i) => [`x-h${i}`, 'v'.repeat(60)])) },
  { name: 'hmc-unicode-header', headers: { 'x-meta': 'ü☃\u2028𝄞\u{10FFFF}' } }, // Header Meta Character
  { name: 'hmc-nul-header', headers: { 'x-meta': 'a\u0000b' } },
  { name: 'hmc-cr-header', headers: { 'x-meta': 'a\rb' } },
  { name: 'hmc-nul-query', url: '/p/hmc-nul-query?q=%00' },
  { name: 'hmc-meta-query', url: '/p/hmc-meta-query?q=%0d%0a%ff*[x]' },
  { name: 'hmo-override', headers: { 'x-http-method-override': 'POST' } }, // HTTP Method Override
  { name: 'hmo-method', headers: { 'x-http-method': 'DELETE' } },
  { name: 'handler-404', headers: { 'x-poison': '404' } },
  { name: 'handler-400', headers: { 'x-poison': '400' } },
  { name: 'handler-500', headers: { 'x-poison': '500' } },
  { name: 'handler-throws', headers: { 'x-poison': 'throw' } },
  { name: 'conditional-304', headers: { 'if-none-match': '*' } },
  { name: 'head-first', method: 'HEAD' }
]

function headerBytes (request: FastifyRequest): number {
  let bytes = 0
  for (const [name, value] of Object.entries(request.headers)) bytes += name.length + String(value).length + 4
  return bytes
}

const META = /[^\x20-\x7e]/

/**
 * The strict origin of the paper: rejects what it finds malformed. Its size check is a preHandler (after an
 * onRequest lookup, before the handler-phase lookup); everything else is decided by the handler itself, after the
 * lookup found nothing: the case where a poisoned error could be stored.
 */
function strictOrigin (app: FastifyInstance, calls: Map<string, number>, delayMs = 0): void {
  app.addHook('preHandler', async (request, reply) => {
    if (headerBytes(request) > 8 * 1024) return reply.code(431).send({ error: 'Request Header Fields Too Large' })
  })
  const handler = async (request: FastifyRequest, reply: FastifyReply): Promise<unknown> => {
    const { name } = request.params as { name: string }
    const counted = request.headers['x-big'] === undefined ? name : `${name}:oversize`
    calls.set(counted, (calls.get(counted) ?? 0) + 1)
    if (delayMs > 0) await sleep(delayMs)
    const headers = request.headers
    const override = headers['x-http-method-override'] ?? headers['x-http-method']
    if (override !== undefined) return reply.code(405).send({ error: `method ${String(override)} not allowed here` })
    const poison = headers['x-poison']
    if (poison === 'throw') throw new Error('poisoned')
    if (poison !== undefined) return reply.code(Number(poison)).send({ error: 'poisoned' })
    if (Object.values(headers).some((value) => META.test(String(value)))) return reply.code(400).send({ error: 'bad header' })
    if (Object.values(request.query as Record<string, string>).some((value) => META.test(value) || /[*[\]]/.test(value))) {
      return reply.code(400).send({ error: 'bad query' })
    }
    return { page: name, good: true }
  }
  app.get('/p/:name', { config: { cache: true } }, handler)
  app.get('/alt/:name', { config: { cache: { statuses: [200, 404] } } }, handler)
}

/** Clean requests until one is a HIT; every one of them must be the good 200. */
async function cleanUntilHit (t: Test, app: FastifyInstance, url: string, body: unknown, label: string): Promise<void> {
  const deadline = Date.now() + 3000
  for (;;) {
    const response = await app.inject(url)
    if (response.statusCode !== 200 || response.body !== JSON.stringify(body)) {
      t.fail(`${label}: a clean request got ${response.statusCode} ${response.body.slice(0, 80)} (x-cache ${String(response.headers['x-cache'])})`)
      return
    }
    if (response.headers['x-cache'] === 'HIT') {
      t.pass(`${label}: clean requests get the good 200, then a HIT of it`)
      return
    }
    if (Date.now() > deadline) {
      t.fail(`${label}: never became a HIT`)
      return
    }
    await sleep(10)
  }
}

for (const kind of STORE_KINDS) {
  for (const lookup of ['handler', 'onRequest'] as const) {
    t.test(`CPDoS (${kind}, lookup ${lookup}): a poisoned first request never leaves an error for the clean ones`, async (t) => {
      const app = await cachedApp(t, kind, { lookup })
      const calls = new Map<string, number>()
      strictOrigin(app, calls)
      for (const poison of POISONS) {
        const clean = `/p/${poison.name}`
        const url = poison.url ?? clean
        const first = await app.inject({ method: poison.method ?? 'GET', url, headers: poison.headers })
        t.comment(`${poison.name}: the poisoned request got ${first.statusCode}`)
        if (poison.url !== undefined) {
          // A poisoned query is its own key: that key must not store the error either.
          const again = await app.inject(url)
          t.equal(again.statusCode, first.statusCode, `${poison.name}: the poisoned key answers the same`)
          t.not(again.headers['x-cache'], 'HIT', `${poison.name}: its error was not stored`)
        }
        await cleanUntilHit(t, app, clean, { page: poison.name, good: true }, poison.name)
      }
      t.equal(calls.get('hho-20kB-header:oversize'), undefined, 'the oversize request never reached the handler')
      const stats = await app.cacheService.stats()
      t.equal(stats.errors, 0, 'no store errors')
      t.ok((stats.skippedBy['status'] ?? 0) >= 6, `errors were skipped for their status (${JSON.stringify(stats.skippedBy)})`)
    })

    t.test(`CPDoS (${kind}, lookup ${lookup}): a poisoned request racing clean ones on a cold key`, async (t) => {
      const app = await cachedApp(t, kind, { lookup })
      const calls = new Map<string, number>()
      strictOrigin(app, calls, 40)
      for (const poison of POISONS.filter((p) => p.url === undefined && p.method === undefined)) {
        const url = `/p/race-${poison.name}`
        const poisoned = app.inject({ url, headers: poison.headers })
        await sleep(5)
        const clean = await Promise.all([app.inject(url), app.inject(url), app.inject(url)])
        await poisoned
        for (const response of clean) {
          if (response.statusCode !== 200 || response.json<{ good?: boolean }>().good !== true) {
            t.fail(`${poison.name}: a concurrent clean request got ${response.statusCode} ${response.body.slice(0, 80)}`)
          }
        }
        await cleanUntilHit(t, app, url, { page: `race-${poison.name}`, good: true }, `race ${poison.name}`)
      }
    })

    t.test(`CPDoS (${kind}, lookup ${lookup}): 5xx can never be stored, and statuses that list 4xx store only what they list`, async (t) => {
      const app = await cachedApp(t, kind, { lookup })
      t.throws(() => app.get('/five', { config: { cache: { statuses: [200, 500] } } }, async () => 'x'),
        { code: 'FST_CACHE_INVALID_OPTION' }, 'statuses may not list a 5xx')
      const calls = new Map<string, number>()
      strictOrigin(app, calls)
      for (const poison of ['500', 'throw', '400']) {
        const first = await app.inject({ url: `/alt/x${poison}`, headers: { 'x-poison': poison } })
        t.equal(first.statusCode, poison === '400' ? 400 : 500)
        await cleanUntilHit(t, app, `/alt/x${poison}`, { page: `x${poison}`, good: true }, `statuses [200, 404], poison ${poison}`)
      }
      // 404 is listed, so it is stored on purpose: the route owner asked for it (and for the consequences)
      await app.inject({ url: '/alt/x404', headers: { 'x-poison': '404' } })
      await until('404 stored', async () => (await app.inject('/alt/x404')).headers['x-cache'] === 'HIT')
      t.comment('a route whose statuses list 404 stores the poisoned 404 for every client: only list statuses that cannot be provoked')
    })
  }
}

t.test('CPDoS over real HTTP: a 20 kB header gets 431 from the server, and the next clean request the good 200', async (t) => {
  const app = await cachedApp(t, 'redis')
  let calls = 0
  app.get('/page', { config: { cache: true } }, async () => ({ page: 'good', calls: ++calls }))
  await app.listen({ port: 0, host: '127.0.0.1' })
  const { port } = app.server.address() as AddressInfo
  const get = (headers: Record<string, string>): Promise<{ status: number | string, body: string, cache?: string }> =>
    new Promise((resolve) => {
      const req = httpRequest({ host: '127.0.0.1', port, path: '/page', agent: false, headers }, (res) => {
        let body = ''
        res.setEncoding('utf8')
        res.on('data', (chunk: string) => { body += chunk })
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body, cache: res.headers['x-cache'] as string | undefined }))
      })
      req.on('error', (error: NodeJS.ErrnoException) => resolve({ status: error.code ?? error.message, body: '' }))
      req.end()
    })
  const poisoned = await get({ 'x-big': 'a'.repeat(20_000) })
  t.ok(poisoned.status === 431 || poisoned.status === 400 || poisoned.status === 'ECONNRESET', `the oversize request got ${poisoned.status}`)
  t.equal(calls, 0, 'it never reached the handler')
  const clean = await get({})
  t.same([clean.status, clean.cache, JSON.parse(clean.body)], [200, 'MISS', { page: 'good', calls: 1 }], 'the next clean request: the good 200')
  let hit = await get({})
  for (let i = 0; i < 100 && hit.cache !== 'HIT'; i++) { await sleep(10); hit = await get({}) }
  t.same([hit.status, hit.cache, JSON.parse(hit.body)], [200, 'HIT', { page: 'good', calls: 1 }])
})

// ---------------------------------------------------------------------------------------------------------------
// 3. Per-user data
// ---------------------------------------------------------------------------------------------------------------

interface User { id: string, name: string }
const TOKENS: Record<string, User> = {
  'token-alice': { id: 'alice', name: 'Alice' },
  'token-bob': { id: 'bob', name: 'Bob' },
  // an id made of characters that must not let it share a key with someone else
  'token-evil': { id: 'alice:*', name: 'Mallory' }
}
const users = new WeakMap<FastifyRequest, User>()

function authenticate (request: FastifyRequest): User | undefined {
  const header = request.headers.authorization
  const bearer = typeof header === 'string' && header.startsWith('Bearer ') ? header.slice(7) : undefined
  const cookie = /(?:^|;\s*)sid=([^;]*)/.exec(request.headers.cookie ?? '')?.[1]
  const token = bearer ?? cookie
  return token === undefined ? undefined : TOKENS[token]
}

function currentUser (request: FastifyRequest): User {
  const user = users.get(request)
  if (user === undefined) throw new Error('no authenticated user')
  return user
}

const auth = (token: string): Record<string, string> => ({ authorization: `Bearer ${token}` })

for (const kind of STORE_KINDS) {
  for (const lookup of ['handler', 'onRequest'] as const) {
    t.test(`per-user data (${kind}, lookup ${lookup}): one user's entry is never served to another or to no one`, async (t) => {
      const app = await cachedApp(t, kind, { lookup })
      const computed = new Map<string, number>()
      // With lookup 'onRequest' the lookup runs after the route's own onRequest hooks and before any preHandler,
      // so authentication must be an onRequest hook there (README, Security).
      const guard = async (request: FastifyRequest, reply: FastifyReply): Promise<FastifyReply | undefined> => {
        const user = authenticate(request)
        if (user === undefined) return reply.code(401).send({ error: 'Unauthorized' })
        users.set(request, user)
        return undefined
      }
      const hooks = lookup === 'onRequest' ? { onRequest: guard } : { preHandler: guard }
      app.get('/me', { ...hooks, config: { cache: { key: (request) => ['me', currentUser(request).id] } } }, async (request) => {
        const user = currentUser(request)
        computed.set(user.id, (computed.get(user.id) ?? 0) + 1)
        return { id: user.id, name: user.name, secret: `secret of ${user.name}` }
      })
      app.get('/public', { config: { cache: true } }, async () => ({ hello: 'world' }))
      app.get('/login', { config: { cache: true } }, async (_request, reply) => {
        reply.header('set-cookie', 'sid=token-alice; HttpOnly')
        return { ok: true }
      })

      const alice = await app.inject({ url: '/me', headers: auth('token-alice') })
      t.same([alice.statusCode, alice.headers['x-cache'], alice.json<User>().id], [200, 'MISS', 'alice'])
      t.match(alice.headers['cache-control'], /^private, max-age=\d+$/, 'a credentialed response is private')
      await until('alice stored', async () => await app.cacheService.exists(['me', 'alice']))
      const aliceHit = await app.inject({ url: '/me', headers: auth('token-alice') })
      t.same([aliceHit.headers['x-cache'], aliceHit.json<User>().id], ['HIT', 'alice'])
      t.match(aliceHit.headers['cache-control'], /^private/, 'a hit for a credentialed request is private too')

      for (const token of ['token-bob', 'token-evil']) {
        const other = await app.inject({ url: '/me', headers: auth(token) })
        t.equal(other.statusCode, 200)
        t.equal(other.json<User>().id, TOKENS[token].id, `${TOKENS[token].name} gets their own data`)
        t.notMatch(other.body, /Alice/, `${TOKENS[token].name} never sees Alice's`)
        t.equal(other.headers['x-cache'], 'MISS')
        t.match(other.headers['cache-control'], /^private/)
      }
      await until('bob stored', async () => await app.cacheService.exists(['me', 'bob']))
      const bobHit = await app.inject({ url: '/me', headers: auth('token-bob') })
      t.same([bobHit.headers['x-cache'], bobHit.json<User>().id], ['HIT', 'bob'])

      const refused: Array<Record<string, string>> = [
        {}, auth('wrong'), { authorization: 'Bearer ' }, { authorization: 'Basic token-alice' }, { cookie: 'sid=nope' },
        { 'x-forwarded-user': 'alice' }
      ]
      for (const headers of refused) {
        const response = await app.inject({ url: '/me', headers })
        t.equal(response.statusCode, 401, `${short(headers)} is refused while Alice's entry is warm`)
        t.notMatch(response.body, /secret/, 'with no cached data in the body')
        t.not(response.headers['x-cache'], 'HIT')
      }
      const viaCookie = await app.inject({ url: '/me', headers: { cookie: 'theme=dark; sid=token-alice' } })
      t.same([viaCookie.statusCode, viaCookie.headers['x-cache'], viaCookie.json<User>().id], [200, 'HIT', 'alice'], 'the same user by cookie shares her entry')
      t.match(viaCookie.headers['cache-control'], /^private/, 'a cookie makes the response private as well')
      t.same(Object.fromEntries(computed), { alice: 1, bob: 1, 'alice:*': 1 }, 'each user computed once; refusals computed nothing')

      const anonymous = await app.inject('/public')
      t.match(anonymous.headers['cache-control'], /^public, max-age=\d+$/)
      await until('public stored', async () => (await app.inject('/public')).headers['x-cache'] === 'HIT')
      const credentialedHit = await app.inject({ url: '/public', headers: auth('token-alice') })
      t.same([credentialedHit.headers['x-cache'], credentialedHit.headers['cache-control']?.toString().startsWith('private')], ['HIT', true],
        'a public entry served to a credentialed request is marked private')

      await app.inject('/login')
      await sleep(30)
      const login = await app.inject('/login')
      t.equal(login.headers['x-cache'], 'MISS', 'a Set-Cookie response is never stored')
      t.equal(login.headers['set-cookie'], 'sid=token-alice; HttpOnly')
    })
  }
}

// ---------------------------------------------------------------------------------------------------------------
// 4. Least privilege: a Redis ACL user with only the commands the plugin uses
// ---------------------------------------------------------------------------------------------------------------

/**
 * Every command the plugin sends, found by reading lib/stores/redis.ts (direct calls and pipelines) and its Lua
 * scripts (whose redis.call()s are checked against the user's ACL too). Connection set-up (AUTH, and QUIT on
 * close) needs no grant; ioredis's CLIENT SETINFO (Redis >= 7.2) is allowed to fail.
 */
const ACL_COMMANDS = [
  'get', 'set', 'getrange', 'strlen', 'exists', 'pttl', 'pexpire', 'sadd', 'srem', 'sscan', 'scan', 'unlink', 'del',
  'eval', 'evalsha', 'info'
]
/** Denials that do not matter: ioredis ignores a failed CLIENT SETINFO. */
const HARMLESS_DENIALS = new Set(['client|setinfo', 'client'])

async function setAclUser (admin: Redis, user: string, prefix: string, commands: readonly string[]): Promise<void> {
  await admin.call('ACL', 'SETUSER', user, 'reset', 'on', '>secret', `~${prefix}:*`, 'resetchannels', '-@all',
    ...commands.map((command) => '+' + command))
}

type AclEntry = Record<string, string>
async function aclDenials (admin: Redis, user: string): Promise<AclEntry[]> {
  const raw = await admin.call('ACL', 'LOG', '128') as unknown[][]
  return raw.map((fields) => {
    const entry: AclEntry = {}
    for (let i = 0; i + 1 < fields.length; i += 2) entry[String(fields[i])] = String(fields[i + 1])
    return entry
  }).filter((entry) => entry['username'] === user && !HARMLESS_DENIALS.has(entry['object'] ?? ''))
}

async function poll (check: () => Promise<boolean>, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms
  while (!(await check())) {
    if (Date.now() > deadline) return false
    await sleep(10)
  }
  return true
}

/** The plugin as a user of that ACL would run it: every operation, each recorded (value or error). */
async function exercise (redis: RedisProcess, admin: Redis, user: string, prefix: string, waitMs: number) {
  const app = Fastify()
  await app.register(cache, {
    redis: `redis://${user}:secret@127.0.0.1:${redis.port}`, prefix, circuitBreaker: false, storeTimeoutMs: 1000
  })
  let handled = 0
  app.get('/items/:id', { config: { cache: { key: (request) => ['items', (request.params as { id: string }).id], tags: ['items'] } } },
    async (request) => ({ id: (request.params as { id: string }).id, handled: ++handled }))
  const results: Record<string, unknown> = {}
  const step = async (name: string, fn: () => Promise<unknown>): Promise<void> => {
    try {
      results[name] = await fn()
    } catch (error) {
      results[name] = error instanceof Error ? `ERROR ${error.message}` : error
    }
  }
  try {
    await step('miss', async () => (await app.inject('/items/1')).headers['x-cache'])
    await step('stored', () => poll(() => app.cacheService.exists(['items', '1']), waitMs))
    await step('hit', async () => (await app.inject('/items/1')).headers['x-cache'])
    await step('set', () => app.cacheService.set('svc:a', { a: 1 }, { ttl: 60, tags: ['svc'] }))
    await step('get', () => app.cacheService.get('svc:a'))
    await step('exists', () => app.cacheService.exists('svc:a'))
    await step('expire', () => app.cacheService.expire('svc:a', 120))
    await step('ttl', () => app.cacheService.ttl('svc:a'))
    let computed = 0
    await step('getOrCompute', () => app.cacheService.getOrCompute('svc:b', () => ({ computed: ++computed }), { tags: ['svc'] }))
    await step('getOrCompute again', () => app.cacheService.getOrCompute('svc:b', () => ({ computed: ++computed }), { tags: ['svc'] }))
    await step('invalidate', () => app.cacheService.invalidate('svc:a'))
    await step('invalidateTags', () => app.cacheService.invalidateTags('svc'))
    await step('invalidateTags soft', () => app.cacheService.invalidateTags('items', { soft: true }))
    await step('set pattern keys', async () => {
      await app.cacheService.set('pat:1', 1)
      await app.cacheService.set('pat:2', 2)
    })
    await step('invalidatePattern', () => app.cacheService.invalidatePattern('pat:*'))
    await step('warm', async () => (await app.cacheService.warm(['/items/2', { key: 'warm:1', compute: () => 'warmed' }])).ok)
    await step('warmed value', () => app.cacheService.get('warm:1'))
    await step('seed cleanup', async () => {
      await admin.set(`${prefix}:e:orphan`, 'no ttl')
      await admin.sadd(`${prefix}:t:dangling`, `${prefix}:e:gone`)
      await admin.pexpire(`${prefix}:t:dangling`, 60_000)
    })
    await step('cleanup', async () => {
      const report = await app.cacheService.cleanup()
      return { removedWithoutTtl: report.removedWithoutTtl, removedDangling: report.removedDangling }
    })
    await step('delete', () => app.cacheService.delete('warm:1'))
    await step('stats', async () => {
      const stats = await app.cacheService.stats()
      return { errors: stats.errors, redisVersion: typeof stats.store['redis_version'] }
    })
    results['handled'] = handled
    results['computed'] = computed
  } finally {
    await app.close()
  }
  return results
}

t.test('least privilege: the plugin works under a Redis ACL user limited to its prefix and its commands', async (t) => {
  const redis = await RedisProcess.start()
  t.teardown(() => redis.stop())
  const admin = new Redis(redis.url)
  t.teardown(() => admin.disconnect())
  await admin.set('outside', 'top secret')
  await admin.sadd('outside-set', 'member')
  const prefix = uniquePrefix('acl')
  await admin.set(`${prefix}x:e:1`, 'a neighbour whose name starts with the prefix')
  await setAclUser(admin, 'cacheuser', prefix, ACL_COMMANDS)
  t.comment(`ACL SETUSER cacheuser on >secret ~${prefix}:* resetchannels -@all ${ACL_COMMANDS.map((c) => '+' + c).join(' ')}`)
  await admin.call('ACL', 'LOG', 'RESET')

  const results = await exercise(redis, admin, 'cacheuser', prefix, 3000)
  t.same(results, {
    miss: 'MISS',
    stored: true,
    hit: 'HIT',
    set: undefined,
    get: { a: 1 },
    exists: true,
    expire: true,
    ttl: 120,
    getOrCompute: { computed: 1 },
    'getOrCompute again': { computed: 1 },
    invalidate: 1,
    invalidateTags: 1,
    'invalidateTags soft': 1,
    'set pattern keys': undefined,
    invalidatePattern: 2,
    warm: 2,
    'warmed value': 'warmed',
    'seed cleanup': undefined,
    cleanup: { removedWithoutTtl: 1, removedDangling: 1 },
    delete: true,
    stats: { errors: 0, redisVersion: 'string' },
    handled: 2,
    computed: 1
  }, 'routes (miss, hit), cacheService and maintenance all work, with no store error')
  t.same(await aclDenials(admin, 'cacheuser'), [], 'Redis denied the plugin nothing (ACL LOG is empty)')

  // What the user cannot do.
  const client = new Redis(`redis://cacheuser:secret@127.0.0.1:${redis.port}`, { maxRetriesPerRequest: 0 })
  t.teardown(() => client.disconnect())
  const denied = /NOPERM|no permissions|can't (?:run|access)/
  const attempts: Array<[string, () => Promise<unknown>]> = [
    ['FLUSHALL', () => client.flushall()],
    ['FLUSHDB', () => client.flushdb()],
    ['KEYS *', () => client.keys('*')],
    ['CONFIG GET', () => client.config('GET', 'maxmemory')],
    ['CONFIG SET', () => client.call('CONFIG', 'SET', 'maxmemory', '1')],
    ['ACL LIST', () => client.call('ACL', 'LIST')],
    ['SCRIPT FLUSH', () => client.call('SCRIPT', 'FLUSH')],
    ['CLIENT LIST', () => client.call('CLIENT', 'LIST')],
    ['PUBLISH', () => client.publish('channel', 'x')],
    ['GET outside', () => client.get('outside')],
    ['GETRANGE outside', () => client.getrange('outside', 0, -1)],
    ['STRLEN outside', () => client.strlen('outside')],
    ['SSCAN outside', () => client.sscan('outside-set', '0')],
    ['SET outside', () => client.set('outside', 'overwritten')],
    ['UNLINK outside', () => client.unlink('outside')],
    ['GET neighbour prefix', () => client.get(`${prefix}x:e:1`)],
    ['EVAL GET outside (declared)', () => client.eval("return redis.call('GET', KEYS[1])", 1, 'outside')],
    ['EVAL GET outside (undeclared)', () => client.eval("return redis.call('GET', 'outside')", 0)],
    ['EVAL FLUSHALL', () => client.eval("return redis.call('FLUSHALL')", 0)],
    ['EVAL KEYS', () => client.eval("return redis.call('KEYS', '*')", 0)],
    ['EVAL SET outside', () => client.eval("return redis.call('SET', 'outside', 'overwritten')", 0)],
    ['EVAL FLUSHDB', () => client.eval("return redis.call('FLUSHDB')", 0)]
  ]
  for (const [name, attempt] of attempts) {
    await t.rejects(attempt(), denied, `cacheuser cannot ${name}`)
  }
  // Commands too dangerous to try for real: Redis says whether the user could run them, without running them.
  const dangerous = [
    ['SHUTDOWN'], ['DEBUG', 'SLEEP', '0'], ['MONITOR'], ['REPLICAOF', 'NO', 'ONE'], ['MODULE', 'LIST'], ['SAVE'],
    ['BGREWRITEAOF'], ['FLUSHALL', 'ASYNC'], ['SWAPDB', '0', '1'], ['SELECT', '1'], ['MIGRATE', 'h', '1', 'k', '0', '1'],
    ['CLIENT', 'KILL', 'ID', '1'], ['FUNCTION', 'FLUSH'], ['SCRIPT', 'LOAD', 'return 1'], ['OBJECT', 'ENCODING', 'outside'],
    ['DUMP', 'outside'], ['RENAME', `${prefix}:e:a`, 'outside'], ['COPY', 'outside', `${prefix}:e:a`],
    ['SUBSCRIBE', 'ch'], ['PSUBSCRIBE', '*'], ['GET', 'outside'], ['SET', `${prefix}x`, '1']
  ]
  for (const command of dangerous) {
    const verdict = String(await admin.call('ACL', 'DRYRUN', 'cacheuser', ...command))
    t.not(verdict, 'OK', `ACL DRYRUN: cacheuser cannot ${command.join(' ')} (${verdict})`)
  }
  t.equal(String(await admin.call('ACL', 'DRYRUN', 'cacheuser', 'GET', `${prefix}:e:a`)), 'OK', 'while a key under the prefix is allowed')
  t.equal(await admin.get('outside'), 'top secret', 'the key outside the prefix is untouched')
  t.equal(await admin.dbsize() > 0, true, 'nothing was flushed')

  // A limit of Redis ACLs, not of the plugin: SCAN takes no key argument, so a key pattern cannot restrict it.
  const [, seen] = await client.scan('0', 'MATCH', 'outside*', 'COUNT', 1000)
  t.comment(`NOTE: SCAN (needed by invalidatePattern and cleanup) still lists key NAMES outside the prefix: ${JSON.stringify(seen)} ` +
    '(values stay unreadable); give the cache its own Redis database or instance if key names are sensitive')
})

t.test('least privilege: each granted command is needed (dropping any one of them shows up as a denial)', async (t) => {
  const redis = await RedisProcess.start()
  t.teardown(() => redis.stop())
  const admin = new Redis(redis.url)
  t.teardown(() => admin.disconnect())
  const warn = console.warn
  // ioredis warns on every connection whose user may not run INFO (its ready check); expected here
  console.warn = (...args: unknown[]) => { if (!String(args[0]).includes('Skipping the ready check')) warn(...args) }
  t.teardown(() => { console.warn = warn })
  for (const dropped of ACL_COMMANDS) {
    const user = `cu-${dropped}`
    const prefix = uniquePrefix(`acl-${dropped}`)
    await setAclUser(admin, user, prefix, ACL_COMMANDS.filter((command) => command !== dropped))
    // EVALSHA finds no script, so that EVAL has to be sent too
    await admin.call('SCRIPT', 'FLUSH')
    await exercise(redis, admin, user, prefix, 150)
    const denials = await aclDenials(admin, user)
    t.ok(denials.some((entry) => entry['reason'] === 'command' && entry['object'] === dropped),
      `without +${dropped}: denied ${JSON.stringify(denials.map((entry) => `${entry['context']}:${entry['object']}`))}`)
  }
})

t.test('least privilege: without +info, stats() still resolves (only the Redis figures are missing)', async (t) => {
  const redis = await RedisProcess.start()
  t.teardown(() => redis.stop())
  const admin = new Redis(redis.url)
  t.teardown(() => admin.disconnect())
  const prefix = uniquePrefix('acl-noinfo')
  await setAclUser(admin, 'noinfo', prefix, ACL_COMMANDS.filter((command) => command !== 'info'))
  const warn = console.warn
  console.warn = (...args: unknown[]) => { if (!String(args[0]).includes('Skipping the ready check')) warn(...args) }
  t.teardown(() => { console.warn = warn })
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(cache, { redis: `redis://noinfo:secret@127.0.0.1:${redis.port}`, prefix })
  app.get('/x', { config: { cache: true } }, async () => ({ x: 1 }))
  t.equal((await app.inject('/x')).headers['x-cache'], 'MISS')
  await until('stored', async () => (await app.inject('/x')).headers['x-cache'] === 'HIT')
  const stats = await app.cacheService.stats()
  t.equal(stats.store.kind, 'redis')
  t.equal(stats.store['redis_version'], undefined, 'no Redis figures')
  t.equal(stats.hits, 1)
  t.comment(`NOTE: each stats() call without INFO counts a store error (errors: ${stats.errors}) and logs a warning (at most every 10 s)`)
  t.same((await aclDenials(admin, 'noinfo')).map((entry) => entry['object']), ['info'], 'INFO is the only thing denied')
})
