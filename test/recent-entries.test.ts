import t from 'tap'
import { type HttpEntry, encodeEntry } from '../lib/entry'
import { RecentEntries } from '../lib/http/recent-entries'

function bytesOf (body: string, etag = '"e"'): Buffer {
  const entry: HttpEntry = { status: 200, headers: { 'content-type': 'text/plain' }, body: Buffer.from(body), storedAt: 1, ttl: 60, etag }
  return encodeEntry(entry)
}

t.test('the same bytes in another Buffer give the entry decoded before; other bytes are decoded afresh', async (t) => {
  const recent = new RecentEntries()
  const first = recent.decode('k', bytesOf('one'))
  t.equal(recent.decode('k', bytesOf('one')), first, 'reused: a hit brings a new Buffer with the same bytes')
  const rewritten = recent.decode('k', bytesOf('two'))
  t.not(rewritten, first)
  t.equal(rewritten.body.toString(), 'two', 'a rewritten entry is decoded from its new bytes')
  t.equal(recent.decode('k', bytesOf('two', '"f"')).etag, '"f"', 'one byte of metadata differs: decoded afresh')
  t.equal(recent.decode('other', bytesOf('two')).body.toString(), 'two', 'by id')
})

t.test('what it keeps is a copy: the Buffer a reply came in may be reused or changed afterwards', async (t) => {
  const recent = new RecentEntries()
  const reply = bytesOf('original')
  const entry = recent.decode('k', reply)
  reply.fill(0)
  t.equal(entry.body.toString(), 'original')
  t.equal(recent.decode('k', bytesOf('original')), entry, 'still matched against the bytes it was decoded from')
})

t.test('large entries are not kept, and the memo empties itself when full', async (t) => {
  const recent = new RecentEntries()
  const large = bytesOf('x'.repeat(70 * 1024))
  t.not(recent.decode('large', large), recent.decode('large', Buffer.from(large)), 'over 64 KiB: decoded each time')
  const first = recent.decode('k0', bytesOf('v'))
  for (let i = 1; i < 10_000; i++) recent.decode(`k${i}`, bytesOf('v'))
  t.equal(recent.decode('k0', bytesOf('v')), first, 'kept while under 10,000 entries')
  recent.decode('k10000', bytesOf('v'))
  t.not(recent.decode('k0', bytesOf('v')), first, 'emptied at 10,000')
})

t.test('the memo empties itself at 16 MiB of entries, however few', async (t) => {
  const recent = new RecentEntries()
  const big = bytesOf('x'.repeat(60 * 1024))
  const first = recent.decode('b0', big)
  let count = 1
  while (count * big.length <= 16 * 1024 * 1024) recent.decode(`b${count++}`, big)
  t.ok(count < 300, `${count} entries of 60 KiB`)
  t.not(recent.decode('b0', big), first, 'emptied once the next would pass 16 MiB')
})

t.test('corrupt bytes throw as decodeEntry does, and are not kept', async (t) => {
  const recent = new RecentEntries()
  t.throws(() => recent.decode('k', Buffer.from('not an entry')), { code: 'FST_CACHE_CORRUPT_ENTRY' })
  t.throws(() => recent.decode('k', Buffer.from('not an entry')), { code: 'FST_CACHE_CORRUPT_ENTRY' })
})
