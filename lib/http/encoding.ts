import { promisify } from 'node:util'
import { brotliCompress, brotliDecompressSync, constants } from 'node:zlib'
import type { HttpEntry } from '../entry'
import { type Headers, parseAcceptEncoding, parseCacheControl } from './policy'

const compress = promisify(brotliCompress)

/** Quality 5: within a few percent of the best ratio on JSON, at a tenth of the time of 9 and above. */
const QUALITY = 5
const COMPRESSIBLE = /^(?:text\/|application\/(?:[\w.+-]*\+)?(?:json|xml|javascript|x-ndjson)|image\/svg\+xml)/i

/**
 * The entry with its body compressed, when compressing is worth it: a compressible type, no encoding already, and a
 * result that is smaller. Runs off the event loop (zlib's thread pool), after the response has gone out.
 */
export async function compressedEntry (entry: HttpEntry, minBytes: number): Promise<HttpEntry> {
  if (!worthCompressing(entry, minBytes)) return entry
  const body = await compress(entry.body, {
    params: { [constants.BROTLI_PARAM_QUALITY]: QUALITY, [constants.BROTLI_PARAM_SIZE_HINT]: entry.body.length }
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
