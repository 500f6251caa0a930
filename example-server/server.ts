/**
 * Starts the demo: `npm start`. The in-memory store by default; Redis when REDIS_URL is set.
 * Listens on PORT (3000) and HOST (127.0.0.1).
 * CACHE_ENCRYPTION_KEYS: comma-separated keys (base64 of 32 random bytes, `openssl rand -base64 32`), newest first,
 * that encrypt the cache entries of the sensitive route; without it, that route is served uncached. Keys come from
 * the environment (or a secret manager), never from source, and are never logged.
 */
import { buildApp } from './app'

function portFrom (value: string | undefined): number {
  if (value === undefined || value === '') return 3000
  const port = Number(value)
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`PORT must be a port number, got ${JSON.stringify(value)}`)
  return port
}

/** The URL without its credentials, for the log. */
function redacted (url: string): string {
  try {
    const parsed = new URL(url)
    if (parsed.password !== '') parsed.password = '***'
    return parsed.toString()
  } catch {
    return '(unparsable REDIS_URL)'
  }
}

/** The keys in CACHE_ENCRYPTION_KEYS, newest first; blanks around commas are ignored. The plugin validates them. */
function encryptionKeysFrom (value: string | undefined): string[] {
  return (value ?? '').split(',').map((key) => key.trim()).filter((key) => key !== '')
}

async function main (): Promise<void> {
  const port = portFrom(process.env['PORT'])
  const host = process.env['HOST'] || '127.0.0.1'
  const redisUrl = process.env['REDIS_URL'] || undefined
  const encryptionKeys = encryptionKeysFrom(process.env['CACHE_ENCRYPTION_KEYS'])

  const app = await buildApp({ redisUrl, encryptionKeys, logger: true })
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
      // how many keys, never the keys
      sensitiveRoutes: encryptionKeys.length > 0 ? `encrypted (${encryptionKeys.length} key${encryptionKeys.length === 1 ? '' : 's'})` : 'uncached'
    },
    `example server listening at ${address}, caching in ${redisUrl === undefined ? 'memory' : 'redis'}`
  )
}

main().catch((error: unknown) => {
  console.error(error)
  process.exit(1)
})
