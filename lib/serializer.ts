import { isUtf8 } from 'node:buffer'
import { endianness } from 'node:os'
import { FST_CACHE_CORRUPT_VALUE, FST_CACHE_UNSERIALIZABLE } from './errors'

/*
 * Wire format: one marker byte, then UTF-8 JSON text.
 *   'J' + JSON           the value itself; chosen only when JSON.parse gives back exactly the same value.
 *   'S' + tagged JSON    non-JSON values become {"\u0000": tag, "v": payload, ...}; plain objects that
 *                        own the "\u0000" key are escaped as {"\u0000": "o", "v": [[key, value], ...]}.
 * Decoding only ever builds data (no eval, no constructor named by the data except a fixed whitelist).
 */
const JSON_MARKER = 0x4a // 'J'
const TAGGED_MARKER = 0x53 // 'S'
const TAG = '\u0000'

type Json = null | boolean | number | string | Json[] | { [key: string]: Json }
type Payload = { string: string, number: number, array: unknown[] }
type ViewCtor = (new (buffer: ArrayBuffer) => ArrayBufferView) & { readonly BYTES_PER_ELEMENT?: number }

// Fixed whitelist: a stored class name can only ever select one of these constructors.
const VIEW_CTORS: ViewCtor[] = [
  Int8Array, Uint8Array, Uint8ClampedArray, Int16Array, Uint16Array, Int32Array, Uint32Array,
  Float32Array, Float64Array, BigInt64Array, BigUint64Array, DataView
]
const VIEW_BY_NAME = new Map(VIEW_CTORS.map((ctor) => [ctor.name, ctor]))
const VIEW_BY_PROTO = new Map<object, ViewCtor>(VIEW_CTORS.map((ctor) => [ctor.prototype, ctor]))
// Typed array bytes are stored little-endian so a cache shared by mixed hosts reads them back correctly.
const BIG_ENDIAN = endianness() === 'BE'
const SPECIAL_NUMBERS = new Set(['NaN', 'Infinity', '-Infinity', '-0'])
const BIGINT = /^-?\d+$/ // BigInt() alone would also take '', ' 7 ' and '0x7'
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/
const IDENTIFIER = /^[A-Za-z_$][\w$]*$/

export function isValueBytes (bytes: Buffer): boolean {
  return bytes.length > 0 && (bytes[0] === JSON_MARKER || bytes[0] === TAGGED_MARKER)
}

export function encodeValue (value: unknown): Buffer {
  if (isJsonExact(value, new Set())) return Buffer.from('J' + JSON.stringify(value))
  return Buffer.from('S' + JSON.stringify(encodeNode(value, 'value', new Set())))
}

export function decodeValue (bytes: Buffer): unknown {
  if (!Buffer.isBuffer(bytes)) throw new FST_CACHE_CORRUPT_VALUE('expected a Buffer')
  if (bytes.length === 0) throw new FST_CACHE_CORRUPT_VALUE('empty')
  if (!isValueBytes(bytes)) throw new FST_CACHE_CORRUPT_VALUE(`unknown format marker 0x${bytes[0].toString(16)}`)
  // toString() would silently turn bad bytes into U+FFFD; refuse them instead.
  if (!isUtf8(bytes)) throw new FST_CACHE_CORRUPT_VALUE('invalid UTF-8')
  try {
    const parsed: unknown = JSON.parse(bytes.toString('utf8', 1))
    return bytes[0] === JSON_MARKER ? parsed : decodeNode(parsed)
  } catch (err) {
    if (err instanceof FST_CACHE_CORRUPT_VALUE) throw err
    // JSON syntax, bad RegExp flags, stack overflow on absurd nesting...: all mean "not our bytes".
    throw new FST_CACHE_CORRUPT_VALUE((err as Error).message, { cause: err })
  }
}

