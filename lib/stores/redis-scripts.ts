import { createHash } from 'node:crypto'
import type { Redis } from 'ioredis'
import { INVALIDATION_WINDOW_MS } from './store'

// The Redis store's Lua scripts: each runs atomically, in one round trip.

// The key layout they work on is described in redis.ts.

// KEYS: entry, tombstone, epoch, lease. ARGV: tag token prefix, a new token part, then the tags whose tokens to capture.
// Returns: value or false, validity (0 valid, 1 stale, 2 invalid, 3 corrupt), tombstone, epoch, the entry's version (even when
// invalid: a conditional write compares it with what is there), whether a lease is held, the entry's PTTL, its tags
// (space-separated; only valid when all were checked), captured tokens...
const READ = `
local value = redis.pcall('GET', KEYS[1])
local state = 0
local version = ''
local tags = {}
-- Something that is not an entry (another type, or bytes without a header line) reads as corrupt (3), so that the
-- miss's write replaces it.
if type(value) == 'table' then value = false state = 3 end
if value then
  local newline = string.find(value, '\\n', 1, true)
  if not newline then state = 3 else
    local header = string.sub(value, 1, newline - 1)
    version = string.match(header, '^@([^ ]+)') or ''
    for tag, token in string.gmatch(header, '([^ =]+)=([^ ]+)') do
      tags[#tags + 1] = tag
      local current = redis.call('GET', ARGV[1] .. tag)
      if not current then state = 2 break end
      local hard, soft = string.match(token, '^([^.]*)%.(.*)$')
      local currentHard, currentSoft = string.match(current, '^([^.]*)%.(.*)$')
      if hard ~= currentHard then state = 2 break end
      if soft ~= currentSoft then state = 1 end
    end
  end
end
local result = { value or false, state, redis.call('GET', KEYS[2]) or '', redis.call('GET', KEYS[3]) or '', version, redis.call('EXISTS', KEYS[4]),
  value and redis.call('PTTL', KEYS[1]) or -2, table.concat(tags, ' ') }
for i = 3, #ARGV do
  local key = ARGV[1] .. ARGV[i]
  local token = redis.call('GET', key)
  if not token then
    token = ARGV[2] .. '.' .. ARGV[2]
    redis.call('SET', key, token, 'PX', ${INVALIDATION_WINDOW_MS})
  end
  result[#result + 1] = token
end
return result`

// KEYS: entry, tombstone, epoch. ARGV: tag token prefix, tag set prefix, value, ttl ms, '1' when stamped,
// tombstone, epoch and entry version of the stamp, a new token part, the new version, then pairs of tag and the token
// the stamp saw. A stamped write is refused when the entry was rewritten since the read (a late writer whose lease
// expired must not overwrite a newer value) or anything it depends on was invalidated.
const WRITE = `
local stamped = ARGV[5] == '1'
if stamped then
  if (redis.call('GET', KEYS[2]) or '') ~= ARGV[6] or (redis.call('GET', KEYS[3]) or '') ~= ARGV[7] then return 0 end
  local head = redis.pcall('GETRANGE', KEYS[1], 0, 63)
  if type(head) ~= 'string' then head = '' end
  if (string.match(head, '^@([^ \\n]+)') or '') ~= ARGV[8] then return 0 end
end
local ttl = tonumber(ARGV[4])
local keep = ttl + 1000
local header = { '@' .. ARGV[10] }
for i = 11, #ARGV, 2 do
  local tag = ARGV[i]
  local tokenKey = ARGV[1] .. tag
  local current = redis.call('GET', tokenKey)
  if stamped and current ~= ARGV[i + 1] then return 0 end
  if not current then
    current = ARGV[9] .. '.' .. ARGV[9]
    redis.call('SET', tokenKey, current, 'PX', keep)
  elseif redis.call('PTTL', tokenKey) < keep then
    redis.call('PEXPIRE', tokenKey, keep)
  end
  local setKey = ARGV[2] .. tag
  redis.call('SADD', setKey, KEYS[1])
  if redis.call('PTTL', setKey) < keep then redis.call('PEXPIRE', setKey, keep) end
  header[#header + 1] = tag .. '=' .. current
end
redis.call('SET', KEYS[1], table.concat(header, ' ') .. '\\n' .. ARGV[3], 'PX', ttl)
return 1`

// ARGV: tag token prefix, 'hard' or 'soft', a new token part, then the tags. Changing the token is the invalidation
// itself, O(1) per tag; removing the entries afterwards only reclaims memory.
const INVALIDATE_TAGS = `
for i = 4, #ARGV do
  local key = ARGV[1] .. ARGV[i]
  local hard, soft = string.match(redis.call('GET', key) or '.', '^([^.]*)%.(.*)$')
  if ARGV[2] == 'hard' then hard = ARGV[3] else soft = ARGV[3] end
  if redis.call('PTTL', key) > ${INVALIDATION_WINDOW_MS} then
    redis.call('SET', key, hard .. '.' .. soft, 'KEEPTTL')
  else
    redis.call('SET', key, hard .. '.' .. soft, 'PX', ${INVALIDATION_WINDOW_MS})
  end
end
return 1`

// KEYS: entry. ARGV: tag token prefix, tag set prefix, ttl ms. Keeps the entry's tag records alive as long as it.
const EXPIRE = `
local ttl = tonumber(ARGV[3])
if redis.call('PEXPIRE', KEYS[1], ttl) == 0 then return 0 end
local value = redis.call('GETRANGE', KEYS[1], 0, 65535)
local newline = string.find(value, '\\n', 1, true)
if newline then
  for tag in string.gmatch(string.sub(value, 1, newline - 1), '([^ =]+)=[^ ]+') do
    for _, key in ipairs({ ARGV[1] .. tag, ARGV[2] .. tag }) do
      if redis.call('PTTL', key) < ttl + 1000 then redis.call('PEXPIRE', key, ttl + 1000) end
    end
  end
end
return 1`

// KEYS: lease. ARGV: token. Deletes the lease only if this holder still has it.
const RELEASE = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`

/** A Lua script run by its SHA, sent whole only when Redis does not know it yet (after a restart, say). */
export class Script {
  private readonly sha: string
  constructor (private readonly source: string) {
    this.sha = createHash('sha1').update(source).digest('hex')
  }

  async run (client: Redis, keys: string[], args: Array<string | number | Buffer>): Promise<unknown> {
    try {
      return await client.callBuffer('EVALSHA', this.sha, keys.length, ...keys, ...args)
    } catch (error) {
      if (!(error instanceof Error) || !error.message.startsWith('NOSCRIPT')) throw error
      return await client.callBuffer('EVAL', this.source, keys.length, ...keys, ...args)
    }
  }
}

export const read = new Script(READ)
export const write = new Script(WRITE)
export const invalidateTags = new Script(INVALIDATE_TAGS)
export const expire = new Script(EXPIRE)
export const release = new Script(RELEASE)
