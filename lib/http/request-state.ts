import type { HttpEntry } from '../entry'
import type { WriteStamp } from '../stores/store'
import type { ForwardReason } from './cache-status'
import type { FlightLead } from './flights'
import type { CacheOutcome } from './respond'
import type { CompiledRoute } from './route'
import type { CacheValidators, RequestDirectives } from './shared-policy'

/** What the plugin keeps on a request of an opted-in route, from its lookup to the write after the response. */
export const kCacheState = Symbol('fastify-response-cache.state')

export interface RequestCacheState {
  route: CompiledRoute
  id: string
  tags: string[] | undefined
  outcome: CacheOutcome
  /** What the lookup saw, so that the write is refused if an invalidation happens while the handler runs. */
  stamp?: WriteStamp
  /** The response to store once it has been sent. */
  capture?: HttpEntry
  /** A warming request: the entry is written before the response goes out, and the response says if it was. */
  warm?: boolean
  /** A stale entry to answer with if the handler fails (stale-if-error). */
  fallback?: HttpEntry
  /** Set when this request leads the computation of its key: shares its response with the requests waiting for it. */
  flight?: FlightLead
  /** The token of the lease this request holds to compute its key across instances. */
  lease?: string
  /** When the lookup found no entry, to measure how long the handler took. */
  missedAt?: number
  /** Why this request's response must not be stored whatever it turns out to be. */
  noStore?: 'query' | 'unkeyed-header' | 'request-body' | 'request-no-store'
  // Shared mode only.
  /** The client's request directives that the route honours. */
  directives?: RequestDirectives
  /** Why the request goes to the origin, for Cache-Status. */
  forward?: ForwardReason
  /** When the request was handed to the handler (the request time of RFC 9111 4.2.3). */
  forwardedAt?: number
  /** The stored response being validated with the origin by this request's conditional request. */
  validating?: HttpEntry
}

declare module 'fastify' {
  interface FastifyRequest {
    [kCacheState]: RequestCacheState | null
    /**
     * Shared mode: the validators of the stale entry the cache wants the origin to confirm (RFC 9111 4.3.1), to send
     * upstream as request headers; undefined when there is nothing to validate. A 304 from the origin then refreshes
     * the entry, which is served.
     */
    cacheValidators: CacheValidators | undefined
  }
}
