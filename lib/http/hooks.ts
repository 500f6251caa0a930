import type {
  FastifyInstance, FastifyReply, FastifyRequest, HookHandlerDoneFunction, RouteHandlerMethod, RouteOptions
} from 'fastify'
import { type HttpEntry, decodeEntry, encodeEntry, freshUntil } from '../entry'
import { KeyRing } from '../encryption'
import { FST_CACHE_CORRUPT_ENTRY } from '../errors'
import type { GuardedStore } from '../guarded-store'
import type { CacheStats } from '../stats'
import { PEEK_REMOTELY, type LeaseRequest, type StoreRead } from '../stores/store'
import { etagFor, ifNoneMatchMatches } from './conditional'
import { type Compression, compressedEntry, worthCompressing } from './encoding'
import { retentionMs, shouldRefreshEarly } from './retention'
import { RecentEntries } from './recent-entries'
import { Flights } from './flights'
import type { Leases } from './leases'
import { forwardStatus, unavailableStatus } from './cache-status'
import { type Headers, unstorableReason, varyMatches, varyNames, varyValues } from './policy'
import { type RequestCacheState, kCacheState } from './request-state'
import {
  STORED_HEADER, type OnSendDone, cacheControlFor, mergeVary, payloadBytes, replaceWithEntry, sendNotModified, sendWhenWritten,
  serveEntry, storedHeaders
} from './respond'
import { type CompiledRoute, mayBypass, undeclaredQuery, unstorableRequest, wantsBypass } from './route'
import { SharedCapture } from './shared-capture'
import { mayServeOnError, requestDirectives, reuseOf, validatorsOf } from './shared-policy'
import { WARM_HEADER, isWarmRequest, warmToken } from '../warm'

/** The fallback of a failed peek, told apart from a peek that needs the full read. */
const PEEK_FAILED = Buffer.alloc(0)
/** The fallback of a failed read: no value and no stamp, so nothing is stored for that request. */
const NOTHING_READ: StoreRead = { value: null, stale: false, stamp: { tombstone: '', epoch: '', version: '', tags: [] } }

type Hook = (request: FastifyRequest, reply: FastifyReply, ...rest: never[]) => unknown
function hookList (existing: Hook | Hook[] | undefined): Hook[] {
  return existing === undefined ? [] : Array.isArray(existing) ? [...existing] : [existing]
}

/** The request path: the lookup, replying from an entry, capturing a miss, and storing it after it was sent. */
export class ResponseCache {
  /** Keys being refreshed in the background by this process, so that one refresh runs per key. */
  private readonly refreshing = new Set<string>()
  private readonly flights = new Flights()
  /** Entries decoded from an in-process store's Buffers, which live as long as the entries themselves. */
  private readonly decoded = new WeakMap<Buffer, HttpEntry>()
  /** Entries decoded from Redis, reused while a hit brings the same bytes. Never plaintext of encrypted entries. */
  private readonly recent = new RecentEntries()
  private readonly keepsValues: boolean
  /** The store never leaves the process. */
  private readonly local: boolean
  private readonly sharedCapture: SharedCapture

  constructor (
    private readonly guarded: GuardedStore,
    private readonly stats: CacheStats,
    private readonly inject: FastifyInstance['inject'],
    /** Undefined for an in-process store, or when leases are turned off. */
    private readonly leases: Leases | undefined,
    /** Encrypts the entries of sensitive routes; undefined when the plugin has no encryption keys. */
    private readonly keyRing: KeyRing | undefined,
    /** An entry's full Redis key, from its id: bound to its ciphertext so that it cannot be moved. */
    private readonly entryKey: (id: string) => string,
    /** The store's deadline per call: a request spends about one at most before its handler runs. */
    private readonly storeTimeoutMs: number
  ) {
    this.keepsValues = guarded.store.keepsValues === true
    this.local = guarded.store.local
    this.sharedCapture = new SharedCapture({
      stats,
      compresses: (route, entry) => this.compresses(route, entry),
      write: async (state, entry) => await this.write(state, entry),
      suspectPoisoning: (request, route) => this.suspectPoisoning(request, route)
    })
  }

