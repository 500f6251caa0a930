import t from 'tap'
import { randomBytes } from 'node:crypto'
import { ENCRYPTED_MARKER, ENCRYPTION_OVERHEAD, ENCRYPTION_VERSION, KeyRing } from '../lib/encryption'

const AAD = 'cache:e:GET:/users/42'

function newKey (): string {
  return randomBytes(32).toString('base64')
}

const A = newKey()
const B = newKey()
const C = newKey()

/** Flips one bit of a copy at `index`. */
function flip (bytes: Buffer, index: number): Buffer {
  const copy = Buffer.from(bytes)
  copy[index] ^= 0x01
  return copy
}

t.test('round trips empty, small, 1 MB and binary plaintexts', async (t) => {
  const ring = KeyRing.from({ keys: [A] })
  const binary = Buffer.alloc(256)
  for (let i = 0; i < 256; i++) binary[i] = i
  const cases: Array<[string, Buffer]> = [
    ['empty', Buffer.alloc(0)],
    ['small', Buffer.from('hello, world', 'utf8')],
    ['1 MB', randomBytes(1024 * 1024)],
    ['binary (every byte value)', binary],
    ['utf-8 text', Buffer.from('é ☃ 𝄞 {"a":1}', 'utf8')],
    // around the 64 KiB slices that encrypt works in
    ['64 KiB - 1', randomBytes(65535)],
    ['64 KiB', randomBytes(65536)],
    ['64 KiB + 1', randomBytes(65537)],
    ['3 x 64 KiB + 5', randomBytes(3 * 65536 + 5)],
    ['a view into a larger buffer', randomBytes(5000).subarray(17, 4017)]
  ]
  for (const [name, plaintext] of cases) {
    const bytes = ring.encrypt(plaintext, AAD)
    t.equal(bytes.length, plaintext.length + ENCRYPTION_OVERHEAD, `${name}: length is plaintext + overhead`)
    t.equal(bytes[0], ENCRYPTED_MARKER, `${name}: marker`)
    t.equal(bytes[1], ENCRYPTION_VERSION, `${name}: version`)
    t.ok(KeyRing.isEncrypted(bytes), `${name}: isEncrypted`)
    const decrypted = ring.decrypt(bytes, AAD)
    t.ok(decrypted !== undefined && decrypted.equals(plaintext), `${name}: decrypts to the plaintext`)
  }
})

t.test('the layout: marker, version, key id, iv, tag, ciphertext', async (t) => {
  const ring = KeyRing.from({ keys: [A, B] })
  const bytes = ring.encrypt(Buffer.from('abc'), AAD)
  t.equal(bytes.subarray(0, 2).toString('latin1'), 'X\u0001')
  t.equal(bytes.subarray(2, 10).toString('hex'), ring.keyIds[0], 'the newest key id')
  t.equal(bytes.length, 38 + 3)
  t.equal(ring.keyIds.length, 2)
  t.match(ring.keyIds[0], /^[0-9a-f]{16}$/)
  t.not(ring.keyIds[0], ring.keyIds[1])
  t.same(KeyRing.from({ keys: [B] }).keyIds, [ring.keyIds[1]], 'a key id depends on the key only')
})

t.test('two encryptions of the same plaintext differ (fresh IV)', async (t) => {
  const ring = KeyRing.from({ keys: [A] })
  const plaintext = Buffer.from('same plaintext, same key, same aad')
  const one = ring.encrypt(plaintext, AAD)
  const two = ring.encrypt(plaintext, AAD)
  t.notOk(one.equals(two))
  t.notOk(one.subarray(10, 22).equals(two.subarray(10, 22)), 'the IVs differ')
  t.notOk(one.subarray(38).equals(two.subarray(38)), 'the ciphertexts differ')
  const ivs = new Set<string>()
  for (let i = 0; i < 1000; i++) ivs.add(ring.encrypt(plaintext, AAD).subarray(10, 22).toString('hex'))
  t.equal(ivs.size, 1000, 'no IV repeats over 1000 encryptions')
  t.same(ring.decrypt(one, AAD), plaintext, 'an earlier result is intact after many later encryptions')
  t.same(ring.decrypt(two, AAD), plaintext)
})

t.test('rotation: the newest key encrypts, every key decrypts', async (t) => {
  const plaintext = Buffer.from('rotate me')
  const old = KeyRing.from({ keys: [A] }).encrypt(plaintext, AAD)
  const rotated = KeyRing.from({ keys: [B, A] })
  t.same(rotated.decrypt(old, AAD), plaintext, 'an older key still decrypts')
  const fresh = rotated.encrypt(plaintext, AAD)
  t.equal(fresh.subarray(2, 10).toString('hex'), rotated.keyIds[0], 'new entries use the newest key')
  t.same(KeyRing.from({ keys: [C, B] }).decrypt(fresh, AAD), plaintext)
  t.equal(KeyRing.from({ keys: [C, B] }).decrypt(old, AAD), undefined, 'a ring without the key cannot decrypt')
  t.equal(KeyRing.from({ keys: [B] }).decrypt(old, AAD), undefined)
  t.equal(KeyRing.from({ keys: [A] }).decrypt(fresh, AAD), undefined, 'an older ring cannot read the newest key')
})

