// What bench/run.ts and bench/server.ts share: the variants and the response body they all send.

/** The variants, in the lettering; each runs in its own server process. */
export const VARIANTS = {
  ceiling: { letter: 'a', what: 'plain route, fixed pre-serialised 1 KB JSON string, no plugin' },
  serialize: { letter: "a'", what: 'plain route returning the 1 KB object (serialised per request)' },
  headers: { letter: 'a2', what: 'route (a) sending the headers a hit sends (ETag, Cache-Control, Age, X-Cache), no plugin' },
  uncached: { letter: 'b', what: 'uncached route, 20 ms simulated query, returns the object' },
  redis: { letter: 'c', what: 'route (b) cached by the plugin, Redis store, every request a hit' },
  memory: { letter: 'd', what: 'route (b) cached by the plugin, memory store, every request a hit' },
  tiered: { letter: 'd2', what: 'route (b) cached by the plugin, Redis with the in-process tier, every request a hit' },
  cluster: { letter: 'c2', what: 'route (b) cached by the plugin, on a Redis Cluster of 3 masters, every request a hit' },
  miss: { letter: 'b2', what: 'route (b) cached by the plugin on Redis, every request a miss (a new key each time) that is stored' },
  floor: { letter: 'b3', what: 'route (b) with one Redis GET before its query, no plugin: the least a cache in Redis adds to a miss' },
  compressed: { letter: 'c3', what: 'route (c) with the body stored brotli-compressed, decompressed for clients without Accept-Encoding' },
  optout: { letter: 'e', what: 'route (a) on an app with the plugin and another route cached' },
  ioredis: { letter: 'f', what: 'hand-written route: one ioredis GET, sends the stored string' },
  handwritten: { letter: 'f2', what: 'hand-written route: ioredis GET, JSON.parse, reply the object; SET EX on a miss' },
  bentocache: { letter: 'g', what: 'bentocache getOrSet around the handler, memory L1 and Redis L2' },
  'bentocache-l2': { letter: 'g2', what: 'bentocache getOrSet around the handler, Redis only' },
  dedupe: { letter: 'h', what: 'async-cache-dedupe with its Redis storage, called by the handler' },
  apicache: { letter: 'i', what: 'apicache middleware with Redis, on Express 5' }
} as const
export type Variant = keyof typeof VARIANTS

/** Other libraries' ways of caching the same route, for bench:compare. */
export const ALTERNATIVES: readonly Variant[] = ['handwritten', 'bentocache', 'bentocache-l2', 'dedupe', 'apicache']

export function isVariant (name: string): name is Variant {
  return Object.hasOwn(VARIANTS, name)
}

/** The response body of every variant: a plain object of exactly BODY_BYTES once serialised, built the same way each time. */
export interface Item {
  id: number
  sku: string
  label: string
  price: number
  inStock: boolean
}

function item (i: number): Item {
  return { id: i, sku: `SKU-${String(1000 + i)}`, label: `Item ${i}, a product row`, price: 9.5 + i, inStock: i % 2 === 0 }
}

/**
 * The payload of `bytes` bytes once serialised: ten item rows, padded. For a larger body, more rows (so that it stays
 * a realistic JSON document, not one long string), then the padding.
 */
export function buildPayload (bytes: number) {
  const rows = Math.max(10, Math.floor(bytes / 100))
  const payload = {
    id: 1,
    name: 'benchmark payload',
    updatedAt: '2024-01-01T00:00:00.000Z',
    items: Array.from({ length: rows }, (_, i) => item(i + 1)),
    note: ''
  }
  while (JSON.stringify(payload).length > bytes && payload.items.length > 1) payload.items.pop()
  // Pads the note (ASCII, one byte a character) so that the JSON is exactly `bytes` long.
  payload.note = 'x'.repeat(Math.max(0, bytes - JSON.stringify(payload).length))
  return payload
}

/** The body size of this process's run: BENCH_BODY_BYTES (bench:compare runs 1 KB and 50 KB), 1 KB by default. */
export const BODY_BYTES = Number(process.env['BENCH_BODY_BYTES'] ?? 1024)
export const PAYLOAD = buildPayload(BODY_BYTES)

/** The same object serialised once, as variants (a), (e) and (f) send it. */
export const PAYLOAD_JSON = JSON.stringify(PAYLOAD)
export const PAYLOAD_BYTES = Buffer.byteLength(PAYLOAD_JSON)

/**
 * How many keys the load spreads over: BENCH_KEYS, 1 by default. With one, every request asks for the same entry, and
 * concurrent hits can share a read; with at least as many keys as connections, no two requests in flight ask for the
 * same one (see benchPath), which measures one read per request.
 */
export const BENCH_KEYS = Number(process.env['BENCH_KEYS'] ?? 1)

/**
 * The URL of the load's n-th request: the keys in turn, so that requests in flight have distinct keys. Every variant
 * serves it; the cached ones key it by route and query, the others by the `id` in the query.
 */
export function benchPath (n: number): string {
  return `/data?id=${1 + n % BENCH_KEYS}`
}

/** The URL of the first key, which the checks ask for. */
export const BENCH_PATH = benchPath(0)

/** The `id` of a request, 1 when it has none. */
export function benchId (query: unknown): number {
  const id = Number((query as { id?: string } | undefined)?.id ?? 1)
  return Number.isInteger(id) && id >= 1 ? id : 1
}

/** Milliseconds the simulated query of variants (b), (c) and (d) takes. */
export const QUERY_MS = 20