  /** Adds the hooks to one opted-in route. Arrays are copied, never mutated: Fastify shares them with the HEAD route. */
  attach (routeOptions: RouteOptions, route: CompiledRoute): void {
    if (route.lookup === 'onRequest') {
      routeOptions.onRequest = [...hookList(routeOptions.onRequest as Hook | Hook[]), this.onRequestLookup(route)] as RouteOptions['onRequest']
    } else {
      routeOptions.handler = this.wrapHandler(routeOptions.handler, route)
    }
    // First onSend, so the response is captured before another hook (compression, say) encodes it.
    routeOptions.onSend = [this.onSend, ...hookList(routeOptions.onSend as Hook | Hook[])] as RouteOptions['onSend']
    // No onResponse hook: Fastify would then watch every response of the route, hits included, for nothing. A
    // request that goes on to the handler is watched by afterResponse instead.
  }

  /**
   * The default lookup runs inside the handler, after every onRequest, preValidation and preHandler hook, including
   * hooks that plugins registered later add to the route: a response is never served to a request they would refuse.
   */
  private wrapHandler (handler: RouteHandlerMethod, route: CompiledRoute): RouteHandlerMethod {
    const cache = this
    return function cachedHandler (this: FastifyInstance, request: FastifyRequest, reply: FastifyReply) {
      const served = cache.lookup(request, reply, route)
      // An in-process hit, already handed to reply.send: returning nothing tells Fastify so, and no promise is made.
      if (served === true) return undefined
      if (served === false) return cache.handle(handler, this, request, reply)
      // A reply not yet sent (an async onSend hook of another plugin is running) is returned: Fastify then waits for it.
      return served.then((served) => served ? (reply.sent ? undefined : reply) : cache.handle(handler, this, request, reply))
    }
  }

  private handle (handler: RouteHandlerMethod, app: FastifyInstance, request: FastifyRequest, reply: FastifyReply): unknown {
    this.afterResponse(request, reply)
    const result: unknown = handler.call(app, request, reply)
    // A callback-style handler returns nothing and sends later; returning the reply makes Fastify wait for it.
    return result === undefined ? reply : result
  }

  private onRequestLookup (route: CompiledRoute) {
    return (request: FastifyRequest, reply: FastifyReply, done: HookHandlerDoneFunction): void => {
      const proceed = (served: boolean): void => {
        if (served) return
        this.afterResponse(request, reply)
        done()
      }
      const served = this.lookup(request, reply, route)
      if (typeof served === 'boolean') proceed(served)
      else served.then(proceed, done)
    }
  }

  /**
   * True (or a promise of true) when the request was answered from the cache; never rejects for a store failure.
   * An in-process hit answers synchronously.
   */
  private lookup (request: FastifyRequest, reply: FastifyReply, route: CompiledRoute): boolean | Promise<boolean> {
    if (request.method !== 'GET' && request.method !== 'HEAD') return false
    let id: string
    let tags: string[] | undefined
    try {
      id = route.keyOf(request)
      tags = route.tagsOf(request)
    } catch (error) {
      this.guarded.failed('key', error, route.counters)
      return false
    }
    const state: RequestCacheState = { route, id, tags, outcome: 'MISS', noStore: unstorableRequest(route, request) }
    request[kCacheState] = state
    if (route.shared !== undefined) {
      state.directives = requestDirectives(request.headers, route.shared.requestDirectives)
      if (state.directives.noStore === true) state.noStore ??= 'request-no-store'
    }
    if (undeclaredQuery(route, request) !== undefined) {
      state.outcome = 'BYPASS'
      state.noStore = 'query'
      this.stats.count('bypass', route.counters)
      return false
    }
    const warming = isWarmRequest(request)
    // A proxy forwards the request's headers upstream: the process's warm token must not go with them.
    if (warming && route.shared !== undefined) delete request.headers[WARM_HEADER]
    const bypass = warming || (wantsBypass(request) && mayBypass(route, request))
    // The common hit, an untagged entry that is fresh, costs one plain read; anything else takes the full read,
    // which also returns the stamp a miss needs (and answers a hit too). On a route whose lookups mostly miss, the
    // plain read would only add a round trip before the full one: it is skipped there.
    if (tags === undefined && state.noStore === undefined && !bypass && route.hitRate.likely) {
      const here = this.peekHere(state)
      if (here === PEEK_REMOTELY) return this.peekThenRead(request, reply, state, warming)
      if (here === PEEK_FAILED) return this.read(request, reply, state, bypass, warming, true)
      if (here !== undefined && this.servedFresh(request, reply, state, here)) return true
    }
    return this.read(request, reply, state, bypass, warming, false)
  }

