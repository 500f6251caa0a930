import { FST_CACHE_CORRUPT_ENTRY } from './errors'

/** A stored HTTP response. Headers are lower-case names; the body is the exact bytes the handler produced. */
export interface HttpEntry {
  status: number
  headers: Record<string, string | string[]>
  body: Buffer
  /** Milliseconds since the epoch when the response was generated. */
  storedAt: number
  /** Seconds the entry is fresh for. */
  ttl: number
  etag: string
  /** Request header values the response varied on (its Vary header), to be matched on reuse. */
  vary?: Record<string, string>
  /** Milliseconds the handler took to produce it, for probabilistic early refresh. */
  computeMs?: number
  /** The body is stored compressed with this coding (see http/encoding.ts). */
  encoding?: 'br'
  // Shared mode only: what the response's own headers said (see lib/http/shared-policy.ts).
  /** When it must be validated with the origin before reuse: always (no-cache) or once stale (must-revalidate...). */
  revalidate?: 'always' | 'once-stale'
  /** Seconds past freshness the response allows serving it while it is revalidated (RFC 5861). */
  staleWhileRevalidate?: number
  /** Seconds past freshness the response allows serving it when the origin fails (RFC 5861). */
  staleIfError?: number
  /** The etag came from the origin, so that it may validate the entry upstream; a made-up one may not. */
  originEtag?: boolean
}

/** When the entry stops being fresh, in milliseconds since the epoch. */
export function freshUntil (entry: HttpEntry): number {
  return entry.storedAt + entry.ttl * 1000
}

/** Version 1 metadata: an object with one-letter names. Still read, so that entries stored before version 2 stay usable. */
interface EntryMetaV1 {
  s: number
  h: Record<string, string | string[]>
  t: number
  l: number
  e: string
  v?: Record<string, string>
  d?: number
  z?: 'br'
  r?: 'always' | 'once-stale'
  w?: number
  f?: number
  o?: 1
}

/**
 * Version 2 metadata: the same fields by position, absent ones null and trailing ones left out. Names cost ~30 bytes
 * per entry, which at 1 KB bodies is what decides whether a value fits Redis's allocator class below (see
 * BENCHMARKS.md, "Stored bytes").
 */
type EntryMetaV2 = [
  status: number, headers: Record<string, string | string[]>, storedAt: number, ttl: number, etag: string,
  computeMs?: number | null, encoding?: 'br' | null, vary?: Record<string, string> | null,
  revalidate?: 'always' | 'once-stale' | null, staleWhileRevalidate?: number | null, staleIfError?: number | null,
  originEtag?: 1 | null
]

// Layout: 'H', version, uint32 BE meta length, meta JSON, body. The body stays raw bytes (no base64, no copy on read).
const MARKER = 0x48
const VERSION = 2
const HEAD_BYTES = 6

export function encodeEntry (entry: HttpEntry): Buffer {
  const meta: EntryMetaV2 = [
    entry.status, entry.headers, entry.storedAt, entry.ttl, entry.etag, entry.computeMs ?? null, entry.encoding ?? null,
    entry.vary ?? null, entry.revalidate ?? null, entry.staleWhileRevalidate ?? null, entry.staleIfError ?? null,
    entry.originEtag === true ? 1 : null
  ]
  while (meta.length > 5 && meta[meta.length - 1] === null) meta.pop()
  const metaBytes = Buffer.from(JSON.stringify(meta))
  const bytes = Buffer.allocUnsafe(HEAD_BYTES + metaBytes.length + entry.body.length)
  bytes[0] = MARKER
  bytes[1] = VERSION
  bytes.writeUInt32BE(metaBytes.length, 2)
  metaBytes.copy(bytes, HEAD_BYTES)
  entry.body.copy(bytes, HEAD_BYTES + metaBytes.length)
  return bytes
}

export function isEntryBytes (bytes: Buffer): boolean {
  return bytes.length >= HEAD_BYTES && bytes[0] === MARKER
}

