import { type HttpEntry, decodeEntry } from '../entry'

/** Entries whose stored bytes are larger are not remembered: comparing and copying them would cost more than it saves. */
const MAX_ENTRY_BYTES = 64 * 1024
/** Over 5,000 keys, 10,000 instead of 1,000 made a Redis hit 0.50 instead of 0.40 to 0.47 × the ceiling. */
const MAX_ENTRIES = 10_000
const MAX_BYTES = 16 * 1024 * 1024

interface Recent {
  bytes: Buffer
  entry: HttpEntry
}

/**
 * The entries last decoded from Redis, by id. Every Redis hit brings a new Buffer; when its bytes are the same as
 * last time's (compared in full, so a rewritten entry is always decoded afresh), the decoded entry is reused, and
 * with it the body already decompressed for clients without brotli (see encoding.ts). Bounded in count and bytes,
 * and emptied when full, as the key memo of route.ts is. The bytes are copied: a reply can be a slice of a larger
 * socket buffer, which must not be kept alive.
 */
export class RecentEntries {
  private readonly recent = new Map<string, Recent>()
  private bytes = 0

  decode (id: string, bytes: Buffer): HttpEntry {
    const known = this.recent.get(id)
    if (known !== undefined && known.bytes.equals(bytes)) return known.entry
    if (bytes.length > MAX_ENTRY_BYTES) return decodeEntry(bytes)
    const copy = Buffer.from(bytes)
    const entry = decodeEntry(copy)
    if (known !== undefined) this.bytes -= known.bytes.length
    if (this.recent.size >= MAX_ENTRIES || this.bytes + copy.length > MAX_BYTES) this.clear()
    this.recent.set(id, { bytes: copy, entry })
    this.bytes += copy.length
    return entry
  }

  clear (): void {
    this.recent.clear()
    this.bytes = 0
  }
}
