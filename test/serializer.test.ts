import t from 'tap'
import { randomBytes } from 'node:crypto'
import { FST_CACHE_CORRUPT_VALUE, FST_CACHE_UNSERIALIZABLE } from '../lib/errors'
import { decodeValue, encodeValue, isValueBytes } from '../lib/serializer'

const J = 0x4a
const S = 0x53

function roundTrip (value: unknown): unknown {
  return decodeValue(encodeValue(value))
}

function marker (value: unknown): number {
  return encodeValue(value)[0]
}

/** Builds raw stored bytes, as a store (or an attacker with store access) could hold them. */
function raw (text: string): Buffer {
  return Buffer.from(text, 'utf8')
}

t.test('plain JSON data uses the J marker and plain JSON text', async (t) => {
  const value = { a: 1, b: [1, 'x', true, null, 2.5, -3], c: { d: 'é ☃ 𝄞', e: {} }, f: [] }
  const bytes = encodeValue(value)
  t.equal(bytes[0], J)
  t.equal(bytes.subarray(1).toString('utf8'), JSON.stringify(value))
  t.strictSame(decodeValue(bytes), value)
  for (const primitive of ['str', '', 0, 42, -1.5, true, false, null]) {
    t.equal(marker(primitive), J, `marker for ${JSON.stringify(primitive)}`)
    t.equal(roundTrip(primitive), primitive)
  }
  const hidden = Object.defineProperty({ a: 1 }, Symbol('hidden'), { value: 1 })
  t.equal(marker(hidden), J, 'a non-enumerable symbol key is not data, like any non-enumerable property')
  t.strictSame(roundTrip(hidden), { a: 1 })
  t.equal(roundTrip('\ud800 lone surrogate'), '\ud800 lone surrogate', 'lone surrogates survive')
})

t.test('non-JSON values use the S marker', async (t) => {
  const cases: Array<[string, unknown]> = [
    ['undefined', undefined],
    ['-0', -0],
    ['NaN', NaN],
    ['bigint', 1n],
    ['date', new Date(0)],
    ['map', new Map()],
    ['undefined property', { a: undefined }],
    ['array hole', [1, , 3]], // eslint-disable-line no-sparse-arrays
    ['nested Infinity', { a: [{ b: Infinity }] }],
    ['buffer', Buffer.from('x')]
  ]
  for (const [name, value] of cases) t.equal(marker(value), S, name)
})

t.test('primitives and special numbers', async (t) => {
  t.equal(roundTrip(undefined), undefined)
  t.ok(Number.isNaN(roundTrip(NaN)))
  t.equal(roundTrip(Infinity), Infinity)
  t.equal(roundTrip(-Infinity), -Infinity)
  t.ok(Object.is(roundTrip(-0), -0), '-0 stays -0')
  const arr = roundTrip([NaN, Infinity, -Infinity, -0, 0]) as number[]
  t.ok(Number.isNaN(arr[0]))
  t.equal(arr[1], Infinity)
  t.equal(arr[2], -Infinity)
  t.ok(Object.is(arr[3], -0))
  t.ok(Object.is(arr[4], 0))
})

t.test('BigInt', async (t) => {
  const big = 2n ** 200n + 7n
  t.equal(roundTrip(0n), 0n)
  t.equal(roundTrip(-123n), -123n)
  t.equal(roundTrip(big), big)
  t.strictSame(roundTrip({ n: [big, -big] }), { n: [big, -big] })
})

t.test('Date, including invalid dates', async (t) => {
  const date = new Date('2024-02-29T12:34:56.789Z')
  const out = roundTrip(date)
  t.ok(out instanceof Date)
  t.equal((out as Date).getTime(), date.getTime())
  const invalid = roundTrip(new Date('nope'))
  t.ok(invalid instanceof Date)
  t.ok(Number.isNaN((invalid as Date).getTime()), 'invalid date stays invalid')
})

t.test('Map and Set with any keys', async (t) => {
  const objKey = { id: 1 }
  const map = new Map<unknown, unknown>([['a', 1], [2, 'two'], [objKey, [1, 2]], [undefined, null], [NaN, 'nan']])
  const out = roundTrip(map) as Map<unknown, unknown>
  t.ok(out instanceof Map)
  t.equal(out.size, 5)
  t.equal(out.get('a'), 1)
  t.equal(out.get(2), 'two')
  t.equal(out.get(undefined), null)
  t.equal(out.get(NaN), 'nan')
  t.strictSame([...out.keys()][2], objKey)
  t.strictSame(out, map)

  const set = new Set<unknown>([1, 'x', { y: 2 }, new Set([3])])
  const outSet = roundTrip(set) as Set<unknown>
  t.ok(outSet instanceof Set)
  t.ok([...outSet][3] instanceof Set)
  t.strictSame(outSet, set)
})