  /** The peek of an in-process store, which needs no promise; PEEK_REMOTELY for a store outside the process. */
  private peekHere (state: RequestCacheState): Buffer | undefined | typeof PEEK_REMOTELY {
    const store = this.guarded.store
    if (store.peekSync === undefined) return PEEK_REMOTELY
    try {
      return store.peekSync(state.id)
    } catch (error) {
      this.guarded.failed('peek', error, state.route.counters)
      return PEEK_FAILED
    }
  }

  private peekThenRead (request: FastifyRequest, reply: FastifyReply, state: RequestCacheState, warming: boolean): Promise<boolean> {
    const started = Date.now()
    const afterPeek = (quick: Buffer | undefined): boolean | Promise<boolean> => {
      if (quick !== undefined && quick !== PEEK_FAILED && this.servedFresh(request, reply, state, quick)) return true
      // A peek that took over half the deadline found the store slow: the full read could cost a second deadline
      // before the handler runs. The request goes on without it, as after a failed peek (its response is then not
      // stored).
      const slow = Date.now() - started > this.storeTimeoutMs / 2
      return this.read(request, reply, state, false, warming, quick === PEEK_FAILED || slow)
    }
    const failed = (error: unknown): Promise<boolean> => {
      this.guarded.failed('peek', error, state.route.counters)
      return this.read(request, reply, state, false, warming, true)
    }
    // One promise between the store's reply and the response (guarded.read would add another): on a hot key, whose
    // requests share one read, each promise a request makes shows.
    try {
      return this.guarded.store.peek(state.id).then(afterPeek, failed)
    } catch (error) {
      return failed(error)
    }
  }

  /** Serves a peeked entry if it is fresh and was stored for the request's values of the headers it varies on. */
  private servedFresh (request: FastifyRequest, reply: FastifyReply, state: RequestCacheState, bytes: Buffer): boolean {
    const entry = this.decode(bytes, state.route, state.id)
    if (entry === undefined || !varyMatches(entry.vary, request.headers) || Date.now() >= freshUntil(entry)) return false
    state.route.hitRate.observe(true)
    this.hit(request, reply, state, entry)
    return true
  }

