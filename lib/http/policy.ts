// Pure HTTP caching decisions (RFC 9111), with no I/O, so they can be tested exhaustively without a server.

export type Headers = Record<string, string | string[] | number | undefined>

/**
 * Directives of a Cache-Control value; directives without an argument map to true. Arguments may be quoted strings
 * that contain commas (`private="set-cookie, x-user"`, RFC 9111 5.2.2.7), so the value is tokenised, not split.
 */
export function parseCacheControl (value: string | string[] | number | undefined): Map<string, string | true> {
  const directives = new Map<string, string | true>()
  if (value === undefined) return directives
  const text = Array.isArray(value) ? value.join(',') : String(value)
  const directive = /\s*([^\s=,]+)\s*(?:=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*)))?\s*(?:,|$)/y
  let index = 0
  while (index < text.length) {
    directive.lastIndex = index
    const match = directive.exec(text)
    if (match === null) {
      // Skip a malformed piece up to the next comma outside quotes.
      const comma = text.indexOf(',', index)
      if (comma === -1) break
      index = comma + 1
      continue
    }
    index = directive.lastIndex
    const name = match[1].toLowerCase()
    const argument = match[2] !== undefined ? match[2].replace(/\\(.)/g, '$1') : match[3]
    if (!directives.has(name)) directives.set(name, argument ?? true)
    if (match[0].length === 0) break
  }
  return directives
}

/** Header names listed by a Vary value, lower-cased; `*` means the response varies on everything. */
export function varyNames (value: string | string[] | number | undefined): string[] {
  if (value === undefined) return []
  const text = Array.isArray(value) ? value.join(',') : String(value)
  return text.split(',').map((name) => name.trim().toLowerCase()).filter((name) => name.length > 0)
}

export type UnstorableReason =
  | 'method' | 'status' | 'set-cookie' | 'no-store' | 'private' | 'vary-star' | 'too-large' | 'stream' | 'encoded'

export interface ResponseFacts {
  method: string
  status: number
  headers: Headers
  /** Body length in bytes, or undefined for a stream. */
  bodyBytes: number | undefined
}

export interface StoragePolicy {
  statuses: ReadonlySet<number>
  maxEntryBytes: number
}

/**
 * Why a response must not be stored, or undefined when it may be. Set-Cookie responses carry one client's state;
 * `private` and `no-store` are the origin saying no (RFC 9111 3, 5.2.2.3, 5.2.2.7); `Vary: *` can never be matched
 * (RFC 9111 4.1); an already encoded body would be served encoded to clients that did not ask for it.
 */
export function unstorableReason (response: ResponseFacts, policy: StoragePolicy): UnstorableReason | undefined {
  if (response.method !== 'GET') return 'method'
  if (!policy.statuses.has(response.status) || response.status >= 500) return 'status'
  if (response.bodyBytes === undefined) return 'stream'
  if (response.bodyBytes > policy.maxEntryBytes) return 'too-large'
  const headers = response.headers
  if (headers['set-cookie'] !== undefined) return 'set-cookie'
  const cacheControl = parseCacheControl(headers['cache-control'])
  if (cacheControl.has('no-store')) return 'no-store'
  if (cacheControl.has('private')) return 'private'
  if (varyNames(headers.vary).includes('*')) return 'vary-star'
  const encoding = headers['content-encoding']
  if (encoding !== undefined && String(encoding).toLowerCase() !== 'identity') return 'encoded'
  return undefined
}

/** A request that carries credentials gets a response only its user's browser may keep. */
export function isCredentialed (requestHeaders: Headers): boolean {
  return requestHeaders.authorization !== undefined || requestHeaders.cookie !== undefined
}

/** Whole seconds since the response was generated (RFC 9111 5.1), never negative when clocks step back. */
export function ageSeconds (storedAt: number, now: number): number {
  return now > storedAt ? Math.floor((now - storedAt) / 1000) : 0
}

/** The request's values of the headers a response varied on, to be stored beside it. */
export function varyValues (names: readonly string[], requestHeaders: Headers): Record<string, string> {
  const values: Record<string, string> = {}
  for (const name of names) values[name] = headerText(requestHeaders[name])
  return values
}

/** A stored variant may be reused only for a request with the same values of its Vary headers (RFC 9111 4.1). */
export function varyMatches (stored: Record<string, string> | undefined, requestHeaders: Headers): boolean {
  if (stored === undefined) return true
  for (const name in stored) {
    if (stored[name] !== headerText(requestHeaders[name])) return false
  }
  return true
}

function headerText (value: string | string[] | number | undefined): string {
  if (value === undefined) return ''
  return Array.isArray(value) ? value.join(', ') : String(value)
}

/** Headers that describe one transfer or one exchange, not the resource; they are never stored (RFC 9111 3.1). */
export const UNSTORED_HEADERS: ReadonlySet<string> = new Set([
  'connection', 'keep-alive', 'transfer-encoding', 'te', 'trailer', 'upgrade', 'proxy-connection',
  'content-length', 'date', 'age', 'x-cache', 'set-cookie'
])

/**
 * The codings an Accept-Encoding value accepts (q > 0), lower-cased; `*` stands for any coding not listed
 * (RFC 9110 12.5.3), so `*` alone accepts br and `br;q=0, *` does not.
 */
export function parseAcceptEncoding (value: string | string[] | number | undefined): Set<string> {
  const accepted = new Set<string>()
  if (value === undefined) return accepted
  const refused = new Set<string>()
  let any = false
  for (const item of (Array.isArray(value) ? value.join(',') : String(value)).split(',')) {
    const [name = '', ...params] = item.split(';').map((part) => part.trim().toLowerCase())
    if (name === '') continue
    const q = params.find((param) => param.startsWith('q='))
    const zero = q !== undefined && Number(q.slice(2)) === 0
    if (name === '*') any = !zero
    else (zero ? refused : accepted).add(name)
  }
  if (any && !refused.has('br')) accepted.add('br')
  return accepted
}
