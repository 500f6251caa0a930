import { randomBytes, timingSafeEqual } from 'node:crypto'
import { performance } from 'node:perf_hooks'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import { FST_CACHE_INVALID_OPTION } from './errors'
import type { CacheKey } from './keys'
import type { CacheService } from './service'

/**
 * The request header that marks a warming request. Its value must equal `warmToken`, which never leaves this
 * process, so a client cannot forge a forced refresh by sending the header itself.
 */
export const WARM_HEADER = 'x-cache-warm'

/** 32 random hex characters, made once per process. */
export const warmToken: string = randomBytes(16).toString('hex')
const warmTokenBytes = Buffer.from(warmToken)

/** A request sent by warmTargets: it runs the handler and replaces the entry, whatever allowBypass says. */
export function isWarmRequest (request: FastifyRequest): boolean {
  const value = request.headers[WARM_HEADER]
  if (typeof value !== 'string' || value.length !== warmToken.length) return false
  return timingSafeEqual(Buffer.from(value), warmTokenBytes)
}

/** What warming needs from the app: `app.inject` (bound to the app) and `app.cacheService`. */
export interface WarmDeps {
  inject: FastifyInstance['inject']
  service: Pick<CacheService, 'getOrCompute' | 'set'>
}

/**
 * A URL (GET through `inject`; the cached route runs its handler and replaces its entry), or a key and the function
 * that computes its value (stored with `service.set`, replacing whatever is cached).
 */
export type WarmTarget =
  | string
  | { url: string, headers?: Record<string, string> }
  | { key: CacheKey, compute: () => unknown, ttl?: number, tags?: string[] }

export interface WarmProgress {
  done: number
  total: number
  ok: number
  failed: number
}

export interface WarmOptions {
  /** Targets in flight at once; default 8, at most 256. */
  concurrency?: number
  /** Called after each target. A callback that throws (or rejects) is ignored. */
  onProgress?: (progress: WarmProgress) => void
  /** Per target, in milliseconds; default 30000. A target that takes longer counts as failed. */
  timeoutMs?: number
}

export interface WarmError {
  target: string
  error: string
}

export interface WarmResult {
  ok: number
  failed: number
  /** At most 100 entries (the first failures); `failed` keeps counting past that. */
  errors: WarmError[]
  durationMs: number
}

export interface WarmSchedule {
  /** Milliseconds between the end of one run and the start of the next. */
  intervalMs: number
  /** A random 0..jitterMs added to each interval, so that several processes do not warm in step; default 0. */
  jitterMs?: number
}

export interface WarmScheduleHandle {
  /** No run starts after this; a run in progress finishes. */
  stop (): void
}

const DEFAULT_CONCURRENCY = 8
const MAX_CONCURRENCY = 256
const DEFAULT_TIMEOUT_MS = 30_000
/** setTimeout's largest delay; a longer one fires at once. */
const MAX_DELAY_MS = 2 ** 31 - 1
const MAX_ERRORS = 100
const MAX_BODY_CHARS = 200

/**
 * Warms every target, at most `concurrency` at a time. Throws only for invalid options (FST_CACHE_INVALID_OPTION);
 * a target that fails (a non-2xx answer, an inject error, a compute that throws or times out, a store write that
 * fails, a malformed target) is counted in `failed` and described in `errors`.
 */
export async function warmTargets (deps: WarmDeps, targets: readonly WarmTarget[], options: WarmOptions = {}): Promise<WarmResult> {
  const { concurrency, timeoutMs, onProgress } = checkedOptions(options)
  if (!Array.isArray(targets)) throw new FST_CACHE_INVALID_OPTION('warming targets must be an array')
  const started = performance.now()
  const total = targets.length
  const result: WarmResult = { ok: 0, failed: 0, errors: [], durationMs: 0 }
  let next = 0
  let done = 0

  const worker = async (): Promise<void> => {
    while (next < total) {
      const target = targets[next++]
      try {
        await withTimeout((signal) => warmOne(deps, target, signal), timeoutMs)
        result.ok++
      } catch (error) {
        result.failed++
        if (result.errors.length < MAX_ERRORS) result.errors.push({ target: describeTarget(target), error: describeError(error) })
      }
      done++
      if (onProgress !== undefined) report(onProgress, { done, total, ok: result.ok, failed: result.failed })
    }
  }

  await Promise.all(Array.from({ length: Math.min(concurrency, total) }, worker))
  result.durationMs = Math.round(performance.now() - started)
  return result
}

