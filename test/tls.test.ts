/**
 * Redis over TLS, configured the way a user would: ioredis options with the CA, a client made from a rediss:// URL,
 * mutual TLS, and the example server with a rediss:// REDIS_URL and the CA in NODE_EXTRA_CA_CERTS. The certificates
 * are made at test time (a throwaway CA, a server certificate for 127.0.0.1), and the server has no plain port, so
 * whatever reached it spoke TLS. A client that does not trust the CA never connects, and the app serves uncached.
 */
import { createConnection } from 'node:net'
import Fastify, { type FastifyInstance } from 'fastify'
import { Redis, type RedisOptions } from 'ioredis'
import t from 'tap'
import cache, { type CachePluginOptions } from '../lib/index'
import { sleep, untilStored } from './helpers/app'
import { SERVER_TEST_TIMEOUT_MS, startServer, waitForStored } from './helpers/example-server'
import { type Teardownable, uniquePrefix } from './helpers/redis'
import { type Certificates, TlsRedis, makeCertificates, removeCertificates } from './helpers/redis-tls'
import { probePid } from './helpers/server-process'

let certificates: Certificates
let server: TlsRedis
t.before(async () => {
  certificates = await makeCertificates()
  server = await TlsRedis.start(certificates)
})
t.teardown(async () => {
  await server?.stop()
  if (certificates !== undefined) await removeCertificates(certificates)
})

/** A client of the test's own, trusting the CA; quit at teardown. */
async function adminClient (t: Teardownable, target?: TlsRedis, tls?: RedisOptions['tls']): Promise<Redis> {
  target ??= server
  tls ??= { ca: certificates.ca }
  const client = new Redis({ host: target.host, port: target.port, tls, lazyConnect: true, maxRetriesPerRequest: 1 })
  await client.connect()
  t.teardown(() => client.quit().catch(() => client.disconnect()))
  return client
}

async function keysUnder (client: Redis, prefix: string): Promise<string[]> {
  const found: string[] = []
  let cursor = '0'
  do {
    const [next, keys] = await client.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1000)
    cursor = next
    found.push(...keys)
  } while (cursor !== '0')
  return found
}

interface TestApp {
  app: FastifyInstance
  prefix: string
  calls: () => number
  /** The plugin's warnings, parsed. */
  warnings: Array<{ msg: string, err?: { message?: string } }>
}

async function appOn (t: Teardownable, redis: CachePluginOptions['redis'], options: CachePluginOptions = {}): Promise<TestApp> {
  const warnings: TestApp['warnings'] = []
  const app = Fastify({
    logger: { level: 'warn', stream: { write: (line: string) => { warnings.push(JSON.parse(line)) } } }
  })
  const prefix = uniquePrefix('tls')
  await app.register(cache, { redis, prefix, ...options })
  let calls = 0
  app.get('/report', { config: { cache: { ttl: 60 } } }, async () => ({ report: 'quarterly', calls: ++calls }))
  t.teardown(() => app.close())
  return { app, prefix, calls: () => calls, warnings }
}

t.test('the plugin caches over TLS, configured with ioredis options or a client made from a rediss:// URL', async (t) => {
  const admin = await adminClient(t)
  const configurations: Array<[string, () => CachePluginOptions['redis']]> = [
    ['redis: { host, port, tls: { ca } }', () => ({ host: server.host, port: server.port, tls: { ca: certificates.ca } })],
    ['redis: new Redis(\'rediss://…\', { tls: { ca } })', () => {
      const client = new Redis(server.url, { tls: { ca: certificates.ca } })
      t.teardown(() => client.quit().catch(() => client.disconnect())) // a client handed in stays ours to close
      return client
    }]
  ]
  for (const [name, redis] of configurations) {
    await t.test(name, async (t) => {
      const { app, prefix, calls } = await appOn(t, redis())
      const first = await app.inject('/report')
      t.equal(first.statusCode, 200)
      t.equal(first.headers['x-cache'], 'MISS')
      await untilStored(app)
      const second = await app.inject('/report')
      t.equal(second.headers['x-cache'], 'HIT')
      t.equal(second.body, first.body)
      t.equal(calls(), 1, 'the handler ran once')
      t.match(await app.cacheService.stats(), { errors: 0, store: { kind: 'redis' } })
      t.ok((await keysUnder(admin, prefix)).length > 0, 'the entry is in the TLS server')
    })
  }
})

t.test('the server has no plain port: only TLS could have reached it', async (t) => {
  const admin = await adminClient(t)
  t.same(await admin.config('GET', 'port'), ['port', '0'], 'no plain TCP listener')
  t.same(await admin.config('GET', 'unixsocket'), ['unixsocket', ''], 'no unix socket')
  t.same(await admin.config('GET', 'tls-port'), ['tls-port', String(server.port)])

  // A plain client at the TLS port gets no answer: its INFO is not a TLS handshake.
  t.equal(await probePid(() => createConnection({ host: server.host, port: server.port }), 2000), undefined)
  t.equal(await probePid(() => createConnection({ host: server.host, port: server.port }), 2000), undefined,
    'again (not a timing accident)')
  const plain = new Redis({ host: server.host, port: server.port, lazyConnect: true, retryStrategy: () => null, connectTimeout: 2000 })
  await t.rejects(plain.connect(), 'ioredis without tls cannot connect')
  plain.disconnect()
})

