import { randomBytes } from 'node:crypto'

/** A fresh random token half: never repeats, so a recreated record can never match an old one. */
export function newTokenPart (): string {
  return randomBytes(9).toString('base64url')
}
