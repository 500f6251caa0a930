import type { FastifyRequest } from 'fastify'
import type { HttpEntry } from '../entry'
import type { Headers } from './policy'
import { storedHeaders } from './respond'
import type { CompiledRoute } from './route'
import { responseDirectives, sharedFreshness, sharedUnstorableReason, updatedHeaders, withheldFields } from './shared-policy'

/**
 * The stored response with the header fields of the 304 that confirmed it and the freshness they give (RFC 9111
 * 4.3.4), and whether it may still be stored (the 304 may say no-store now).
 */
export function refreshedEntry (
  request: FastifyRequest, stored: HttpEntry, notModified: Headers, requestTime: number, now: number, route: CompiledRoute
): { entry: HttpEntry, storable: boolean } {
  const headers = updatedHeaders(stored.headers, notModified)
  const { directives, targeted } = responseDirectives(headers, route.shared!.targeted)
  const facts = { status: stored.status, headers, directives, targeted }
  const storable = notModified['set-cookie'] === undefined && sharedUnstorableReason({ ...facts, requestHeaders: request.headers }) === undefined
  // The 304's own Age and Date say how old the confirmation is (RFC 9111 4.2.3).
  const freshness = sharedFreshness({ ...facts, headers: { ...headers, age: notModified.age } }, requestTime, now)
  const entry: HttpEntry = {
    status: stored.status, headers: storedHeaders(headers, { withheld: withheldFields(directives) }), body: stored.body, etag: stored.etag, ...freshness
  }
  if (stored.originEtag === true) entry.originEtag = true
  if (stored.vary !== undefined) entry.vary = stored.vary
  // The body is the stored bytes: compressed ones stay marked as such.
  if (stored.encoding !== undefined) entry.encoding = stored.encoding
  return { entry, storable }
}
