import type { FastifyBaseLogger } from 'fastify'

/** At most one log line per kind in this many milliseconds, so that an outage or an attack does not flood the log. */
const LOG_INTERVAL_MS = 10_000

/** Warnings logged at most once per kind per interval, each saying how many were suppressed before it. */
export class ThrottledLog {
  private readonly lastLogged = new Map<string, { at: number, suppressed: number }>()

  constructor (private readonly log: FastifyBaseLogger) {}

  warn (kind: string, details: Record<string, unknown>, message: string): void {
    const now = Date.now()
    const last = this.lastLogged.get(kind)
    if (last !== undefined && now - last.at < LOG_INTERVAL_MS) {
      last.suppressed++
      return
    }
    this.lastLogged.set(kind, { at: now, suppressed: 0 })
    this.log.warn({ ...details, suppressed: last?.suppressed ?? 0 }, message)
  }
}
