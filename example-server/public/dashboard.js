/* global document, window, location, history, sessionStorage, fetch, performance, requestAnimationFrame */
'use strict'
// The dashboard: polls /dashboard/summary every second and draws what changed. Plain browser JavaScript, no build.
// The admin token comes from the link the server logs (#token=...), kept in sessionStorage, sent as a bearer token.

const POLL_MS = 1000
const HISTORY = 120
const TIMEFRAME = '7d'

const $ = (id) => document.getElementById(id)
const history_ = [] // { at, fromCache, dbQueries, hitRate } per poll
let previous = null
let token = null
let chosenWorkspace = null

function readToken () {
  const match = /(?:^#|&)token=([^&]+)/.exec(location.hash)
  if (match) {
    sessionStorage.setItem('adminToken', decodeURIComponent(match[1]))
    history.replaceState(null, '', location.pathname) // the token leaves the address bar
  }
  return sessionStorage.getItem('adminToken')
}

async function api (path, init = {}) {
  const response = await fetch(path, { ...init, headers: { ...(init.headers || {}), authorization: `Bearer ${token}` } })
  if (response.status === 401) {
    sessionStorage.removeItem('adminToken')
    showLogin('That token was refused.')
    throw new Error('unauthorized')
  }
  return response
}

function showLogin (message) {
  $('main').hidden = true
  $('login').hidden = false
  $('setup').textContent = message || 'Paste the admin token (the server logs a link with it when it starts).'
}

const number = (value) => value === null || value === undefined ? '–' : Number(value).toLocaleString('en-US')
const percent = (value) => `${(value * 100).toFixed(1)}%`
const ms = (summary) => summary && summary.count > 0 ? `${summary.p50} / ${summary.p99}` : '–'

function render (summary) {
  const cache = summary.cache
  const fromCache = cache.hits + cache.stale
  const lookups = cache.hits + cache.stale + cache.misses
  $('setup').textContent = `store: ${summary.store.kind} · database: ${summary.database.kind} · up ${summary.uptimeSeconds} s` +
    (cache.lastWarm ? ` · last warm: ${cache.lastWarm.ok} entries in ${cache.lastWarm.durationMs} ms` : '')
  $('hit-rate').textContent = lookups === 0 ? '–' : percent(fromCache / lookups)
  $('hit-rate-sub').textContent = `${number(lookups)} lookups, target > 80%`
  $('hits').textContent = number(fromCache)
  $('stale-sub').textContent = `${number(cache.hits)} fresh, ${number(cache.stale)} stale`
  $('misses').textContent = number(cache.misses)
  $('bypass-sub').textContent = `${number(cache.bypass)} bypass, ${number(cache.errors)} errors, ${number(cache.invalidations)} invalidations`
  $('db-queries').textContent = number(summary.database.queries)
  $('db-sub').textContent = `${number(summary.database.writes)} writes, ${number(summary.database.queryMs)} ms querying`
  const hit = summary.latency.HIT
  const miss = summary.latency.MISS
  $('latency-hit').textContent = hit ? `${hit.p50} ms` : '–'
  $('latency-hit-sub').textContent = hit ? `p95 ${hit.p95} · p99 ${hit.p99} ms` : ''
  $('latency-miss').textContent = miss ? `${miss.p50} ms` : '–'
  $('latency-miss-sub').textContent = miss ? `p95 ${miss.p95} · p99 ${miss.p99} ms` : ''
  $('entries').textContent = number(summary.store.entries)
  $('memory').textContent = summary.store.bytes !== null
    ? `${(summary.store.bytes / 1024).toFixed(1)} KiB of entries`
    : (summary.store.usedMemory ? `Redis memory ${summary.store.usedMemory}` : '')

  const rows = summary.routes
    .filter((route) => route.hits + route.misses + route.stale + route.bypass > 0)
    .sort((a, b) => (b.hits + b.misses) - (a.hits + a.misses))
    .map((route) => `<tr><td>${escapeHtml(route.route)}</td><td>${number(route.hits)}</td><td>${number(route.stale)}</td>` +
      `<td>${number(route.misses)}</td><td>${number(route.bypass)}</td><td>${number(route.errors)}</td>` +
      `<td>${route.hits + route.misses + route.stale === 0 ? '–' : percent(route.hitRate)}</td>` +
      `<td>${ms(route.latency.HIT)}</td><td>${ms(route.latency.MISS)}</td></tr>`)
  $('route-table').tBodies[0].innerHTML = rows.join('')

  const select = $('workspace')
  if (select.options.length === 0) {
    for (const workspace of summary.workspaces) {
      const option = document.createElement('option')
      option.value = workspace.id
      option.textContent = `${workspace.id} · ${workspace.name}${workspace.active ? '' : ' (inactive)'}`
      select.appendChild(option)
    }
    chosenWorkspace = select.value
  }

  const sample = { fromCache, dbQueries: summary.database.queries }
  if (previous !== null) {
    const lookupsNow = lookups - previous.lookups
    history_.push({
      fromCache: Math.max(0, fromCache - previous.fromCache),
      dbQueries: Math.max(0, sample.dbQueries - previous.dbQueries),
      hitRate: lookupsNow > 0 ? (fromCache - previous.fromCache) / lookupsNow : null
    })
    if (history_.length > HISTORY) history_.shift()
  }
  previous = { ...sample, lookups }
  requestAnimationFrame(drawChart)
}

function escapeHtml (text) {
  return String(text).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c])
}

