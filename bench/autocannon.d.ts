// The part of autocannon 8 that bench/run.ts uses (the package ships no types).
declare module 'autocannon' {
  import type { EventEmitter } from 'node:events'

  interface Options {
    url: string
    connections?: number
    duration?: number
    pipelining?: number
    timeout?: number
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
