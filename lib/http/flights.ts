import type { HttpEntry } from '../entry'

/** A response being computed by one request, that other requests for the same key wait for. */
interface Flight {
  promise: Promise<HttpEntry | undefined>
  settle: (entry: HttpEntry | undefined) => void
}

/**
 * In-process request coalescing: concurrent misses for one key run the handler once; the others wait (a bounded
 * time) for the leader's response and are answered from it when it is storable. An unstorable response (private,
 * Set-Cookie, an error...) is never shared: the waiters then run the handler themselves.
 */
export class Flights {
  private readonly flights = new Map<string, Flight>()

  /** Whether a request of this process is computing id. */
  has (id: string): boolean {
    return this.flights.has(id)
  }

  /** The leader's result, or undefined when there is no flight, it failed, or it took longer than waitMs. */
  join (id: string, waitMs: number): Promise<HttpEntry | undefined> | undefined {
    const flight = this.flights.get(id)
    if (flight === undefined) return undefined
    let timer: NodeJS.Timeout | undefined
    const timeout = new Promise<undefined>((resolve) => { timer = setTimeout(() => resolve(undefined), waitMs) })
    return Promise.race([flight.promise, timeout]).finally(() => clearTimeout(timer))
  }

  /**
   * Makes the caller the leader for id. It settles with its entry (or undefined) once; a leader that never does
   * (its client went away before onSend, say) is settled after maxMs, so no flight outlives its waiters' patience.
   */
  lead (id: string, maxMs: number): (entry: HttpEntry | undefined) => void {
    let finish!: (entry: HttpEntry | undefined) => void
    const promise = new Promise<HttpEntry | undefined>((resolve) => { finish = resolve })
    let settled = false
    const settle = (entry: HttpEntry | undefined): void => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      if (this.flights.get(id)?.promise === promise) this.flights.delete(id)
      finish(entry)
    }
    const timer = setTimeout(() => settle(undefined), maxMs)
    timer.unref()
    this.flights.set(id, { promise, settle })
    return settle
  }
}
