import type { FastifyReply, FastifyRequest } from 'fastify'
import type { HttpEntry } from '../entry'
import { ifNoneMatchMatches } from './conditional'
import { type Representation, representation } from './encoding'
import { type Headers, UNSTORED_HEADERS, ageSeconds, isCredentialed, varyNames } from './policy'
import type { CompiledRoute } from './route'

/** Where a response came from: the cache (fresh or stale), the handler, or the handler because of a bypass. */
export type CacheOutcome = 'HIT' | 'STALE' | 'MISS' | 'BYPASS'

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
  if (entry.headers['cache-control'] === undefined) {
    const cacheControl = cacheControlFor(request, route)
    if (cacheControl !== undefined) reply.header('cache-control', cacheControl)
  }
  reply.header('age', ageSeconds(entry.storedAt, Date.now()))
  reply.header('x-cache', outcome)
  return chosen
}

/** Answers a request from a stored response; If-None-Match that matches it gets a 304 without a body. */
export function serveEntry (request: FastifyRequest, reply: FastifyReply, entry: HttpEntry, route: CompiledRoute, outcome: CacheOutcome): void {
  const chosen = applyEntry(request, reply, entry, route, outcome)
  if (ifNoneMatchMatches(request.headers['if-none-match'], chosen.etag)) {
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
export function replaceWithEntry (request: FastifyRequest, reply: FastifyReply, entry: HttpEntry, route: CompiledRoute): Buffer {
  for (const name of Object.keys(reply.getHeaders())) reply.removeHeader(name)
  return applyEntry(request, reply, entry, route, 'STALE').body
}

/** The headers of a response worth storing: not those of one transfer or one exchange (RFC 9111 3.1). */
export function storedHeaders (headers: Headers): Record<string, string | string[]> {
  const kept: Record<string, string | string[]> = {}
  for (const name in headers) {
    const value = headers[name]
    if (value === undefined || name === 'etag' || UNSTORED_HEADERS.has(name)) continue
    kept[name] = typeof value === 'number' ? String(value) : value
  }
  return kept
}

export function mergeVary (current: Headers[string], names: readonly string[]): string {
  const present = varyNames(current)
  const missing = names.filter((name) => !present.includes(name))
  return [...(current === undefined ? [] : [String(current)]), ...missing].join(', ')
}
