// The Cache-Status response header (RFC 9211), sent by shared-mode routes: what this cache did with the request.

/** The cache's name in Cache-Status, an sf-token. */
export const CACHE_NAME = 'fastify-response-cache'

/**
 * Why the request went to the origin (RFC 9211 2.2): no entry for the URL, one for other Vary values, a stale entry
 * (validated, or replaced), the client's own directives, or a bypass.
 */
export type ForwardReason = 'uri-miss' | 'vary-miss' | 'stale' | 'request' | 'bypass'

/** A hit: `ttl` is the freshness left in whole seconds, negative when a stale response is served (RFC 9211 2.1, 2.4). */
export function hitStatus (freshUntil: number, now: number, detail?: string): string {
  const ttl = Math.floor((freshUntil - now) / 1000)
  return `${CACHE_NAME}; hit; ttl=${ttl}${detail === undefined ? '' : `; detail=${detail}`}`
}

/** A forwarded request: why, what the origin answered, and whether the response was stored (RFC 9211 2.2-2.5). */
export function forwardStatus (reason: ForwardReason, status: number, stored: boolean, detail?: string): string {
  return `${CACHE_NAME}; fwd=${reason}; fwd-status=${status}${stored ? '; stored' : ''}${detail === undefined ? '' : `; detail=${detail}`}`
}

/** A request the cache answered without a usable entry and without the origin (only-if-cached, RFC 9111 5.2.1.7). */
export function unavailableStatus (detail: string): string {
  return `${CACHE_NAME}; detail=${detail}`
}

/** Cache-Status lists caches from the origin outwards (RFC 9211 2): this cache's member goes after upstream ones. */
export function appendStatus (upstream: string | string[] | number | undefined, member: string): string {
  if (upstream === undefined) return member
  const text = Array.isArray(upstream) ? upstream.join(', ') : String(upstream)
  return text.trim().length === 0 ? member : `${text}, ${member}`
}
