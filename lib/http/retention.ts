import { type HttpEntry, freshUntil } from '../entry'
import type { CompiledRoute } from './route'

/**
 * How long the store keeps an entry: past its freshness for as long as a stale copy may still be served, by the
 * route's windows (app mode), or by the response's own windows and the time kept for revalidation (shared mode).
 */
export function retentionMs (route: CompiledRoute, entry: HttpEntry): number {
  if (route.shared === undefined) return route.ttl * 1000 + Math.max(route.staleWhileRevalidateMs, route.staleIfErrorMs)
  const windows = Math.max((entry.staleWhileRevalidate ?? 0) * 1000, (entry.staleIfError ?? 0) * 1000, route.shared.keepStaleMs)
  // An origin may say a year or more; no entry outlives the longest ttl app mode accepts.
  return Math.min(freshUntil(entry) - Date.now() + windows, LONGEST_RETENTION_MS)
}

const LONGEST_RETENTION_MS = 365 * 24 * 3600 * 1000

/**
 * Refresh-ahead when the entry is within the route's window of expiry, or XFetch: refresh when
 * now - computeMs * beta * ln(random) >= expiry, which grows likelier as expiry nears and for slow computations.
 */
export function shouldRefreshEarly (route: CompiledRoute, entry: HttpEntry, freshLeftMs: number): boolean {
  if (route.refreshAheadMs > 0 && freshLeftMs < route.refreshAheadMs) return true
  if (route.earlyRefresh === 0 || entry.computeMs === undefined) return false
  return -entry.computeMs * route.earlyRefresh * Math.log(Math.random()) >= freshLeftMs
}