/**
 * Calls `run` after `intervalMs` plus a random 0..jitterMs, then again the same delay after each run has settled,
 * so runs never overlap. A run that throws or rejects does not stop the schedule. The timer is unref'd: it does not
 * keep the process alive.
 */
export function scheduleWarming (run: () => Promise<unknown>, schedule: WarmSchedule): WarmScheduleHandle {
  if (typeof run !== 'function') throw new FST_CACHE_INVALID_OPTION('the warming run must be a function')
  const intervalMs = schedule?.intervalMs
  const jitterMs = schedule?.jitterMs ?? 0
  if (typeof intervalMs !== 'number' || !Number.isFinite(intervalMs) || intervalMs <= 0) {
    throw new FST_CACHE_INVALID_OPTION(`option "intervalMs" must be a positive number of milliseconds, got ${String(intervalMs)}`)
  }
  if (typeof jitterMs !== 'number' || !Number.isFinite(jitterMs) || jitterMs < 0) {
    throw new FST_CACHE_INVALID_OPTION(`option "jitterMs" must be a number of milliseconds >= 0, got ${String(jitterMs)}`)
  }
  if (intervalMs + jitterMs > MAX_DELAY_MS) {
    throw new FST_CACHE_INVALID_OPTION(`options "intervalMs" + "jitterMs" must not exceed ${MAX_DELAY_MS} ms`)
  }

  let timer: NodeJS.Timeout | undefined
  let stopped = false
  const arm = (): void => {
    if (stopped) return
    timer = setTimeout(fire, intervalMs + Math.random() * jitterMs)
    timer.unref()
  }
  const fire = (): void => {
    timer = undefined
    // then(run) also catches a run that throws synchronously.
    Promise.resolve().then(run).then(arm, arm)
  }
  arm()
  return {
    stop () {
      stopped = true
      if (timer !== undefined) clearTimeout(timer)
      timer = undefined
    }
  }
}

interface CheckedOptions {
  concurrency: number
  timeoutMs: number
  onProgress: WarmOptions['onProgress']
}

function checkedOptions (options: WarmOptions): CheckedOptions {
  if (options === null || typeof options !== 'object') throw new FST_CACHE_INVALID_OPTION('warming options must be an object')
  const concurrency = options.concurrency ?? DEFAULT_CONCURRENCY
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS
  const onProgress = options.onProgress
  if (!Number.isInteger(concurrency) || concurrency < 1 || concurrency > MAX_CONCURRENCY) {
    throw new FST_CACHE_INVALID_OPTION(`option "concurrency" must be an integer from 1 to ${MAX_CONCURRENCY}, got ${String(concurrency)}`)
  }
  if (typeof timeoutMs !== 'number' || !Number.isFinite(timeoutMs) || timeoutMs <= 0 || timeoutMs > MAX_DELAY_MS) {
    throw new FST_CACHE_INVALID_OPTION(`option "timeoutMs" must be a positive number of milliseconds up to ${MAX_DELAY_MS}, got ${String(timeoutMs)}`)
  }
  if (onProgress !== undefined && typeof onProgress !== 'function') {
    throw new FST_CACHE_INVALID_OPTION('option "onProgress" must be a function')
  }
  return { concurrency, timeoutMs, onProgress }
}