// ---- the exactness walk: true only if JSON.stringify + JSON.parse give the same value back ----
function isJsonExact (value: unknown, ancestors: Set<object>): boolean {
  switch (typeof value) {
    case 'string': case 'boolean': return true
    case 'number': return Number.isFinite(value) && !Object.is(value, -0)
    case 'object': break
    default: return false // undefined, bigint, function, symbol
  }
  if (value === null) return true
  if (ancestors.has(value)) return false // a cycle: the structured encoder reports it with its path
  ancestors.add(value)
  const proto: unknown = Object.getPrototypeOf(value)
  // Anything else (Date, Map, Buffer, class instances) has a JSON form that does not parse back to it.
  // In plain objects a toJSON method is a function (non-exact), and JSON would drop symbol keys.
  const exact = proto === Array.prototype && Array.isArray(value)
    ? arrayIsExact(value, ancestors)
    : (proto === Object.prototype || proto === null) && !hasEnumerableSymbolKey(value) && objectIsExact(value as Record<string, unknown>, ancestors)
  ancestors.delete(value)
  return exact
}

function arrayIsExact (array: unknown[], ancestors: Set<object>): boolean {
  // A hole reads as undefined, which is already non-exact, so holes need no separate check.
  for (let i = 0; i < array.length; i++) if (!isJsonExact(array[i], ancestors)) return false
  return true
}

function objectIsExact (obj: Record<string, unknown>, ancestors: Set<object>): boolean {
  for (const key of Object.keys(obj)) if (!isJsonExact(obj[key], ancestors)) return false
  return true
}

// ---- structured encoding: value -> JSON-safe tagged tree ----
function encodeNode (value: unknown, path: string, ancestors: Set<object>): Json {
  switch (typeof value) {
    case 'string': case 'boolean': return value
    case 'number': return encodeNumber(value)
    case 'bigint': return { [TAG]: 'b', v: value.toString() }
    case 'undefined': return { [TAG]: 'u' }
    case 'object': return value === null ? null : encodeObject(value, path, ancestors)
    default: throw new FST_CACHE_UNSERIALIZABLE(`${typeof value} at ${path}`) // function, symbol
  }
}

function encodeNumber (n: number): Json {
  if (Number.isFinite(n) && !Object.is(n, -0)) return n
  return { [TAG]: 'n', v: Object.is(n, -0) ? '-0' : String(n) } // 'NaN', 'Infinity', '-Infinity'
}

function encodeObject (value: object, path: string, ancestors: Set<object>): Json {
  // Only ancestors count: a shared but acyclic reference is legal and simply written twice.
  if (ancestors.has(value)) throw new FST_CACHE_UNSERIALIZABLE(`circular reference at ${path}`)
  ancestors.add(value)
  const encoded = encodeByClass(value, path, ancestors)
  ancestors.delete(value)
  return encoded
}

function encodeByClass (value: object, path: string, ancestors: Set<object>): Json {
  // Exact prototype checks: a subclass would come back as its base class, so it is refused instead.
  const proto: object | null = Object.getPrototypeOf(value)
  switch (proto) {
    case null: case Object.prototype: return encodePlain(value as Record<string, unknown>, path, ancestors)
    case Array.prototype: if (Array.isArray(value)) return encodeArray(value, path, ancestors); break
    case Date.prototype: return { [TAG]: 'd', v: (value as Date).getTime() } // an invalid date's NaN is written as null
    case RegExp.prototype: return { [TAG]: 'r', v: (value as RegExp).source, f: (value as RegExp).flags }
    case Buffer.prototype: return { [TAG]: 'B', v: (value as Buffer).toString('base64') }
    case ArrayBuffer.prototype: return { [TAG]: 'a', v: Buffer.from(value as ArrayBuffer).toString('base64') }
    case Map.prototype: return { [TAG]: 'm', v: encodeMap(value as Map<unknown, unknown>, path, ancestors) }
    case Set.prototype: return { [TAG]: 's', v: encodeSet(value as Set<unknown>, path, ancestors) }
  }
  const view = VIEW_BY_PROTO.get(proto)
  if (view !== undefined) return { [TAG]: 't', c: view.name, v: viewBytes(value as ArrayBufferView, view).toString('base64') }
  throw new FST_CACHE_UNSERIALIZABLE(`instance of class ${className(proto)} at ${path}`)
}

