import t from 'tap'
import { HitRate } from '../lib/http/hit-rate'

t.test('a route is expected to hit until most of its recent lookups miss, and again once they hit', async (t) => {
  const rate = new HitRate()
  t.equal(rate.likely, true, 'a new route')
  for (let i = 0; i < 10; i++) rate.observe(false)
  t.equal(rate.likely, true, 'ten misses in a row are not yet most of the last sixteen or so')
  for (let i = 0; i < 10; i++) rate.observe(false)
  t.equal(rate.likely, false, 'twenty are')
  for (let i = 0; i < 20; i++) rate.observe(true)
  t.equal(rate.likely, true, 'twenty hits bring it back')
  for (let i = 0; i < 100; i++) rate.observe(i % 4 !== 0)
  t.equal(rate.likely, true, 'three hits in four: still worth the plain read first')
  for (let i = 0; i < 100; i++) rate.observe(i % 4 === 0)
  t.equal(rate.likely, false, 'one in four: not')
})