t.test('tampering with any region gives undefined', async (t) => {
  const ring = KeyRing.from({ keys: [A, B] })
  const plaintext = Buffer.from('the quick brown fox jumps over the lazy dog')
  const bytes = ring.encrypt(plaintext, AAD)
  t.same(ring.decrypt(bytes, AAD), plaintext, 'intact bytes decrypt')

  const regions: Array<[string, number, number]> = [
    ['marker', 0, 1], ['version', 1, 2], ['key id', 2, 10], ['iv', 10, 22], ['tag', 22, 38], ['ciphertext', 38, bytes.length]
  ]
  for (const [name, start, end] of regions) {
    for (let i = start; i < end; i++) {
      t.equal(ring.decrypt(flip(bytes, i), AAD), undefined, `${name} byte ${i} flipped`)
    }
  }
  const otherVersion = Buffer.from(bytes)
  otherVersion[1] = 2
  t.equal(ring.decrypt(otherVersion, AAD), undefined, 'version 2')
  const otherMarker = Buffer.from(bytes)
  otherMarker[0] = 0x48 // an unencrypted entry's marker
  t.equal(ring.decrypt(otherMarker, AAD), undefined, 'the plain entry marker')

  const knownOtherId = Buffer.from(bytes)
  Buffer.from(ring.keyIds[1], 'hex').copy(knownOtherId, 2)
  t.equal(ring.decrypt(knownOtherId, AAD), undefined, 'the id of another key of the ring')

  for (const length of [0, 1, 2, 10, 22, 37, 38, bytes.length - 1]) {
    t.equal(ring.decrypt(bytes.subarray(0, length), AAD), undefined, `truncated to ${length} bytes`)
  }
  t.equal(ring.decrypt(Buffer.concat([bytes, Buffer.from([0])]), AAD), undefined, 'extended by one byte')
  t.equal(ring.decrypt(Buffer.concat([bytes, bytes]), AAD), undefined, 'doubled')

  const empty = ring.encrypt(Buffer.alloc(0), AAD)
  t.equal(ring.decrypt(Buffer.concat([empty, Buffer.from('x')]), AAD), undefined, 'an empty plaintext extended')
  t.equal(ring.decrypt(flip(empty, 30), AAD), undefined, 'an empty plaintext with a tampered tag')

  t.equal(ring.decrypt(Buffer.from('{"a":1}'), AAD), undefined, 'plain bytes')
  t.equal(ring.decrypt(randomBytes(100), AAD), undefined, 'random bytes')
})

t.test('the AAD is bound: a ciphertext moved to another key does not decrypt', async (t) => {
  const ring = KeyRing.from({ keys: [A] })
  const plaintext = Buffer.from('private data of user 42')
  const bytes = ring.encrypt(plaintext, 'cache:e:GET:/users/42')
  t.same(ring.decrypt(bytes, 'cache:e:GET:/users/42'), plaintext)
  t.equal(ring.decrypt(bytes, 'cache:e:GET:/users/43'), undefined)
  t.equal(ring.decrypt(bytes, ''), undefined)
  t.equal(ring.decrypt(bytes, 'cache:e:GET:/users/42 '), undefined)
  t.equal(ring.decrypt(bytes, 'other:e:GET:/users/42'), undefined)
  const empty = ring.encrypt(plaintext, '')
  t.same(ring.decrypt(empty, ''), plaintext, 'an empty AAD is allowed')
  t.equal(ring.decrypt(empty, 'x'), undefined)
  const unicode = ring.encrypt(plaintext, 'cache:e:é☃')
  t.same(ring.decrypt(unicode, 'cache:e:é☃'), plaintext)
  t.equal(ring.decrypt(unicode, 'cache:e:e☃'), undefined)
})

t.test('the ciphertext holds no plaintext', async (t) => {
  const ring = KeyRing.from({ keys: [A] })
  const marker = Buffer.from('SECRET-MARKER-20-BYT', 'utf8')
  t.equal(marker.length, 20)
  const plaintext = Buffer.concat([randomBytes(1000), marker, Buffer.alloc(5000, 0x20), marker, Buffer.from('tail')])
  const bytes = ring.encrypt(plaintext, AAD)
  t.equal(bytes.indexOf(marker), -1, 'the 20-byte marker is not in the output')
  t.equal(bytes.indexOf(Buffer.from('SECRET')), -1, 'nor a prefix of it')
  t.equal(bytes.indexOf(Buffer.alloc(16, 0x20)), -1, 'nor a run of the repeated plaintext bytes')
  t.equal(bytes.indexOf(Buffer.from(AAD)), -1, 'nor the AAD')
  t.same(ring.decrypt(bytes, AAD), plaintext)
})

