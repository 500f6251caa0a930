// Where a server's CPU time went, from a V8 .cpuprofile (`node --cpu-prof`): self time by function and by owner,
// and the inclusive time of the plugin's own functions. Used by `npm run bench -- --profile <variant>`, or on its own:
// `node --import tsx bench/profile.ts <file.cpuprofile>`.
import { readFileSync } from 'node:fs'
import { join, relative } from 'node:path'

export interface ProfileNode {
  id: number
  parent?: number
  children?: number[]
  callFrame: { functionName: string, url: string, lineNumber: number }
}

interface CpuProfile {
  nodes: ProfileNode[]
  /** Microseconds of the monotonic clock, the one of process.hrtime() in every process of the machine. */
  startTime: number
  samples: number[]
  timeDeltas: number[]
}

/** A span of the monotonic clock in microseconds: only samples inside it count (the load, not start-up). */
export interface Window { fromUs: number, toUs: number }

const ROOT = join(__dirname, '..')
const FASTIFY_DEPS = new Set(['fastify', ...Object.keys(readPackage('fastify').dependencies ?? {})])
const IOREDIS_DEPS = new Set(['ioredis', ...Object.keys(readPackage('ioredis').dependencies ?? {})])

function readPackage (name: string): { dependencies?: Record<string, string> } {
  return JSON.parse(readFileSync(join(ROOT, 'node_modules', name, 'package.json'), 'utf8'))
}