  /** The full read, and what follows from it: a hit, a stale entry served or kept as a fallback, or a miss. */
  private async read (
    request: FastifyRequest, reply: FastifyReply, state: RequestCacheState, bypass: boolean, warming: boolean, skipRead: boolean
  ): Promise<boolean> {
    const { route, id, tags } = state
    // A store that just failed (or was slow) is not asked again for the same request: about one deadline at most.
    const lease = this.leaseToTake(state, bypass)
    const found = skipRead ? NOTHING_READ : await this.guarded.read('read', (store) => store.read(id, tags ?? [], lease), NOTHING_READ, route.counters)
    if (found !== NOTHING_READ) state.stamp = found.stamp
    if (found.leaseTaken === true) state.lease = lease?.token
    if (found.corrupt === true) this.guarded.failed('decode', new FST_CACHE_CORRUPT_ENTRY('not an entry at its key'), route.counters)
    if (bypass) {
      state.outcome = 'BYPASS'
      state.warm = warming
      this.stats.count('bypass', route.counters)
      if (route.shared !== undefined) {
        state.forward = 'bypass'
        state.forwardedAt = Date.now()
        // A background refresh of a stale entry asks the origin to confirm it rather than send it again.
        const entry = warming && found.value !== null ? this.decode(found.value, route, id) : undefined
        if (entry !== undefined && varyMatches(entry.vary, request.headers)) this.validateWith(request, state, entry)
      }
      return false
    }
    const entry = found.value === null ? undefined : this.decode(found.value, route, id)
    if (found !== NOTHING_READ) route.hitRate.observe(entry !== undefined && !found.stale)
    if (route.shared !== undefined) return await this.lookupShared(request, reply, state, entry, found.stale)
    if (entry !== undefined && varyMatches(entry.vary, request.headers)) {
      const now = Date.now()
      if (!found.stale && now < freshUntil(entry)) {
        this.hit(request, reply, state, entry)
        return true
      }
      // Stale: past its freshness, or soft-invalidated. Served at once within the route's window, refreshed behind.
      if (route.staleWhileRevalidateMs > 0 && now < freshUntil(entry) + route.staleWhileRevalidateMs) {
        state.outcome = 'STALE'
        this.stats.count('stale', route.counters)
        serveEntry(request, reply, entry, route, 'STALE')
        this.refresh(request, id)
        return true
      }
      if (route.staleIfErrorMs > 0 && now < freshUntil(entry) + route.staleIfErrorMs) state.fallback = entry
    }
    return await this.missOrShare(request, reply, state)
  }

  /**
   * Shared mode (RFC 9111): reuse the entry if it is fresh for this request, or stale where the response or the
   * client allow it; otherwise ask the origin, with the entry's validators when it has some (4.3.1).
   */
  private async lookupShared (
    request: FastifyRequest, reply: FastifyReply, state: RequestCacheState, found: HttpEntry | undefined, invalidated: boolean
  ): Promise<boolean> {
    const route = state.route
    const directives = state.directives ?? {}
    const entry = found !== undefined && varyMatches(found.vary, request.headers) ? found : undefined
    state.forward = found === undefined ? 'uri-miss' : 'vary-miss'
    if (entry !== undefined) {
      const now = Date.now()
      const reuse = reuseOf(entry, now, directives, invalidated)
      if (reuse.kind === 'fresh') {
        this.hit(request, reply, state, entry)
        return true
      }
      if (reuse.kind === 'stale') {
        state.outcome = 'STALE'
        this.stats.count('stale', route.counters)
        serveEntry(request, reply, entry, route, 'STALE')
        if (reuse.because === 'stale-while-revalidate') this.refresh(request, state.id)
        return true
      }
      state.forward = reuse.because
      if (mayServeOnError(entry, now)) state.fallback = entry
    }
    if (directives.onlyIfCached === true) {
      // RFC 9111 5.2.1.7: nothing usable without the origin, which the client asked not to reach.
      request[kCacheState] = null
      this.stats.count('misses', route.counters)
      reply.code(504).header('x-cache', 'MISS').header('cache-status', unavailableStatus('only-if-cached')).send()
      return true
    }
    if (entry !== undefined) this.validateWith(request, state, entry)
    const served = await this.missOrShare(request, reply, state)
    if (!served) state.forwardedAt = Date.now()
    return served
  }

  /** Hands the handler the entry's validators, so that it makes a conditional request upstream (RFC 9111 4.3.1). */
  private validateWith (request: FastifyRequest, state: RequestCacheState, entry: HttpEntry): void {
    const validators = validatorsOf(entry.originEtag === true ? entry.etag : undefined, entry.headers)
    if (validators === undefined) return
    state.validating = entry
    request.cacheValidators = validators
  }