t.test('isEncrypted looks at the marker', async (t) => {
  t.equal(KeyRing.isEncrypted(Buffer.alloc(0)), false)
  t.equal(KeyRing.isEncrypted(Buffer.from('{"a":1}')), false)
  t.equal(KeyRing.isEncrypted(Buffer.from([0x48, 1, 2, 3])), false, 'a plain entry')
  t.equal(KeyRing.isEncrypted(Buffer.from([0x4a])), false, 'a plain value')
  t.equal(KeyRing.isEncrypted(Buffer.from('X')), true, 'a truncated encrypted entry still claims to be one')
  t.equal(KeyRing.isEncrypted(KeyRing.from({ keys: [A] }).encrypt(Buffer.from('a'), AAD)), true)
})

t.test('key validation', async (t) => {
  const code = 'FST_CACHE_INVALID_OPTION'
  function rejects (keys: unknown, message: string | RegExp, secrets: string[], name: string): void {
    try {
      KeyRing.from({ keys } as unknown as { keys: string[] })
      t.fail(`${name}: expected an error`)
    } catch (error) {
      const { code: got, message: text } = error as { code: string, message: string }
      t.equal(got, code, `${name}: code`)
      t.match(text, message, `${name}: message`)
      for (const secret of secrets) {
        t.notOk(text.includes(secret), `${name}: the message does not print the key`)
        t.notOk(text.includes(secret.slice(0, 8)), `${name}: nor a part of it`)
      }
    }
  }

  const notBase64 = 'this is *not* base64 but long enough!!!!!!!'
  rejects([notBase64], 'invalid cache option: option "encryption.keys.0": expected base64 of 32 bytes, got a string that is not base64', [notBase64], 'not base64')
  const withNewline = A + '\n'
  rejects([withNewline], /"encryption\.keys\.0": .*not base64/, [A], 'a trailing newline')
  const url = randomBytes(32).toString('base64url')
  if (url.includes('-') || url.includes('_')) rejects([url], /not base64/, [url], 'base64url')
  const short = randomBytes(16).toString('base64')
  rejects([A, short], 'option "encryption.keys.1": expected base64 of 32 bytes, got 16 bytes', [A, short], '16 bytes')
  const long = randomBytes(33).toString('base64')
  rejects([long], 'option "encryption.keys.0": expected base64 of 32 bytes, got 33 bytes', [long], '33 bytes')
  const mid = randomBytes(24).toString('base64')
  rejects([mid], 'option "encryption.keys.0": expected base64 of 32 bytes, got 24 bytes', [mid], '24 bytes')
  rejects([A, B, A], 'option "encryption.keys.2": expected a key that is not already in the ring, got a duplicate of encryption.keys.0', [A, B], 'duplicates')
  rejects([A, A.replace(/=+$/, '')], /"encryption\.keys\.1": .*duplicate of encryption\.keys\.0/, [A], 'a duplicate without padding')
  rejects([], 'option "encryption.keys": expected at least one key, got an empty array', [], 'empty array')
  rejects(undefined, 'option "encryption.keys": expected an array of base64 keys, got undefined', [], 'missing')
  rejects(A, 'option "encryption.keys": expected an array of base64 keys, got a string', [A], 'a string instead of an array')
  rejects([A, 42], 'option "encryption.keys.1": expected base64 of 32 bytes, got a number', [A], 'a number')
  rejects([''], 'option "encryption.keys.0": expected base64 of 32 bytes, got an empty string', [], 'an empty string')
  rejects([Buffer.from(A, 'base64')], 'option "encryption.keys.0": expected base64 of 32 bytes, got an object', [A], 'a Buffer')

  t.throws(() => KeyRing.from(null as unknown as { keys: string[] }), { code, message: /option "encryption": expected an object \{ keys \}, got null/ })
  t.throws(() => KeyRing.from({ keys: [A], key: B } as unknown as { keys: string[] }), { code, message: /option "encryption.key": not a known option, got a string$/ })

  const unpadded = A.replace(/=+$/, '')
  t.ok(KeyRing.from({ keys: [unpadded] }), 'base64 without padding is accepted')
  t.same(KeyRing.from({ keys: [unpadded] }).keyIds, KeyRing.from({ keys: [A] }).keyIds, 'and is the same key')
})

t.test('the ring does not expose key material', async (t) => {
  const ring = KeyRing.from({ keys: [A, B] })
  const { inspect } = await import('node:util')
  const shown = inspect(ring, { depth: 10, showHidden: true }) + JSON.stringify(ring) + String(Object.keys(ring))
  for (const key of [A, B]) {
    t.notOk(shown.includes(key), 'not the base64 key')
    t.notOk(shown.includes(Buffer.from(key, 'base64').toString('hex')), 'not the hex key')
  }
})
