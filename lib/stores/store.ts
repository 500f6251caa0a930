/**
 * What every store implements. A store keeps bytes under ids (encoded keys, already safe for Redis) with a TTL and
 * tags; it knows nothing about HTTP. One contract suite (test/store-contract.ts) runs against every store.
 */
export interface CacheStore {
  readonly kind: string
  /** True when calls never leave the process, so they need no deadline. */
  readonly local: boolean
  get (id: string): Promise<Buffer | null>
  set (id: string, value: Buffer, options: StoreSetOptions): Promise<void>
  /** Removes entries; resolves to how many existed. */
  delete (ids: readonly string[]): Promise<number>
  exists (id: string): Promise<boolean>
  /** Sets a new TTL on an existing entry; false when there is none. */
  expire (id: string, seconds: number): Promise<boolean>
  /** Seconds left; -2 when the entry does not exist, -1 when it never expires (as Redis TTL). */
  ttl (id: string): Promise<number>
  /** Removes every entry that carries any of the tags; resolves to how many were removed. */
  invalidateTags (tagIds: readonly string[]): Promise<number>
  /** Removes every entry whose id matches the glob (only `*` and `?` are wildcards); resolves to the count. */
  deletePattern (glob: string): Promise<number>
  /** The store's own figures, for stats(). */
  info (): Promise<Record<string, string | number>>
  /** Releases what the store itself opened; never closes a client it was handed. */
  close (): Promise<void>
}

export interface StoreSetOptions {
  ttlMs: number
  /** Encoded tag ids. */
  tags?: readonly string[]
}

/** The glob of a store pattern as a regular expression, for stores that cannot match globs themselves. */
export function globToRegExp (glob: string): RegExp {
  let source = ''
  for (const char of glob) {
    if (char === '*') source += '[\\s\\S]*'
    else if (char === '?') source += '[\\s\\S]'
    else source += char.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')
  }
  return new RegExp('^' + source + '$')
}
