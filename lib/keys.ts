import { createHash } from 'node:crypto'
import { FST_CACHE_INVALID_KEY } from './errors'

/** One part of a cache key. null and undefined are kept apart from the empty string and from "null". */
export type KeyPart = string | number | boolean | bigint | null | undefined
/** A key: a string whose ":" separates parts, or the parts themselves (the safe choice for user input). */
export type CacheKey = string | readonly KeyPart[]

/** Ids longer than this are hashed; Redis handles long keys, but they cost memory and every lookup. */
const MAX_ID_LENGTH = 200
/** How much of a hashed id stays readable, so that patterns on leading parts still match it. */
const HASHED_HEAD_LENGTH = 96
const SEPARATOR = ':'
/** `%u` cannot come out of encodeURIComponent, which always follows `%` with two hex digits. */
const MISSING_PART = '%u'

/**
 * Encodes one part so that no input can forge a separator, a glob character (`* ? [ ] \`), a hash-tag brace or a
 * control character: encodeURIComponent leaves only [A-Za-z0-9-_.!~*'()], and the few of those Redis treats
 * specially are encoded as well.
 */
export function encodePart (part: KeyPart): string {
  if (part === null || part === undefined) return MISSING_PART
  const text = typeof part === 'string' ? part : String(part)
  if (/^[A-Za-z0-9._-]*$/.test(text)) return text
  let encoded: string
  try {
    encoded = encodeURIComponent(text)
  } catch {
    // A lone surrogate has no UTF-8 form; making it well-formed would let two different strings share one key.
    throw new FST_CACHE_INVALID_KEY('a key part or tag is not a well-formed Unicode string')
  }
  return encoded.replace(/[!'()*~]/g, (c) => '%' + c.charCodeAt(0).toString(16).toUpperCase())
}

function partsOf (key: CacheKey): readonly KeyPart[] {
  if (typeof key === 'string') {
    if (key.length === 0) throw new FST_CACHE_INVALID_KEY('a key must not be empty')
    return key.split(SEPARATOR)
  }
  if (!Array.isArray(key) || key.length === 0) {
    throw new FST_CACHE_INVALID_KEY('a key must be a non-empty string or a non-empty array of parts')
  }
  for (const part of key) {
    const type = typeof part
    if (part !== null && type !== 'string' && type !== 'number' && type !== 'boolean' && type !== 'bigint' && type !== 'undefined') {
      throw new FST_CACHE_INVALID_KEY(`a key part must be a string, number, boolean, bigint, null or undefined, got ${type}`)
    }
  }
  return key
}

/** A part longer than this, encoded, is stored as `#<sha256>`: parts stay parts, so patterns on them still work. */
const MAX_PART_LENGTH = 64

function hashed (text: string): string {
  return createHash('sha256').update(text).digest('base64url')
}

/** An encoded part, or `#<sha256>` of it when it is long; `#` never appears in an encoded part. */
function compactPart (encoded: string): string {
  return encoded.length > MAX_PART_LENGTH ? '#' + hashed(encoded) : encoded
}

/**
 * The id of a key under the prefix: encoded parts joined by ":", each long part replaced by its hash, so that a
 * pattern such as `<part>:*` matches whatever the length of its parts. An id that is still too long (many parts)
 * keeps a readable head of whole parts and ends in `##<sha256>` of the whole.
 */
export function keyId (key: CacheKey): string {
  const parts = partsOf(key).map((part) => compactPart(encodePart(part)))
  const id = parts.join(SEPARATOR)
  if (id.length <= MAX_ID_LENGTH) return id
  let head = ''
  for (const part of parts) {
    if (head.length + part.length + 1 > HASHED_HEAD_LENGTH) break
    head += part + SEPARATOR
  }
  return head + '##' + hashed(id)
}

/**
 * Turns a user pattern (`exec:dashboard:ws42:*`) into a glob over key ids. Only `*` and `?` are wildcards; every
 * other character is encoded exactly as key parts are, so a pattern matches the keys its literal text names and
 * can never reach outside the prefix.
 */
export function idPattern (pattern: string): string {
  if (typeof pattern !== 'string' || pattern.length === 0) {
    throw new FST_CACHE_INVALID_KEY('a pattern must be a non-empty string')
  }
  return pattern.split(SEPARATOR).map((segment) => {
    // A literal segment is a whole part: hashed as keyId hashes a long part. A wildcard segment matches plain parts.
    if (!/[*?]/.test(segment)) return compactPart(encodePart(segment))
    return segment.split(/([*?])/).map((piece) => piece === '*' || piece === '?' ? piece : encodePart(piece)).join('')
  }).join(SEPARATOR)
}

/** A tag name, encoded like a key part. */
export function tagId (tag: string): string {
  if (typeof tag !== 'string' || tag.length === 0) throw new FST_CACHE_INVALID_KEY('a tag must be a non-empty string')
  return encodePart(tag)
}

/** Escapes a literal (the configured prefix) for use inside a Redis glob. */
export function escapeGlob (literal: string): string {
  return literal.replace(/[*?[\]\\]/g, (c) => '\\' + c)
}