t.test('nested combos: Map of Sets of Dates, undefined in objects and arrays', async (t) => {
  const value = {
    schedule: new Map([
      ['mon', new Set([new Date(1000), new Date(2000)])],
      ['tue', new Set<Date>()]
    ]),
    maybe: undefined,
    list: [1, undefined, { deep: undefined, n: -0 }],
    nested: { m: new Map([[new Set(['k']), new Map([[1n, new Date(3000)]])]]) }
  }
  const out = roundTrip(value) as typeof value
  t.ok(out.schedule instanceof Map)
  const mon = out.schedule.get('mon')
  t.ok(mon instanceof Set)
  for (const d of mon ?? []) t.ok(d instanceof Date)
  t.same([...(mon ?? [])].map((d) => d.getTime()), [1000, 2000])
  t.ok(Object.hasOwn(out, 'maybe'), 'undefined property is kept as an own property')
  t.equal(out.maybe, undefined)
  t.equal(out.list.length, 3)
  t.ok(1 in out.list, 'undefined array element is present')
  t.ok(Object.hasOwn(out.list[2] as object, 'deep'))
  t.ok(Object.is((out.list[2] as { n: number }).n, -0))
  const [[innerKey, innerMap]] = [...out.nested.m]
  t.ok(innerKey instanceof Set)
  t.ok(innerMap instanceof Map)
  t.ok(innerMap.get(1n) instanceof Date)
  t.strictSame(out, value)
})

t.test('array holes come back as undefined elements', async (t) => {
  const out = roundTrip([1, , 3]) as unknown[] // eslint-disable-line no-sparse-arrays
  t.equal(out.length, 3)
  t.equal(out[1], undefined)
  t.equal(out[2], 3)
})

t.test('Buffer comes back as Buffer, large ones too', async (t) => {
  const small = Buffer.from('héllo\0\xff')
  const out = roundTrip(small)
  t.ok(Buffer.isBuffer(out))
  t.ok(small.equals(out as Buffer))
  t.ok(Buffer.isBuffer(roundTrip(Buffer.alloc(0))))
  const large = randomBytes(1024 * 1024 + 3)
  const outLarge = roundTrip({ body: large }) as { body: Buffer }
  t.ok(Buffer.isBuffer(outLarge.body))
  t.ok(large.equals(outLarge.body))
})

t.test('every typed array class keeps its class and contents', async (t) => {
  const views: ArrayBufferView[] = [
    new Int8Array([-128, 0, 127]),
    new Uint8Array([0, 1, 255]),
    new Uint8ClampedArray([0, 128, 255]),
    new Int16Array([-32768, 1, 32767]),
    new Uint16Array([0, 65535]),
    new Int32Array([-2147483648, 2147483647]),
    new Uint32Array([0, 4294967295]),
    new Float32Array([1.5, -0, NaN, Infinity]),
    new Float64Array([Math.PI, -0, NaN, -Infinity, Number.MIN_VALUE]),
    new BigInt64Array([-(2n ** 63n), 2n ** 63n - 1n]),
    new BigUint64Array([0n, 2n ** 64n - 1n]),
    new Float64Array(0)
  ]
  for (const view of views) {
    const out = roundTrip(view) as ArrayBufferView
    const name = view.constructor.name
    t.equal(Object.getPrototypeOf(out), Object.getPrototypeOf(view), `${name} class`)
    t.strictSame(Array.from(out as unknown as ArrayLike<unknown>), Array.from(view as unknown as ArrayLike<unknown>), `${name} contents`)
    t.ok(Buffer.from(out.buffer, out.byteOffset, out.byteLength).equals(Buffer.from(view.buffer, view.byteOffset, view.byteLength)), `${name} bytes`)
  }
  t.ok(Object.is((roundTrip(new Float64Array([-0])) as Float64Array)[0], -0), 'Float64Array keeps -0')
})

t.test('typed array that is a window on a larger buffer', async (t) => {
  const backing = new Int16Array([1, 2, 3, 4, 5])
  const window = backing.subarray(1, 4)
  const out = roundTrip(window) as Int16Array
  t.ok(out instanceof Int16Array)
  t.strictSame(Array.from(out), [2, 3, 4])
  t.equal(out.byteOffset, 0)
  t.equal(out.buffer.byteLength, 6, 'only the window is stored')
})

