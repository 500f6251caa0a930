import { spawn } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { Redis } from 'ioredis'
import {
  createClient,
  deleteByPrefix,
  freePort,
  RedisProcess,
  type Teardownable,
  redisUrl,
  uniquePrefix,
} from './redis'

const sleep = (ms: number): Promise<void> => new Promise(resolve => setTimeout(resolve, ms))

/** True while `pid` is a live (not zombie) process. */
function isAlive (pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    // "pid (comm) S ..." — the state follows the last ')'
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z'
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false
    try {
      process.kill(pid, 0)
      return true
    } catch {
      return false
    }
  }
}

async function waitUntilDead (pid: number, ms = 3000): Promise<boolean> {
  const deadline = Date.now() + ms
  while (Date.now() < deadline) {
    if (!isAlive(pid)) return true
    await sleep(25)
  }
  return !isAlive(pid)
}

/** A client that never reconnects or retries, for servers that go away. */
function fragileClient (t: Teardownable, port: number, commandTimeout?: number): Redis {
  const client = new Redis({
    host: '127.0.0.1',
    port,
    lazyConnect: true,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
    ...(commandTimeout === undefined ? {} : { commandTimeout }),
  })
  client.on('error', () => {})
  t.teardown(() => client.disconnect())
  return client
}