/** Decodes an entry; throws FST_CACHE_CORRUPT_ENTRY for anything that is not one, so callers can replace it. */
export function decodeEntry (bytes: Buffer): HttpEntry {
  if (!isEntryBytes(bytes)) throw new FST_CACHE_CORRUPT_ENTRY('not an HTTP entry')
  const version = bytes[1]
  if (version !== VERSION && version !== 1) throw new FST_CACHE_CORRUPT_ENTRY(`unknown entry version ${String(version)}`)
  const metaEnd = HEAD_BYTES + bytes.readUInt32BE(2)
  if (metaEnd > bytes.length) throw new FST_CACHE_CORRUPT_ENTRY('truncated entry')
  let meta: unknown
  try {
    meta = JSON.parse(bytes.toString('utf8', HEAD_BYTES, metaEnd))
  } catch {
    throw new FST_CACHE_CORRUPT_ENTRY('unreadable entry metadata')
  }
  const fields = version === VERSION ? positionalFields(meta) : namedFields(meta)
  if (fields === undefined) throw new FST_CACHE_CORRUPT_ENTRY('entry metadata has the wrong shape')
  const [status, headers, storedAt, ttl, etag, computeMs, encoding, vary, revalidate, staleWhileRevalidate, staleIfError, originEtag] = fields
  if (!Number.isInteger(status) || !isHeaderRecord(headers) || typeof storedAt !== 'number' || typeof ttl !== 'number' ||
    typeof etag !== 'string' || (vary != null && !isStringRecord(vary)) || (computeMs != null && typeof computeMs !== 'number') ||
    (encoding != null && encoding !== 'br') || (revalidate != null && revalidate !== 'always' && revalidate !== 'once-stale') ||
    (staleWhileRevalidate != null && typeof staleWhileRevalidate !== 'number') ||
    (staleIfError != null && typeof staleIfError !== 'number')) {
    throw new FST_CACHE_CORRUPT_ENTRY('entry metadata has the wrong shape')
  }
  const entry: HttpEntry = { status: status as number, headers, body: bytes.subarray(metaEnd), storedAt, ttl, etag }
  if (vary != null) entry.vary = vary as Record<string, string>
  if (computeMs != null) entry.computeMs = computeMs
  if (encoding != null) entry.encoding = encoding
  if (revalidate != null) entry.revalidate = revalidate
  if (staleWhileRevalidate != null) entry.staleWhileRevalidate = staleWhileRevalidate
  if (staleIfError != null) entry.staleIfError = staleIfError
  if (originEtag === 1) entry.originEtag = true
  return entry
}

/** Version 2's fields, unchecked; undefined when the metadata is not an array of a possible length. */
function positionalFields (meta: unknown): unknown[] | undefined {
  return Array.isArray(meta) && meta.length >= 5 && meta.length <= 12 ? meta : undefined
}

/** Version 1's fields in version 2's order, unchecked; undefined when the metadata is not an object. */
function namedFields (meta: unknown): unknown[] | undefined {
  if (!isPlainObject(meta)) return undefined
  const v1 = meta as Partial<Record<keyof EntryMetaV1, unknown>>
  // A null where version 1 wrote nothing was never written by it: corrupt, not absent.
  if (v1.v === null || v1.d === null || v1.z === null || v1.r === null || v1.w === null || v1.f === null) return undefined
  return [v1.s, v1.h, v1.t, v1.l, v1.e, v1.d, v1.z, v1.v, v1.r, v1.w, v1.f, v1.o]
}

function isPlainObject (value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

function isStringRecord (value: unknown): value is Record<string, string> {
  return isPlainObject(value) && Object.values(value).every((item) => typeof item === 'string')
}

function isHeaderRecord (value: unknown): value is Record<string, string | string[]> {
  return isPlainObject(value) && Object.values(value).every((item) =>
    typeof item === 'string' || (Array.isArray(item) && item.every((part) => typeof part === 'string')))
}
