import { createHash } from 'node:crypto'
import { type Cluster, Command, type Redis } from 'ioredis'
import { INVALIDATION_WINDOW_MS } from './store'

// The Redis store's Lua scripts. The key layout is described in redis-layout.ts. Each script touches only the keys
// it is given in KEYS, and those share one hash slot (an entry's keys, or a tag's), so every script runs unchanged
// on a single node and on a Redis Cluster. What spans slots (an entry, the pattern epoch and its tags' tokens) is
// done by the store in several steps on a Cluster, made safe by the tokens (see redis.ts); on a single node the
// entry scripts are handed those keys as well, and do it all in one call.

/** How much of an entry's head holds its version (`@<version>`); a version is far shorter. */
const VERSION_HEAD = 63
/**
 * A version as the scripts read it: token characters, ended by a space or the newline within VERSION_HEAD; anything
 * else (garbage at the key) has none, as for the store's parseHeaderLine, so that a write may replace it.
 */
const VERSION_PATTERN = '\'^@([%w_%-]+)[ \\n]\''

// KEYS: entry, tombstone, lease; on a single node also the pattern epoch and the tags' tokens. ARGV (optional): a
// lease token and its ttl ms, to take the lease if there is no entry and the lease is free. Returns: the stored
// bytes or false, 1 when another type sits at the entry's key, the tombstone, whether a lease is held, the entry's
// PTTL, 1 when this read took the lease, then the value of each key after the third (false when absent).
const READ_ENTRY = `
local value = redis.pcall('GET', KEYS[1])
local wrongType = 0
if type(value) == 'table' then value = false wrongType = 1 end
local ttl = -2
if value then ttl = redis.call('PTTL', KEYS[1]) end
local leased = redis.call('EXISTS', KEYS[3])
local taken = 0
if not value and leased == 0 and ARGV[1] then
  redis.call('SET', KEYS[3], ARGV[1], 'PX', ARGV[2])
  leased = 1
  taken = 1
end
local reply = { value, wrongType, redis.call('GET', KEYS[2]) or '', leased, ttl, taken }
for i = 4, #KEYS do reply[i + 3] = redis.call('GET', KEYS[i]) end
return reply`

// KEYS: tag token. ARGV: a new token, its ttl ms. The tag's current token, created when there is none, so that a
// read always captures a definite token that any later invalidation changes.
const TOKEN = `
local token = redis.call('GET', KEYS[1])
if token then return token end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return ARGV[1]`

// KEYS: entry, tombstone, lease; on a single node also the pattern epoch, then each tag's token and set. ARGV: the
// mode, the stamp's tombstone and entry version, ttl ms, header, value, the token of a lease to give back ('' for
// none, given back whatever the outcome); with the single node's keys also the stamp's epoch, the ms the tags'
// records must live at least, then per tag: in mode '1' (stamped) its token as the read saw it; in mode '2' (not
// stamped) a token to create when it has none, then each tag's name, for the header to name its current token.
// Mode '0' writes as given.
// A stamped write is refused when the key was deleted since the read, or the entry rewritten (a late writer whose
// lease expired must not overwrite a newer value), or, given their keys, when a pattern or a tag was invalidated. On
// a Cluster the tags and the epoch live in other slots: the store checks them after the write (see redis.ts).
const WRITE_ENTRY = `
if ARGV[7] ~= '' and redis.call('GET', KEYS[3]) == ARGV[7] then redis.call('DEL', KEYS[3]) end
local tags = (#KEYS - 4) / 2
local header = ARGV[5]
if ARGV[1] == '2' then
  for i = 1, tags do
    local token = redis.call('GET', KEYS[3 + 2 * i])
    if not token then
      token = ARGV[9 + i]
      redis.call('SET', KEYS[3 + 2 * i], token, 'PX', ARGV[9])
    end
    header = header .. ' ' .. ARGV[9 + tags + i] .. '=' .. token
  end
elseif ARGV[1] == '1' then
  if (redis.call('GET', KEYS[2]) or '') ~= ARGV[2] then return 0 end
  local head = redis.pcall('GETRANGE', KEYS[1], 0, ${VERSION_HEAD})
  if type(head) ~= 'string' then head = '' end
  if (string.match(head, ${VERSION_PATTERN}) or '') ~= ARGV[3] then return 0 end
  if KEYS[4] and (redis.call('GET', KEYS[4]) or '') ~= ARGV[8] then return 0 end
  for i = 1, tags do
    if redis.call('GET', KEYS[3 + 2 * i]) ~= ARGV[9 + i] then return 0 end
  end
end
redis.call('SET', KEYS[1], header .. '\\n' .. ARGV[6], 'PX', ARGV[4])
local keep = tonumber(ARGV[9])
for i = 1, tags do
  redis.call('SADD', KEYS[4 + 2 * i], KEYS[1])
  for _, key in ipairs({ KEYS[3 + 2 * i], KEYS[4 + 2 * i] }) do
    if redis.call('PTTL', key) < keep then redis.call('PEXPIRE', key, keep) end
  end
end
return 1`

// KEYS: tag token, tag set. ARGV: ms the tag's records must live at least, the entry key to add to the set (or ''),
// a token to create when there is none (or '': a stamped write, whose tag must still have the token it saw).
// Returns the tag's current token, or '' when it has none. Token records and sets outlive their entries by a little.
const TAG_ENTRY = `
local keep = tonumber(ARGV[1])
local token = redis.call('GET', KEYS[1])
if not token and ARGV[3] ~= '' then
  token = ARGV[3]
  redis.call('SET', KEYS[1], token, 'PX', keep)
end
if ARGV[2] ~= '' then redis.call('SADD', KEYS[2], ARGV[2]) end
for _, key in ipairs(KEYS) do
  if redis.call('PTTL', key) < keep then redis.call('PEXPIRE', key, keep) end
end
return token or ''`

