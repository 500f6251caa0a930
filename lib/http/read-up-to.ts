import { Readable } from 'node:stream'

/**
 * Reads a stream whole when it holds at most `limit` bytes; otherwise a stream of the same bytes (those read, then
 * the rest), to be sent as it is.
 */
export async function readUpTo (stream: Readable, limit: number): Promise<Buffer | Readable> {
  const iterator = stream[Symbol.asyncIterator]() as AsyncIterator<Buffer | string>
  const chunks: Buffer[] = []
  let size = 0
  for (let next = await iterator.next(); next.done !== true; next = await iterator.next()) {
    const chunk = typeof next.value === 'string' ? Buffer.from(next.value) : next.value
    chunks.push(chunk)
    size += chunk.length
    if (size > limit) {
      return Readable.from((async function * () {
        yield * chunks
        for (let rest = await iterator.next(); rest.done !== true; rest = await iterator.next()) yield rest.value
      })())
    }
  }
  return Buffer.concat(chunks, size)
}