t.test('DataView and ArrayBuffer', async (t) => {
  const ab = new Uint8Array([1, 2, 3, 250]).buffer
  const outAb = roundTrip(ab)
  t.ok(outAb instanceof ArrayBuffer)
  t.strictSame(Array.from(new Uint8Array(outAb as ArrayBuffer)), [1, 2, 3, 250])
  const dv = new DataView(ab, 1, 2)
  const outDv = roundTrip(dv)
  t.ok(outDv instanceof DataView)
  t.equal((outDv as DataView).getUint16(0), dv.getUint16(0))
})

t.test('RegExp keeps source and flags', async (t) => {
  for (const re of [/a+b/, /^\/path\/(\d+)$/gimsuy, /x/d, /caf\u00e9+ [\p{L}]/iu]) {
    const out = roundTrip(re)
    t.ok(out instanceof RegExp)
    t.equal((out as RegExp).source, re.source)
    t.equal((out as RegExp).flags, re.flags)
  }
})

t.test('null-prototype objects come back as plain objects', async (t) => {
  const bare = Object.assign(Object.create(null) as Record<string, unknown>, { a: 1 })
  for (const value of [bare, { inner: bare, when: new Date(5) }]) {
    const out = roundTrip(value) as Record<string, unknown>
    const obj = (out.inner ?? out) as object
    t.equal(Object.getPrototypeOf(obj), Object.prototype)
    t.same(obj, { a: 1 })
  }
})

t.test('shared non-circular references are allowed (duplicated)', async (t) => {
  const shared = { x: 1 }
  const out = roundTrip({ a: shared, b: shared, c: new Map([[shared, shared]]) }) as { a: object, b: object }
  t.strictSame(out.a, shared)
  t.strictSame(out.b, shared)
})

t.test('a user object owning the reserved key round-trips', async (t) => {
  const tricky = { '\u0000': 'd', v: 5 }
  t.equal(marker(tricky), J, 'plain JSON does not need escaping')
  t.strictSame(roundTrip(tricky), tricky)

  const value = { tricky, when: new Date(1), list: [{ '\u0000': 'u' }, { '\u0000': 'zz', v: [undefined] }] }
  const bytes = encodeValue(value)
  t.equal(bytes[0], S)
  const out = roundTrip(value) as typeof value
  t.strictSame(out, value)
  t.equal(out.tricky.v, 5)
  t.ok(out.when instanceof Date)
  t.strictSame(roundTrip(new Map([['k', { '\u0000': 's', v: [] }]])), new Map([['k', { '\u0000': 's', v: [] }]]))
})

t.test('__proto__ keys stay own properties and never pollute', async (t) => {
  const value = JSON.parse('{"__proto__": {"polluted": true}, "a": 1}') as Record<string, unknown>
  value.when = new Date(0)
  const out = roundTrip(value) as Record<string, unknown>
  t.ok(Object.hasOwn(out, '__proto__'), 'own __proto__ property')
  t.equal(Object.getPrototypeOf(out), Object.prototype)
  t.strictSame(Object.getOwnPropertyDescriptor(out, '__proto__')?.value, { polluted: true })
  t.equal(out.polluted, undefined)

  const payloads = [
    'S{"__proto__":{"polluted":true},"x":{"\\u0000":"o","v":[["__proto__",{"polluted":1}]]}}',
    'S{"a":{"\\u0000":"m","v":[["__proto__",{"__proto__":{"polluted":2}}]]}}',
    'J{"__proto__":{"polluted":3}}',
    'S{"constructor":{"prototype":{"polluted":4}}}'
  ]
  for (const payload of payloads) {
    const decoded = decodeValue(raw(payload)) as Record<string, unknown>
    t.equal(Object.getPrototypeOf(decoded), Object.prototype)
    t.equal(({} as Record<string, unknown>).polluted, undefined, `no pollution from ${payload}`)
    t.equal(decoded.polluted, undefined)
  }
  const escaped = decodeValue(raw(payloads[0])) as { x: Record<string, unknown> }
  t.ok(Object.hasOwn(escaped.x, '__proto__'))
  t.equal(Object.getPrototypeOf(escaped.x), Object.prototype)
})