/** Who a frame belongs to: the plugin (lib/, or its build in dist/), fastify and its dependencies, ioredis, Node's JS, V8 itself... */
export function ownerOf (url: string, functionName: string): string {
  if (url === '') return functionName.startsWith('(') ? functionName : 'native (V8/C++)'
  if (url.startsWith('node:')) return 'node core'
  const path = url.replace(/^file:\/\//, '')
  const modules = /node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(path)
  if (modules !== null) {
    const name = modules[1] ?? ''
    if (FASTIFY_DEPS.has(name)) return 'fastify'
    if (IOREDIS_DEPS.has(name)) return 'ioredis'
    return name
  }
  const local = relative(ROOT, path)
  if (local.startsWith('lib/') || local.startsWith('dist/')) return 'plugin'
  if (local.startsWith('bench/')) return 'bench'
  return 'other'
}

interface Row { name: string, owner: string, ms: number }

export interface ProfileSummary {
  totalMs: number
  idleMs: number
  byOwner: Row[]
  topSelf: Row[]
  pluginInclusive: Row[]
}

/** A profile's nodes by id, each with its parent. */
export interface LoadedProfile {
  byId: Map<number, ProfileNode>
  /** Calls `visit` for each sample inside the window, with its leaf node and its duration in ms. */
  forEachSample (window: Window | undefined, visit: (leaf: ProfileNode, ms: number) => void): void
}

export function loadProfile (file: string): LoadedProfile {
  const profile = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile
  const byId = new Map<number, ProfileNode>()
  for (const node of profile.nodes) byId.set(node.id, node)
  for (const node of profile.nodes) for (const child of node.children ?? []) (byId.get(child) as ProfileNode).parent = node.id
  return {
    byId,
    forEachSample (window, visit) {
      let at = profile.startTime
      profile.samples.forEach((id, i) => {
        at += profile.timeDeltas[i] ?? 0
        if (window !== undefined && (at < window.fromUs || at > window.toUs)) return
        // The time until the next sample.
        visit(byId.get(id) as ProfileNode, (profile.timeDeltas[i + 1] ?? 0) / 1000)
      })
    }
  }
}

/** A frame's name: its function, and where it is. */
export function labelOf (node: ProfileNode): string {
  const { functionName, url, lineNumber } = node.callFrame
  // tsx runs transformed TypeScript, whose line numbers are not the source's: name the file only.
  const file = relative(ROOT, url.replace(/^file:\/\//, ''))
  const where = url === '' ? '' : file.endsWith('.ts') ? ` ${file}` : ` ${file}:${lineNumber + 1}`
  return (functionName === '' ? '(anonymous)' : functionName) + where
}

/** The node and its callers, up to the root. */
export function * stackOf (loaded: LoadedProfile, leaf: ProfileNode): Generator<ProfileNode> {
  for (let node: ProfileNode | undefined = leaf; node !== undefined; node = node.parent === undefined ? undefined : loaded.byId.get(node.parent)) yield node
}

export function summarize (file: string, window?: Window, top = 25): ProfileSummary {
  const loaded = loadProfile(file)
  const self = new Map<string, Row>()
  const inclusive = new Map<string, Row>()
  const owners = new Map<string, number>()
  let totalMs = 0
  let idleMs = 0
  loaded.forEachSample(window, (leaf, ms) => {
    const owner = ownerOf(leaf.callFrame.url, leaf.callFrame.functionName)
    if (owner === '(idle)') { idleMs += ms; return }
    totalMs += ms
    owners.set(owner, (owners.get(owner) ?? 0) + ms)
    add(self, labelOf(leaf), owner, ms)
    const seen = new Set<string>()
    for (const node of stackOf(loaded, leaf)) {
      const name = labelOf(node)
      if (seen.has(name) || ownerOf(node.callFrame.url, node.callFrame.functionName) !== 'plugin') continue
      seen.add(name)
      add(inclusive, name, 'plugin', ms)
    }
  })
  const sortRows = (rows: Iterable<Row>): Row[] => [...rows].sort((a, b) => b.ms - a.ms)
  return {
    totalMs,
    idleMs,
    byOwner: sortRows([...owners].map(([owner, ms]) => ({ name: owner, owner, ms }))),
    topSelf: sortRows(self.values()).slice(0, top),
    pluginInclusive: sortRows(inclusive.values()).slice(0, 15)
  }
}

function add (rows: Map<string, Row>, name: string, owner: string, ms: number): void {
  const row = rows.get(name)
  if (row === undefined) rows.set(name, { name, owner, ms })
  else row.ms += ms
}

/** Tables of a summary; with the number of requests served, each figure also as µs per request. */
export function markdown (summary: ProfileSummary, requests?: number): string {
  const busy = summary.totalMs
  const writev = summary.topSelf.find((row) => row.name === 'writev')?.ms ?? 0
  const perRequest = requests === undefined ? '' : ' µs/req |'
  const cells = (ms: number): string =>
    `${ms.toFixed(0)} | ${(100 * ms / busy).toFixed(1)} % |` + (requests === undefined ? '' : ` ${(1000 * ms / requests).toFixed(2)} |`)
  const head = (first: string): string[] => [
    `| ${first} | self ms | share of busy |${perRequest}`,
    '| --- |' + (first.startsWith('Function') ? ' --- |' : '') + ' ---: | ---: |' + (requests === undefined ? '' : ' ---: |')
  ]
  return [
    `Busy (non-idle) time of the server's main thread: ${busy.toFixed(0)} ms, idle ${summary.idleMs.toFixed(0)} ms` +
      (requests === undefined ? '.' : `, ${requests} requests.`),
    `\`writev\` (the socket write: kernel time, and time the thread was descheduled inside it) is ${writev.toFixed(0)} ms of it.`,
    '', ...head('Owner'), ...summary.byOwner.map((row) => `| ${row.name} | ${cells(row.ms)}`),
    '', ...head('Function (self time) | owner'), ...summary.topSelf.map((row) => `| \`${row.name}\` | ${row.owner} | ${cells(row.ms)}`),
    '', ...head('Plugin function (inclusive time, callees included)').map((line) => line.replace('self ms', 'ms')),
    ...summary.pluginInclusive.map((row) => `| \`${row.name}\` | ${cells(row.ms)}`)
  ].join('\n')
}

if (require.main === module) {
  const file = process.argv[2]
  if (file === undefined) throw new Error('usage: node --import tsx bench/profile.ts <file.cpuprofile>')
  console.log(markdown(summarize(file)))
}
