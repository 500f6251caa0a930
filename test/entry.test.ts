import t from 'tap'
import { randomBytes } from 'node:crypto'
import { type HttpEntry, decodeEntry, encodeEntry, isEntryBytes } from '../lib/entry'

const MARKER = 0x48
const VERSION = 2

function entry (overrides: Partial<HttpEntry> = {}): HttpEntry {
  return {
    status: 200,
    headers: { 'content-type': 'application/octet-stream' },
    body: Buffer.from('hello'),
    storedAt: 1_700_000_000_123,
    ttl: 60,
    etag: '"abc"',
    ...overrides
  }
}

/** Bytes laid out as an entry: marker, version, uint32 BE meta length, meta, body. */
function frame (meta: string | Buffer, body: Buffer = Buffer.alloc(0), options: { marker?: number, version?: number, metaLength?: number } = {}): Buffer {
  const metaBytes = typeof meta === 'string' ? Buffer.from(meta) : meta
  const head = Buffer.alloc(6)
  head[0] = options.marker ?? MARKER
  head[1] = options.version ?? VERSION
  head.writeUInt32BE(options.metaLength ?? metaBytes.length, 2)
  return Buffer.concat([head, metaBytes, body])
}

const VALID_META = [200, { a: 'b' }, 1, 60, '"x"']
/** Version 1 wrote the same fields as an object with one-letter names. */
const VALID_META_V1 = { s: 200, h: { a: 'b' }, t: 1, l: 60, e: '"x"' }
/** The position of each of version 1's names in version 2's array. */
const POSITION = { s: 0, h: 1, t: 2, l: 3, e: 4, d: 5, z: 6, v: 7, r: 8, w: 9, f: 10, o: 11 } as const

/** Valid metadata with one field changed (undefined: left out), in both versions' layouts. */
function withField (name: keyof typeof POSITION, value: unknown): Array<[number, unknown]> {
  const v2: unknown[] = [...VALID_META]
  v2[POSITION[name]] = value === undefined ? null : value
  return [[2, v2], [1, { ...VALID_META_V1, [name]: value }]]
}

t.test('round trip: status, headers, body, times and etag come back unchanged', async (t) => {
  const original = entry({
    status: 203,
    headers: {
      'content-type': 'application/json; charset=utf-8',
      link: ['<a>; rel="next"', '<b>; rel="prev"'],
      'x-unicode': 'é ☃',
      'x-empty': '',
      'x-empty-list': []
    },
    body: Buffer.from('{"a":1}'),
    etag: 'W/"weak,etag"'
  })
  const decoded = decodeEntry(encodeEntry(original))
  t.same(decoded, original)
  t.equal(decoded.status, 203)
  t.same(decoded.headers.link, ['<a>; rel="next"', '<b>; rel="prev"'], 'an array header stays an array')
  t.notOk('vary' in decoded, 'no vary when none was stored')
})

t.test('round trip: a binary body keeps every byte', async (t) => {
  const bodies: Array<[string, Buffer]> = [
    ['every byte value', Buffer.from(Array.from({ length: 256 }, (_, i) => i))],
    ['invalid UTF-8', Buffer.from([0xff, 0xfe, 0xc3, 0x28, 0xed, 0xa0, 0x80, 0x80])],
    ['empty', Buffer.alloc(0)],
    ['starts like an entry', encodeEntry(entry())],
    ['1 MiB of random bytes', randomBytes(1024 * 1024)],
    ['a slice of a bigger buffer', Buffer.from('xxxxBODYyyyy').subarray(4, 8)]
  ]
  for (const [label, body] of bodies) {
    const decoded = decodeEntry(encodeEntry(entry({ body })))
    t.ok(decoded.body.equals(body), label)
    t.equal(decoded.body.length, body.length, `${label}: length`)
  }
})

t.test('round trip: vary values', async (t) => {
  const vary = { 'accept-encoding': 'gzip, br', 'accept-language': '', 'x-tenant': 'é:*?[x]' }
  const decoded = decodeEntry(encodeEntry(entry({ vary })))
  t.same(decoded.vary, vary)
  t.same(decodeEntry(encodeEntry(entry({ vary: {} }))).vary, {}, 'an empty vary record is kept')
})

t.test('the encoded bytes start with the marker, the version and the meta length', async (t) => {
  const bytes = encodeEntry(entry())
  t.equal(bytes[0], MARKER)
  t.equal(bytes[1], VERSION)
  const metaLength = bytes.readUInt32BE(2)
  t.equal(bytes.length, 6 + metaLength + 'hello'.length)
  t.same(JSON.parse(bytes.toString('utf8', 6, 6 + metaLength))[0], 200)
  t.equal(bytes.subarray(6 + metaLength).toString(), 'hello', 'the body is stored raw, after the metadata')
  t.equal(isEntryBytes(bytes), true)
})

