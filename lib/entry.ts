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

interface EntryMeta {
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

// Layout: 'H', version, uint32 BE meta length, meta JSON, body. The body stays raw bytes (no base64, no copy on read).
const MARKER = 0x48
const VERSION = 1
const HEAD_BYTES = 6

export function encodeEntry (entry: HttpEntry): Buffer {
  const meta: EntryMeta = { s: entry.status, h: entry.headers, t: entry.storedAt, l: entry.ttl, e: entry.etag }
  if (entry.vary !== undefined) meta.v = entry.vary
  if (entry.computeMs !== undefined) meta.d = entry.computeMs
  if (entry.encoding !== undefined) meta.z = entry.encoding
  if (entry.revalidate !== undefined) meta.r = entry.revalidate
  if (entry.staleWhileRevalidate !== undefined) meta.w = entry.staleWhileRevalidate
  if (entry.staleIfError !== undefined) meta.f = entry.staleIfError
  if (entry.originEtag === true) meta.o = 1
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
  if (bytes[1] !== VERSION) throw new FST_CACHE_CORRUPT_ENTRY(`unknown entry version ${bytes[1]}`)
  const metaEnd = HEAD_BYTES + bytes.readUInt32BE(2)
  if (metaEnd > bytes.length) throw new FST_CACHE_CORRUPT_ENTRY('truncated entry')
  let meta: EntryMeta
  try {
    meta = JSON.parse(bytes.toString('utf8', HEAD_BYTES, metaEnd))
  } catch {
    throw new FST_CACHE_CORRUPT_ENTRY('unreadable entry metadata')
  }
  if (meta === null || typeof meta !== 'object' || !Number.isInteger(meta.s) || !isHeaderRecord(meta.h) ||
    typeof meta.t !== 'number' || typeof meta.l !== 'number' || typeof meta.e !== 'string' ||
    (meta.v !== undefined && !isStringRecord(meta.v)) || (meta.d !== undefined && typeof meta.d !== 'number') ||
    (meta.z !== undefined && meta.z !== 'br') ||
    (meta.r !== undefined && meta.r !== 'always' && meta.r !== 'once-stale') ||
    (meta.w !== undefined && typeof meta.w !== 'number') || (meta.f !== undefined && typeof meta.f !== 'number')) {
    throw new FST_CACHE_CORRUPT_ENTRY('entry metadata has the wrong shape')
  }
  const entry: HttpEntry = { status: meta.s, headers: meta.h, body: bytes.subarray(metaEnd), storedAt: meta.t, ttl: meta.l, etag: meta.e }
  if (meta.v !== undefined) entry.vary = meta.v
  if (meta.d !== undefined) entry.computeMs = meta.d
  if (meta.z !== undefined) entry.encoding = meta.z
  if (meta.r !== undefined) entry.revalidate = meta.r
  if (meta.w !== undefined) entry.staleWhileRevalidate = meta.w
  if (meta.f !== undefined) entry.staleIfError = meta.f
  if (meta.o === 1) entry.originEtag = true
  return entry
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