t.test('a client that does not trust the CA never connects, and the app serves uncached with no error to clients', async (t) => {
  const admin = await adminClient(t)
  const configurations: Array<[string, CachePluginOptions['redis']]> = [
    ['a rediss:// URL, with only the default CAs', server.url],
    ['tls: { ca } with another CA', { host: server.host, port: server.port, tls: { ca: certificates.otherCa } }]
  ]
  for (const [name, redis] of configurations) {
    await t.test(name, async (t) => {
      const { app, prefix, calls, warnings } = await appOn(t, redis, { connectTimeoutMs: 300 })
      for (let i = 1; i <= 3; i++) {
        const response = await app.inject('/report')
        t.equal(response.statusCode, 200, 'served by the handler')
        t.same(response.json(), { report: 'quarterly', calls: i })
        t.equal(response.headers['x-cache'], 'MISS')
        await sleep(20) // a write, had there been one, goes out after the response
      }
      t.equal(calls(), 3, 'nothing was served from a cache')
      const stats = await app.cacheService.stats()
      t.match(stats, { hits: 0, stored: 0 })
      t.ok(stats.errors > 0, `the failed reads are counted (${stats.errors})`)
      const connectionErrors = warnings.filter((line) => line.msg.startsWith('cache redis connection error'))
      t.ok(connectionErrors.length > 0, 'the connection error is logged')
      t.match(connectionErrors[0]?.err?.message, /certificate/i, 'because the certificate was not trusted')
      t.same(await keysUnder(admin, prefix), [], 'nothing reached the server')
    })
  }
})

t.test('mutual TLS: without a client certificate the app serves uncached; with one it caches', async (t) => {
  const mutual = await TlsRedis.start(certificates, { authClients: true })
  t.teardown(() => mutual.stop())
  const admin = await adminClient(t, mutual, { ca: certificates.ca, cert: certificates.clientCert, key: certificates.clientKey })

  const without = await appOn(t, { host: mutual.host, port: mutual.port, tls: { ca: certificates.ca } }, { connectTimeoutMs: 300 })
  for (let i = 0; i < 2; i++) t.equal((await without.app.inject('/report')).statusCode, 200)
  t.equal(without.calls(), 2)
  t.match(await without.app.cacheService.stats(), { hits: 0, stored: 0 })
  // TLS 1.3: the server refuses the missing certificate after the handshake, which the client sees as a reset
  t.ok(without.warnings.some((line) => line.msg.startsWith('cache redis connection error')), 'the refusal is logged')
  t.same(await keysUnder(admin, without.prefix), [])

  const withCert = await appOn(t, {
    host: mutual.host, port: mutual.port, tls: { ca: certificates.ca, cert: certificates.clientCert, key: certificates.clientKey }
  })
  t.equal((await withCert.app.inject('/report')).headers['x-cache'], 'MISS')
  await untilStored(withCert.app)
  t.equal((await withCert.app.inject('/report')).headers['x-cache'], 'HIT')
  t.equal(withCert.calls(), 1)
  t.ok((await keysUnder(admin, withCert.prefix)).length > 0)
})

t.test('npm start with a rediss:// REDIS_URL and the CA in NODE_EXTRA_CA_CERTS caches over TLS', { timeout: SERVER_TEST_TIMEOUT_MS }, async (t) => {
  const admin = await adminClient(t)
  const adminToken = 'tls-test-admin-token-0123456789'
  const env: Record<string, string | undefined> = {
    ...process.env, REDIS_URL: server.url, NODE_EXTRA_CA_CERTS: certificates.files.ca, ADMIN_TOKEN: adminToken, DATASET_SIZE: 'small', WARM_ON_START: '0'
  }
  for (const name of ['CACHE_ENCRYPTION_KEYS', 'DATABASE_URL', 'CACHE_PREFIX']) delete env[name]
  const headers = { authorization: `Bearer ${adminToken}` }
  const app = await startServer(t, env)
  t.match(app.output(), '"store":"redis"')
  t.notMatch(app.output(), 'cache redis connection error')
  const path = '/executive/overview?workspace_id=ws1&timeframe=7d'
  const first = await fetch(`${app.base}${path}`, { headers })
  t.equal(first.headers.get('x-cache'), 'MISS')
  const body = await first.text()
  await waitForStored(app.base, 1, adminToken)
  const second = await fetch(`${app.base}${path}`, { headers })
  t.equal(second.headers.get('x-cache'), 'HIT')
  t.equal(await second.text(), body)
  t.ok((await keysUnder(admin, 'example')).length > 0, 'the entry is in the TLS server')
  t.equal(await app.stop(), 0)
})
