import t from 'tap'
import { randomBytes } from 'node:crypto'
import { type HttpEntry, decodeEntry, encodeEntry, isEntryBytes } from '../lib/entry'

const MARKER = 0x48
const VERSION = 1

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

const VALID_META = { s: 200, h: { a: 'b' }, t: 1, l: 60, e: '"x"' }

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
  t.same(JSON.parse(bytes.toString('utf8', 6, 6 + metaLength)).s, 200)
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
  for (const version of [0, 2, 0x48, 0xff]) {
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
  const cases: Array<[string, unknown]> = [
    ['null', null],
    ['an array', [200, {}, 1, 60, '"x"']],
    ['a string', 'entry'],
    ['a number', 42],
    ['true', true],
    ['an empty object', {}],
    ['no status', { ...VALID_META, s: undefined }],
    ['a string status', { ...VALID_META, s: '200' }],
    ['a fractional status', { ...VALID_META, s: 200.5 }],
    ['no headers', { ...VALID_META, h: undefined }],
    ['null headers', { ...VALID_META, h: null }],
    ['string headers', { ...VALID_META, h: 'content-type: x' }],
    ['no storedAt', { ...VALID_META, t: undefined }],
    ['a string storedAt', { ...VALID_META, t: '1' }],
    ['no ttl', { ...VALID_META, l: undefined }],
    ['a null ttl', { ...VALID_META, l: null }],
    ['no etag', { ...VALID_META, e: undefined }],
    ['a number etag', { ...VALID_META, e: 5 }]
  ]
  for (const [label, meta] of cases) {
    t.throws(() => decodeEntry(frame(JSON.stringify(meta) ?? '')), { code: 'FST_CACHE_CORRUPT_ENTRY' }, label)
  }
})

t.test('corrupt input: headers and vary of the wrong inner shape', async (t) => {
  const cases: Array<[string, unknown]> = [
    ['headers as an array', { ...VALID_META, h: ['content-type', 'x'] }],
    ['a number header value', { ...VALID_META, h: { 'content-length': 5 } }],
    ['an object header value', { ...VALID_META, h: { a: { b: 'c' } } }],
    ['a header list with a non-string', { ...VALID_META, h: { a: ['x', 1] } }],
    ['vary as a string', { ...VALID_META, v: 'accept' }],
    ['vary as null', { ...VALID_META, v: null }],
    ['vary as an array', { ...VALID_META, v: ['accept'] }],
    ['a number vary value', { ...VALID_META, v: { accept: 1 } }]
  ]
  for (const [label, meta] of cases) {
    t.throws(() => decodeEntry(frame(JSON.stringify(meta))), { code: 'FST_CACHE_CORRUPT_ENTRY' }, label)
  }
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

t.test('shared-mode fields round trip, and entries written before them still decode', async (t) => {
  const shared = entry({ revalidate: 'once-stale', staleWhileRevalidate: 30, staleIfError: 300, originEtag: true })
  t.same(decodeEntry(encodeEntry(shared)), shared)
  const always = entry({ revalidate: 'always' })
  t.same(decodeEntry(encodeEntry(always)), always)
  const old = decodeEntry(frame(JSON.stringify(VALID_META), Buffer.from('b')))
  t.same(old, { status: 200, headers: { a: 'b' }, body: Buffer.from('b'), storedAt: 1, ttl: 60, etag: '"x"' }, 'no new field appears')
  for (const [name, bad] of [['r', 'sometimes'], ['w', '30'], ['f', null]] as const) {
    t.throws(() => decodeEntry(frame(JSON.stringify({ ...VALID_META, [name]: bad }))), { code: 'FST_CACHE_CORRUPT_ENTRY' }, `a wrong ${name}`)
  }
})