t.test('isEntryBytes', async (t) => {
  t.equal(isEntryBytes(Buffer.alloc(0)), false)
  t.equal(isEntryBytes(Buffer.from([MARKER, VERSION, 0, 0, 0])), false, 'shorter than the head')
  t.equal(isEntryBytes(Buffer.from('J{"a":1}')), false, 'a JSON value')
  t.equal(isEntryBytes(frame('{}')), true)
})

t.test('corrupt input: a wrong marker', async (t) => {
  const good = encodeEntry(entry())
  for (const marker of [0x00, 0x4a, 0x53, 0x68, 0xff]) {
    const bytes = Buffer.from(good)
    bytes[0] = marker
    t.throws(() => decodeEntry(bytes), { code: 'FST_CACHE_CORRUPT_ENTRY' }, `marker 0x${marker.toString(16)}`)
  }
  t.throws(() => decodeEntry(Buffer.from('{"s":200}')), { code: 'FST_CACHE_CORRUPT_ENTRY' }, 'plain JSON')
  t.throws(() => decodeEntry(Buffer.alloc(0)), { code: 'FST_CACHE_CORRUPT_ENTRY' }, 'nothing at all')
  t.throws(() => decodeEntry(Buffer.from([MARKER])), { code: 'FST_CACHE_CORRUPT_ENTRY' }, 'the marker alone')
  t.throws(() => decodeEntry(Buffer.from([MARKER, VERSION, 0, 0])), { code: 'FST_CACHE_CORRUPT_ENTRY' }, 'a cut head')
})

t.test('corrupt input: a wrong version', async (t) => {
  for (const version of [0, 3, 0x48, 0xff]) {
    t.throws(() => decodeEntry(frame(JSON.stringify(VALID_META), Buffer.alloc(0), { version })),
      { code: 'FST_CACHE_CORRUPT_ENTRY' }, `version ${version}`)
  }
})

t.test('corrupt input: a meta length past the end', async (t) => {
  const meta = JSON.stringify(VALID_META)
  const metaLength = Buffer.byteLength(meta)
  t.throws(() => decodeEntry(frame(meta, Buffer.alloc(0), { metaLength: metaLength + 1 })), { code: 'FST_CACHE_CORRUPT_ENTRY' }, 'one byte short')
  t.throws(() => decodeEntry(frame(meta, Buffer.alloc(0), { metaLength: 0xffffffff })), { code: 'FST_CACHE_CORRUPT_ENTRY' }, 'the largest length')
  const good = encodeEntry(entry())
  for (const cut of [7, 10, good.readUInt32BE(2) + 5]) {
    t.throws(() => decodeEntry(good.subarray(0, cut)), { code: 'FST_CACHE_CORRUPT_ENTRY' }, `cut at ${cut} bytes`)
  }
})

t.test('corrupt input: metadata that is not JSON', async (t) => {
  for (const meta of ['', '{', '{bad}', 'undefined', "{'s':200}", '{"s":200,}']) {
    t.throws(() => decodeEntry(frame(meta, Buffer.from('body'))), { code: 'FST_CACHE_CORRUPT_ENTRY' }, JSON.stringify(meta))
  }
  t.throws(() => decodeEntry(frame(Buffer.from([0xff, 0xfe, 0xfd]))), { code: 'FST_CACHE_CORRUPT_ENTRY' }, 'binary garbage')
  // A meta length that is short by one byte cuts the JSON.
  const meta = JSON.stringify(VALID_META)
  t.throws(() => decodeEntry(frame(meta, Buffer.from('x'), { metaLength: Buffer.byteLength(meta) - 1 })), { code: 'FST_CACHE_CORRUPT_ENTRY' }, 'cut JSON')
})