t.test('unserializable values throw FST_CACHE_UNSERIALIZABLE', async (t) => {
  class Foo { x = 1 }
  class MyMap extends Map {}
  const circular: Record<string, unknown> = { a: { b: {} } }
  ;((circular.a as Record<string, unknown>).b as Record<string, unknown>).c = circular
  const loopMap = new Map<string, unknown>()
  loopMap.set('self', [loopMap])
  const cases: Array<[string, unknown, RegExp]> = [
    ['function', { a: { b: () => 1 } }, /function at value\.a\.b$/],
    ['symbol', [1, Symbol('s')], /symbol at value\[1\]$/],
    ['symbol key', { a: { [Symbol('k')]: 1 } }, /symbol-keyed property at value\.a$/],
    ['top-level function', function named () {}, /function at value$/],
    ['toJSON is not silently called', { a: { toJSON: () => 'x' } }, /function at value\.a\.toJSON$/],
    ['circular', circular, /circular reference at value\.a\.b\.c$/],
    ['circular through Map', loopMap, /circular reference at value\[map value #0\]\[0\]$/],
    ['class instance', { list: [new Foo()] }, /instance of class Foo at value\.list\[0\]$/],
    ['Map subclass', new MyMap(), /instance of class MyMap/],
    ['Error', new Error('x'), /instance of class Error/],
    ['boxed string', { 'odd key': Object('s') }, /instance of class String at value\["odd key"\]$/],
    ['Promise', Promise.resolve(), /instance of class Promise/],
    ['WeakMap', new WeakMap(), /instance of class WeakMap/],
    ['fake array', Object.create(Array.prototype), /instance of class Array at value$/],
    ['anonymous class', new (class {})(), /instance of class \(anonymous\)/],
    ['prototype without constructor', Object.create(Object.create(null)), /instance of class \(anonymous\)/]
  ]
  for (const [name, value, message] of cases) {
    t.throws(() => encodeValue(value), { code: 'FST_CACHE_UNSERIALIZABLE', statusCode: 500, message }, name)
  }
  const err = (() => { try { encodeValue(() => 1) } catch (e) { return e } })()
  t.ok(err instanceof FST_CACHE_UNSERIALIZABLE)
})

t.test('corrupt input throws FST_CACHE_CORRUPT_VALUE', async (t) => {
  const cases: Array<[string, Buffer, RegExp?]> = [
    ['empty', Buffer.alloc(0), /empty/],
    ['unknown marker', raw('X{}'), /unknown format marker 0x58/],
    ['bad JSON after J', raw('J{"a":'), undefined],
    ['bad JSON after S', raw('S[1,'), undefined],
    ['marker only', raw('J'), undefined],
    ['invalid UTF-8', Buffer.from([J, 0x22, 0xff, 0x22]), /invalid UTF-8/],
    ['unknown tag', raw('S{"\\u0000":"zz","v":1}'), /unknown tag "zz"/],
    ['non-string tag', raw('S{"\\u0000":{"x":1}}'), /unknown tag/],
    ['bad bigint', raw('S{"\\u0000":"b","v":"12abc"}'), /bad payload for tag "b"/],
    ['bad special number', raw('S{"\\u0000":"n","v":"Nope"}'), /bad special number/],
    ['bad date', raw('S{"\\u0000":"d","v":"2020"}'), /tag "d"/],
    ['bad base64', raw('S{"\\u0000":"B","v":"ab$="}'), /bad base64/],
    ['unknown view class', raw('S{"\\u0000":"t","c":"Function","v":""}'), /unknown view class "Function"/],
    ['non-string view class', raw('S{"\\u0000":"t","c":5,"v":""}'), /unknown view class 5/],
    ['inherited view name', raw('S{"\\u0000":"t","c":"constructor","v":""}'), /unknown view class/],
    ['bad view length', raw('S{"\\u0000":"t","c":"Int32Array","v":"AAE="}'), /bad Int32Array length/],
    ['bad regexp flags', raw('S{"\\u0000":"r","v":"a","f":"zz"}'), undefined],
    ['bad map pair', raw('S{"\\u0000":"m","v":[[1]]}'), /pairs/],
    ['bad escaped key', raw('S{"\\u0000":"o","v":[[1,2]]}'), /tag "o"/]
  ]
  for (const [name, bytes, message] of cases) {
    t.throws(() => decodeValue(bytes), { code: 'FST_CACHE_CORRUPT_VALUE', statusCode: 500, ...(message ? { message } : {}) }, name)
  }
  t.throws(() => decodeValue('J1' as unknown as Buffer), { code: 'FST_CACHE_CORRUPT_VALUE' }, 'not a Buffer')
  const err = (() => { try { decodeValue(raw('S[')) } catch (e) { return e } })()
  t.ok(err instanceof FST_CACHE_CORRUPT_VALUE)
  t.ok((err as Error).cause instanceof SyntaxError, 'keeps the JSON error as cause')
})

t.test('isValueBytes recognises only the markers', async (t) => {
  t.ok(isValueBytes(encodeValue({ a: 1 })))
  t.ok(isValueBytes(encodeValue(new Date())))
  t.notOk(isValueBytes(Buffer.alloc(0)))
  t.notOk(isValueBytes(raw('{"a":1}')))
  t.notOk(isValueBytes(raw('x')))
})
