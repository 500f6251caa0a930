import createError from '@fastify/error'

/** A plugin or route option is wrong; thrown at registration, never on the request path. */
export const FST_CACHE_INVALID_OPTION = createError<'FST_CACHE_INVALID_OPTION', 500, [string]>(
  'FST_CACHE_INVALID_OPTION', 'invalid cache option: %s', 500, TypeError)

/** A cache key, key part, tag or pattern cannot be used. */
export const FST_CACHE_INVALID_KEY = createError<'FST_CACHE_INVALID_KEY', 500, [string]>(
  'FST_CACHE_INVALID_KEY', 'invalid cache key: %s', 500, TypeError)

/** A store write or invalidation failed: the caller must not believe it happened. */
export const FST_CACHE_STORE_ERROR = createError<'FST_CACHE_STORE_ERROR', 503, [string, string]>(
  'FST_CACHE_STORE_ERROR', 'cache store operation "%s" failed: %s', 503)

/** A store operation did not answer within storeTimeoutMs. */
export const FST_CACHE_STORE_TIMEOUT = createError<'FST_CACHE_STORE_TIMEOUT', 503, [string, number]>(
  'FST_CACHE_STORE_TIMEOUT', 'cache store operation "%s" timed out after %s ms', 503)

/** The circuit breaker is open after repeated store failures: the call was not attempted. */
export const FST_CACHE_CIRCUIT_OPEN = createError<'FST_CACHE_CIRCUIT_OPEN', 503, [string]>(
  'FST_CACHE_CIRCUIT_OPEN', 'cache store operation "%s" not attempted: the circuit is open after repeated failures', 503)

/** Stored bytes that are not a valid entry; a reader treats it as a miss and the entry is replaced. */
export const FST_CACHE_CORRUPT_ENTRY = createError<'FST_CACHE_CORRUPT_ENTRY', 500, [string]>(
  'FST_CACHE_CORRUPT_ENTRY', 'cache entry cannot be decoded: %s', 500)

/** A value holds something a cache cannot store faithfully (function, symbol, cycle, foreign class). */
export const FST_CACHE_UNSERIALIZABLE = createError<'FST_CACHE_UNSERIALIZABLE', 500, [string]>(
  'FST_CACHE_UNSERIALIZABLE', 'cache value cannot be serialized: %s', 500)

/** Bytes that encodeValue did not write (wrong marker, bad UTF-8 or JSON, unknown tag, bad payload). */
export const FST_CACHE_CORRUPT_VALUE = createError<'FST_CACHE_CORRUPT_VALUE', 500, [string, { cause: unknown }?]>(
  'FST_CACHE_CORRUPT_VALUE', 'cache value cannot be decoded: %s', 500)
