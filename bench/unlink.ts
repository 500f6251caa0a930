import type { Redis } from 'ioredis'
import { escapeGlob } from '../lib/keys'

const SCAN_COUNT = 10_000
const UNLINK_BATCH = 1000

/** SCAN MATCH + UNLINK in batches, never KEYS or FLUSHALL; resolves to how many keys were removed. */
export async function unlinkMatching (client: Redis, match: string): Promise<number> {
  let removed = 0
  let cursor = '0'
  do {
    const [next, keys] = await client.scan(cursor, 'MATCH', match, 'COUNT', SCAN_COUNT)
    cursor = next
    for (let i = 0; i < keys.length; i += UNLINK_BATCH) removed += await client.unlink(...keys.slice(i, i + UNLINK_BATCH))
  } while (cursor !== '0')
  return removed
}

/** Every key under `prefix:`, the prefix matched literally. */
export async function unlinkPrefix (client: Redis, prefix: string): Promise<number> {
  return await unlinkMatching(client, escapeGlob(prefix) + ':*')
}
