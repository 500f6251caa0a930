import type { FastifyReply, FastifyRequest, RouteOptions } from 'fastify'
import type { GuardedStore } from '../guarded-store'
import type { CacheService } from '../service'

type OnSend = (request: FastifyRequest, reply: FastifyReply, payload: unknown) => Promise<unknown>

/** The methods whose success invalidates what a shared cache stored for the URL (RFC 9111 4.4). */
export const UNSAFE_METHODS: ReadonlySet<string> = new Set(['POST', 'PUT', 'PATCH', 'DELETE'])

/** Starts the tag names of URLs, so that they never meet a tag an application would choose. */
const URL_TAG = '~url:'

/** The tag every shared-mode entry carries: its host (without port, as in the default key) and path. */
export function urlTag (hostname: string, pathname: string): string {
  return URL_TAG + hostname.toLowerCase() + pathname
}

/** The URL tag of a request's target URI. */
export function requestUrlTag (request: FastifyRequest): string {
  return urlTag(request.hostname, new URL(request.url, 'http://localhost').pathname)
}

/**
 * The URL tags a successful unsafe request invalidates (RFC 9111 4.4): its target URI, and the URIs in its Location
 * and Content-Location headers when they are on the same host, which keeps one host from invalidating another's.
 */
export function invalidatedUrlTags (request: FastifyRequest, reply: FastifyReply): string[] {
  const tags = [requestUrlTag(request)]
  let base: URL
  try {
    base = new URL(request.url, `${request.protocol}://${request.host}`)
  } catch {
    return tags
  }
  for (const name of ['location', 'content-location']) {
    const value = reply.getHeader(name)
    if (typeof value !== 'string') continue
    let target: URL
    try {
      target = new URL(value, base)
    } catch {
      continue
    }
    if (target.hostname.toLowerCase() !== request.hostname.toLowerCase()) continue
    const tag = urlTag(target.hostname, target.pathname)
    if (!tags.includes(tag)) tags.push(tag)
  }
  return tags
}

/**
 * Adds to a route with an unsafe method the hook that, after a non-error (2xx or 3xx) answer and before it is sent,
 * invalidates the shared-mode entries of the URLs it changed. It does nothing while the app has no shared-mode route
 * (`active`). A failed invalidation is logged and counted; it never turns the response into an error.
 */
export function attachUnsafeInvalidation (
  routeOptions: RouteOptions, service: CacheService, guarded: GuardedStore, active: () => boolean
): void {
  const onSend: OnSend = async (request, reply, payload) => {
    if (!active() || !UNSAFE_METHODS.has(request.method) || reply.statusCode < 200 || reply.statusCode >= 400) return payload
    try {
      await service.invalidateTags(invalidatedUrlTags(request, reply))
    } catch (error) {
      guarded.failed('invalidates', error)
      request.log.error({ err: error, url: request.url }, 'cache invalidation after an unsafe request failed; stored responses may be stale until they expire')
    }
    return payload
  }
  const existing = routeOptions.onSend
  routeOptions.onSend = [...(existing === undefined ? [] : Array.isArray(existing) ? existing : [existing]), onSend] as RouteOptions['onSend']
}
