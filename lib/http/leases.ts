import { setTimeout as sleep } from 'node:timers/promises'
import type { HttpEntry } from '../entry'
import type { GuardedStore } from '../guarded-store'
import type { LeaseRequest, StoreRead, WriteStamp } from '../stores/store'
import { newTokenPart } from '../stores/tokens'

export interface LeaseOptions {
  /** How long a lease holds at most: a holder that dies or hangs blocks the key no longer than this. */
  ttlMs: number
  /** How long another instance waits for the holder's entry before running the handler itself. */
  waitMs: number
}

/** What a miss does once it has tried the lease. */
export type LeaseOutcome =
  | { kind: 'holder', token: string }
  | { kind: 'shared', entry: HttpEntry, stamp: WriteStamp }
  | { kind: 'timeout', stamp: WriteStamp }

const POLL_MS = 25
const RELEASE_RETRY_MS = 500

/**
 * Stampede protection across instances sharing the store: the instance whose miss takes the lease (SET NX PX with a
 * random token) computes; the others poll for its entry for a bounded time (woken as soon as it is written when the
 * in-process tier's bus is there), then run the handler themselves. A store
 * failure counts as holding the lease: the cache never stops a request from being served.
 */
export class Leases {
  constructor (
    private readonly guarded: GuardedStore,
    private readonly options: LeaseOptions,
    /** Resolves after ms, or earlier when the id is known to have been written (the bus of the in-process tier says so). */
    private readonly nextChange: (id: string, ms: number) => Promise<void> = (_, ms) => sleep(ms)
  ) {}

  /** A new lease for a read to take when it finds nothing (see CacheStore.read). */
  request (): LeaseRequest {
    return { token: newTokenPart(), ttlMs: this.options.ttlMs }
  }

  /** The lease's token when this instance took it; undefined when another holds it. A store failure takes it. */
  async tryAcquire (id: string): Promise<string | undefined> {
    const { token, ttlMs } = this.request()
    const acquired = await this.guarded.read('lease', (store) => store.acquireLease(id, token, ttlMs), true)
    return acquired ? token : undefined
  }

  /**
   * `judged` is the version of the entry the caller's lookup found and would not use ('' when it found none): only an
   * entry written since is shared. `decode` turns stored bytes into an entry (decrypting them if need be), or
   * undefined when they are not one.
   */
  async acquireOrWait (
    id: string, tags: readonly string[], judged: string, decode: (bytes: Buffer) => HttpEntry | undefined, usable: (entry: HttpEntry) => boolean
  ): Promise<LeaseOutcome> {
    const newer = (found: StoreRead): HttpEntry | undefined => {
      if (found.value === null || found.stale || found.stamp.version === judged) return undefined
      const entry = decode(found.value)
      return entry !== undefined && usable(entry) ? entry : undefined
    }
    // One script reads the key and takes the lease only if it finds nothing there: a lease taken on its own could be
    // one that the holder gave back with its entry a moment ago, and the key would be computed twice.
    const lease = this.request()
    const first = await this.guarded.read('read', (store) => store.read(id, tags, lease), undefined)
    if (first === undefined || first.leaseTaken === true) return { kind: 'holder', token: lease.token }
    let stamp = first.stamp
    const written = newer(first)
    if (written !== undefined) return { kind: 'shared', entry: written, stamp }
    // What is there will not do (the entry the lookup judged, a stale one, garbage) and no one is computing: this
    // instance replaces it.
    if (first.leased !== true) {
      const token = await this.tryAcquire(id)
      if (token !== undefined) return { kind: 'holder', token }
    }
    const deadline = Date.now() + this.options.waitMs
    while (Date.now() < deadline) {
      await this.nextChange(id, POLL_MS)
      const found = await this.guarded.read('read', (store) => store.read(id, tags), undefined)
      if (found === undefined) break
      stamp = found.stamp
      // The holder gave the lease back without an entry (its response was not storable): no point waiting longer.
      if (found.value === null && found.leased === false) break
      const entry = newer(found)
      if (entry !== undefined) return { kind: 'shared', entry, stamp }
    }
    return { kind: 'timeout', stamp }
  }

  /**
   * Gives the lease back once the holder's entry is written (or was not storable), even through an open circuit: a
   * lease left behind would make every instance wait for it. A failure is only counted.
   */
  release (id: string, token: string): void {
    const attempt = (): Promise<void> => this.guarded.write('releaseLease', (store) => store.releaseLease(id, token))
    // Retried once a little later: a connection that was just killed is usually back by then.
    attempt().catch(() => { setTimeout(() => { attempt().catch(() => {}) }, RELEASE_RETRY_MS).unref() })
  }
}
