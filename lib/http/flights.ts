import type { HttpEntry } from '../entry'

/** What requests joining a flight wait for; replaced once the leader has answered the requests already waiting. */
interface Flight {
  promise: Promise<HttpEntry | undefined>
}

/** The leader's side of a flight. */
export interface FlightLead {
  /**
   * Answers the requests waiting now with the leader's response, or with undefined when it cannot be shared (they
   * then run the handler themselves). Requests that join later wait for land(): the response is not stored yet.
   */
  settle: (entry: HttpEntry | undefined) => void
  /** Ends the flight once the response is stored, or was not: later joiners get the stored entry, or compute. */
  land: (stored: HttpEntry | undefined) => void
}

/**
 * In-process request coalescing: concurrent misses for one key run the handler once; the others wait (a bounded
 * time) for the leader's response and are answered from it when it is storable. An unstorable response (private,
 * Set-Cookie, an error...) is never shared: the waiters then run the handler themselves. The flight lasts until the
 * response is stored, so that a request arriving after it was sent and before it was written waits for the write
 * instead of computing the key again.
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
   * Makes the caller the leader for id. A leader that never lands (its client went away before onSend, say) is
   * ended after maxMs, so no flight outlives its waiters' patience.
   */
  lead (id: string, maxMs: number): FlightLead {
    let answer!: (entry: HttpEntry | undefined) => void
    const flight: Flight = { promise: new Promise((resolve) => { answer = resolve }) }
    this.flights.set(id, flight)
    let settled = false
    let landed = false
    const land = (stored: HttpEntry | undefined): void => {
      settle(stored)
      if (landed) return
      landed = true
      clearTimeout(timer)
      if (this.flights.get(id) === flight) this.flights.delete(id)
      answer(stored)
    }
    const settle = (entry: HttpEntry | undefined): void => {
      if (settled) return
      settled = true
      answer(entry)
      if (entry === undefined) return land(undefined)
      flight.promise = new Promise((resolve) => { answer = resolve })
    }
    const timer = setTimeout(() => land(undefined), maxMs)
    timer.unref()
    return { settle, land }
  }
}
