import type { FastifyReply, FastifyRequest } from 'fastify'
import { type HttpEntry, freshUntil } from '../entry'
import { hitStatus } from './cache-status'
import { ifNoneMatchMatches } from './conditional'
import { type Representation, representation } from './encoding'
import { type Headers, UNSTORED_HEADERS, ageSeconds, isCredentialed, varyNames } from './policy'
import type { CompiledRoute } from './route'
import { notModifiedSince } from './shared-policy'

/**
 * Where a response came from: the cache (fresh or stale), the handler, or the handler because of a bypass; in shared
 * mode also the cache after the origin confirmed the entry (a 304 to a conditional request).
 */
export type CacheOutcome = 'HIT' | 'STALE' | 'MISS' | 'BYPASS' | 'REVALIDATED'

/** Sent on warming responses only: whether the entry was written. */
export const STORED_HEADER = 'x-cache-stored'

const EMPTY = Buffer.alloc(0)

/** How an onSend hook hands Fastify the payload to send. */
export type OnSendDone = (error: Error | null, payload?: unknown) => void

/** A payload as the bytes to store, or undefined for one that is not in memory (a stream). */
export function payloadBytes (payload: unknown): Buffer | undefined {
  return typeof payload === 'string' ? Buffer.from(payload) : Buffer.isBuffer(payload) ? payload : payload == null ? EMPTY : undefined
}

/** From onSend: a 304 without a body, in place of the response. */
export function sendNotModified (reply: FastifyReply, done: OnSendDone): void {
  reply.removeHeader('content-type')
  reply.code(304)
  done(null, EMPTY)
}

/** From onSend, for a warming request: sends the payload once the entry's write settled, saying if it was stored. */
export function sendWhenWritten (written: Promise<boolean>, reply: FastifyReply, payload: unknown, done: OnSendDone): void {
  written.then((stored) => {
    reply.header(STORED_HEADER, stored ? '1' : '0')
    done(null, payload)
  }, () => done(null, payload))
}

/** The Cache-Control the plugin sends when the handler set none (compiled per route). */
export function cacheControlFor (request: FastifyRequest, route: CompiledRoute): string | undefined {
  return isCredentialed(request.headers) ? route.cacheControl.credentialed : route.cacheControl.anonymous
}

/** Sets the status and headers of a stored response on the reply, with age and x-cache; returns the body to send. */
function applyEntry (request: FastifyRequest, reply: FastifyReply, entry: HttpEntry, route: CompiledRoute, outcome: CacheOutcome): Representation {
  const chosen = representation(entry, request.headers)
  reply.code(entry.status)
  reply.headers(entry.headers)
  reply.header('etag', chosen.etag)
  if (entry.encoding !== undefined) {
    reply.header('vary', mergeVary(reply.getHeader('vary'), ['accept-encoding']))
    if (chosen.encoding !== undefined) reply.header('content-encoding', chosen.encoding)
  }
  const now = Date.now()
  if (route.shared !== undefined) {
    // The origin's headers go out as they were: no Cache-Control of the plugin's; Cache-Status says what happened.
    if (outcome === 'HIT' || outcome === 'STALE') reply.header('cache-status', hitStatus(freshUntil(entry), now))
  } else if (entry.headers['cache-control'] === undefined) {
    const cacheControl = cacheControlFor(request, route)
    if (cacheControl !== undefined) reply.header('cache-control', cacheControl)
  }
  reply.header('age', ageSeconds(entry.storedAt, now))
  reply.header('x-cache', outcome)
  return chosen
}

/**
 * The client's own conditional request is satisfied by the entry: If-None-Match, or in shared mode If-Modified-Since
 * when there is no If-None-Match (RFC 9111 4.3.2, RFC 9110 13.2.2).
 */
export function clientNotModified (request: FastifyRequest, etag: string, lastModified: Headers[string], route: CompiledRoute): boolean {
  const ifNoneMatch = request.headers['if-none-match']
  if (ifNoneMatch !== undefined || route.shared === undefined) return ifNoneMatchMatches(ifNoneMatch, etag)
  return notModifiedSince(request.headers['if-modified-since'], lastModified)
}

/** Answers a request from a stored response; If-None-Match that matches it gets a 304 without a body. */
export function serveEntry (request: FastifyRequest, reply: FastifyReply, entry: HttpEntry, route: CompiledRoute, outcome: CacheOutcome): void {
  const chosen = applyEntry(request, reply, entry, route, outcome)
  if (clientNotModified(request, chosen.etag, entry.headers['last-modified'], route)) {
    reply.removeHeader('content-type')
    reply.removeHeader('content-encoding')
    reply.code(304).send()
    return
  }
  reply.send(chosen.body)
}

/**
 * Replaces, from onSend, a failed response with a stored one (stale-if-error): every header the failure set goes,
 * the entry's status and headers come in, and its body is the payload to send.
 */
export function replaceWithEntry (
  request: FastifyRequest, reply: FastifyReply, entry: HttpEntry, route: CompiledRoute, outcome: CacheOutcome = 'STALE'
): Buffer {
  for (const name of Object.keys(reply.getHeaders())) reply.removeHeader(name)
  return applyEntry(request, reply, entry, route, outcome).body
}

/**
 * The headers of a response worth storing: not those of one transfer or one exchange (RFC 9111 3.1). In shared mode
 * the origin's Date is kept, to be sent with the stored response, and so are all but the `withheld` fields.
 */
export function storedHeaders (headers: Headers, shared?: { withheld: readonly string[] }): Record<string, string | string[]> {
  const kept: Record<string, string | string[]> = {}
  for (const name in headers) {
    const value = headers[name]
    if (value === undefined || name === 'etag') continue
    if (shared === undefined ? UNSTORED_HEADERS.has(name) : (name !== 'date' && UNSTORED_HEADERS.has(name)) || name === 'cache-status' || shared.withheld.includes(name)) continue
    kept[name] = typeof value === 'number' ? String(value) : value
  }
  return kept
}

export function mergeVary (current: Headers[string], names: readonly string[]): string {
  const present = varyNames(current)
  const missing = names.filter((name) => !present.includes(name))
  return [...(current === undefined ? [] : [String(current)]), ...missing].join(', ')
}
