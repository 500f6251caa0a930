import { spawnSync } from 'node:child_process'
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, relative } from 'node:path'
import t from 'tap'
import ts from 'typescript'

// Each check runs tsc, which takes tens of seconds on a busy machine.
t.setTimeout(300_000)

const root = join(__dirname, '..')
const tsc = join(root, 'node_modules', '.bin', process.platform === 'win32' ? 'tsc.cmd' : 'tsc')

function runTsc (args: string[]): { status: number | null, output: string } {
  const result = spawnSync(tsc, args, { cwd: root, encoding: 'utf8', timeout: 240_000, shell: process.platform === 'win32' })
  if (result.error !== undefined) throw result.error
  return { status: result.status, output: `${result.stdout}${result.stderr}`.trim() }
}

function declarationFiles (dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true, recursive: true })
    .filter((entry) => entry.isFile() && entry.name.endsWith('.d.ts'))
    .map((entry) => join(entry.parentPath, entry.name))
}

/** Every `any` keyword in a declaration file, found by the TypeScript scanner, so comments and strings never count. */
function anyKeywords (file: string): string[] {
  const text = readFileSync(file, 'utf8')
  const scanner = ts.createScanner(ts.ScriptTarget.Latest, true, ts.LanguageVariant.Standard, text)
  const found: string[] = []
  for (let kind = scanner.scan(); kind !== ts.SyntaxKind.EndOfFileToken; kind = scanner.scan()) {
    if (kind !== ts.SyntaxKind.AnyKeyword) continue
    const position = scanner.getTokenStart()
    const line = text.slice(0, position).split('\n').length
    const lineText = text.split('\n')[line - 1]?.trim() ?? ''
    found.push(`line ${line}: ${lineText}`)
  }
  return found
}

t.test('the type tests compile: what must compile does, and every @ts-expect-error line fails', async (t) => {
  const { status, output } = runTsc(['--noEmit', '-p', join('test', 'tsconfig.types.json')])
  t.equal(output, '', 'tsc prints nothing')
  t.equal(status, 0, 'tsc exits with 0')
})

t.test('the type-test program holds the type tests and the library', async (t) => {
  // Guards against a tsconfig whose include silently matches nothing, which would pass the check above.
  const { status, output } = runTsc(['--noEmit', '-p', join('test', 'tsconfig.types.json'), '--listFilesOnly'])
  t.equal(status, 0)
  const files = output.split('\n').map((line) => relative(root, line.trim()).replace(/\\/g, '/'))
  t.ok(files.includes('test/types.test-d.ts'), 'test/types.test-d.ts is part of the program')
  t.ok(files.includes('lib/index.ts'), 'and so is the library it imports')
})

t.test('the declarations contain no any', async (t) => {
  const outDir = mkdtempSync(join(tmpdir(), 'fastify-response-cache-types-'))
  t.teardown(() => rmSync(outDir, { recursive: true, force: true }))
  const { status, output } = runTsc(['-p', 'tsconfig.build.json', '--declaration', '--emitDeclarationOnly', '--declarationMap', 'false', '--outDir', outDir])
  t.equal(output, '', 'the declarations build without a message')
  t.equal(status, 0, 'the declarations build')
  const files = declarationFiles(outDir)
  t.ok(files.some((file) => relative(outDir, file) === 'index.d.ts'), 'index.d.ts was emitted')
  for (const file of files) {
    t.strictSame(anyKeywords(file), [], `no any in ${relative(outDir, file)}`)
  }
})
