import { createHash } from 'node:crypto'
import { FST_CACHE_INVALID_KEY, FST_CACHE_INVALID_OPTION, FST_CACHE_UNSERIALIZABLE } from './errors'
import { type CacheKey, tagId } from './keys'
import type { CacheService, SetOptions } from './service'

/*
 * stableHash: SHA-256 (base64url, 43 characters) of a canonical encoding of a value.
 *
 * The canonical encoding is JSON text in which every value is a tagged array, so no two different values share a
 * form, which plain JSON does not guarantee (1 and '1', null and undefined, a Date and its ISO string, a Map and an
 * object, 1n and 1, a Buffer and a string, NaN and null, -0 and 0 all differ here):
 *   ["undefined"]  ["null"]  ["boolean",true]  ["number","1.5"]  ["bigint","10"]  ["string","text"]
 *   ["array",e0,e1,...]                         arrays keep their order; a hole counts as undefined
 *   ["object","k1",v1,"k2",v2,...]              keys sorted, so key order never matters; null-prototype objects too
 *   ["map",[k,v],...]  ["set",e,...]           entries sorted by their encodings: the same members, the same hash
 *   ["date","<ms>"]  ["regexp",source,flags]  ["Buffer",base64]  ["ArrayBuffer",base64]  ["DataView",base64]
 *   ["Float64Array",e0,...] and the other typed arrays, element by element (so the hash is the same on any host)
 * Numbers are written with String() (the shortest round-trip form), "-0" for negative zero, "NaN", "Infinity".
 * Functions, symbols, symbol-keyed properties, cycles and instances of any other class (boxed primitives, Errors,
 * Promises, user classes: hashing them as plain objects would make different values collide) throw
 * FST_CACHE_UNSERIALIZABLE. A shared but acyclic reference is fine: it is simply encoded twice.
 */

type ViewCtor = { readonly name: string, readonly prototype: object }
const VIEW_CTORS: ViewCtor[] = [
  Int8Array, Uint8Array, Uint8ClampedArray, Int16Array, Uint16Array, Int32Array, Uint32Array,
  Float32Array, Float64Array, BigInt64Array, BigUint64Array
]
const VIEW_BY_PROTO = new Map<object, string>(VIEW_CTORS.map((ctor) => [ctor.prototype, ctor.name]))
const IDENTIFIER = /^[A-Za-z_$][\w$]*$/

/** A SHA-256 (base64url, 43 characters) of the value's canonical encoding; see the comment above for the rules. */
export function stableHash (value: unknown): string {
  return createHash('sha256').update(canonical(value, 'value', new Set())).digest('base64url')
}

function canonical (value: unknown, path: string, ancestors: Set<object>): string {
  switch (typeof value) {
    case 'undefined': return '["undefined"]'
    case 'boolean': return value ? '["boolean",true]' : '["boolean",false]'
    case 'number': return `["number","${numberText(value)}"]`
    case 'bigint': return `["bigint","${value.toString()}"]`
    case 'string': return '["string",' + JSON.stringify(value) + ']' // lone surrogates come out escaped, so distinct
    case 'object': return value === null ? '["null"]' : canonicalObject(value, path, ancestors)
    default: throw new FST_CACHE_UNSERIALIZABLE(`${typeof value} at ${path}`) // function, symbol
  }
}

function numberText (n: number): string {
  return Object.is(n, -0) ? '-0' : String(n) // String() gives 'NaN', 'Infinity', '-Infinity' for the others
}

function canonicalObject (value: object, path: string, ancestors: Set<object>): string {
  if (ancestors.has(value)) throw new FST_CACHE_UNSERIALIZABLE(`circular reference at ${path}`)
  ancestors.add(value)
  try {
    return canonicalByClass(value, path, ancestors)
  } finally {
    ancestors.delete(value)
  }
}

