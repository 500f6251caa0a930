import { createCipheriv, createDecipheriv, createHash, createSecretKey, randomFillSync, type KeyObject } from 'node:crypto'
import { strictEqual } from 'node:assert'
import { FST_CACHE_INVALID_OPTION } from './errors'

/**
 * Encryption at rest for cache entries: AES-256-GCM with a key ring (the newest key encrypts, every key decrypts).
 *
 * Wire format of an encrypted entry (38 bytes of overhead, then the ciphertext, as long as the plaintext):
 *
 * | offset | bytes | content                                                 |
 * |--------|-------|---------------------------------------------------------|
 * | 0      | 1     | marker 'X' (0x58)                                       |
 * | 1      | 1     | format version, 1                                       |
 * | 2      | 8     | key id: first 8 bytes of SHA-256(label, key)            |
 * | 10     | 12    | IV, random for every encryption                         |
 * | 22     | 16    | GCM auth tag                                            |
 * | 38     | n     | ciphertext                                              |
 *
 * The caller passes the full Redis key of the entry as AAD, so a ciphertext copied under another key does not decrypt.
 */
export interface EncryptionOptions {
  /** Base64-encoded 32-byte keys, newest first. The first one encrypts; all of them decrypt (for key rotation). */
  keys: string[]
}

/** First byte of every encrypted entry ('X'); distinct from the entry ('H') and value ('J', 'S') markers. */
export const ENCRYPTED_MARKER = 0x58
/** Format version written in byte 1. */
export const ENCRYPTION_VERSION = 1
/** Bytes an encrypted entry adds to its plaintext: marker, version, key id, IV and tag. */
export const ENCRYPTION_OVERHEAD = 38

const ALGORITHM = 'aes-256-gcm'
const KEY_BYTES = 32
const ID_BYTES = 8
const IV_BYTES = 12
const TAG_BYTES = 16
const ID_AT = 2
const IV_AT = ID_AT + ID_BYTES // 10
const TAG_AT = IV_AT + IV_BYTES // 22
const DATA_AT = TAG_AT + TAG_BYTES // 38
/** Plaintext is encrypted in slices of this size, each copied straight into the result. */
const CHUNK_BYTES = 64 * 1024
/** Domain separation: the key id is a hash of the key that is used for nothing else. */
const ID_LABEL = 'fastify-response-cache:encryption-key-id:v1\0'

/**
 * IVs come from a pool of CSPRNG bytes refilled 256 IVs at a time: one randomFillSync call per IV costs more than
 * encrypting a small entry. Every 12-byte slice is handed out once; IVs are public, so the pool holds no secret.
 */
const IV_POOL = Buffer.allocUnsafeSlow(IV_BYTES * 256)
let ivPoolAt = IV_POOL.length

function writeIv (target: Buffer, at: number): void {
  if (ivPoolAt === IV_POOL.length) {
    randomFillSync(IV_POOL)
    ivPoolAt = 0
  }
  IV_POOL.copy(target, at, ivPoolAt, ivPoolAt + IV_BYTES)
  ivPoolAt += IV_BYTES
}

interface RingKey {
  readonly id: Buffer
  readonly key: KeyObject
}

export class KeyRing {
  readonly #keys: readonly RingKey[]
  readonly #newest: RingKey

  private constructor (keys: RingKey[]) {
    this.#keys = keys
    this.#newest = keys[0]
  }

  /**
   * Validates the options and builds the ring. Throws FST_CACHE_INVALID_OPTION naming the wrong option
   * (e.g. `option "encryption.keys.1": expected base64 of 32 bytes, got 24 bytes`); never prints key material.
   */
  static from (options: EncryptionOptions): KeyRing {
    if (typeof options !== 'object' || options === null || Array.isArray(options)) {
      invalid('encryption', 'expected an object { keys }', kind(options))
    }
    for (const name of Object.keys(options)) {
      if (name !== 'keys') invalid(`encryption.${name}`, 'not a known option', kind((options as unknown as Record<string, unknown>)[name]))
    }
    const list: unknown = options.keys
    if (!Array.isArray(list)) invalid('encryption.keys', 'expected an array of base64 keys', kind(list))
    if (list.length === 0) invalid('encryption.keys', 'expected at least one key', 'an empty array')

    const keys: RingKey[] = []
    const seen = new Map<string, number>()
    list.forEach((text: unknown, index: number) => {
      const name = `encryption.keys.${index}`
      const bytes = decodeKey(name, text)
      const id = createHash('sha256').update(ID_LABEL).update(bytes).digest().subarray(0, ID_BYTES)
      const hexId = id.toString('hex')
      const first = seen.get(hexId)
      if (first !== undefined) invalid(name, 'expected a key that is not already in the ring', `a duplicate of encryption.keys.${first}`)
      seen.set(hexId, index)
      keys.push({ id, key: createSecretKey(bytes) })
      bytes.fill(0) // createSecretKey copied it
    })
    return new KeyRing(keys)
  }

