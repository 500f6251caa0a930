import { Readable } from 'node:stream'
import type { FastifyReply, FastifyRequest } from 'fastify'
import type { HttpEntry } from '../entry'
import type { CacheStats } from '../stats'
import { appendStatus, forwardStatus } from './cache-status'
import { etagFor } from './conditional'
import { type Headers, varyNames, varyValues } from './policy'
import { readUpTo } from './read-up-to'
import type { RequestCacheState } from './request-state'
import {
  STORED_HEADER, type OnSendDone, clientNotModified, mergeVary, payloadBytes, replaceWithEntry, sendNotModified, sendWhenWritten, storedHeaders
} from './respond'
import { refreshedEntry } from './revalidation'
import type { CompiledRoute } from './route'
import {
  type Directives, designates, responseDirectives, sharedFreshness, sharedUnstorableReason, withheldFields
} from './shared-policy'

/** What capturing a shared-mode response needs of the request path. */
export interface CaptureSink {
  readonly stats: CacheStats
  /** Whether the entry will be stored compressed: its hits then vary on Accept-Encoding. */
  compresses (route: CompiledRoute, entry: HttpEntry): boolean
  /** Stores a captured response; resolves false when it was refused or failed. */
  write (state: RequestCacheState, entry: HttpEntry): Promise<boolean>
  /** Logs a request whose response is not stored because a header that changes responses is not in the key. */
  suspectPoisoning (request: FastifyRequest, route: CompiledRoute): void
}

/**
 * The onSend of shared-mode routes (RFC 9111): what the origin answered becomes the response to send, Cache-Status
 * added, and the entry to store once it is sent.
 */
export class SharedCapture {
  constructor (private readonly sink: CaptureSink) {}

  /**
   * A 304 that answers the cache's own conditional request refreshes the stored response, which is served (RFC 9111
   * 4.3.3, 4.3.4); any other response is stored when RFC 9111 3 allows it, with the freshness its headers give it.
   * The origin's headers go out as they came, with Cache-Status added.
   */
  onSend (request: FastifyRequest, reply: FastifyReply, state: RequestCacheState, payload: unknown, done: OnSendDone): void {
    const route = state.route
    const shared = route.shared!
    const now = Date.now()
    const requestTime = state.forwardedAt ?? now
    const forward = state.forward ?? 'uri-miss'
    const status = reply.statusCode
    const validating = state.validating
    let headers = reply.getHeaders() as Headers
    if (validating !== undefined && status === 304 && designates(headers.etag, validating.originEtag === true ? validating.etag : undefined)) {
      const { entry, storable } = refreshedEntry(request, validating, headers, requestTime, now, route)
      if (storable) state.capture = entry
      state.flight?.settle(storable ? entry : undefined)
      state.outcome = 'REVALIDATED'
      // The 304's own (empty) body stream, if any, is drained so that its connection is released.
      if (payload instanceof Readable) payload.resume()
      const body = replaceWithEntry(request, reply, entry, route, 'REVALIDATED')
      reply.header('cache-status', forwardStatus(forward, 304, storable))
      if (clientNotModified(request, entry.etag, entry.headers['last-modified'], route)) return sendNotModified(reply, done)
      return this.finish(state, reply, body, done)
    }
    reply.header('x-cache', state.outcome)
    if (route.vary.length > 0) reply.header('vary', mergeVary(reply.getHeader('vary'), route.vary))
    headers = reply.getHeaders() as Headers
    const body = payloadBytes(payload)
    const { directives, targeted } = responseDirectives(headers, shared.targeted)
    const facts = { status, headers, directives, targeted }
    const reason = state.noStore ?? (request.method !== 'GET'
      ? 'method'
      : body !== undefined && body.length > route.storage.maxEntryBytes
        ? 'too-large'
        : headers['set-cookie'] !== undefined ? 'set-cookie' : sharedUnstorableReason({ ...facts, requestHeaders: request.headers }))
    if (reason === undefined && body === undefined && payload instanceof Readable) {
      // A proxy's body is often a stream: a storable one is read whole (up to maxEntryBytes) so that it can be stored.
      readUpTo(payload, route.storage.maxEntryBytes).then((read) => {
        if (Buffer.isBuffer(read)) return this.capture(request, reply, state, read, facts, now, done)
        this.notCaptured(request, reply, state, 'too-large', done, read)
      }, (error: Error) => {
        state.flight?.settle(undefined)
        done(error)
      })
      return
    }
    if (reason !== undefined || body === undefined) return this.notCaptured(request, reply, state, reason ?? 'stream', done, payload)
    this.capture(request, reply, state, body, facts, now, done)
  }

  /** Sends a shared-mode response that is not stored, saying why in Cache-Status. */
  private notCaptured (request: FastifyRequest, reply: FastifyReply, state: RequestCacheState, reason: string, done: OnSendDone, payload: unknown): void {
    const route = state.route
    state.flight?.settle(undefined)
    if (reason === 'unkeyed-header') this.sink.suspectPoisoning(request, route)
    if (reason !== 'method') this.sink.stats.skip(reason, route.counters)
    reply.header('cache-status', appendStatus(reply.getHeader('cache-status'), forwardStatus(state.forward ?? 'uri-miss', reply.statusCode, false, reason)))
    if (state.warm === true) reply.header(STORED_HEADER, '0')
    done(null, payload)
  }

  /** Captures a storable shared-mode response, with the freshness its headers give it, and sends it. */
  private capture (
    request: FastifyRequest, reply: FastifyReply, state: RequestCacheState, body: Buffer,
    facts: { status: number, headers: Headers, directives: Directives, targeted: boolean }, now: number, done: OnSendDone
  ): void {
    const route = state.route
    const { status, headers, directives } = facts
    const originEtag = headers.etag !== undefined
    const etag = originEtag ? String(headers.etag) : etagFor(body)
    const freshness = sharedFreshness(facts, state.forwardedAt ?? now, now)
    const capture: HttpEntry = {
      status, headers: storedHeaders(headers, { withheld: withheldFields(directives) }), body, etag, ...freshness
    }
    if (originEtag) capture.originEtag = true
    const varied = varyNames(headers.vary)
    if (varied.length > 0) capture.vary = varyValues(varied, request.headers)
    state.capture = capture
    state.flight?.settle(capture)
    // As in app mode: its hits will be sent brotli-encoded or not, by the request's Accept-Encoding.
    if (this.sink.compresses(route, capture)) reply.header('vary', mergeVary(reply.getHeader('vary'), ['accept-encoding']))
    // A made-up validator still answers the client's If-None-Match; it is never sent upstream.
    if (!originEtag) reply.header('etag', etag)
    reply.header('cache-status', appendStatus(headers['cache-status'], forwardStatus(state.forward ?? 'uri-miss', status, true)))
    if (clientNotModified(request, etag, headers['last-modified'], route)) return sendNotModified(reply, done)
    this.finish(state, reply, body, done)
  }

  /** Sends the payload; a warming request first waits for the write, so that it can say whether it was stored. */
  private finish (state: RequestCacheState, reply: FastifyReply, payload: unknown, done: OnSendDone): void {
    const capture = state.capture
    if (state.warm !== true) return done(null, payload)
    state.capture = undefined
    sendWhenWritten(capture === undefined ? Promise.resolve(false) : this.sink.write(state, capture), reply, payload, done)
  }
}