function drawChart () {
  const canvas = $('chart')
  const ratio = window.devicePixelRatio || 1
  const width = canvas.clientWidth
  const height = canvas.clientHeight
  canvas.width = width * ratio
  canvas.height = height * ratio
  const g = canvas.getContext('2d')
  g.scale(ratio, ratio)
  g.clearRect(0, 0, width, height)
  const left = 48
  const right = 40
  const top = 10
  const bottom = 22
  const plotW = width - left - right
  const plotH = height - top - bottom
  const peak = Math.max(10, ...history_.map((s) => Math.max(s.fromCache, s.dbQueries)))
  const step = Math.pow(10, Math.floor(Math.log10(peak)))
  const max = Math.ceil(peak / step) * step
  // the window grows to HISTORY seconds, so that a young chart is not squeezed to the right
  const span = Math.min(HISTORY, Math.max(30, history_.length))
  const x = (i) => left + plotW * (i + span - history_.length) / (span - 1)
  const y = (v) => top + plotH * (1 - v / max)
  g.strokeStyle = '#1e293b'
  g.fillStyle = '#94a3b8'
  g.font = '11px system-ui, sans-serif'
  for (let i = 0; i <= 4; i++) {
    const v = max * i / 4
    g.beginPath()
    g.moveTo(left, y(v))
    g.lineTo(left + plotW, y(v))
    g.stroke()
    g.fillText(String(Math.round(v)), 4, y(v) + 4)
    g.fillText(`${i * 25}%`, left + plotW + 6, y(v) + 4)
  }
  g.fillText(`last ${span} s`, left, height - 6)
  const line = (values, color, scale) => {
    g.strokeStyle = color
    g.lineWidth = 2
    g.beginPath()
    let started = false
    values.forEach((v, i) => {
      if (v === null) { started = false; return }
      const yy = scale(v)
      if (started) g.lineTo(x(i), yy)
      else { g.moveTo(x(i), yy); started = true }
    })
    g.stroke()
  }
  const fill = (values, color) => {
    if (values.length === 0) return
    g.fillStyle = color
    g.beginPath()
    g.moveTo(x(0), y(0))
    values.forEach((v, i) => g.lineTo(x(i), y(v)))
    g.lineTo(x(values.length - 1), y(0))
    g.closePath()
    g.fill()
  }
  fill(history_.map((s) => s.fromCache), 'rgba(34, 197, 94, 0.25)')
  line(history_.map((s) => s.fromCache), '#22c55e', y)
  fill(history_.map((s) => s.dbQueries), 'rgba(249, 115, 22, 0.25)')
  line(history_.map((s) => s.dbQueries), '#f97316', y)
  line(history_.map((s) => s.hitRate), '#38bdf8', (v) => top + plotH * (1 - v))
}

