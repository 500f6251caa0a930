/**
 * Where the Redis store keeps things, under the prefix:
 *
 *   e:{<id>}   the entry: a header line `@<version> tag=token tag=token`, a newline, then the value bytes
 *   v:{<id>}   the key's tombstone, set by delete/invalidate, refusing writes of misses that read before it
 *   l:{<id>}   the lease of the instance computing the entry, if any
 *   g:{<tag>}  the tag's current token `<hard>.<soft>`
 *   t:{<tag>}  the set of entry keys written with the tag (to count and reclaim them on invalidation)
 *   p          the pattern epoch, changed by each pattern invalidation
 *
 * The braces are Redis Cluster hash tags: an entry's keys share the slot of its id, a tag's keys the slot of the tag,
 * so that a Lua script working on an entry (or on a tag) touches one slot, while entries and tags still spread over
 * every node of a cluster. Ids and tags never hold a brace (lib/keys.ts encodes them) and the prefix cannot (option
 * schema), so the hash tag is exactly the id or the tag. An empty id would make an empty hash tag, which Redis
 * ignores (the whole key would be hashed, and an entry's keys would land on different slots): it is written as
 * EMPTY_ID, which no encoded id can be (`%` is always followed by two upper-case hex digits, or by `u`).
 */
export const EMPTY_ID = '%e'

export class RedisLayout {
  readonly entryPrefix: string
  private readonly tombstonePrefix: string
  private readonly leasePrefix: string
  private readonly tokenPrefix: string
  readonly tagSetPrefix: string
  readonly epochKey: string

  constructor (readonly prefix: string) {
    this.entryPrefix = prefix + ':e:'
    this.tombstonePrefix = prefix + ':v:'
    this.leasePrefix = prefix + ':l:'
    this.tokenPrefix = prefix + ':g:'
    this.tagSetPrefix = prefix + ':t:'
    this.epochKey = prefix + ':p'
  }

  entry (id: string): string { return this.entryPrefix + hashTag(id) }
  tombstone (id: string): string { return this.tombstonePrefix + hashTag(id) }
  lease (id: string): string { return this.leasePrefix + hashTag(id) }
  token (tag: string): string { return this.tokenPrefix + hashTag(tag) }
  tagSet (tag: string): string { return this.tagSetPrefix + hashTag(tag) }

  /** The id of an entry key, or undefined when the key is not one. */
  idOf (entryKey: string): string | undefined {
    if (!entryKey.startsWith(this.entryPrefix + '{') || !entryKey.endsWith('}')) return undefined
    const tag = entryKey.slice(this.entryPrefix.length + 1, -1)
    return tag === EMPTY_ID ? '' : tag
  }
}

function hashTag (name: string): string {
  return '{' + (name === '' ? EMPTY_ID : name) + '}'
}

/** The full Redis key of an entry: what encryption binds a ciphertext to, whichever store holds it. */
export function entryKey (prefix: string, id: string): string {
  return prefix + ':e:' + hashTag(id)
}