function encodePlain (obj: Record<string, unknown>, path: string, ancestors: Set<object>): Json {
  if (hasEnumerableSymbolKey(obj)) throw new FST_CACHE_UNSERIALIZABLE(`symbol-keyed property at ${path}`)
  const keys = Object.keys(obj)
  if (Object.hasOwn(obj, TAG)) {
    // The user's object looks like a tag: store it as an entry list, which decoding never mistakes for one.
    return { [TAG]: 'o', v: keys.map((key) => [key, encodeNode(obj[key], childPath(path, key), ancestors)]) }
  }
  const out: { [key: string]: Json } = {}
  for (const key of keys) setOwn(out, key, encodeNode(obj[key], childPath(path, key), ancestors))
  return out
}

function encodeArray (array: unknown[], path: string, ancestors: Set<object>): Json {
  // Array.from, unlike map, visits holes: they are stored as undefined instead of JSON's null.
  return Array.from(array, (item, i) => encodeNode(item, `${path}[${i}]`, ancestors))
}

function encodeMap (map: Map<unknown, unknown>, path: string, ancestors: Set<object>): Json {
  return Array.from(map, ([key, val], i) =>
    [encodeNode(key, `${path}[map key #${i}]`, ancestors), encodeNode(val, `${path}[map value #${i}]`, ancestors)])
}

function encodeSet (set: Set<unknown>, path: string, ancestors: Set<object>): Json {
  return Array.from(set, (item, i) => encodeNode(item, `${path}[set item #${i}]`, ancestors))
}

function viewBytes (view: ArrayBufferView, ctor: ViewCtor): Buffer {
  const bytes = Buffer.from(view.buffer, view.byteOffset, view.byteLength) // shares memory, no copy
  /* c8 ignore next */ // big-endian hosts only; copy first so the caller's data is never mutated
  return BIG_ENDIAN ? swapBytes(Buffer.from(bytes), ctor) : bytes
}

// ---- structured decoding: tagged tree -> value ----
function decodeNode (node: unknown): unknown {
  if (typeof node !== 'object' || node === null) return node
  if (Array.isArray(node)) return node.map((item) => decodeNode(item))
  const obj = node as Record<string, unknown>
  if (Object.hasOwn(obj, TAG)) return decodeTagged(obj)
  const out: Record<string, unknown> = {}
  for (const key of Object.keys(obj)) setOwn(out, key, decodeNode(obj[key]))
  return out
}

function decodeTagged (node: Record<string, unknown>): unknown {
  const tag = node[TAG]
  const v = node.v
  switch (tag) {
    case 'u': return undefined
    case 'n': return decodeSpecialNumber(v)
    case 'b': return BigInt(expect(v, 'string', tag, BIGINT))
    case 'd': return new Date(v === null ? NaN : expect(v, 'number', tag))
    case 'r': return new RegExp(expect(v, 'string', tag), expect(node.f, 'string', tag))
    case 'm': return new Map(expect(v, 'array', tag).map((pair) => decodePair(pair, tag)))
    case 's': return new Set(expect(v, 'array', tag).map((item) => decodeNode(item)))
    case 'o': return decodeEntries(expect(v, 'array', tag))
    case 'B': return decodeBase64(v, tag)
    case 'a': return new Uint8Array(decodeBase64(v, tag)).buffer // a copy: base64 Buffers may sit in a shared pool
    case 't': return decodeView(node.c, v)
    default: throw new FST_CACHE_CORRUPT_VALUE(`unknown tag ${JSON.stringify(tag)}`)
  }
}

function decodeSpecialNumber (v: unknown): number {
  // Number() would also accept "12" or "": only the four spellings encodeNumber writes are valid.
  if (typeof v !== 'string' || !SPECIAL_NUMBERS.has(v)) throw new FST_CACHE_CORRUPT_VALUE(`bad special number ${JSON.stringify(v)}`)
  return Number(v)
}

