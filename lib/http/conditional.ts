import { createHash } from 'node:crypto'

/**
 * A strong validator from the body bytes (RFC 9110 8.8.3): 96 bits of SHA-1, in 16 characters. It names content and
 * guards nothing, and a client only ever compares it with other versions of the same resource, so 96 bits never
 * collide in practice; every stored entry carries it, and the 11 characters a whole digest would add count there.
 */
export function etagFor (body: Buffer): string {
  return '"' + createHash('sha1').update(body).digest().toString('base64url', 0, 12) + '"'
}

function opaqueTag (tag: string): string {
  return tag.startsWith('W/') ? tag.slice(2) : tag
}

/**
 * RFC 9110 13.1.2: If-None-Match uses the weak comparison, accepts a list of entity tags, and `*` matches any current
 * representation. Tags are split on the commas between quoted strings, not inside them.
 */
export function ifNoneMatchMatches (header: string | undefined, etag: string): boolean {
  if (header === undefined || header.length === 0) return false
  if (header.trim() === '*') return true
  const wanted = opaqueTag(etag)
  const tags = header.match(/(?:W\/)?"[^"]*"/g)
  if (tags === null) return false
  for (const tag of tags) {
    if (opaqueTag(tag) === wanted) return true
  }
  return false
}
