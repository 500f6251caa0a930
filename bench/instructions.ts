/**
 * `npm run bench:instructions [-- --variants optout,memory,redis] [-- --requests 5000] [-- --warmup 20000] [-- --runs 3]`
 *
 * User-space instructions per request of each variant, counted by valgrind's callgrind. On a shared VM req/s moves
 * by 10 % from run to run; an instruction count hardly moves, so it shows what a change costs or saves in the
 * process's own work. It does not count the kernel's work (socket reads and writes) nor time spent waiting.
 *
 * Each variant, in its own server process (bench/server.ts) started under callgrind with instrumentation off: check
 * that it answers the payload, warm up (so that V8 has optimised the hot path), turn instrumentation on, send the
 * requests one at a time over one keep-alive connection, dump the counters, stop. Needs valgrind on the PATH.
 * Env: REDIS_URL (redis://127.0.0.1:6379), BENCH_KEYS (1).
 */
import { execFileSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { Agent, request } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { isDeepStrictEqual, parseArgs } from 'node:util'
import { Redis } from 'ioredis'
import { killAll, startServer } from './harness'
import { PAYLOAD, VARIANTS, type Variant, benchPath, isVariant } from './payload'
import { median } from './statistics'
import { deleteByPrefix } from '../test/helpers/redis'

const { values: args } = parseArgs({
  options: {
    variants: { type: 'string', default: 'optout,memory,tiered,redis,ioredis' },
    requests: { type: 'string', default: '5000' },
    warmup: { type: 'string', default: '20000' },
    runs: { type: 'string', default: '3' }
  }
})
const requests = Number(args.requests)
const warmup = Number(args.warmup)
const runs = Number(args.runs)
const variants: Variant[] = ['ceiling', ...args.variants.split(',').filter((name) => name !== 'ceiling').map((name) => {
  if (!isVariant(name)) throw new Error(`unknown variant "${name}"`)
  return name
})]
const redisUrl = process.env['REDIS_URL'] ?? 'redis://127.0.0.1:6379'
const prefix = `bench:instructions-${randomBytes(4).toString('hex')}`
const agent = new Agent({ keepAlive: true, maxSockets: 1 })

/** One GET over the keep-alive connection: status, x-cache and body. */
async function ask (port: number, path: string): Promise<{ status: number, cache: string | undefined, body: string }> {
  return await new Promise((resolve, reject) => {
    const sent = request({ host: '127.0.0.1', port, path, agent }, (response) => {
      let body = ''
      response.setEncoding('utf8').on('data', (chunk: string) => { body += chunk }).on('end', () => {
        resolve({ status: response.statusCode ?? 0, cache: response.headers['x-cache'] as string | undefined, body })
      }).on('error', reject)
    })
    sent.setTimeout(60_000, () => sent.destroy(new Error(`${path}: no answer within 60 s`)))
    sent.on('error', reject).end()
  })
}

async function askMany (port: number, count: number, from: number): Promise<void> {
  for (let n = from; n < from + count; n++) {
    const answer = await ask(port, benchPath(n))
    if (answer.status !== 200) throw new Error(`${benchPath(n)} answered ${answer.status}`)
  }
}

/** Instructions per request of one variant, in one server process. */
async function count (variant: Variant, directory: string): Promise<number> {
  const out = join(directory, `${variant}.%p.out`)
  const server = await startServer(variant, { REDIS_URL: redisUrl, BENCH_PREFIX: prefix }, [],
    ['valgrind', '--tool=callgrind', '--instr-atstart=no', '--smc-check=all-non-file', `--callgrind-out-file=${out}`])
  try {
    await askMany(server.port, warmup, 0)
    const answer = await ask(server.port, benchPath(0))
    // The same document; a library may serialise its keys in another order (async-cache-dedupe sorts them).
    if (!isDeepStrictEqual(JSON.parse(answer.body), PAYLOAD)) throw new Error(`${variant}: not the payload`)
    const cached = ['redis', 'memory', 'tiered', 'cluster', 'compressed', 'headers'].includes(variant)
    if (cached !== (answer.cache === 'HIT')) throw new Error(`${variant}: x-cache is ${String(answer.cache)}`)
    execFileSync('callgrind_control', ['--instr=on', String(server.pid)], { stdio: 'ignore' })
    await askMany(server.port, requests, warmup)
    execFileSync('callgrind_control', ['--dump', String(server.pid)], { stdio: 'ignore' })
  } finally {
    await server.stop()
  }
  // The dump made on request is the file with a part number; the one written at exit is left aside.
  const dump = readdirSync(directory).find((name) => name.startsWith(`${variant}.${server.pid}.out.`))
  if (dump === undefined) throw new Error(`${variant}: no callgrind dump`)
  const totals = /^(?:totals|summary): (\d+)/m.exec(readFileSync(join(directory, dump), 'utf8'))?.[1]
  if (totals === undefined) throw new Error(`${variant}: no totals in ${dump}`)
  return Number(totals) / requests
}

async function main (): Promise<void> {
  const directory = mkdtempSync(join(tmpdir(), 'bench-instructions-'))
  const perRun = new Map<Variant, number[]>(variants.map((variant) => [variant, []]))
  try {
    for (let run = 0; run < runs; run++) {
      for (const variant of variants) {
        process.stderr.write(`run ${run + 1}/${runs}: ${variant} ... `)
        const perRequest = await count(variant, directory)
        perRun.get(variant)?.push(perRequest)
        process.stderr.write(`${Math.round(perRequest).toLocaleString('en')} instructions per request\n`)
      }
    }
  } finally {
    killAll()
    rmSync(directory, { recursive: true, force: true })
    const redis = new Redis(redisUrl)
    await deleteByPrefix(redis, prefix)
    redis.disconnect()
  }
  const ceiling = median(perRun.get('ceiling') ?? [])
  console.log(`${requests} requests one at a time after ${warmup} of warm-up; medians of ${runs} runs; node ${process.version}\n`)
  console.log('| | variant | instructions per request | × (a) | runs |')
  console.log('| --- | --- | ---: | ---: | --- |')
  for (const variant of variants) {
    const counts = perRun.get(variant) ?? []
    const value = median(counts)
    console.log(`| ${VARIANTS[variant].letter} | ${VARIANTS[variant].what} | ${Math.round(value).toLocaleString('en')} | ${(value / ceiling).toFixed(3)} | ` +
      `${counts.map((c) => Math.round(c / 1000).toLocaleString('en') + 'k').join(', ')} |`)
  }
}

process.on('exit', killAll)
main().then(() => process.exit(0), (error: unknown) => {
  console.error(`bench:instructions failed: ${error instanceof Error ? error.message : String(error)}`)
  process.exit(1)
})
