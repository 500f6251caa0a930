import type { FastifyReply, FastifyRequest, RouteOptions } from 'fastify'
import type { GuardedStore } from '../guarded-store'
import type { CacheService } from '../service'
import type { CompiledRoute } from './route'

type OnSend = (request: FastifyRequest, reply: FastifyReply, payload: unknown) => Promise<unknown>

/**
 * Invalidation on writes: after a successful (2xx) response of a POST, PUT, PATCH or DELETE route, and before it is
 * sent, its tags are invalidated, so that the client's next read is fresh. A failed response invalidates nothing. A
 * failed invalidation is logged and counted; it never turns the successful write into an error.
 */
export function attachInvalidation (
  routeOptions: RouteOptions, route: CompiledRoute, service: CacheService, guarded: GuardedStore
): void {
  const invalidatesOf = route.invalidatesOf
  if (invalidatesOf === undefined) return
  const onSend: OnSend = async (request, reply, payload) => {
    if (reply.statusCode < 200 || reply.statusCode >= 300) return payload
    try {
      const tags = invalidatesOf(request, reply)
      if (tags.length > 0) await service.invalidateTags(tags)
    } catch (error) {
      guarded.failed('invalidates', error, route.counters)
      request.log.error({ err: error, route: route.name }, 'cache invalidation after a write failed; entries may be stale until their TTL')
    }
    return payload
  }
  const existing = routeOptions.onSend
  routeOptions.onSend = [...(existing === undefined ? [] : Array.isArray(existing) ? existing : [existing]), onSend] as RouteOptions['onSend']
}