  private hit (request: FastifyRequest, reply: FastifyReply, state: RequestCacheState, entry: HttpEntry): void {
    const route = state.route
    state.outcome = 'HIT'
    this.stats.count('hits', route.counters)
    serveEntry(request, reply, entry, route, 'HIT')
    if (shouldRefreshEarly(route, entry, freshUntil(entry) - Date.now())) this.refresh(request, state.id)
  }

  /**
   * The lease the full read takes if it finds nothing, when a miss would go on to compute: leases on, the response
   * storable, no request of this process computing the key already (this one would wait for it), and not a request
   * that is answered without the origin (only-if-cached).
   */
  private leaseToTake (state: RequestCacheState, bypass: boolean): LeaseRequest | undefined {
    if (this.leases === undefined || bypass || state.noStore !== undefined || state.directives?.onlyIfCached === true) return undefined
    if (state.route.coalesceWaitMs > 0 && this.flights.has(state.id)) return undefined
    return this.leases.request()
  }

  /** A miss: waits for a request of this process already computing the key, or leads the computation. */
  private async missOrShare (request: FastifyRequest, reply: FastifyReply, state: RequestCacheState): Promise<boolean> {
    const route = state.route
    // A request whose read took the lease computes, whoever leads here: the others, in this process (a leader that
    // read before it included) and in the others, wait for its entry. Giving the lease back to join instead would
    // open a gap in which other instances see neither lease nor entry, and compute too.
    const joined = route.coalesceWaitMs > 0 && state.lease === undefined ? this.flights.join(state.id, route.coalesceWaitMs) : undefined
    let shared: HttpEntry | undefined
    if (joined !== undefined) {
      shared = await joined
    } else if (state.noStore === undefined) {
      if (route.coalesceWaitMs > 0) state.flight = this.flights.lead(state.id, route.coalesceWaitMs)
      shared = await this.acrossInstances(request, state)
    }
    if (shared !== undefined && varyMatches(shared.vary, request.headers)) {
      // Another instance's entry, stored already.
      state.flight?.land(shared)
      state.outcome = 'HIT'
      this.stats.count('hits', route.counters)
      serveEntry(request, reply, shared, route, 'HIT')
      return true
    }
    this.stats.count('misses', route.counters)
    state.missedAt = Date.now()
    return false
  }

  /** Takes the lease to compute the key, or waits a bounded time for the instance that holds it. */
  private async acrossInstances (request: FastifyRequest, state: RequestCacheState): Promise<HttpEntry | undefined> {
    // After a failed read there is no stamp, so nothing will be stored: a lease would only add a second deadline. A
    // read that found nothing may have taken the lease already.
    if (this.leases === undefined || state.stamp === undefined || state.lease !== undefined) return undefined
    const outcome = await this.leases.acquireOrWait(state.id, state.tags ?? [], state.stamp.version, (bytes) => this.decode(bytes, state.route, state.id),
      (entry) => varyMatches(entry.vary, request.headers) && Date.now() < freshUntil(entry))
    if (outcome.kind === 'holder') {
      state.lease = outcome.token
      return undefined
    }
    // Later writes must be judged against what this request last saw.
    state.stamp = outcome.stamp
    return outcome.kind === 'shared' ? outcome.entry : undefined
  }

  /**
   * Replays the request as a warming request after this one, to replace a stale entry or one about to expire. One
   * refresh per key runs in this process, and, with leases, across all instances: the one that takes the lease.
   */
  private refresh (request: FastifyRequest, id: string): void {
    if (this.refreshing.has(id)) return
    this.refreshing.add(id)
    const headers = { ...request.headers, [WARM_HEADER]: warmToken }
    setImmediate(() => {
      const leased = this.leases === undefined ? Promise.resolve('') : this.leases.tryAcquire(id)
      leased
        .then(async (token) => {
          if (token === undefined) return
          try {
            await this.inject({ method: 'GET', url: request.url, headers })
          } finally {
            if (token !== '') this.leases?.release(id, token)
          }
        })
        .catch((error: unknown) => this.guarded.failed('refresh', error))
        .finally(() => this.refreshing.delete(id))
    })
  }

