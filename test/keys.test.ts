import t from 'tap'
import { randomBytes } from 'node:crypto'
import { type KeyPart, encodePart, escapeGlob, idPattern, keyId, tagId } from '../lib/keys'
import { globMatcher } from '../lib/stores/store'
import { globToRegExp } from './helpers/glob'

/** What an encoded part may contain: no separator, no glob character, no brace, no control character, no '#'. */
const ENCODED_PART = /^[A-Za-z0-9._%-]*$/
/** A plain id: encoded parts joined by ':'. */
const PLAIN_ID = /^[A-Za-z0-9._%:-]*$/
const FORBIDDEN = /[*?[\]\\{}:#\s\p{Cc}]/u

/** A label for a test message: JSON, with the line separators TAP would read as new lines escaped. */
function show (value: unknown): string {
  return (JSON.stringify(value) ?? String(value)).replace(/[\u2028\u2029]/g, (c) => '\\u' + c.charCodeAt(0).toString(16))
}

const HOSTILE: string[] = [
  '*', '?', '[', ']', '\\', ':', '{', '}', '\0', '\r\n', '\n', '\t', ' ', '#', '%', '%2A', '%u', '%3A',
  '!', "'", '(', ')', '~', '"', '/', '&', '=', '+', ',', ';', '<', '>', '|', '^', '`', '$', '@',
  'a*b', 'a?b', '[a-z]', '\\*', 'a:b', '{tag}', 'x\r\nSET y z', '\x7f', '\x1b[31m', '\u2028',
  'é', 'ü', '☃', '𝄞', '日本語', '🙂', 'e\u0301', '\uFEFF', 'null', 'undefined', '', ' ', '0', '-1', '1.5',
  'x'.repeat(10_000), '*'.repeat(10_000), ':'.repeat(300), 'é'.repeat(5000)
]

t.test('encodePart: hostile parts never produce a glob character, a brace, a control char or a separator', async (t) => {
  for (const part of HOSTILE) {
    const encoded = encodePart(part)
    const label = show(part.length > 40 ? part.slice(0, 40) + '…' : part)
    t.match(encoded, ENCODED_PART, `${label} encodes to safe characters`)
    t.notMatch(encoded, FORBIDDEN, `${label} has nothing forbidden`)
  }
})

t.test('encodePart: distinct parts give distinct encodings, and plain parts stay readable', async (t) => {
  const encodings = new Map<string, string>()
  for (const part of HOSTILE) {
    const encoded = encodePart(part)
    const earlier = encodings.get(encoded)
    t.ok(earlier === undefined || earlier === part, `${show(part.slice(0, 20))} does not collide with ${show(earlier?.slice(0, 20))}`)
    encodings.set(encoded, part)
  }
  for (const part of ['abc', 'ABC-def_0.9', 'ws42', '']) t.equal(encodePart(part), part, `${show(part)} kept as is`)
  t.equal(encodePart('a b'), 'a%20b')
  t.equal(encodePart('*'), '%2A')
  t.equal(encodePart(':'), '%3A')
  t.equal(encodePart("!'()~"), '%21%27%28%29%7E')
})

t.test('encodePart: non-string parts', async (t) => {
  t.equal(encodePart(42), '42')
  t.equal(encodePart(-1.5), '-1.5')
  t.equal(encodePart(true), 'true')
  t.equal(encodePart(10n), '10')
  t.equal(encodePart(null), encodePart(undefined), 'null and undefined are both "missing"')
  t.not(encodePart(null), encodePart('null'))
  t.not(encodePart(null), encodePart(''))
  t.not(encodePart(undefined), encodePart('undefined'))
  t.match(encodePart(Number.NaN), ENCODED_PART)
  t.match(encodePart(1e300), ENCODED_PART)
})

t.test('a lone surrogate in a part is encoded or rejected as an invalid key, never a raw URIError', async (t) => {
  for (const part of ['\uD800', 'a\uDC00b', '\uDBFF', '🙂'.slice(0, 1)]) {
    const label = show(part)
    const cases: Array<[string, () => string, RegExp]> = [
      ['keyId', () => keyId(['ws', part]), PLAIN_ID],
      ['tagId', () => tagId(part), ENCODED_PART],
      ['idPattern', () => idPattern(`${part}:*`), /^[A-Za-z0-9._%:*?-]*$/]
    ]
    for (const [name, fn, safe] of cases) {
      try {
        t.match(fn(), safe, `${name}(${label}) encodes it safely`)
      } catch (err) {
        t.equal((err as { code?: unknown }).code, 'FST_CACHE_INVALID_KEY', `${name}(${label}) throws ${String(err)}`)
      }
    }
  }
})

t.test('keyId: every hostile part stays inside its own part', async (t) => {
  for (const part of HOSTILE) {
    const label = show(part.slice(0, 20))
    const id = keyId(['tenant', part, 'end'])
    if (id.includes('#')) {
      t.ok(id.startsWith('tenant:'), `${label}: a hashed id keeps its head`)
      continue
    }
    t.match(id, PLAIN_ID, `${label}: only safe characters`)
    t.equal(id.split(':').length, 3, `${label}: exactly two separators`)
    t.equal(id, `tenant:${encodePart(part)}:end`)
  }
})

t.test('keyId: null/undefined, "null", "" and a missing part are all different', async (t) => {
  const variants: Array<readonly KeyPart[]> = [['a', null], ['a', 'null'], ['a', ''], ['a'], ['a', 'undefined'], ['a', '%u']]
  const ids = variants.map((key) => keyId(key))
  t.equal(new Set(ids).size, ids.length, `all distinct: ${ids.join(' | ')}`)
  t.equal(keyId(['a', undefined]), keyId(['a', null]), 'undefined and null are the same missing part')
  t.not(keyId([null]), keyId(['']))
  t.not(keyId(['', '']), keyId(['']))
})

t.test('keyId: a string key splits on ":" into the same parts as an array', async (t) => {
  t.equal(keyId('a:b'), keyId(['a', 'b']))
  t.equal(keyId('a:b'), 'a:b')
  t.equal(keyId('exec:dashboard:ws42'), keyId(['exec', 'dashboard', 'ws42']))
  t.equal(keyId('a::b'), keyId(['a', '', 'b']))
  t.equal(keyId('ws*:[x]'), keyId(['ws*', '[x]']))
  t.not(keyId(['a:b']), keyId('a:b'), 'a ":" inside an array part is not a separator')
  t.equal(keyId(['a:b']), 'a%3Ab')
  t.equal(keyId('x'), 'x')
  t.equal(keyId([1, true, 2n]), '1:true:2')
})

t.test('keyId: long keys are hashed to a bounded length, stay distinct and keep a readable head', async (t) => {
  const base = ['exec', 'dashboard']
  const long = keyId([...base, 'x'.repeat(10_000)])
  t.ok(long.length <= 200, `bounded (${long.length})`)
  t.ok(long.includes('#'), 'marked as hashed')
  t.ok(long.startsWith('exec:dashboard:'), `readable head: ${long}`)
  t.match(long.slice(long.indexOf('#') + 1), /^[A-Za-z0-9_-]+$/, 'the hash is base64url')
  t.notMatch(long, /[*?[\]\\{}\s\p{Cc}]/u)

  t.not(keyId([...base, 'x'.repeat(10_000)]), keyId([...base, 'x'.repeat(9_999) + 'y']), 'the last character counts')
  t.not(keyId([...base, 'x'.repeat(10_000)]), keyId([...base, 'x'.repeat(10_001)]), 'the length counts')
  t.equal(keyId([...base, 'x'.repeat(10_000)]), long, 'stable')
  t.not(keyId([...base, 'a'.repeat(300), 'b']), keyId([...base, 'a'.repeat(300), 'c']), 'the tail beyond the head counts')

  const many = new Set<string>()
  for (let i = 0; i < 200; i++) {
    const id = keyId(['exec', randomBytes(200).toString('hex')])
    t.ok(id.length <= 200, 'bounded')
    many.add(id)
  }
  t.equal(many.size, 200, '200 random long keys, 200 ids')

  for (const size of [10, 100, 1000, 100_000]) {
    const id = keyId(Array.from({ length: size }, (_, i) => `p${i}`))
    t.ok(id.length <= 200, `${size} parts: bounded (${id.length})`)
    t.ok(id.startsWith('p0:p1:'), `${size} parts: head kept`)
  }

  // A huge hostile part is hashed, not copied, and cannot leak unencoded text through the head.
  const hostile = keyId(['t', '*?[]\\{}:\r\n'.repeat(2000)])
  t.ok(hostile.length <= 200)
  t.notMatch(hostile, /[*?[\]\\{}\s]/)
})

t.test('keyId: parts and ids at the length limits, and hashed ids never equal plain ones', async (t) => {
  t.equal(keyId(['a'.repeat(64)]), 'a'.repeat(64), 'a part of 64 characters is kept as is')
  const long = keyId(['a'.repeat(65)])
  t.match(long, /^#[A-Za-z0-9_-]{43}$/, 'a longer part is replaced by its hash')
  t.equal(keyId(['x', 'a'.repeat(65), 'y']), `x:${long}:y`, 'and stays a part between the others')
  const manyParts = Array.from({ length: 50 }, (_, i) => `p${i}`)
  t.equal(keyId(manyParts), manyParts.join(':'), 'short parts are kept while the id fits in 200 characters')
  const tooMany = Array.from({ length: 60 }, (_, i) => `part${i}`)
  t.match(keyId(tooMany), /^part0:.*##[A-Za-z0-9_-]{43}$/, 'a longer id keeps a head and ends in the hash of the whole')
  for (const part of HOSTILE) {
    const encoded = encodePart(part)
    if (encoded.length <= 64) t.equal(keyId(['x', part]), `x:${encoded}`, `${show(part.slice(0, 20))}: a short id is not hashed`)
  }
  t.notOk(encodePart('#').includes('#'), 'a "#" in a part is encoded')
})

t.test('idPattern + globToRegExp: exec:* matches the keys under exec and no others', async (t) => {
  const matcher = globToRegExp(idPattern('exec:*'))
  const matching: Array<string | readonly KeyPart[]> = [
    'exec:a', 'exec:b:c', ['exec', ''], ['exec', null], ['exec', '*'], ['exec', 'x'.repeat(10_000)],
    ['exec', 'dashboard', 'x'.repeat(10_000)], ['exec', '[a]', '\\']
  ]
  const other: Array<string | readonly KeyPart[]> = [
    'exec', 'execx:a', 'exe:a', 'x:exec:a', ['exec:a'], ['exec*', 'a'], ['Exec', 'a'], [' exec', 'a'],
    ['ex', 'ec:a'], ['x'.repeat(300), 'exec']
  ]
  for (const key of matching) t.ok(matcher.test(keyId(key)), `matches ${String(keyId(key)).slice(0, 60)}`)
  for (const key of other) t.notOk(matcher.test(keyId(key)), `does not match ${String(keyId(key)).slice(0, 60)}`)

  const deeper = globToRegExp(idPattern('exec:dashboard:*'))
  t.ok(deeper.test(keyId(['exec', 'dashboard', 'x'.repeat(10_000)])), 'a hashed id matches a pattern on its head')
  t.notOk(deeper.test(keyId(['exec', 'dashboards', 'x'])))

  const one = globToRegExp(idPattern('ws?:*'))
  t.ok(one.test(keyId(['ws1', 'a'])))
  t.notOk(one.test(keyId(['ws12', 'a'])))
  t.notOk(one.test(keyId(['ws', 'a'])))
})

t.test('idPattern: only * and ? stay wildcards; everything else is encoded like key parts', async (t) => {
  t.equal(idPattern('exec:*'), 'exec:*')
  t.equal(idPattern('a?b:*'), 'a?b:*')
  t.equal(idPattern('a[b]:*'), 'a%5Bb%5D:*', 'a literal [ is encoded')
  t.equal(idPattern('a\\b:*'), 'a%5Cb:*', 'a literal \\ is encoded')
  t.equal(idPattern('\\*'), '%5C*', 'a backslash cannot escape a wildcard')
  t.equal(idPattern('{tag}:*'), '%7Btag%7D:*')
  t.equal(idPattern('a b:*'), 'a%20b:*')
  t.equal(idPattern('**'), '**')
  for (const part of HOSTILE) {
    if (part === '') continue
    const glob = idPattern(`${part}:*`)
    t.match(glob, /^[A-Za-z0-9._%:*?#-]*$/, `${show(part.slice(0, 20))}: only safe characters and wildcards`)
    t.notMatch(glob, /[[\]\\{}\s\p{Cc}]/u)
  }
  // A pattern's literal text matches the key with the same text.
  for (const key of ['a[b]:x', 'a\\b:x', '{t}:x', 'é:x', 'a b:x', '%2A:x']) {
    t.ok(globToRegExp(idPattern(key)).test(keyId(key)), `${key} matches itself`)
    t.ok(globToRegExp(idPattern(key.replace(/:x$/, ':*'))).test(keyId(key)), `${key} matches its prefix pattern`)
  }
  t.notOk(globToRegExp(idPattern('%2A:*')).test(keyId(['*', 'x'])), 'encoded text in a pattern is literal, not a wildcard')
})

t.test('tagId', async (t) => {
  t.equal(tagId('user:1'), 'user%3A1')
  t.equal(tagId('plain'), 'plain')
  t.not(tagId('a:b'), tagId('a%3Ab'))
  for (const tag of HOSTILE) {
    if (tag === '') continue
    t.match(tagId(tag), ENCODED_PART, `${show(tag.slice(0, 20))}`)
  }
})

t.test('invalid keys, patterns and tags throw FST_CACHE_INVALID_KEY', async (t) => {
  const invalidKeys: unknown[] = [
    '', [], [{}], ['a', {}], [['a']], ['a', Symbol('s')], ['a', () => 'x'], [new Date()], null, undefined, 42, {}
  ]
  for (const key of invalidKeys) {
    t.throws(() => keyId(key as string), { code: 'FST_CACHE_INVALID_KEY' }, `keyId(${describe(key)})`)
  }
  for (const pattern of ['', null, undefined, 5, ['a']]) {
    t.throws(() => idPattern(pattern as string), { code: 'FST_CACHE_INVALID_KEY' }, `idPattern(${describe(pattern)})`)
  }
  for (const tag of ['', null, undefined, 5, {}]) {
    t.throws(() => tagId(tag as string), { code: 'FST_CACHE_INVALID_KEY' }, `tagId(${describe(tag)})`)
  }
})

t.test('escapeGlob escapes every Redis glob character', async (t) => {
  t.equal(escapeGlob('cache'), 'cache')
  t.equal(escapeGlob('a*b?c[d]e\\f'), 'a\\*b\\?c\\[d\\]e\\\\f')
})

function describe (value: unknown): string {
  if (typeof value === 'symbol' || typeof value === 'function') return String(value)
  if (Array.isArray(value)) return `[${value.map(describe).join(', ')}]`
  if (value instanceof Date) return 'Date'
  return JSON.stringify(value) ?? String(value)
}

t.test('globMatcher agrees with a reference matcher, and takes patterns too long for a RegExp', async (t) => {
  const texts = ['', 'a', 'ab', 'abc', 'a:b:c', 'exec:dashboard:ws42:7d', 'aaa', 'ab?c', 'x*y']
  const globs = ['*', '', 'a', 'a*', '*c', 'a?c', '?', '??', 'a*b*c', '*:*', 'exec:*:ws42:*', '*a*a*', 'x*y']
  for (const glob of globs) {
    const reference = globToRegExp(glob)
    const matches = globMatcher(glob)
    for (const text of texts) t.equal(matches(text), reference.test(text), `${JSON.stringify(glob)} on ${JSON.stringify(text)}`)
  }
  const long = idPattern('Ω'.repeat(20_000) + ':*')
  t.equal(globMatcher(long)(keyId(['Ω'.repeat(20_000), 'x'])), true, 'a long literal part is hashed in the pattern as in the id, so it matches')
  t.equal(globMatcher('a'.repeat(50_000) + '*')('a'.repeat(50_000) + 'tail'), true)
})