function canonicalByClass (value: object, path: string, ancestors: Set<object>): string {
  // Exact prototype checks, as in the serializer: a subclass or a foreign class is refused rather than guessed at.
  const proto: object | null = Object.getPrototypeOf(value)
  switch (proto) {
    case null: case Object.prototype: return canonicalPlain(value as Record<string, unknown>, path, ancestors)
    case Array.prototype:
      if (Array.isArray(value)) {
        return tagged('array', Array.from(value, (item: unknown, i) => canonical(item, `${path}[${i}]`, ancestors)))
      }
      break
    case Date.prototype: return `["date","${numberText((value as Date).getTime())}"]`
    case RegExp.prototype: return tagged('regexp', [JSON.stringify((value as RegExp).source), JSON.stringify((value as RegExp).flags)])
    case Buffer.prototype: return `["Buffer","${(value as Buffer).toString('base64')}"]`
    case ArrayBuffer.prototype: return `["ArrayBuffer","${Buffer.from(value as ArrayBuffer).toString('base64')}"]`
    case DataView.prototype: {
      const view = value as DataView
      return `["DataView","${Buffer.from(view.buffer, view.byteOffset, view.byteLength).toString('base64')}"]`
    }
    case Map.prototype: {
      const pairs = Array.from(value as Map<unknown, unknown>, ([key, val], i) =>
        '[' + canonical(key, `${path}[map key #${i}]`, ancestors) + ',' + canonical(val, `${path}[map value #${i}]`, ancestors) + ']')
      return tagged('map', pairs.sort())
    }
    case Set.prototype: {
      const items = Array.from(value as Set<unknown>, (item, i) => canonical(item, `${path}[set item #${i}]`, ancestors))
      return tagged('set', items.sort())
    }
  }
  const viewName = VIEW_BY_PROTO.get(proto)
  if (viewName !== undefined) {
    // Element by element rather than raw bytes: the same numbers hash the same whatever the host's byte order.
    const items = Array.from(value as ArrayLike<number | bigint>, (item) =>
      typeof item === 'bigint' ? `"${item.toString()}"` : `"${numberText(item)}"`)
    return tagged(viewName, items)
  }
  throw new FST_CACHE_UNSERIALIZABLE(`instance of class ${className(proto)} at ${path}`)
}

function canonicalPlain (obj: Record<string, unknown>, path: string, ancestors: Set<object>): string {
  const hasSymbolKey = Object.getOwnPropertySymbols(obj).some((symbol) => Object.prototype.propertyIsEnumerable.call(obj, symbol))
  if (hasSymbolKey) throw new FST_CACHE_UNSERIALIZABLE(`symbol-keyed property at ${path}`)
  const parts: string[] = []
  for (const key of Object.keys(obj).sort()) {
    const childPath = IDENTIFIER.test(key) ? `${path}.${key}` : `${path}[${JSON.stringify(key)}]`
    parts.push(JSON.stringify(key), canonical(obj[key], childPath, ancestors))
  }
  return tagged('object', parts)
}

function tagged (tag: string, parts: string[]): string {
  return parts.length === 0 ? `["${tag}"]` : `["${tag}",${parts.join(',')}]`
}

function className (proto: object): string {
  // The descriptor rather than proto.constructor, so a getter on a hostile class never runs.
  const ctor: unknown = Object.getOwnPropertyDescriptor(proto, 'constructor')?.value
  return typeof ctor === 'function' && ctor.name !== '' ? ctor.name : '(anonymous)'
}

/* ---------------------------------------------------------------------------------------------------------------- */

/** What createCached needs from a cache service: `app.cacheService` fits. */
export type CachedServiceDeps = Pick<CacheService, 'getOrCompute' | 'invalidate'>

export interface CachedOptions<A extends unknown[]> {
  /**
   * Names the function in its default keys (`['fn', name, stableHash(args)]`); defaults to the function's own name.
   * Two cached functions with the same name on one service share entries, so names must be unique there. An
   * anonymous function needs `name` or `key`.
   */
  name?: string
  /** The cache key of a call; defaults to `['fn', name, stableHash(args)]`. Return an array of parts for user input. */
  key?: (...args: A) => CacheKey
  /** Seconds, a positive integer; the plugin's `ttl` when omitted. */
  ttl?: number
  /** Tags for invalidateTags(): a fixed list, or computed from the call's arguments. */
  tags?: string[] | ((...args: A) => string[])
}

/** A cached function: call it like the original (always async), plus `invalidate` and `key` for the same arguments. */
export type CachedFunction<A extends unknown[], R> = ((...args: A) => Promise<R>) & {
  /** Deletes the entry of these arguments; resolves to how many existed (0 or 1). */
  invalidate: (...args: A) => Promise<number>
  /** The cache key of these arguments. */
  key: (...args: A) => CacheKey
}