async function warmOne (deps: WarmDeps, target: WarmTarget, signal: AbortSignal): Promise<void> {
  if (typeof target === 'string') return await warmUrl(deps, target, undefined)
  if (target !== null && typeof target === 'object') {
    if ('url' in target) return await warmUrl(deps, target.url, target.headers)
    if ('key' in target && typeof target.compute === 'function') {
      const value: unknown = await target.compute()
      // Too late: the target has been reported as timed out, and a late write could replace a newer value.
      if (signal.aborted) return
      if (value === undefined) throw new Error('compute() returned undefined; nothing to store')
      await deps.service.set(target.key, value, { ttl: target.ttl, tags: target.tags })
      return
    }
  }
  throw new Error('not a warming target: expected a URL string, { url } or { key, compute }')
}

/** Fetches the URL as a warming request: the route runs its handler and stores the response as a live request would. */
async function warmUrl (deps: WarmDeps, url: unknown, headers: Record<string, string> | undefined): Promise<void> {
  if (typeof url !== 'string' || url.length === 0) throw new Error('the URL must be a non-empty string')
  const sent: Record<string, string> = {}
  for (const name in headers ?? {}) {
    // The token always wins, whatever the case of a header of the same name in the target.
    if (name.toLowerCase() !== WARM_HEADER) sent[name] = (headers as Record<string, string>)[name]
  }
  sent[WARM_HEADER] = warmToken
  const response = await deps.inject({ method: 'GET', url, headers: sent })
  if (response.statusCode < 200 || response.statusCode > 299) {
    throw new Error(`HTTP ${response.statusCode}${bodyExcerpt(response.body)}`)
  }
  const outcome = response.headers['x-cache']
  if (outcome === undefined) throw new Error('the route is not cached (the response has no x-cache header)')
  if (outcome === 'HIT') throw new Error('served from the cache, not refreshed: the route lookup does not honour the warm header')
  if (response.headers['x-cache-stored'] !== '1') throw new Error('the response was not stored (not storable, or the store failed)')
}

/** Runs the work with a deadline; on timeout the signal is aborted and the work is left to finish on its own. */
async function withTimeout (work: (signal: AbortSignal) => Promise<void>, timeoutMs: number): Promise<void> {
  const controller = new AbortController()
  let timer: NodeJS.Timeout | undefined
  const deadline = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => {
      controller.abort()
      reject(new Error(`timed out after ${timeoutMs} ms`))
    }, timeoutMs)
  })
  try {
    await Promise.race([work(controller.signal), deadline])
  } finally {
    clearTimeout(timer)
  }
}

function report (onProgress: (progress: WarmProgress) => void, progress: WarmProgress): void {
  try {
    const returned: unknown = onProgress(progress)
    if (returned instanceof Promise) returned.catch(() => {})
  } catch {
    // A progress callback must not break warming.
  }
}

function describeTarget (target: unknown): string {
  if (typeof target === 'string') return `GET ${target}`
  if (target !== null && typeof target === 'object') {
    if ('url' in target) return `GET ${String(target.url)}`
    if ('key' in target) {
      const key = target.key
      return `key ${Array.isArray(key) ? key.map((part: unknown) => String(part)).join(':') : String(key)}`
    }
  }
  return String(target)
}

function describeError (error: unknown): string {
  if (!(error instanceof Error)) return String(error)
  const code = (error as { code?: unknown }).code
  return typeof code === 'string' && !error.message.includes(code) ? `${code}: ${error.message}` : error.message
}

function bodyExcerpt (body: string): string {
  if (body.length === 0) return ''
  let text = body
  try {
    const parsed: unknown = JSON.parse(body)
    if (parsed !== null && typeof parsed === 'object' && typeof (parsed as { message?: unknown }).message === 'string') {
      text = (parsed as { message: string }).message
    }
  } catch {
    // not JSON: the raw text
  }
  return ': ' + (text.length > MAX_BODY_CHARS ? text.slice(0, MAX_BODY_CHARS) + '…' : text)
}
