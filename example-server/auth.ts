/**
 * Access control of the example, as in the specification: a bearer token names a user, each user belongs to
 * workspaces, and a route that serves a workspace's data checks membership before anything else, so that neither the
 * database nor the cache ever answers for another workspace. The checks run as route hooks (onRequest and
 * preHandler), which the plugin's lookup runs after: a cached entry is served only to a request that passed them.
 *
 * An operator's admin token may read every workspace and use the /cache endpoints and the dashboard's data.
 */
import { createHash, timingSafeEqual } from 'node:crypto'
import type { FastifyReply, FastifyRequest } from 'fastify'
import type { Directory } from './db/analytics'

export type Caller =
  | { kind: 'user', userId: string, workspaces: ReadonlySet<string> }
  | { kind: 'admin' }

declare module 'fastify' {
  interface FastifyRequest {
    caller: Caller | null
  }
}

type Hook = (request: FastifyRequest, reply: FastifyReply) => Promise<void>

function digest (text: string): Buffer {
  return createHash('sha256').update(text).digest()
}

function bearer (request: FastifyRequest): string | undefined {
  const header = request.headers.authorization
  if (typeof header !== 'string') return undefined
  const match = /^Bearer\s+(\S+)\s*$/i.exec(header)
  return match?.[1]
}

function problem (statusCode: number, error: string, message: string): { statusCode: number, error: string, message: string } {
  return { statusCode, error, message }
}

export class AccessControl {
  readonly #adminDigest: Buffer

  constructor (private readonly directory: Directory, adminToken: string) {
    if (adminToken.length < 16) throw new Error('the admin token must be at least 16 characters')
    this.#adminDigest = digest(adminToken)
  }

  /** Who sends the request, from its bearer token; null without a valid one. */
  callerOf (request: FastifyRequest): Caller | null {
    const token = bearer(request)
    if (token === undefined) return null
    const presented = digest(token)
    if (timingSafeEqual(presented, this.#adminDigest)) return { kind: 'admin' }
    const userId = this.directory.tokens.get(presented.toString('hex'))
    if (userId === undefined) return null
    return { kind: 'user', userId, workspaces: this.directory.memberships.get(userId) ?? new Set() }
  }

  canRead (caller: Caller, workspaceId: string): boolean {
    return caller.kind === 'admin' || caller.workspaces.has(workspaceId)
  }

  workspaceOfAgent (agentId: string): string | undefined {
    return this.directory.agents.get(agentId)
  }

  knowsWorkspace (workspaceId: string): boolean {
    return this.directory.workspaces.some((workspace) => workspace.id === workspaceId)
  }

  /** onRequest: 401 without a valid token. */
  readonly authenticate: Hook = async (request, reply) => {
    request.caller = this.callerOf(request)
    if (request.caller === null) {
      await reply.code(401).header('www-authenticate', 'Bearer').send(problem(401, 'Unauthorized', 'a valid bearer token is required'))
    }
  }

  /** onRequest: 401 unless the admin token. */
  readonly requireAdmin: Hook = async (request, reply) => {
    request.caller = this.callerOf(request)
    if (request.caller?.kind !== 'admin') {
      await reply.code(401).header('www-authenticate', 'Bearer').send(problem(401, 'Unauthorized', 'the admin token is required'))
    }
  }

  /** preHandler (after validation): 403 unless the caller belongs to the workspace the request names; 404 for none. */
  workspaceAccess (workspaceOf: (request: FastifyRequest) => string): Hook {
    return async (request, reply) => {
      const workspaceId = workspaceOf(request)
      if (request.caller === null || !this.canRead(request.caller, workspaceId)) {
        await reply.code(403).send(problem(403, 'Forbidden', `no access to workspace ${workspaceId}`))
      } else if (!this.knowsWorkspace(workspaceId)) {
        await reply.code(404).send(problem(404, 'Not Found', `workspace ${workspaceId} not found`))
      }
    }
  }

  /** preHandler: 404 for an unknown agent, 403 when the caller does not belong to its workspace. */
  agentAccess (agentOf: (request: FastifyRequest) => string): Hook {
    return async (request, reply) => {
      const agentId = agentOf(request)
      const workspaceId = this.workspaceOfAgent(agentId)
      if (workspaceId === undefined) {
        await reply.code(404).send(problem(404, 'Not Found', `agent ${agentId} not found`))
      } else if (request.caller === null || !this.canRead(request.caller, workspaceId)) {
        await reply.code(403).send(problem(403, 'Forbidden', `no access to agent ${agentId}`))
      }
    }
  }

  /** preHandler: a user's own data is theirs alone (and the operator's). */
  selfAccess (userOf: (request: FastifyRequest) => string): Hook {
    return async (request, reply) => {
      const userId = userOf(request)
      const caller = request.caller
      if (caller === null || (caller.kind === 'user' && caller.userId !== userId)) {
        await reply.code(403).send(problem(403, 'Forbidden', `no access to user ${userId}`))
      }
    }
  }
}