t.test('corrupt input: metadata of the wrong shape', async (t) => {
  const whole: Array<[string, number, unknown]> = [
    ['null', 2, null], ['null', 1, null],
    ['an object, in version 2', 2, VALID_META_V1],
    ['an array, in version 1', 1, VALID_META],
    ['a string', 2, 'entry'], ['a string', 1, 'entry'],
    ['a number', 2, 42], ['true', 1, true],
    ['an empty object', 1, {}], ['an empty array', 2, []],
    ['too few fields', 2, [200, { a: 'b' }, 1, 60]],
    ['too many fields', 2, [...VALID_META, 1, 'br', {}, 'always', 1, 1, 1, 'extra']]
  ]
  const fields: Array<[string, keyof typeof POSITION, unknown]> = [
    ['no status', 's', undefined],
    ['a string status', 's', '200'],
    ['a fractional status', 's', 200.5],
    ['no headers', 'h', undefined],
    ['null headers', 'h', null],
    ['string headers', 'h', 'content-type: x'],
    ['no storedAt', 't', undefined],
    ['a string storedAt', 't', '1'],
    ['no ttl', 'l', undefined],
    ['a null ttl', 'l', null],
    ['no etag', 'e', undefined],
    ['a number etag', 'e', 5],
    ['headers as an array', 'h', ['content-type', 'x']],
    ['a number header value', 'h', { 'content-length': 5 }],
    ['an object header value', 'h', { a: { b: 'c' } }],
    ['a header list with a non-string', 'h', { a: ['x', 1] }],
    ['vary as a string', 'v', 'accept'],
    ['vary as an array', 'v', ['accept']],
    ['a number vary value', 'v', { accept: 1 }],
    ['an unknown encoding', 'z', 'gzip'],
    ['a string computeMs', 'd', '5']
  ]
  const cases = [
    ...whole.map(([label, version, meta]) => [`${label} (version ${version})`, version, meta] as const),
    ...fields.flatMap(([label, name, value]) => withField(name, value).map(([version, meta]) => [`${label} (version ${version})`, version, meta] as const))
  ]
  for (const [label, version, meta] of cases) {
    t.throws(() => decodeEntry(frame(JSON.stringify(meta) ?? '', Buffer.alloc(0), { version })), { code: 'FST_CACHE_CORRUPT_ENTRY' }, label)
  }
  t.throws(() => decodeEntry(frame(JSON.stringify({ ...VALID_META_V1, v: null }), Buffer.alloc(0), { version: 1 })),
    { code: 'FST_CACHE_CORRUPT_ENTRY' }, 'vary as null, which version 1 never wrote')
})

t.test('the error is a FST_CACHE_CORRUPT_ENTRY with a message saying what is wrong', async (t) => {
  try {
    decodeEntry(Buffer.from('nope nope'))
    t.fail('should have thrown')
  } catch (err) {
    t.match(err, { code: 'FST_CACHE_CORRUPT_ENTRY', name: 'FastifyError' })
    t.match((err as Error).message, /cache entry cannot be decoded/)
  }
})

t.test('shared-mode fields round trip', async (t) => {
  const shared = entry({ revalidate: 'once-stale', staleWhileRevalidate: 30, staleIfError: 300, originEtag: true })
  t.same(decodeEntry(encodeEntry(shared)), shared)
  const always = entry({ revalidate: 'always' })
  t.same(decodeEntry(encodeEntry(always)), always)
  for (const [name, bad] of [['r', 'sometimes'], ['w', '30'], ['f', 'x']] as const) {
    for (const [version, meta] of withField(name, bad)) {
      t.throws(() => decodeEntry(frame(JSON.stringify(meta), Buffer.alloc(0), { version })), { code: 'FST_CACHE_CORRUPT_ENTRY' }, `a wrong ${name} (version ${version})`)
    }
  }
})

t.test('the metadata holds its fields by position, without names, and leaves out trailing absent ones', async (t) => {
  const metaOf = (bytes: Buffer): unknown => JSON.parse(bytes.toString('utf8', 6, 6 + bytes.readUInt32BE(2)))
  t.same(metaOf(encodeEntry(entry({ computeMs: 3, encoding: 'br' }))),
    [200, { 'content-type': 'application/octet-stream' }, 1_700_000_000_123, 60, '"abc"', 3, 'br'])
  t.same(metaOf(encodeEntry(entry({ vary: { accept: 'x' } }))),
    [200, { 'content-type': 'application/octet-stream' }, 1_700_000_000_123, 60, '"abc"', null, null, { accept: 'x' }],
    'an absent field before a present one is null')
})

t.test('entries of version 1 (named fields) still decode, every field included', async (t) => {
  const full = {
    s: 203,
    h: { 'content-type': 'text/plain', link: ['<a>', '<b>'] },
    t: 5,
    l: 60,
    e: 'W/"w"',
    v: { accept: 'x' },
    d: 12,
    z: 'br',
    r: 'always',
    w: 30,
    f: 300,
    o: 1
  }
  t.same(decodeEntry(frame(JSON.stringify(full), Buffer.from('b'), { version: 1 })), {
    status: 203,
    headers: { 'content-type': 'text/plain', link: ['<a>', '<b>'] },
    body: Buffer.from('b'),
    storedAt: 5,
    ttl: 60,
    etag: 'W/"w"',
    vary: { accept: 'x' },
    computeMs: 12,
    encoding: 'br',
    revalidate: 'always',
    staleWhileRevalidate: 30,
    staleIfError: 300,
    originEtag: true
  })
  const old = decodeEntry(frame(JSON.stringify(VALID_META_V1), Buffer.from('b'), { version: 1 }))
  t.same(old, { status: 200, headers: { a: 'b' }, body: Buffer.from('b'), storedAt: 1, ttl: 60, etag: '"x"' }, 'no absent field appears')
})