  /**
   * The entry in stored bytes, or undefined (a miss, counted) when they are not one, cannot be decrypted (tampered,
   * moved to another key, or its key was dropped from the ring), or are plaintext where the route is sensitive.
   */
  private decode (bytes: Buffer, route: CompiledRoute, id: string): HttpEntry | undefined {
    try {
      if (KeyRing.isEncrypted(bytes)) {
        const plain = this.keyRing?.decrypt(bytes, this.entryKey(id))
        if (plain === undefined) throw new FST_CACHE_CORRUPT_ENTRY('cannot be decrypted with the configured keys')
        return decodeEntry(plain)
      }
      // Before any reuse of a decoded entry: another route sharing the id may have decoded these plaintext bytes.
      if (route.sensitive) throw new FST_CACHE_CORRUPT_ENTRY('a sensitive route found an unencrypted entry')
      if (!this.keepsValues) return this.recent.decode(id, bytes)
      // An in-process store hands back the same Buffer on every hit: decode it once. (Redis's are in `recent`.)
      const known = this.decoded.get(bytes)
      if (known !== undefined) return known
      const entry = decodeEntry(bytes)
      this.decoded.set(bytes, entry)
      return entry
    } catch (error) {
      // Treated as a miss; the response of this request replaces it.
      this.guarded.failed('decode', error, route.counters)
      return undefined
    }
  }

  private readonly onSend = (request: FastifyRequest, reply: FastifyReply, payload: unknown, done: OnSendDone): void => {
    const state = request[kCacheState]
    if (state === null || state.outcome === 'HIT' || state.outcome === 'STALE') return done(null, payload)
    const route = state.route
    if (reply.statusCode >= 500 && state.fallback !== undefined) {
      // stale-if-error: the failure was logged by Fastify's error handling; the client gets the stored response.
      state.flight?.settle(undefined)
      state.outcome = 'STALE'
      this.stats.count('stale', route.counters)
      const failed = reply.statusCode
      const body = replaceWithEntry(request, reply, state.fallback, route)
      if (route.shared !== undefined) reply.header('cache-status', forwardStatus(state.forward ?? 'stale', failed, false, 'stale-if-error'))
      return done(null, body)
    }
    if (route.shared !== undefined) return this.sharedCapture.onSend(request, reply, state, payload, done)
    reply.header('x-cache', state.outcome)
    if (route.vary.length > 0) reply.header('vary', mergeVary(reply.getHeader('vary'), route.vary))
    const body = payloadBytes(payload)
    const headers = reply.getHeaders() as Headers
    const reason = state.noStore ?? unstorableReason({ method: request.method, status: reply.statusCode, headers, bodyBytes: body?.length }, route.storage)
    if (reason === 'unkeyed-header') this.suspectPoisoning(request, route)
    if (reason !== undefined || body === undefined) {
      state.flight?.settle(undefined)
      if (reason !== 'method') this.stats.skip(reason ?? 'stream', route.counters)
      if (state.warm === true) reply.header(STORED_HEADER, '0')
      return done(null, payload)
    }
    const etag = headers.etag !== undefined ? String(headers.etag) : etagFor(body)
    const storedAt = Date.now()
    const capture: HttpEntry = { status: reply.statusCode, headers: storedHeaders(headers), body, storedAt, ttl: route.ttl, etag }
    if (state.missedAt !== undefined) capture.computeMs = storedAt - state.missedAt
    const varied = varyNames(headers.vary)
    if (varied.length > 0) capture.vary = varyValues(varied, request.headers)
    state.capture = capture
    state.flight?.settle(capture)
    reply.header('etag', etag)
    // Its hits will be sent brotli-encoded or not, by the request's Accept-Encoding: say so from the first response.
    if (this.compresses(route, capture)) reply.header('vary', mergeVary(reply.getHeader('vary'), ['accept-encoding']))
    if (headers['cache-control'] === undefined) {
      const cacheControl = cacheControlFor(request, route)
      if (cacheControl !== undefined) reply.header('cache-control', cacheControl)
    }
    if (ifNoneMatchMatches(request.headers['if-none-match'], etag)) return sendNotModified(reply, done)
    if (state.warm === true) {
      // Warming waits for the write, so that it can report entries that were not stored.
      state.capture = undefined
      return sendWhenWritten(this.write(state, capture), reply, payload, done)
    }
    done(null, payload)
  }