  /** True when `bytes` has the encrypted format's marker: decrypt them (the result may still be undefined). */
  static isEncrypted (bytes: Buffer): boolean {
    return bytes.length > 0 && bytes[0] === ENCRYPTED_MARKER
  }

  /** Ids of the keys, newest first, as hex: safe to log (they are hashes, not key material). */
  get keyIds (): string[] {
    return this.#keys.map((entry) => entry.id.toString('hex'))
  }

  /** Encrypts with the newest key and a fresh random IV, binding `aad` (the entry's full Redis key). */
  encrypt (plaintext: Buffer, aad: string): Buffer {
    const { id, key } = this.#newest
    const length = plaintext.length
    // One allocation for the whole result: the cipher's output is copied into it chunk by chunk, so a large entry
    // never needs a second full-size buffer (update(all) + concat costs several times more on 1 MB entries).
    const out = Buffer.allocUnsafe(DATA_AT + length)
    out[0] = ENCRYPTED_MARKER
    out[1] = ENCRYPTION_VERSION
    id.copy(out, ID_AT)
    writeIv(out, IV_AT)
    const cipher = createCipheriv(ALGORITHM, key, out.subarray(IV_AT, TAG_AT), { authTagLength: TAG_BYTES })
    cipher.setAAD(Buffer.from(aad, 'utf8'))
    let at = DATA_AT
    for (let from = 0; from < length; from += CHUNK_BYTES) {
      at += cipher.update(plaintext.subarray(from, Math.min(length, from + CHUNK_BYTES))).copy(out, at)
    }
    at += cipher.final().copy(out, at) // GCM is a stream mode: update has written every byte, final writes none
    strictEqual(at, out.length, 'AES-GCM wrote as many bytes as it read')
    cipher.getAuthTag().copy(out, TAG_AT)
    return out
  }

  /**
   * Decrypts bytes that `encrypt` wrote with any key of the ring and the same `aad`. Returns undefined, never throws,
   * for a wrong marker or version, an unknown key id, truncated or extended input, or anything tampered with.
   */
  decrypt (bytes: Buffer, aad: string): Buffer | undefined {
    if (bytes.length < DATA_AT || bytes[0] !== ENCRYPTED_MARKER || bytes[1] !== ENCRYPTION_VERSION) return undefined
    const key = this.#find(bytes)
    if (key === undefined) return undefined
    try {
      const decipher = createDecipheriv(ALGORITHM, key, bytes.subarray(IV_AT, TAG_AT), { authTagLength: TAG_BYTES })
      decipher.setAuthTag(bytes.subarray(TAG_AT, DATA_AT))
      decipher.setAAD(Buffer.from(aad, 'utf8'))
      const data = decipher.update(bytes.subarray(DATA_AT))
      const rest = decipher.final() // throws when the tag does not authenticate
      return rest.length === 0 ? data : Buffer.concat([data, rest])
    } catch {
      return undefined
    }
  }

  #find (bytes: Buffer): KeyObject | undefined {
    for (const entry of this.#keys) {
      if (bytes.compare(entry.id, 0, ID_BYTES, ID_AT, IV_AT) === 0) return entry.key
    }
    return undefined
  }
}

/** Decodes strict base64 (standard alphabet, padding optional) of exactly 32 bytes. */
function decodeKey (name: string, text: unknown): Buffer {
  if (typeof text !== 'string') invalid(name, 'expected base64 of 32 bytes', kind(text))
  if (text.length === 0) invalid(name, 'expected base64 of 32 bytes', 'an empty string')
  const bytes = Buffer.from(text, 'base64')
  // Buffer.from skips characters outside the alphabet: a key is base64 only when it re-encodes to itself.
  const canonical = bytes.toString('base64')
  if (text !== canonical && text !== canonical.replace(/=+$/, '')) {
    bytes.fill(0)
    invalid(name, 'expected base64 of 32 bytes', 'a string that is not base64')
  }
  if (bytes.length !== KEY_BYTES) {
    const length = bytes.length
    bytes.fill(0)
    invalid(name, 'expected base64 of 32 bytes', `${length} bytes`)
  }
  return bytes
}

/** Describes a wrong value by its kind only, so that no secret reaches a message or a log. */
function kind (value: unknown): string {
  if (value === null) return 'null'
  if (Array.isArray(value)) return 'an array'
  if (value === undefined) return 'undefined'
  const type = typeof value
  return type === 'object' ? 'an object' : `a ${type}`
}

function invalid (name: string, expected: string, got: string): never {
  throw new FST_CACHE_INVALID_OPTION(`option "${name}": ${expected}, got ${got}`)
}
