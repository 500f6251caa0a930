import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import Fastify, { type FastifyInstance } from 'fastify'
import t from 'tap'
import cache from '../lib/index'
import { until, untilStored } from './helpers/app'
import { startOrigin } from './helpers/origin'
import { createClient, deleteByPrefix, redisUrl, uniquePrefix } from './helpers/redis'

// Every ```ts block of the README is run here, as written, with the package import pointed at lib/.
const readme = readFileSync(join(__dirname, '..', 'README.md'), 'utf8')
const blocks = [...readme.matchAll(/```ts\n([\s\S]*?)```/g)].map((match) => match[1])
const dir = join(__dirname, '.readme')
rmSync(dir, { recursive: true, force: true })
mkdirSync(dir, { recursive: true })
t.teardown(() => rmSync(dir, { recursive: true, force: true }))

interface Context {
  app?: FastifyInstance
  workspaceId?: string
  buildWeeklyReport?: (id: string) => unknown
  db?: { query: (sql: string, params: unknown[]) => Promise<unknown> }
  agentId?: string
}
type Example = (context: Context) => Promise<{ app: FastifyInstance } & Record<string, unknown>>

/** Turns a block into a module exporting `run(context)`: imports stay on top, the rest becomes the body. */
async function load (block: string, index: number, redis: string): Promise<Example> {
  const lines = block.replaceAll("'redis://127.0.0.1:6379'", JSON.stringify(redis)).split('\n')
  const imports = lines.filter((line) => line.startsWith('import '))
    .map((line) => line.replace("'fastify-response-cache'", "'../../lib/index'"))
  // Snippets after the quick start leave out its import of the plugin.
  if (!imports.some((line) => line.startsWith('import cache '))) imports.push("import cache from '../../lib/index'")
  const body = lines.filter((line) => !line.startsWith('import ')).join('\n')
  const given = ['app', 'workspaceId', 'buildWeeklyReport', 'db', 'agentId'].filter((name) => !new RegExp(`(const|let|function) ${name}\\b`).test(body))
  const results = ['result', 'runs', 'stats', 'analytics', 'present', 'secondsLeft', 'removed'].filter((name) => new RegExp(`const ${name}\\b`).test(body))
  const source = `${imports.join('\n')}
// eslint-disable-next-line
export async function run ({ ${given.join(', ')} }: any): Promise<any> {
${body}
  return { app, ${results.join(', ')} }
}
`
  const file = join(dir, `example-${index}.ts`)
  writeFileSync(file, source)
  // A plain require: the test runner's TypeScript hook compiles the module as it does the tests.
  return (require(file) as { run: Example }).run
}

t.test('the README has the examples this test knows', async (t) => {
  t.equal(blocks.length, 9)
})

