/**
 * Starts the demo: `npm start`. The in-memory store by default; Redis when REDIS_URL is set.
 * Listens on PORT (3000) and HOST (127.0.0.1).
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

async function main (): Promise<void> {
  const port = portFrom(process.env['PORT'])
  const host = process.env['HOST'] || '127.0.0.1'
  const redisUrl = process.env['REDIS_URL'] || undefined

  const app = await buildApp({ redisUrl, logger: true })
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
    { address, store: store.kind, ...(redisUrl === undefined ? {} : { redis: redacted(redisUrl) }) },
    `example server listening at ${address}, caching in ${redisUrl === undefined ? 'memory' : 'redis'}`
  )
}

main().catch((error: unknown) => {
  console.error(error)
  process.exit(1)
})
