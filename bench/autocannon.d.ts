// The part of autocannon 8 that bench/run.ts uses (the package ships no types).
declare module 'autocannon' {
  import type { EventEmitter } from 'node:events'

  interface Options {
    url: string
    connections?: number
    duration?: number
    pipelining?: number
    timeout?: number
    /** Requests in turn, each connection from the first. */
    requests?: Array<{ method: string, path: string }>
    /** Called with each connection's client as it is made. */
    setupClient?: (client: Client) => void
  }

  /** One connection's client. */
  interface Client {
    on (event: 'headers', listener: (info: { headers: string[] }) => void): void
    on (event: 'response', listener: (status: number, bytes: number, latency: number) => void): void
    setRequests (requests: Array<{ method: string, path: string }>): void
  }

  interface Histogram {
    average: number
    mean: number
    stddev: number
    min: number
    max: number
    total: number
    p50: number
    p90: number
    p99: number
  }

  interface Result {
    duration: number
    errors: number
    timeouts: number
    non2xx: number
    resets: number
    latency: Histogram
    requests: Histogram & { sent: number }
    throughput: Histogram
  }

  /** Emits `response` (client, statusCode, resBytes, responseTime in ms) for every response. */
  interface Instance extends EventEmitter, PromiseLike<Result> {}

  function autocannon (options: Options): Instance
  export = autocannon
}
