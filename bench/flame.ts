// A flame graph of a V8 .cpuprofile, as an SVG file: each frame a box as wide as its inclusive time (callees
// included), its callees stacked above it, coloured by owner (the plugin, fastify, ioredis, Node's JS, V8...). Written
// by `npm run bench -- --profile <variant>`, or on its own: `node --import tsx bench/flame.ts <file.cpuprofile> <out.svg>`.
import { writeFileSync } from 'node:fs'
import { type Window, labelOf, loadProfile, ownerOf, stackOf } from './profile'

interface Frame {
  name: string
  owner: string
  ms: number
  children: Map<string, Frame>
}

const WIDTH = 1200
const ROW = 17
const CHAR_PX = 6.6
/** Frames narrower than this are left out (their time still counts in their callers' boxes). */
const MIN_PX = 0.4

const COLOURS: Record<string, string> = {
  plugin: '#f28e2b',
  fastify: '#4e79a7',
  ioredis: '#e15759',
  'node core': '#59a14f',
  'native (V8/C++)': '#bab0ac',
  '(garbage collector)': '#b07aa1',
  '(program)': '#d4d4d4'
}

function escape (text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;')
}

/** The stacks of the samples inside the window, merged from the root: idle time left out. */
function mergedStacks (file: string, window?: Window): Frame {
  const loaded = loadProfile(file)
  const root: Frame = { name: 'all busy time', owner: '', ms: 0, children: new Map() }
  loaded.forEachSample(window, (leaf, ms) => {
    if (ownerOf(leaf.callFrame.url, leaf.callFrame.functionName) === '(idle)') return
    // From the root down; V8's own "(root)" frame is left out.
    const stack = [...stackOf(loaded, leaf)].reverse().filter((node) => node.callFrame.functionName !== '(root)')
    root.ms += ms
    let frame = root
    for (const node of stack) {
      const name = labelOf(node)
      let child = frame.children.get(name)
      if (child === undefined) {
        child = { name, owner: ownerOf(node.callFrame.url, node.callFrame.functionName), ms: 0, children: new Map() }
        frame.children.set(name, child)
      }
      child.ms += ms
      frame = child
    }
  })
  return root
}

function depthOf (frame: Frame, pxPerMs: number): number {
  let deepest = 0
  for (const child of frame.children.values()) if (child.ms * pxPerMs >= MIN_PX) deepest = Math.max(deepest, depthOf(child, pxPerMs))
  return deepest + 1
}

/** The SVG of a flame graph; `title` heads it. */
export function flameGraph (file: string, title: string, window?: Window): string {
  const root = mergedStacks(file, window)
  const pxPerMs = root.ms === 0 ? 0 : WIDTH / root.ms
  const rows = depthOf(root, pxPerMs)
  const top = 2 * ROW
  const height = top + rows * ROW + ROW
  const boxes: string[] = []
  const draw = (frame: Frame, x: number, depth: number): void => {
    const width = frame.ms * pxPerMs
    const y = top + (rows - 1 - depth) * ROW
    const share = root.ms === 0 ? 0 : 100 * frame.ms / root.ms
    const tip = `${frame.name}${frame.owner === '' ? '' : ` (${frame.owner})`}: ${frame.ms.toFixed(0)} ms, ${share.toFixed(1)} %`
    const fits = Math.floor((width - 4) / CHAR_PX)
    const text = fits < 3 ? '' : frame.name.length <= fits ? frame.name : `${frame.name.slice(0, fits - 1)}…`
    boxes.push(`<g><title>${escape(tip)}</title><rect x="${x.toFixed(1)}" y="${y}" width="${width.toFixed(1)}" height="${ROW - 1}" ` +
      `fill="${COLOURS[frame.owner] ?? '#edc948'}"/>` +
      (text === '' ? '' : `<text x="${(x + 2).toFixed(1)}" y="${y + ROW - 5}">${escape(text)}</text>`) + '</g>')
    let at = x
    // Widest first, so that the eye finds the costly callees at the left of each box.
    for (const child of [...frame.children.values()].sort((a, b) => b.ms - a.ms)) {
      if (child.ms * pxPerMs >= MIN_PX) draw(child, at, depth + 1)
      at += child.ms * pxPerMs
    }
  }
  draw(root, 0, 0)
  const legend = Object.entries(COLOURS).map(([owner, colour], i) =>
    `<rect x="${10 + i * 150}" y="${height - ROW + 3}" width="10" height="10" fill="${colour}"/><text x="${24 + i * 150}" y="${height - 4}">${escape(owner)}</text>`)
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${height}" viewBox="0 0 ${WIDTH} ${height}" font-family="monospace" font-size="11">`,
    `<rect width="${WIDTH}" height="${height}" fill="#ffffff"/>`,
    `<text x="4" y="${ROW}" font-size="13">${escape(title)} (hover a box for its time)</text>`,
    ...boxes, ...legend, '</svg>', ''
  ].join('\n')
}

if (require.main === module) {
  const [file, out] = process.argv.slice(2)
  if (file === undefined || out === undefined) throw new Error('usage: node --import tsx bench/flame.ts <file.cpuprofile> <out.svg>')
  writeFileSync(out, flameGraph(file, file))
}
