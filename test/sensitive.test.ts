import { randomBytes } from 'node:crypto'
import Fastify from 'fastify'
import t from 'tap'
import cache from '../lib/index'
import { keyId } from '../lib/keys'
import { cachedApp, untilStored } from './helpers/app'
import { createClient, redisUrl, uniquePrefix } from './helpers/redis'

const newKey = (): string => randomBytes(32).toString('base64')
const SECRET = 'patient-record-4711: diagnosis confidential'

t.test('sensitive routes store AES-256-GCM ciphertext: Redis never holds the plaintext', async (t) => {
  const client = await createClient(t)
  const prefix = uniquePrefix('sensitive')
  const app = await cachedApp(t, 'redis', { prefix, encryption: { keys: [newKey()] } })
  let calls = 0
  app.get('/record', { config: { cache: { key: 'record', sensitive: true } } }, async () => { calls++; return { secret: SECRET } })
  await app.inject('/record')
  await untilStored(app)
  const raw = await client.getBuffer(`${prefix}:e:{${keyId('record')}}`) as Buffer
  t.ok(raw.length > SECRET.length)
  t.equal(raw.includes(Buffer.from('patient-record')), false, 'no plaintext in Redis')
  const hit = await app.inject('/record')
  t.equal(hit.headers['x-cache'], 'HIT')
  t.same(hit.json(), { secret: SECRET })
  t.equal(calls, 1)
})

t.test('a tampered, moved or planted entry is a miss, never an error; rotation keeps old entries readable', async (t) => {
  const client = await createClient(t)
  const prefix = uniquePrefix('tamper')
  const oldKey = newKey()
  const app = await cachedApp(t, 'redis', { prefix, encryption: { keys: [oldKey] } })
  let calls = 0
  app.get('/a', { config: { cache: { key: 'a', sensitive: true } } }, async () => ({ a: ++calls }))
  app.get('/b', { config: { cache: { key: 'b', sensitive: true } } }, async () => ({ b: ++calls }))
  await app.inject('/a')
  await app.inject('/b')
  await untilStored(app, 2)
  const keyA = `${prefix}:e:{${keyId('a')}}`
  const keyB = `${prefix}:e:{${keyId('b')}}`
  const original = await client.getBuffer(keyA) as Buffer

  const tampered = Buffer.from(original)
  tampered[tampered.length - 1] ^= 1
  await client.set(keyA, tampered, 'PX', 60_000)
  const afterTamper = await app.inject('/a')
  t.equal(afterTamper.statusCode, 200)
  t.equal(afterTamper.headers['x-cache'], 'MISS', 'a tampered ciphertext is a miss')

  await client.set(keyB, original, 'PX', 60_000)
  const moved = await app.inject('/b')
  t.equal(moved.headers['x-cache'], 'MISS', 'a ciphertext moved to another key is a miss (the key is bound as AAD)')
  t.notMatch(moved.body, /"a"/)

  // Plaintext planted at a sensitive key (a downgrade) is refused too.
  const planted = Buffer.concat([Buffer.from('@x\n'), Buffer.from([0x48, 1, 0, 0, 0, 2, 0x7b, 0x7d])])
  await client.set(keyB, planted, 'PX', 60_000)
  t.equal((await app.inject('/b')).headers['x-cache'], 'MISS')
  t.ok((await app.cacheService.stats()).errors >= 2, 'each is counted')

  // Rotation: a new key first; entries written under the old one still read.
  await app.inject('/a')
  await untilStored(app, 3)
  const rotated = Fastify()
  await rotated.register(cache, { redis: await redisUrl(), prefix, encryption: { keys: [newKey(), oldKey] } })
  rotated.get('/a', { config: { cache: { key: 'a', sensitive: true } } }, async () => ({ a: 'recomputed' }))
  t.teardown(() => rotated.close())
  t.equal((await rotated.inject('/a')).headers['x-cache'], 'HIT', 'the old key still decrypts')
})

for (const kind of ['memory', 'tiered'] as const) {
  t.test(`${kind}: a plaintext entry another route decoded is never served to a sensitive route sharing its key`, async (t) => {
    const app = await cachedApp(t, kind, { encryption: { keys: [newKey()] } })
    app.get('/public', { config: { cache: { key: 'shared' } } }, async () => ({ from: 'public' }))
    app.get('/private', { config: { cache: { key: 'shared', sensitive: true } } }, async () => ({ from: 'private' }))
    await app.inject('/public')
    await untilStored(app)
    // The hit decodes the plaintext entry, and the in-process store keeps handing back the same bytes.
    t.equal((await app.inject('/public')).headers['x-cache'], 'HIT')
    const refused = await app.inject('/private')
    t.equal(refused.headers['x-cache'], 'MISS', 'the sensitive route refuses the plaintext entry')
    t.same(refused.json(), { from: 'private' })
    t.ok((await app.cacheService.stats()).errors >= 1, 'the refusal is counted')
  })
}

t.test('a sensitive route without encryption keys is refused at start, and bad keys never show in the error', async (t) => {
  const app = Fastify()
  await app.register(cache)
  t.throws(() => app.get('/x', { config: { cache: { sensitive: true } } }, async () => 'x'), { code: 'FST_CACHE_INVALID_OPTION' })
  await app.close()
  const secretish = Buffer.alloc(24, 7).toString('base64')
  const bad = Fastify()
  const error = await bad.register(cache, { encryption: { keys: [secretish] } }).ready().then(() => undefined, (e: Error) => e)
  t.match(error, { code: 'FST_CACHE_INVALID_OPTION' })
  t.notMatch(String(error?.message), secretish)
})
