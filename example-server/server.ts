/**
 * Starts the demo: `npm start`. The in-memory store by default; Redis when REDIS_URL is set. PGlite (PostgreSQL in
 * this process) by default; PostgreSQL when DATABASE_URL is set (the tables go in the schema DATABASE_SCHEMA,
 * `example_analytics` by default, which the example owns: it is recreated and reseeded at every start).
 * DATASET_SIZE: small, medium (the default, about 300,000 agent runs) or large.
 * ADMIN_TOKEN: the operators' token (at least 16 characters) for /cache/* and the dashboard; a random one otherwise.
 * CACHE_PREFIX: the namespace of the cache keys (`example` by default).
 * WARM_ON_START=0 turns off warming the active workspaces' dashboards after start.
 * Listens on PORT (3000) and HOST (127.0.0.1).
 * CACHE_ENCRYPTION_KEYS: comma-separated keys (base64 of 32 random bytes, `openssl rand -base64 32`), newest first,
 * that encrypt the cache entries of the sensitive route; without it, that route is served uncached. Keys come from
 * the environment (or a secret manager), never from source, and are never logged.
 */
import { buildApp } from './app'
import { redactedUrl } from './db/database'
import { datasetSize } from './db/dataset'

function portFrom (value: string | undefined): number {
  if (value === undefined || value === '') return 3000
  const port = Number(value)
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`PORT must be a port number, got ${JSON.stringify(value)}`)
  return port
}

/** The URL without its credentials, for the log. */
const redacted = redactedUrl

/** The keys in CACHE_ENCRYPTION_KEYS, newest first; blanks around commas are ignored. The plugin validates them. */
function encryptionKeysFrom (value: string | undefined): string[] {
  return (value ?? '').split(',').map((key) => key.trim()).filter((key) => key !== '')
}

async function main (): Promise<void> {
  const port = portFrom(process.env['PORT'])
  const host = process.env['HOST'] || '127.0.0.1'
  const redisUrl = process.env['REDIS_URL'] || undefined
  const encryptionKeys = encryptionKeysFrom(process.env['CACHE_ENCRYPTION_KEYS'])
  const databaseUrl = process.env['DATABASE_URL'] || undefined
  const databaseSchema = process.env['DATABASE_SCHEMA'] || undefined
  const dataset = datasetSize(process.env['DATASET_SIZE'])
  const adminToken = process.env['ADMIN_TOKEN'] || undefined
  const warmOnStart = process.env['WARM_ON_START'] !== '0'
  const prefix = process.env['CACHE_PREFIX'] || undefined

  const app = await buildApp({ redisUrl, prefix, encryptionKeys, databaseUrl, databaseSchema, dataset, adminToken, warmOnStart, logger: true })
  let closing = false
  const shutdown = (signal: NodeJS.Signals): void => {
    if (closing) return
    closing = true
    app.log.info({ signal }, 'shutting down')
    app.close().then(() => process.exit(0), (error: unknown) => {
      app.log.error({ err: error }, 'error while shutting down')
      process.exit(1)
    })
  }
  process.once('SIGINT', shutdown)
  process.once('SIGTERM', shutdown)

  const address = await app.listen({ port, host })
  const { store } = await app.cacheService.stats()
  app.log.info(
    {
      address,
      store: store.kind,
      ...(redisUrl === undefined ? {} : { redis: redacted(redisUrl) }),
      database: databaseUrl === undefined ? 'pglite' : redacted(databaseUrl),
      dataset: { size: dataset, ...app.seeded },
      // how many keys, never the keys
      sensitiveRoutes: encryptionKeys.length > 0 ? `encrypted (${encryptionKeys.length} key${encryptionKeys.length === 1 ? '' : 's'})` : 'uncached'
    },
    `example server listening at ${address}, caching in ${redisUrl === undefined ? 'memory' : 'redis'}`
  )
  // The token goes in the fragment, which the browser never sends: it stays out of access logs.
  app.log.info(adminToken === undefined
    ? `dashboard: ${address}/#token=${app.adminToken} (a random admin token for this run; set ADMIN_TOKEN to choose one)`
    : `dashboard: ${address}/ (admin token from ADMIN_TOKEN)`)
}

main().catch((error: unknown) => {
  console.error(error)
  process.exit(1)
})