t.test('README examples run as written', async (t) => {
  const redis = await redisUrl()
  const [quickStart, bypass, basics, service, invalidation, warming, withFastifyRedis, severalInstances, gateway] = await Promise.all(blocks.map((block, i) => load(block, i, redis)))

  t.test('quick start: a miss, a hit, and tag invalidation by an event', async (t) => {
    const { app } = await quickStart({})
    t.teardown(() => app.close())
    const url = '/executive/overview?workspace_id=ws1&timeframe=7d'
    const miss = await app.inject(url)
    t.equal(miss.headers['x-cache'], 'MISS')
    await untilStored(app)
    const hit = await app.inject(url)
    t.equal(hit.headers['x-cache'], 'HIT')
    t.equal(hit.json().cached_at, miss.json().cached_at)
    t.ok(await app.cacheService.exists(['exec', 'dashboard', 'ws1', '7d']))
    const event = await app.inject({ method: 'POST', url: '/events/agent-run-completed', payload: { workspace_id: 'ws1' } })
    t.equal(event.statusCode, 200)
    t.equal((await app.inject(url)).headers['x-cache'], 'MISS', 'the event invalidated the workspace')
    await app.cacheService.invalidateTags('ws:ws1')
  })

  t.test('bypass restricted to operators', async (t) => {
    process.env.CACHE_ADMIN_TOKEN = 'let-me-in'
    const app = Fastify()
    t.teardown(() => app.close())
    await bypass({ app })
    app.get('/r', { config: { cache: true } }, async () => 'r')
    await app.inject('/r')
    await untilStored(app)
    t.equal((await app.inject('/r?skip_cache=1')).headers['x-cache'], 'HIT')
    t.equal((await app.inject({ url: '/r?skip_cache=1', headers: { 'x-cache-admin': 'let-me-in' } })).headers['x-cache'], 'BYPASS')
  })

  t.test('the basic methods: set, get, exists, expire, ttl, delete', async (t) => {
    const app = Fastify()
    t.teardown(() => app.close())
    await app.register(cache)
    const result = await basics({ app, agentId: 'ws1-agent3' })
    t.match(result.analytics, { runs: 42 })
    t.ok((result.analytics as { since: unknown }).since instanceof Date, 'a Date comes back as a Date')
    t.equal(result.present, true)
    t.equal(result.secondsLeft, 60)
    t.equal(result.removed, true)
    t.equal(await app.cacheService.exists(['agent', 'analytics', 'ws1-agent3', '7d']), false)
  })

  t.test('getOrCompute, invalidatePattern, cached queries and cleanup', async (t) => {
    const app = Fastify()
    t.teardown(() => app.close())
    await app.register(cache)
    await app.cacheService.set(['exec', 'dashboard', 'ws9', '7d'], { old: true })
    let builds = 0
    let queries = 0
    const db = { query: async (sql: string, params: unknown[]) => { queries++; return { sql, params, count: 42 } } }
    const context = { app, workspaceId: 'ws9', buildWeeklyReport: (id: string) => ({ id, builds: ++builds }), db }
    const first = await service(context)
    t.equal(queries, 1)
    await service(context)
    t.equal(builds, 1, 'the report was computed once')
    t.equal(queries, 2, 'the invalidated query ran again, once')
    t.same(await app.cacheService.get(['report', 'weekly', 'ws9']), { id: 'ws9', builds: 1 })
    t.equal(await app.cacheService.exists('exec:dashboard:ws9:7d'), false, 'the pattern deleted the dashboard')
    t.match(first.runs, { count: 42 })
    t.match(first.stats, { scanned: Number, entries: Number, bytes: Number })
  })

  t.test('invalidation: a write route, tags, soft, key and pattern', async (t) => {
    const app = Fastify()
    t.teardown(() => app.close())
    await app.register(cache)
    await app.cacheService.set('exec:dashboard:ws42:7d', 'dashboard', { tags: ['ws:42'] })
    await app.cacheService.set('exec:dashboard:ws42:24h', 'other timeframe')
    await invalidation({ app })
    t.equal(await app.cacheService.get('exec:dashboard:ws42:7d'), undefined)
    t.equal(await app.cacheService.get('exec:dashboard:ws42:24h'), undefined, 'the pattern reached the other timeframe')
    await app.cacheService.set('exec:dashboard:ws9:7d', 'ws9', { tags: ['ws:ws9'] })
    const event = await app.inject({ method: 'POST', url: '/events/agent-run-completed', payload: { workspace_id: 'ws9' } })
    t.equal(event.statusCode, 200)
    t.equal(await app.cacheService.get('exec:dashboard:ws9:7d'), undefined, 'the write route invalidated its workspace')
    t.same((await app.cacheService.stats()).invalidations['ws:42'], 2)
  })

  t.test('warming: URLs and a computed value', async (t) => {
    const app = Fastify()
    t.teardown(() => app.close())
    await app.register(cache)
    let runs = 0
    app.get('/executive/overview', { config: { cache: true } }, async () => ({ runs: ++runs }))
    app.get('/agents/:id/analytics', { config: { cache: true } }, async (request) => ({ auth: request.headers.authorization }))
    const { result } = await warming({ app, buildWeeklyReport: (id: string) => ({ id }) })
    t.match(result, { ok: 3, failed: 0, errors: [] })
    t.same(await app.cacheService.get(['report', 'weekly', 'ws1']), { id: 'ws1' })
    const hit = await app.inject('/executive/overview?workspace_id=ws1&timeframe=7d')
    t.equal(hit.headers['x-cache'], 'HIT')
    t.equal(runs, 1)
  })

  t.test('with @fastify/redis, its client is used', async (t) => {
    const app = Fastify()
    const client = await createClient(t)
    t.teardown(() => app.close())
    await withFastifyRedis({ app })
    const prefix = uniquePrefix('readme')
    t.teardown(() => deleteByPrefix(client, prefix))
    await app.cacheService.set(['readme', prefix], 1)
    t.equal((await app.cacheService.stats()).store.kind, 'redis')
    t.ok(await client.exists(`analytics:prod:e:{readme:${prefix.replaceAll(':', '%3A')}}`), 'the value is in that Redis')
    await app.cacheService.delete(['readme', prefix])
  })

  t.test('several instances: a tag invalidated on one is fresh on the other', async (t) => {
    const client = await createClient(t)
    t.teardown(() => deleteByPrefix(client, 'analytics:prod'))
    let count = 1
    const db = { query: async () => ({ count }) }
    // Two instances, each built by the example as written.
    const { app: a } = await severalInstances({ db })
    t.teardown(() => a.close())
    const { app: b } = await severalInstances({ db })
    t.teardown(() => b.close())
    const url = '/workspaces/ws1/summary'
    await a.inject(url)
    await untilStored(a)
    t.same((await b.inject(url)).json(), { count: 1 })
    t.equal((await b.inject(url)).headers['x-cache'], 'HIT')
    t.equal((await b.cacheService.stats()).store.kind, 'memory+redis')
    count = 2
    await a.cacheService.invalidateTags('ws:ws1')
    await until('the other instance serves the new count', async () => (await b.inject(url)).json().count === 2, 1000)
  })

  t.test('shared-cache mode: a gateway with @fastify/reply-from validates with the origin and is invalidated by writes', async (t) => {
    const client = await createClient(t)
    t.teardown(() => deleteByPrefix(client, 'gateway:prod'))
    let version = 1
    const origin = await startOrigin(t, (request) => {
      const etag = `"v${version}"`
      if (request.method !== 'GET') {
        version++
        return { status: 201, headers: { location: '/catalogue/items/1' } }
      }
      if (request.headers['if-none-match'] === etag) return { status: 304, headers: { etag, 'cache-control': 'max-age=0', 'x-checked': 'yes' } }
      return { headers: { 'content-type': 'application/json', etag, 'cache-control': 'max-age=0' }, body: JSON.stringify({ version }) }
    })
    process.env.CATALOGUE_URL = origin.url
    const { app } = await gateway({})
    t.teardown(() => app.close())
    const url = '/catalogue/items/1'
    const miss = await app.inject(url)
    t.same(miss.json(), { version: 1 })
    t.equal(miss.headers['x-cache'], 'MISS')
    await untilStored(app)
    const validated = await app.inject({ url, headers: { 'if-none-match': '"not-this-one"' } })
    t.equal(validated.statusCode, 200)
    t.same(validated.json(), { version: 1 })
    t.equal(validated.headers['x-cache'], 'REVALIDATED')
    t.equal(validated.headers['x-checked'], 'yes', 'the 304 refreshed the stored headers')
    t.equal(origin.requests[1].headers['if-none-match'], '"v1"', 'reply-from sent the cache\'s validator, not the client\'s')
    t.equal((await app.inject({ method: 'POST', url: '/catalogue/items' })).statusCode, 201)
    const after = await app.inject(url)
    t.equal(after.headers['x-cache'], 'MISS', 'the Location of the write was invalidated')
    t.same(after.json(), { version: 2 })
    t.equal(origin.count(), 3)
  })
})