function decodePair (pair: unknown, tag: string): [unknown, unknown] {
  const items = expect(pair, 'array', tag)
  if (items.length !== 2) throw new FST_CACHE_CORRUPT_VALUE(`tag "${tag}" needs [key, value] pairs`)
  return [decodeNode(items[0]), decodeNode(items[1])]
}

function decodeEntries (entries: unknown[]): Record<string, unknown> {
  const out: Record<string, unknown> = {}
  for (const [key, val] of entries.map((entry) => decodePair(entry, 'o'))) setOwn(out, expect(key, 'string', 'o'), val)
  return out
}

function decodeView (className: unknown, v: unknown): ArrayBufferView {
  const Ctor = typeof className === 'string' ? VIEW_BY_NAME.get(className) : undefined
  if (Ctor === undefined) throw new FST_CACHE_CORRUPT_VALUE(`unknown view class ${JSON.stringify(className)}`)
  const bytes = decodeBase64(v, 't')
  if (bytes.length % (Ctor.BYTES_PER_ELEMENT ?? 1) !== 0) throw new FST_CACHE_CORRUPT_VALUE(`bad ${Ctor.name} length`)
  const buffer = new Uint8Array(bytes).buffer // a fresh, aligned copy the view owns alone
  /* c8 ignore next */ // big-endian hosts only; swaps in place, and swapping twice restores the order
  if (BIG_ENDIAN) swapBytes(Buffer.from(buffer), Ctor)
  return new Ctor(buffer)
}

function decodeBase64 (v: unknown, tag: string): Buffer {
  // Buffer.from(_, 'base64') skips junk characters silently; reject them so corruption is noticed.
  const text = expect(v, 'string', tag)
  if (text.length % 4 !== 0 || !BASE64.test(text)) throw new FST_CACHE_CORRUPT_VALUE(`tag "${tag}" has bad base64`)
  return Buffer.from(text, 'base64')
}

/** Checks a payload's type: a wrong one would otherwise be coerced (new Date('x'), new Set('abc')) into garbage. */
function expect<K extends keyof Payload> (v: unknown, kind: K, tag: string, shape?: RegExp): Payload[K] {
  const ok = kind === 'array' ? Array.isArray(v) : kind === 'number' ? typeof v === 'number' : typeof v === 'string' && (shape?.test(v) ?? true)
  if (ok) return v as Payload[K]
  throw new FST_CACHE_CORRUPT_VALUE(`bad payload for tag "${tag}"`)
}

// ---- shared helpers ----
/** `obj[key] = value` would set the prototype when key is "__proto__"; define an own property instead. */
function setOwn<T> (obj: Record<string, T>, key: string, value: T): void {
  if (key === '__proto__') Object.defineProperty(obj, key, { value, writable: true, enumerable: true, configurable: true })
  else obj[key] = value
}

function hasEnumerableSymbolKey (obj: object): boolean {
  return Object.getOwnPropertySymbols(obj).some((symbol) => Object.prototype.propertyIsEnumerable.call(obj, symbol))
}

/* c8 ignore start */ // only reachable on big-endian hosts, which CI does not have
function swapBytes (bytes: Buffer, ctor: ViewCtor): Buffer {
  const size = ctor.BYTES_PER_ELEMENT ?? 1 // bytes and DataView have no element order
  return size === 2 ? bytes.swap16() : size === 4 ? bytes.swap32() : size === 8 ? bytes.swap64() : bytes
}
/* c8 ignore stop */

function childPath (path: string, key: string): string {
  return IDENTIFIER.test(key) ? `${path}.${key}` : `${path}[${JSON.stringify(key)}]`
}

function className (proto: object): string {
  // Read the descriptor rather than proto.constructor so a getter on a hostile class never runs.
  const ctor: unknown = Object.getOwnPropertyDescriptor(proto, 'constructor')?.value
  return typeof ctor === 'function' && ctor.name !== '' ? ctor.name : '(anonymous)'
}
