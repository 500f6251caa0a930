import { promisify } from 'node:util'
import { brotliCompress, brotliDecompressSync, constants } from 'node:zlib'
import type { HttpEntry } from '../entry'
import { type Headers, parseAcceptEncoding, parseCacheControl } from './policy'

const compress = promisify(brotliCompress)

/** How a route's bodies are stored compressed. */
export interface Compression {
  minBytes: number
  /** Brotli's quality; undefined for the default by size (qualityFor). */
  quality: number | undefined
}

/**
 * Quality 10 compresses JSON 10 to 16 % smaller than 5 to 9 (which hardly differ), at about 0.3 ms of CPU per KB
 * instead of 0.03: worth it once per store for bodies that are read many times, up to a size where it would hold a
 * zlib thread for more than a few milliseconds. Smaller values also fall into smaller allocation classes in Redis.
 */
const HIGH_QUALITY = 10
const HIGH_QUALITY_MAX_BYTES = 16 * 1024
const FAST_QUALITY = 5

function qualityFor (bytes: number): number {
  return bytes <= HIGH_QUALITY_MAX_BYTES ? HIGH_QUALITY : FAST_QUALITY
}
const COMPRESSIBLE = /^(?:text\/|application\/(?:[\w.+-]*\+)?(?:json|xml|javascript|x-ndjson)|image\/svg\+xml)/i

/**
 * The entry with its body compressed, when compressing is worth it: a compressible type, no encoding already, and a
 * result that is smaller. Runs off the event loop (zlib's thread pool), after the response has gone out.
 */
export async function compressedEntry (entry: HttpEntry, compression: Compression): Promise<HttpEntry> {
  if (!worthCompressing(entry, compression.minBytes)) return entry
  const quality = compression.quality ?? qualityFor(entry.body.length)
  const body = await compress(entry.body, {
    params: { [constants.BROTLI_PARAM_QUALITY]: quality, [constants.BROTLI_PARAM_SIZE_HINT]: entry.body.length }
  })
  return body.length < entry.body.length ? { ...entry, body, encoding: 'br' } : entry
}

/** A compressible type, no encoding already, at least minBytes, and no `no-transform` (RFC 9111 5.2.2.6). */
export function worthCompressing (entry: HttpEntry, minBytes: number): boolean {
  return entry.encoding === undefined && entry.body.length >= Math.max(minBytes, 1) &&
    entry.headers['content-encoding'] === undefined && COMPRESSIBLE.test(String(entry.headers['content-type'] ?? '')) &&
    !parseCacheControl(entry.headers['cache-control']).has('no-transform')
}

/** What one request gets of an entry: the stored bytes as they are, or decompressed once for clients without brotli. */
export interface Representation {
  body: Buffer
  /** Set when the body is sent encoded. */
  encoding?: 'br'
  etag: string
}

const plainBodies = new WeakMap<HttpEntry, Buffer>()

export function representation (entry: HttpEntry, requestHeaders: Headers): Representation {
  if (entry.encoding === undefined) return { body: entry.body, etag: entry.etag }
  if (parseAcceptEncoding(requestHeaders['accept-encoding']).has('br')) {
    // Another representation, so another strong validator (RFC 9110 8.8.3).
    return { body: entry.body, encoding: 'br', etag: entry.etag.replace(/"$/, '-br"') }
  }
  return { body: plainBody(entry), etag: entry.etag }
}

/** The identity body of an entry, decompressed once per decoded entry. */
export function plainBody (entry: HttpEntry): Buffer {
  if (entry.encoding === undefined) return entry.body
  let plain = plainBodies.get(entry)
  if (plain === undefined) {
    plain = brotliDecompressSync(entry.body)
    plainBodies.set(entry, plain)
  }
  return plain
}