async function poll () {
  try {
    const response = await api('/dashboard/summary', { cache: 'no-store' })
    if (response.ok) render(await response.json())
  } catch (error) {
    if (error.message === 'unauthorized') return
    $('setup').textContent = `the server does not answer (${error.message}); retrying`
  }
  setTimeout(poll, POLL_MS)
}

async function action (label, path, body) {
  $('action-status').textContent = `${label}…`
  const started = performance.now()
  const response = await api(path, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })
  const result = await response.json()
  const took = Math.round(performance.now() - started)
  $('action-status').textContent = response.ok
    ? `${label}: ${JSON.stringify(result.invalidated || { ok: result.ok, failed: result.failed })} in ${took} ms`
    : `${label} failed: ${result.message}`
}

// The overview goes through the browser's HTTP cache, as the specification's frontend does: the API answers
// private, max-age=300, stale-while-revalidate=1500 with an ETag. A plain fetch is then answered by the browser itself
// while fresh; "Revalidate" asks the server with If-None-Match, which answers 304 when nothing changed.
async function loadOverview (mode) {
  const workspace = chosenWorkspace || 'ws1'
  const url = `/executive/overview?workspace_id=${encodeURIComponent(workspace)}&timeframe=${TIMEFRAME}`
  const started = performance.now()
  const response = await api(url, { cache: mode })
  const body = await response.json()
  const took = (performance.now() - started).toFixed(1)
  const entries = performance.getEntriesByName(new URL(url, location.href).href)
  const timing = entries[entries.length - 1]
  // transferSize 0: the browser answered from its cache without asking; a small one: a 304 (headers only).
  let source = `server (x-cache: ${response.headers.get('x-cache')})`
  if (timing && timing.transferSize === 0) source = 'browser cache'
  else if (timing && timing.encodedBodySize > 0 && timing.transferSize < timing.encodedBodySize) source = `revalidated: 304, server x-cache ${response.headers.get('x-cache')}`
  $('overview-source').textContent = `${source} · ${took} ms · ${response.headers.get('cache-control')} · cached_at ${body.cached_at}`
  const m = body.metrics
  $('overview').innerHTML = [
    ['runs', number(m.total_runs)], ['success rate', `${m.success_rate}%`], ['avg duration', `${number(m.avg_duration_ms)} ms`],
    ['p95 duration', `${number(m.p95_duration_ms)} ms`], ['active agents', number(m.active_agents)],
    ['top agent', m.top_agents[0] ? escapeHtml(m.top_agents[0].name) : '–']
  ].map(([label, value]) => `<div><div class="label">${label}</div><div>${value}</div></div>`).join('')
}

function start () {
  token = readToken()
  if (!token) return showLogin()
  $('login').hidden = true
  $('main').hidden = false
  poll()
}

$('login').addEventListener('submit', (event) => {
  event.preventDefault()
  sessionStorage.setItem('adminToken', $('token-input').value.trim())
  start()
})
$('workspace').addEventListener('change', () => { chosenWorkspace = $('workspace').value })
$('warm').addEventListener('click', () => action(`warm ${chosenWorkspace}`, '/cache/warm', { workspace_id: chosenWorkspace }))
$('warm-all').addEventListener('click', () => action('warm all active', '/cache/warm', {}))
$('invalidate').addEventListener('click', () => action(`invalidate ${chosenWorkspace}`, '/cache/invalidate', { tags: [`ws:${chosenWorkspace}`] }))
$('overview-load').addEventListener('click', () => loadOverview('default'))
$('overview-revalidate').addEventListener('click', () => loadOverview('no-cache'))
window.addEventListener('resize', () => requestAnimationFrame(drawChart))
start()
