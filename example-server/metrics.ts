/**
 * What the example measures, for Prometheus (GET /metrics, prom-client) and for the dashboard: the plugin's counters
 * per route (read from cacheService.stats() at scrape time), request latency by route and cache outcome, Redis command
 * latency (the store's round trips, when the store is Redis), and the database's query count and latency.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'
import type { Redis } from 'ioredis'
import type { CacheService } from '../lib/index'
import type { QueryName } from './db/analytics'

const CACHE_EVENTS = ['hits', 'misses', 'stale', 'bypass', 'errors', 'stored', 'skipped', 'raced'] as const
const WINDOW = 2000

/** The latest WINDOW latencies of one series, for percentiles on the dashboard. */
class Window {
  private readonly values: number[] = []
  private next = 0

  add (value: number): void {
    if (this.values.length < WINDOW) this.values.push(value)
    else this.values[this.next] = value
    this.next = (this.next + 1) % WINDOW
  }

  percentiles (): { count: number, p50: number, p95: number, p99: number } {
    const sorted = [...this.values].sort((a, b) => a - b)
    const at = (q: number): number => sorted.length === 0 ? 0 : Math.round((sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)] ?? 0) * 100) / 100
    return { count: sorted.length, p50: at(0.5), p95: at(0.95), p99: at(0.99) }
  }
}

export interface LatencySummary { count: number, p50: number, p95: number, p99: number }

export class ExampleMetrics {
  readonly registry = new Registry()
  private readonly windows = new Map<string, Window>()
  private readonly requests: Histogram<'route' | 'cache'>
  private readonly queries: Counter<'query' | 'result'>
  private readonly queryDuration: Histogram<'query'>
  private readonly storeDuration: Histogram<'command'>

  constructor (cacheService: CacheService) {
    collectDefaultMetrics({ register: this.registry })
    this.requests = new Histogram({
      name: 'http_request_duration_seconds',
      help: 'Time to answer a request, by route and cache outcome (x-cache: HIT, MISS, STALE, BYPASS, or none)',
      labelNames: ['route', 'cache'],
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers: [this.registry]
    })
    this.queries = new Counter({
      name: 'db_queries_total',
      help: 'SQL statements run by the example, by query and result',
      labelNames: ['query', 'result'],
      registers: [this.registry]
    })
    this.queryDuration = new Histogram({
      name: 'db_query_duration_seconds',
      help: 'Time the database took per statement',
      labelNames: ['query'],
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1],
      registers: [this.registry]
    })
    this.storeDuration = new Histogram({
      name: 'cache_store_command_duration_seconds',
      help: 'Round trip of each Redis command the cache sends (none with the memory store)',
      labelNames: ['command'],
      buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25],
      registers: [this.registry]
    })
    // The plugin keeps its own counters; they are read when Prometheus scrapes, so the hot path pays nothing here.
    new Counter({ // eslint-disable-line no-new
      name: 'cache_events_total',
      help: 'Cache outcomes by route (hits, misses, stale, bypass, errors, stored, skipped, raced), from cacheService.stats()',
      labelNames: ['route', 'event'],
      registers: [this.registry],
      async collect () {
        const stats = await cacheService.stats()
        this.reset()
        for (const [route, counters] of Object.entries(stats.routes)) {
          for (const event of CACHE_EVENTS) this.inc({ route, event }, counters[event])
        }
      }
    })
    new Gauge({ // eslint-disable-line no-new
      name: 'cache_store_entries',
      help: 'Entries in the store (the memory store counts them; with Redis, the last cleanup pass did)',
      registers: [this.registry],
      async collect () {
        const { store } = await cacheService.stats()
        const count = store['entries'] ?? store['entriesCounted']
        if (count !== undefined) this.set(Number(count))
      }
    })
  }

  /** Called by the database wrapper after each statement. */
  readonly observeQuery = (name: QueryName, durationMs: number, ok: boolean): void => {
    this.queries.inc({ query: name, result: ok ? 'ok' : 'error' })
    this.queryDuration.observe({ query: name }, durationMs / 1000)
  }

  observeRequest (route: string, cache: string, durationMs: number): void {
    this.requests.observe({ route, cache }, durationMs / 1000)
    const series = `${route} ${cache}`
    let window = this.windows.get(series)
    if (window === undefined) this.windows.set(series, window = new Window())
    window.add(durationMs)
    let all = this.windows.get(`* ${cache}`)
    if (all === undefined) this.windows.set(`* ${cache}`, all = new Window())
    all.add(durationMs)
  }

  /** Percentiles of the latest requests, by route (`*` for all) and cache outcome. */
  latency (): Record<string, Record<string, LatencySummary>> {
    const result: Record<string, Record<string, LatencySummary>> = {}
    for (const [series, window] of this.windows) {
      const space = series.lastIndexOf(' ')
      const route = series.slice(0, space)
      const cache = series.slice(space + 1)
      result[route] ??= {}
      result[route][cache] = window.percentiles()
    }
    return result
  }

  /**
   * Times every command of this Redis client: each ioredis command goes through sendCommand and settles its promise
   * when the reply (or an error) comes back.
   */
  instrumentRedis (client: Redis): void {
    const original = client.sendCommand.bind(client)
    const histogram = this.storeDuration
    client.sendCommand = ((command: Parameters<Redis['sendCommand']>[0], stream?: Parameters<Redis['sendCommand']>[1]) => {
      const started = performance.now()
      const done = (): void => { histogram.observe({ command: command.name }, (performance.now() - started) / 1000) }
      command.promise.then(done, done)
      return original(command, stream)
    }) as Redis['sendCommand']
  }
}
