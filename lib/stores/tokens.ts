import { randomBytes } from 'node:crypto'

// A random prefix per process and a counter: never repeats (so a recreated record can never match an old one), and
// costs no system call per token on the hit path.
const processPart = randomBytes(9).toString('base64url')
let counter = 0

/** A fresh token part, unique across processes and time. */
export function newTokenPart (): string {
  counter = (counter + 1) % Number.MAX_SAFE_INTEGER
  return processPart + counter.toString(36)
}
