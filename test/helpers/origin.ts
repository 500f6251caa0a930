import { type IncomingHttpHeaders, type IncomingMessage, createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { FastifyInstance } from 'fastify'
import type { RouteCacheOptions } from '../../lib/index'
import type { Teardownable } from './redis'

/** What the origin answers one request with. */
export interface OriginAnswer {
  status?: number
  /** Undefined values are left out. */
  headers?: Record<string, string | string[] | undefined>
  body?: string
}

export interface Origin {
  url: string
  /** Every request the origin received, in order. */
  requests: Array<{ method: string, url: string, headers: IncomingHttpHeaders }>
  /** Requests with this method (GET by default) that reached the origin. */
  count: (method?: string) => number
}

/**
 * A real origin server on 127.0.0.1 that answers each request with what `answer` returns (it sees the request and
 * how many requests came before), and records every request it received.
 */
export async function startOrigin (t: Teardownable, answer: (request: IncomingMessage, index: number) => OriginAnswer): Promise<Origin> {
  const requests: Origin['requests'] = []
  const server = createServer((request, response) => {
    const index = requests.length
    requests.push({ method: request.method ?? 'GET', url: request.url ?? '/', headers: request.headers })
    request.resume()
    request.on('end', () => {
      const { status = 200, headers = {}, body = '' } = answer(request, index)
      const sent = Object.fromEntries(Object.entries(headers).filter((pair): pair is [string, string | string[]] => pair[1] !== undefined))
      response.writeHead(status, sent)
      response.end(status === 304 || status === 204 || request.method === 'HEAD' ? undefined : body)
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => { server.closeAllConnections(); server.close(() => resolve()) }))
  const { port } = server.address() as AddressInfo
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    count: (method = 'GET') => requests.filter((request) => request.method === method).length
  }
}

/** Headers that belong to one connection, never forwarded by a proxy (RFC 9110 7.6.1). */
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'transfer-encoding', 'te', 'trailer', 'upgrade', 'proxy-connection', 'content-length'])
/** The request headers the test proxy forwards upstream. */
const FORWARDED = ['authorization', 'accept-language', 'cookie', 'x-variant']

/**
 * A gateway in front of the origin, written as an application would with fetch: a shared-mode GET route that
 * forwards the cache's validators (request.cacheValidators), and unsafe methods that go straight through.
 */
export function proxyTo (app: FastifyInstance, origin: Origin, options: RouteCacheOptions = {}): void {
  const forward = async (request: import('fastify').FastifyRequest, reply: import('fastify').FastifyReply): Promise<Buffer> => {
    const headers: Record<string, string> = {}
    for (const name of FORWARDED) {
      const value = request.headers[name]
      if (typeof value === 'string') headers[name] = value
    }
    // The cache answers the client's own conditionals; the origin sees only the cache's (RFC 9111 4.3.1).
    Object.assign(headers, request.cacheValidators)
    const response = await fetch(origin.url + request.url, { method: request.method, headers, redirect: 'manual' })
    reply.code(response.status)
    for (const [name, value] of response.headers) if (!HOP_BY_HOP.has(name)) reply.header(name, value)
    return Buffer.from(await response.arrayBuffer())
  }
  app.get('/*', { config: { cache: { mode: 'shared', ...options } } }, forward)
  app.route({ method: ['POST', 'PUT', 'PATCH', 'DELETE'], url: '/*', handler: forward })
}
