/** A reference glob matcher for tests (only `*` and `?` are wildcards), written independently of the stores' own. */
export function globToRegExp (glob: string): RegExp {
  let source = ''
  for (const char of glob) {
    if (char === '*') source += '[\\s\\S]*'
    else if (char === '?') source += '[\\s\\S]'
    else source += char.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')
  }
  return new RegExp('^' + source + '$')
}