// KEYS: entry. ARGV: version. Removes the entry only if it is still the one with that version: a write whose
// invalidation check failed after it landed takes back its own entry, never a newer one.
const DELETE_VERSION = `
local head = redis.pcall('GETRANGE', KEYS[1], 0, ${VERSION_HEAD})
if type(head) == 'string' and string.match(head, ${VERSION_PATTERN}) == ARGV[1] then return redis.call('UNLINK', KEYS[1]) end
return 0`

// KEYS: tag token. ARGV: 'hard' or 'soft', a new token part. Changing the token is the invalidation itself, O(1) per
// tag; removing the entries afterwards only reclaims memory.
const INVALIDATE_TAG = `
local hard, soft = string.match(redis.call('GET', KEYS[1]) or '.', '^([^.]*)%.(.*)$')
if ARGV[1] == 'hard' then hard = ARGV[2] else soft = ARGV[2] end
if redis.call('PTTL', KEYS[1]) > ${INVALIDATION_WINDOW_MS} then
  redis.call('SET', KEYS[1], hard .. '.' .. soft, 'KEEPTTL')
else
  redis.call('SET', KEYS[1], hard .. '.' .. soft, 'PX', ${INVALIDATION_WINDOW_MS})
end
return 1`

// KEYS: entry. ARGV: ttl ms. Returns the entry's header line (its tags' records are then kept alive as long as it),
// or false when there is no entry.
const EXPIRE_ENTRY = `
if redis.call('PEXPIRE', KEYS[1], ARGV[1]) == 0 then return false end
local value = redis.call('GETRANGE', KEYS[1], 0, 65535)
local newline = string.find(value, '\\n', 1, true)
if not newline then return '' end
return string.sub(value, 1, newline - 1)`

// KEYS: lease. ARGV: token. Deletes the lease only if this holder still has it.
const RELEASE = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`

export type RedisClient = Redis | Cluster
export type Arg = string | number | Buffer

/** A Lua script run by its SHA, sent whole only when Redis does not know it yet (after a restart, say). */
export class Script {
  readonly sha: string
  constructor (readonly source: string) {
    this.sha = createHash('sha1').update(source).digest('hex')
  }

  /** `direct`: around auto-pipelining (see sendDirect). */
  async run (client: RedisClient, keys: readonly string[], args: readonly Arg[], direct = false): Promise<unknown> {
    const send = direct ? sendDirect : sendCommand
    try {
      return await send(client, 'evalsha', [this.sha, keys.length, ...keys, ...args])
    } catch (error) {
      if (!isNoScript(error)) throw error
      return await send(client, 'eval', [this.source, keys.length, ...keys, ...args])
    }
  }
}

type CommandMethod = (...args: Arg[]) => Promise<unknown>

/**
 * Sends one command outside a pipeline, its replies as Buffers, through the command's own method (`getBuffer`...):
 * with auto-pipelining on, ioredis drops the command's name from `call` and `callBuffer` (it queues the arguments
 * alone). Pipelines are not auto-pipelined, and keep `callBuffer`.
 */
export async function sendCommand (client: RedisClient, command: string, args: readonly Arg[]): Promise<unknown> {
  const method: unknown = (client as unknown as Record<string, unknown>)[command + 'Buffer']
  if (typeof method !== 'function') throw new Error(`no ioredis method for the command ${command}`)
  return await (method as CommandMethod).apply(client, [...args])
}

/**
 * Sends one command to the connection at once, replies as Buffers, around auto-pipelining: auto-pipelining keeps one
 * batch in flight per node and queues the next commands until it returns, so a write that nothing waits for would
 * make the reads queued behind it wait a round trip more. The commands of one turn of the event loop still leave in
 * one socket write (see corkForThisTurn).
 */
export function sendDirect (client: RedisClient, command: string, args: readonly Arg[]): Promise<unknown> {
  try {
    const sent = new Command(command, [...args], { replyEncoding: null })
    if (!client.isCluster) corkForThisTurn(client as Redis)
    client.sendCommand(sent)
    // Its own promise, not one more around it: a hit over many keys is a command of its own, and each promise shows.
    return sent.promise
  } catch (error) {
    return Promise.reject(error)
  }
}

const corked = new WeakSet<Redis>()

/**
 * Holds the connection's writes until the end of this turn of the event loop (setImmediate runs after the turn's I/O
 * callbacks), then sends them in one `writev`. Under load a turn reads many requests, whose commands would otherwise
 * cost a write system call each: that was a third of a Redis hit's time on 1,000 keys. A quiet app's command waits
 * for nothing but the rest of its own turn. Only a connection that is ready: ioredis queues the others' commands.
 */
function corkForThisTurn (client: Redis): void {
  if (corked.has(client) || client.status !== 'ready') return
  const stream = client.stream
  stream.cork()
  corked.add(client)
  setImmediate(() => {
    corked.delete(client)
    stream.uncork()
  })
}

export function isNoScript (error: unknown): boolean {
  return error instanceof Error && error.message.startsWith('NOSCRIPT')
}

export const readEntry = new Script(READ_ENTRY)
export const token = new Script(TOKEN)
export const writeEntry = new Script(WRITE_ENTRY)
export const tagEntry = new Script(TAG_ENTRY)
export const deleteVersion = new Script(DELETE_VERSION)
export const invalidateTag = new Script(INVALIDATE_TAG)
export const expireEntry = new Script(EXPIRE_ENTRY)
export const release = new Script(RELEASE)