t.test('redisUrl() answers PING and is cached per process', async t => {
  const url = await redisUrl()
  t.match(url, /^rediss?:\/\//)
  t.equal(await redisUrl(), url, 'same URL on a second call')
  if (process.env['REDIS_URL']) t.equal(url, process.env['REDIS_URL'], 'REDIS_URL wins')

  const client = await createClient(t)
  t.equal(client.status, 'ready')
  t.equal(await client.ping(), 'PONG')
})

t.test('createClient(t) quits the client in teardown', async t => {
  let client: Redis | undefined
  await t.test('inner', async t => {
    client = await createClient(t)
    t.equal(await client.ping(), 'PONG')
  })
  await sleep(50)
  t.equal(client?.status, 'end', 'closed after the inner test ended')
})

t.test('uniquePrefix()', async t => {
  const a = uniquePrefix('cache store/get äh*')
  const b = uniquePrefix('cache store/get äh*')
  t.not(a, b, 'unique per call')
  t.match(a, /^test:cache_store_get__h_:[0-9a-f]+$/)
  t.match(a, /^[A-Za-z0-9._:-]+$/)
  t.match(uniquePrefix(''), /^test:anon:[0-9a-f]+$/)
})

t.test('deleteByPrefix() deletes only keys under its prefix', async t => {
  const client = await createClient(t)
  const mine = uniquePrefix('delete-mine')
  const other = uniquePrefix('delete-other')
  t.teardown(() => deleteByPrefix(client, other))

  // enough keys to need several SCAN round trips
  const pipeline = client.pipeline()
  for (let i = 0; i < 2500; i++) pipeline.set(`${mine}:k${i}`, 'x')
  pipeline.hset(`${mine}:nested:hash`, 'f', 'v')
  pipeline.set(mine, 'the bare prefix is not under the prefix')
  pipeline.set(`${mine}x:1`, 'a longer prefix is not under the prefix')
  pipeline.set(`${other}:keep`, 'x')
  await pipeline.exec()

  await deleteByPrefix(client, mine)

  const [, left] = await client.scan('0', 'MATCH', `${mine}:*`, 'COUNT', 10000)
  t.same(left, [], 'nothing left under the prefix')
  t.equal(await client.exists(mine, `${mine}x:1`, `${other}:keep`), 3, 'others untouched')
  await client.del(mine, `${mine}x:1`)

  // glob characters in a prefix are literal
  await client.set(`${other}:a:1`, 'x')
  await deleteByPrefix(client, `${other}:*`)
  t.equal(await client.exists(`${other}:a:1`), 1, '"*" in a prefix is not a wildcard')
})

t.test('RedisProcess', async t => {
  t.test('start, stop, restart on the same port', async t => {
    const server = await RedisProcess.start()
    t.teardown(() => server.stop())
    t.type(server.port, 'number')
    t.equal(server.url, `redis://127.0.0.1:${server.port}`)
    t.ok(server.pid > 0 && isAlive(server.pid), 'running')

    const client = fragileClient(t, server.port)
    await client.connect()
    t.equal(await client.ping(), 'PONG')
    await client.set('k', 'v')

    const firstPid = server.pid
    await server.stop()
    t.equal(server.running, false)
    t.equal(server.pid, 0)
    t.ok(await waitUntilDead(firstPid), 'redis-server exited')
    await t.rejects(fragileClient(t, server.port).connect(), 'nothing listens after stop()')
    await server.stop() // stopping twice is fine

    await server.restart()
    t.ok(server.pid > 0 && server.pid !== firstPid, 'new process')
    const again = fragileClient(t, server.port)
    await again.connect()
    t.equal(await again.ping(), 'PONG', 'answers on the same port')
    t.equal(await again.get('k'), null, 'no persistence between runs')
  })

  t.test('start on a given port with extra args', async t => {
    const port = await freePort()
    const server = await RedisProcess.start({ port, args: ['--maxmemory', '12mb'] })
    t.teardown(() => server.stop())
    t.equal(server.port, port)
    const client = fragileClient(t, port)
    await client.connect()
    t.same(await client.config('GET', 'maxmemory'), ['maxmemory', String(12 * 1024 * 1024)])
    t.same(await client.config('GET', 'save'), ['save', ''])
    t.same(await client.config('GET', 'appendonly'), ['appendonly', 'no'])
  })

  t.test('start fails clearly when the port is taken', async t => {
    const server = await RedisProcess.start()
    t.teardown(() => server.stop())
    await t.rejects(RedisProcess.start({ port: server.port }), /did not start/)
  })

  t.test('freeze and unfreeze', async t => {
    const server = await RedisProcess.start()
    t.teardown(() => server.stop())
    const client = fragileClient(t, server.port, 200)
    await client.connect()
    t.equal(await client.ping(), 'PONG')

    server.freeze()
    const started = Date.now()
    await t.rejects(client.ping(), /timed out/i, 'PING times out while frozen')
    t.ok(Date.now() - started < 2000, 'timed out quickly')

    server.unfreeze()
    t.equal(await client.ping(), 'PONG', 'answers after unfreeze')

    server.freeze()
    await server.stop()
    t.equal(server.running, false, 'a frozen server can be stopped')
  })

  t.test('no redis-server is left behind when the test process dies', async t => {
    const helper = join(__dirname, 'redis.ts')
    const script = [
      `const { RedisProcess } = require(${JSON.stringify(helper)})`,
      'RedisProcess.start().then(async p => {',
      '  const q = await RedisProcess.start()',
      '  q.freeze()',
      '  process.stdout.write(p.pid + " " + q.pid + "\\n")',
      '  if (process.argv[1] === "exit") process.exit(0)',
      '  setInterval(() => {}, 1000)',
      '})',
    ].join('\n')

    for (const how of ['exit', 'SIGTERM', 'SIGKILL'] as const) {
      const child = spawn(process.execPath, ['--import', 'tsx', '-e', script, how], {
        stdio: ['ignore', 'pipe', 'inherit'],
      })
      const closed = new Promise<void>(resolve => child.once('close', () => resolve()))
      let out = ''
      child.stdout.setEncoding('utf8')
      await new Promise<void>((resolve, reject) => {
        child.stdout.on('data', (chunk: string) => {
          out += chunk
          if (out.includes('\n')) resolve()
        })
        child.once('close', code => reject(new Error(`child closed early with ${String(code)}`)))
      })
      const pids = out.trim().split(' ').map(Number)
      t.equal(pids.length, 2, `${how}: child reported two pids`)
      if (how !== 'exit') child.kill(how)
      await closed
      for (const pid of pids) {
        t.ok(await waitUntilDead(pid), `${how}: redis-server ${pid} is gone`)
      }
    }
  })
})
