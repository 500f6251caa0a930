/** What peekSync answers when the entry is not in this process: only peek, which asks the remote store, can tell. */
export const PEEK_REMOTELY: unique symbol = Symbol('peek remotely')

/**
 * What every store implements. A store keeps bytes under ids (encoded keys, already safe for Redis) with a TTL and
 * tags; it knows nothing about HTTP. One contract suite (test/store-contract.ts) runs against every store.
 *
 * Invalidation is by tokens, not by timestamps: every tag has a current token, each entry records the tokens of its
 * tags when written, and an entry whose recorded token differs from the current one is invalid (hard) or stale
 * (soft). A tag whose token record is gone (expired or evicted) gets a new token, so its old entries never become
 * fresh again. A read returns a stamp (the tokens it saw, plus the key's tombstone and the pattern epoch); a write
 * that presents it is refused when an invalidation happened in between, so a slow miss never writes an old value back.
 */
export interface CacheStore {
  readonly kind: string
  /** True when calls never leave the process, so they need no deadline. */
  readonly local: boolean
  /** True when a hit hands back the same Buffer each time (an in-process copy), so that decoding it once pays. */
  readonly keepsValues?: boolean
  /**
   * Reads an entry and the stamp a later conditional write needs; `tags` are the tags that write will carry. With
   * `lease`, a read that finds nothing at the key also takes the lease when it is free (a miss then costs one round
   * trip instead of two), and says so in `leaseTaken`.
   */
  read (id: string, tags: readonly string[], lease?: LeaseRequest): Promise<StoreRead>
  /**
   * The hit path's shortcut: the value of an entry that carries no tags (so nothing but its own deletion could have
   * invalidated it), in one plain read; undefined when only a full read can tell (absent, tagged, or not an entry).
   */
  peek (id: string): Promise<Buffer | undefined>
  /**
   * The peek, answered at once by a store that holds entries in this process, so that an in-process hit creates no
   * promise: what peek would resolve to, or PEEK_REMOTELY when only the remote store can tell (then call peek).
   */
  peekSync? (id: string): Buffer | undefined | typeof PEEK_REMOTELY
  /** The value of a valid (or soft-invalidated) entry, or null. */
  get (id: string): Promise<Buffer | null>
  /** Writes an entry; with a stamp, resolves false and writes nothing when an invalidation happened since the read. */
  set (id: string, value: Buffer, options: StoreSetOptions): Promise<boolean>
  /**
   * Takes the lease to compute an entry (SET NX PX): across instances, one computes while the others wait briefly.
   * A holder that dies or hangs blocks no one for longer than ttlMs.
   */
  acquireLease (id: string, token: string, ttlMs: number): Promise<boolean>
  /** Gives the lease back, only if this holder still has it. */
  releaseLease (id: string, token: string): Promise<void>
  /** Removes entries and blocks in-flight writes of them; resolves to how many existed. */
  delete (ids: readonly string[]): Promise<number>
  exists (id: string): Promise<boolean>
  /** Sets a new TTL on an existing entry; false when there is none. */
  expire (id: string, seconds: number): Promise<boolean>
  /** Seconds left, rounded up; -2 when the entry does not exist, -1 when it never expires (as Redis TTL). */
  ttl (id: string): Promise<number>
  /**
   * Hard: every entry carrying any of the tags becomes a miss (and is removed). Soft: they become stale but stay.
   * Resolves to how many entries were affected (exact unless some expired or were evicted meanwhile).
   */
  invalidateTags (tags: readonly string[], options?: { soft?: boolean }): Promise<number>
  /** Removes every entry whose id matches the glob (only `*` and `?` are wildcards); resolves to the count. */
  deletePattern (glob: string): Promise<number>
  /** The store's own figures, for stats(). */
  info (): Promise<Record<string, string | number>>
  /**
   * Maintenance: removes keys under the prefix that have no TTL (nothing the plugin writes lacks one) and tag-set
   * members that point at nothing, in batches, and counts the entries and their bytes on the way.
   */
  cleanup (): Promise<CleanupReport>
  /** Releases what the store itself opened; never closes a client it was handed. */
  close (): Promise<void>
}

export interface CleanupReport {
  /** Keys looked at. */
  scanned: number
  /** Keys without a TTL, removed. */
  removedWithoutTtl: number
  /** Tag-set members (or, in memory, token records and tombstones) that pointed at nothing, removed. */
  removedDangling: number
  /** Entries under the prefix, and the bytes they take as stored (header included in Redis), when the pass ran. */
  entries: number
  bytes: number
  durationMs: number
}

export interface StoreRead {
  value: Buffer | null
  /** The entry is there but one of its tags was soft-invalidated since it was written. */
  stale: boolean
  /** Something that is not an entry sits at its key (it reads as a miss, and the next write replaces it). */
  corrupt?: boolean
  /** Some instance holds the lease to compute this entry. */
  leased?: boolean
  /** The read found no entry and took the lease it was asked to take. */
  leaseTaken?: boolean
  /** Milliseconds the entry has left to live, when it is there and the store knows. */
  ttlMs?: number
  /** The tags the entry was written with, when it is there and the store knows. */
  entryTags?: readonly string[]
  stamp: WriteStamp
}

/** The lease a read takes when it finds nothing (see CacheStore.acquireLease). */
export interface LeaseRequest {
  token: string
  ttlMs: number
}

/** Opaque to callers: what a read saw, for a later conditional write. */
export interface WriteStamp {
  readonly tombstone: string
  readonly epoch: string
  /** The version of the entry that was there ('' for none): a write after someone else's is refused. */
  readonly version: string
  readonly tags: ReadonlyArray<readonly [string, string]>
}

export interface StoreSetOptions {
  ttlMs: number
  /** Encoded tag ids. */
  tags?: readonly string[]
  /** From a read of this id: the write is refused if an invalidation happened since. */
  stamp?: WriteStamp
  /** The token of the lease this write gives back, with the write, whether it is refused or not. */
  lease?: string
}

/** How long a tombstone or an unused tag token lives: a miss slower than this may still write back. */
export const INVALIDATION_WINDOW_MS = 10 * 60 * 1000

/** A token is `<hard>.<soft>`: a hard invalidation changes the first half, a soft one the second. */
export function tokenHalves (token: string): [string, string] {
  const dot = token.indexOf('.')
  return dot === -1 ? [token, ''] : [token.slice(0, dot), token.slice(dot + 1)]
}

/**
 * A matcher for a store pattern (only `*` and `?` are wildcards), for stores that cannot match globs themselves.
 * Hand-written rather than a RegExp: a pattern built from a long key would exceed the size a RegExp may have.
 */
export function globMatcher (glob: string): (text: string) => boolean {
  return (text) => {
    let g = 0
    let t = 0
    let star = -1
    let resume = 0
    while (t < text.length) {
      if (g < glob.length && (glob[g] === '?' || (glob[g] !== '*' && glob[g] === text[t]))) {
        g++
        t++
      } else if (g < glob.length && glob[g] === '*') {
        star = g++
        resume = t
      } else if (star !== -1) {
        g = star + 1
        t = ++resume
      } else {
        return false
      }
    }
    while (g < glob.length && glob[g] === '*') g++
    return g === glob.length
  }
}
