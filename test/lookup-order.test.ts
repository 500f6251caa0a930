import { gunzipSync } from 'node:zlib'
import compress from '@fastify/compress'
import type { FastifyReply, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import t from 'tap'
import { STORE_KINDS, cachedApp, untilStored } from './helpers/app'

const TOKEN = 'Bearer secret'

async function requireToken (request: FastifyRequest, reply: FastifyReply): Promise<void> {
  if (request.headers.authorization !== TOKEN) await reply.code(401).send({ error: 'unauthorized' })
}

/** An auth plugin registered after the cache, which adds its preHandler to routes from its own onRoute hook. */
const lateAuthPlugin = fp(async (app) => {
  app.addHook('onRoute', (routeOptions) => {
    if (routeOptions.config?.cache === undefined) return
    const existing = routeOptions.preHandler === undefined ? [] : Array.isArray(routeOptions.preHandler) ? routeOptions.preHandler : [routeOptions.preHandler]
    routeOptions.preHandler = [...existing, requireToken]
  })
})

for (const kind of STORE_KINDS) {
  t.test(`${kind} store`, async (t) => {
    t.test('a warm entry is never served to a request the route\'s own hooks refuse', async (t) => {
      const app = await cachedApp(t, kind)
      await app.register(lateAuthPlugin)
      // A global hook added after the plugin, and route-level hooks of each phase.
      app.addHook('preValidation', async (request, reply) => {
        if (request.headers['x-banned'] === '1') await reply.code(403).send({ error: 'banned' })
      })
      app.get('/secure', {
        onRequest: async (request, reply) => { if (request.headers['x-tenant'] === undefined) await reply.code(400).send('tenant') },
        preHandler: async (request, reply) => { if (request.headers['x-tenant'] === 'other') await reply.code(404).send('no') },
        config: { cache: { key: (request) => ['secure', String(request.headers['x-tenant'])] } }
      }, async () => ({ secret: 42 }))
      const good = { authorization: TOKEN, 'x-tenant': 'acme' }
      t.equal((await app.inject({ url: '/secure', headers: good })).headers['x-cache'], 'MISS')
      await untilStored(app)
      t.equal((await app.inject({ url: '/secure', headers: good })).headers['x-cache'], 'HIT')
      const refused = [
        [{ 'x-tenant': 'acme' }, 401, 'the late plugin\'s preHandler'],
        [{ ...good, 'x-banned': '1' }, 403, 'a global preValidation hook added after the plugin'],
        [{ authorization: TOKEN }, 400, 'a route onRequest hook']
      ] as const
      for (const [headers, status, which] of refused) {
        const response = await app.inject({ url: '/secure', headers })
        t.equal(response.statusCode, status, which)
        t.notMatch(response.body, /secret/, `${which}: no cached data leaks`)
      }
    })

    t.test('lookup: onRequest answers before preValidation and preHandler (the documented trade-off)', async (t) => {
      const app = await cachedApp(t, kind)
      let handlerCalls = 0
      let preHandlerCalls = 0
      app.get('/public', {
        preHandler: async () => { preHandlerCalls++ },
        onRequest: async (request, reply) => { if (request.headers['x-blocked'] === '1') await reply.code(403).send('blocked') },
        config: { cache: { lookup: 'onRequest' } }
      }, async () => { handlerCalls++; return 'public data' })
      await app.inject('/public')
      await untilStored(app)
      const hit = await app.inject('/public')
      t.equal(hit.headers['x-cache'], 'HIT')
      t.equal(hit.body, 'public data')
      t.equal(preHandlerCalls, 1, 'the hit skipped the preHandler')
      t.equal(handlerCalls, 1)
      t.equal((await app.inject({ url: '/public', headers: { 'x-blocked': '1' } })).statusCode, 403,
        'route onRequest hooks declared on the route still run before the lookup')
    })

    t.test('a hit waits for another plugin\'s slow onSend hook, in either lookup mode, over a real socket', async (t) => {
      const app = await cachedApp(t, kind)
      app.addHook('onSend', async (_request, reply, payload) => {
        await new Promise((resolve) => setTimeout(resolve, 30))
        reply.header('x-late', 'yes')
        return payload
      })
      let calls = 0
      app.get('/handler', { config: { cache: true } }, async () => ({ n: ++calls }))
      app.get('/on-request', { config: { cache: { lookup: 'onRequest' } } }, async () => ({ n: ++calls }))
      const base = await app.listen({ port: 0, host: '127.0.0.1' })
      for (const path of ['/handler', '/on-request']) {
        const first = await fetch(base + path)
        const body = await first.text()
        await untilStored(app, path === '/handler' ? 1 : 2)
        for (let i = 0; i < 3; i++) {
          const hit = await fetch(base + path)
          t.equal(hit.headers.get('x-cache'), 'HIT', `${path}: a hit`)
          t.equal(hit.headers.get('x-late'), 'yes', `${path}: the hook ran on the hit`)
          t.equal(await hit.text(), body, `${path}: the stored body, whole`)
        }
      }
      t.equal(calls, 2)
    })

    t.test('with @fastify/compress, entries are stored unencoded and encoded per client', async (t) => {
      const app = await cachedApp(t, kind)
      await app.register(compress, { threshold: 10 })
      const body = { rows: 'x'.repeat(2000) }
      app.get('/big', { config: { cache: true } }, async () => body)
      const gzipped = await app.inject({ url: '/big', headers: { 'accept-encoding': 'gzip' } })
      t.equal(gzipped.headers['content-encoding'], 'gzip')
      t.same(JSON.parse(gunzipSync(gzipped.rawPayload).toString()), body)
      await untilStored(app)
      const plain = await app.inject({ url: '/big', headers: { 'accept-encoding': 'identity' } })
      t.equal(plain.headers['x-cache'], 'HIT')
      t.notOk(plain.headers['content-encoding'], 'a client that did not accept gzip gets it unencoded')
      t.same(plain.json(), body)
      const gzippedHit = await app.inject({ url: '/big', headers: { 'accept-encoding': 'gzip' } })
      t.equal(gzippedHit.headers['x-cache'], 'HIT')
      t.equal(gzippedHit.headers['content-encoding'], 'gzip')
      t.same(JSON.parse(gunzipSync(gzippedHit.rawPayload).toString()), body, 'encoded once, not twice')
      t.match(gzippedHit.headers.vary, /accept-encoding/i)
    })
  })
}