  /** A header that changes responses but is not in the key: the specification's monitoring of poisoning attempts. */
  private suspectPoisoning (request: FastifyRequest, route: CompiledRoute): void {
    const headers = route.unkeyed.filter((name) => request.headers[name] !== undefined)
    this.guarded.log.warn('poisoning', { route: route.name, headers, ip: request.ip }, 'suspected cache poisoning attempt: a header that changes responses is not in the key; the response is not stored')
  }

  /**
   * For a request that goes on to the handler: once its response has gone out (or its connection closed first),
   * the requests waiting for it are settled, the captured response is stored (only a response that went out whole),
   * and the lease is given back. Storing after the response never delays it; a failed write is counted only.
   */
  private afterResponse (request: FastifyRequest, reply: FastifyReply): void {
    const state = request[kCacheState]
    if (state == null) return
    const raw = reply.raw
    // 'finish' when the response went out whole; 'close' also comes after it, or alone when the connection went first.
    const once = (finished: boolean) => (): void => {
      raw.off('finish', onFinish)
      raw.off('close', onClose)
      this.responded(state, finished)
    }
    const onFinish = once(true)
    const onClose = once(false)
    raw.once('finish', onFinish)
    raw.once('close', onClose)
  }

  private responded (state: RequestCacheState, finished: boolean): void {
    state.flight?.settle(undefined)
    const capture = state.capture
    const written = capture === undefined || !finished ? Promise.resolve(false) : this.write(state, capture)
    const landed = (stored: boolean): void => {
      state.flight?.land(stored ? capture : undefined)
      // A write that reached the store gave the lease back with it; otherwise it goes back on its own.
      if (state.lease !== undefined) this.leases?.release(state.id, state.lease)
    }
    written.then(landed, () => landed(false))
  }

  /** Compressed for Redis only: in memory, every hit of a client without brotli would pay for decompressing. */
  private compresses (route: CompiledRoute, entry: HttpEntry): boolean {
    return this.compressionFor(route, entry) !== undefined
  }

  private compressionFor (route: CompiledRoute, entry: HttpEntry): Compression | undefined {
    const compression = route.compression
    return compression !== undefined && !this.local && worthCompressing(entry, compression.minBytes) ? compression : undefined
  }

  /** Stores a captured response; resolves false when it was refused or failed (both counted). */
  private async write (state: RequestCacheState, entry: HttpEntry): Promise<boolean> {
    const route = state.route
    // Without a stamp (the read failed) the write is refused: it could otherwise undo an invalidation it never saw.
    const stamp = state.stamp
    if (stamp === undefined) return false
    // A body that cannot be compressed is stored as it is.
    const compression = this.compressionFor(route, entry)
    const stored = compression !== undefined ? await compressedEntry(entry, compression).catch(() => entry) : entry
    try {
      const plain = encodeEntry(stored)
      const bytes = route.sensitive && this.keyRing !== undefined ? this.keyRing.encrypt(plain, this.entryKey(state.id)) : plain
      const ttlMs = retentionMs(route, entry)
      if (ttlMs <= 0) return false
      const lease = state.lease
      const written = await this.guarded.write('set', (store) => store.set(state.id, bytes, { ttlMs, tags: state.tags, stamp, lease }), route.counters)
      if (state.lease === lease) state.lease = undefined
      this.stats.count(written ? 'stored' : 'raced', route.counters)
      return written
    } catch {
      return false
    }
  }
}