/**
 * Wraps `fn` so that each distinct set of arguments is computed once and then served from the cache, through
 * `service.getOrCompute`: concurrent calls with the same key share one run (in this process), a store failure means
 * the function simply runs (fail-open), a thrown error or rejection is never cached and reaches every caller that
 * shared the run, and a result of `undefined` is not cached (the service reads undefined as a miss).
 *
 * Default keys hash the arguments with stableHash, so every argument must be hashable (plain data, Dates, Maps,
 * Sets, Buffers...) and `f(1)` and `f(1, undefined)` are different keys. Results must be serializable by the cache.
 *
 * `this` is not passed through: to cache a method, wrap a closure, e.g.
 * `createCached(app.cacheService, (id: string) => repo.find(id), { name: 'repo.find' })`.
 *
 * Options are checked here and throw FST_CACHE_INVALID_OPTION; a bad key or tag computed for a call rejects that
 * call with FST_CACHE_INVALID_KEY.
 */
export function createCached<A extends unknown[], R> (
  service: CachedServiceDeps,
  fn: (...args: A) => R | Promise<R>,
  options: CachedOptions<A> = {}
): CachedFunction<A, R> {
  if (typeof service !== 'object' || service === null ||
    typeof service.getOrCompute !== 'function' || typeof service.invalidate !== 'function') {
    throw new FST_CACHE_INVALID_OPTION('createCached needs a cache service with getOrCompute and invalidate (app.cacheService)')
  }
  if (typeof fn !== 'function') throw new FST_CACHE_INVALID_OPTION(`createCached needs a function, got ${typeof fn}`)
  if (typeof options !== 'object' || options === null) {
    throw new FST_CACHE_INVALID_OPTION('createCached options must be an object')
  }
  const { key: keyOption, ttl, tags } = options

  if (options.name !== undefined && (typeof options.name !== 'string' || options.name === '')) {
    throw new FST_CACHE_INVALID_OPTION(`option "name" must be a non-empty string, got ${describe(options.name)}`)
  }
  if (keyOption !== undefined && typeof keyOption !== 'function') {
    throw new FST_CACHE_INVALID_OPTION(`option "key" must be a function, got ${describe(keyOption)}`)
  }
  const name = options.name ?? fn.name
  if (name === '' && keyOption === undefined) {
    throw new FST_CACHE_INVALID_OPTION('option "name" or "key" is required for an anonymous function')
  }
  if (ttl !== undefined && (typeof ttl !== 'number' || !Number.isInteger(ttl) || ttl < 1)) {
    throw new FST_CACHE_INVALID_OPTION(`option "ttl" must be a positive integer number of seconds, got ${describe(ttl)}`)
  }
  let fixedTags: string[] | undefined
  if (Array.isArray(tags)) {
    if (!tags.every(isUsableTag)) {
      throw new FST_CACHE_INVALID_OPTION('option "tags" must be an array of non-empty, well-formed strings or a function')
    }
    fixedTags = [...tags] // later changes to the caller's array do not leak in
  } else if (tags !== undefined && typeof tags !== 'function') {
    throw new FST_CACHE_INVALID_OPTION(`option "tags" must be an array of strings or a function, got ${describe(tags)}`)
  }

  const keyOf = (...args: A): CacheKey => keyOption !== undefined ? keyOption(...args) : ['fn', name, stableHash(args)]

  const tagsOf = (args: A): string[] | undefined => {
    if (typeof tags !== 'function') return fixedTags
    const computed: unknown = tags(...args)
    // Checked here: the service would only find a bad tag when writing, and a failed write is not reported.
    if (!Array.isArray(computed)) throw new FST_CACHE_INVALID_KEY(`the tags function must return an array, got ${describe(computed)}`)
    for (const tag of computed) tagId(tag as string) // throws FST_CACHE_INVALID_KEY for an unusable tag
    return computed as string[]
  }

  const cached = async (...args: A): Promise<R> => {
    const key = keyOf(...args)
    const setOptions: SetOptions = { ttl, tags: tagsOf(args) }
    return await service.getOrCompute<R>(key, () => fn(...args), setOptions)
  }
  const invalidate = async (...args: A): Promise<number> => await service.invalidate([keyOf(...args)])

  return Object.assign(cached, { invalidate, key: keyOf })
}

function isUsableTag (tag: unknown): boolean {
  if (typeof tag !== 'string') return false
  try {
    tagId(tag)
    return true
  } catch {
    return false
  }
}

function describe (value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value)
  if (typeof value === 'function') return 'a function'
  if (Array.isArray(value)) return 'an array'
  return value === null ? 'null' : typeof value === 'object' ? 'an object' : String(value)
}
