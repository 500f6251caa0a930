/**
 * The dashboard end to end, in headless Chromium (Debian's `chromium`, driven by playwright-core): the page loads
 * with the admin token from the link, its numbers move while a workload runs, the overview panel goes through the
 * browser's HTTP cache (a fresh copy without asking, then an ETag revalidation), and "Invalidate workspace" turns
 * the next reads of that workspace into misses. It takes the screenshot the README shows (docs/dashboard.png).
 *
 * Without a browser: under CI (CI set; .ci/run installs chromium) the test fails; elsewhere it is skipped and says
 * how to install one. CHROMIUM_PATH chooses another binary.
 */
import { existsSync, mkdirSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { chromium, type Browser, type Page } from 'playwright-core'
import t from 'tap'
import { type ExampleApp, buildApp } from '../example-server/app'
import { runLoad } from '../example-server/load-demo'

// A browser and a PGlite, on a busy CI machine, take longer than tap's default per file.
t.setTimeout(120_000)

const CHROMIUM = process.env['CHROMIUM_PATH'] ?? '/usr/bin/chromium'
const ADMIN = 'dashboard-test-admin-token-0123456789'
/**
 * UPDATE_SCREENSHOT=1 writes the README's screenshot, docs/dashboard.png (with DASHBOARD_SCREENSHOT_SECONDS=40 for a
 * fuller chart); otherwise it goes to .tap/, so that a test run leaves the work tree as it was.
 */
const SCREENSHOT = process.env['UPDATE_SCREENSHOT'] === '1'
  ? join(__dirname, '..', 'docs', 'dashboard.png')
  : join(__dirname, '..', '.tap', 'dashboard.png')
/** Seconds of load before the screenshot: longer makes a fuller chart (DASHBOARD_SCREENSHOT_SECONDS). */
const LOAD_SECONDS = Number(process.env['DASHBOARD_SCREENSHOT_SECONDS'] ?? 6)

const TITLE = 'the dashboard shows the cache live, and its buttons act on it'

async function number (page: Page, id: string): Promise<number> {
  const text = await page.locator(`#${id}`).innerText()
  return Number(text.replace(/[^0-9.]/g, ''))
}

async function waitFor (what: string, check: () => Promise<boolean>, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!await check()) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`)
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
}

if (!existsSync(CHROMIUM)) {
  const message = `no Chromium at ${CHROMIUM}: install Debian's chromium (apt-get install chromium) or set CHROMIUM_PATH`
  if (process.env['CI'] !== undefined && process.env['CI'] !== '') t.fail(message)
  else t.test(TITLE, { skip: message }, async () => {})
} else {
  t.test(TITLE, { timeout: 120_000 }, async (t) => {
    const app: ExampleApp = await buildApp({ dataset: 'small', adminToken: ADMIN })
    t.teardown(() => app.close())
    const base = await app.listen({ port: 0, host: '127.0.0.1' })
    const browser: Browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
        '--disable-component-update', '--disable-sync']
    })
    t.teardown(() => browser.close())
    // a fresh profile (and HTTP cache) per context
    const context = await browser.newContext({ viewport: { width: 1400, height: 1000 } })
    const page = await context.newPage()
    const errors: string[] = []
    page.on('pageerror', (error) => errors.push(error.message))

    await page.goto(`${base}/#token=${ADMIN}`)
    t.notMatch(page.url(), ADMIN, 'the token leaves the address bar')
    await waitFor('the first figures', async () => (await page.locator('#setup').innerText()).startsWith('store: memory · database: pglite'))
    const queriesAtStart = await number(page, 'db-queries')

    // A workload while the page polls: the numbers move.
    const load = runLoad({ base, adminToken: ADMIN, durationMs: LOAD_SECONDS * 1000, concurrency: 4, burstEveryMs: 1500 })
    await waitFor('hits on the page', async () => await number(page, 'hits') > 100)
    await waitFor('database queries on the page', async () => await number(page, 'db-queries') > queriesAtStart)
    t.match(await page.locator('#hit-rate').innerText(), /^\d+\.\d%$/)
    await waitFor('the route table', async () => (await page.locator('#route-table tbody').innerText()).includes('/executive/overview'))
    t.match(await page.locator('#latency-hit').innerText(), /^[\d.]+ ms$/)
    const report = await load
    t.ok(report.requests > 100 && report.errors === 0, `the workload ran: ${report.requests} requests, ${report.errors} errors`)

    // The overview through the browser's HTTP cache: the server, then the browser's own copy, then a 304.
    await page.locator('#workspace').selectOption('ws1')
    await page.locator('#overview-load').click()
    await waitFor('the overview', async () => (await page.locator('#overview-source').innerText()).startsWith('server'))
    t.match(await page.locator('#overview-source').innerText(), 'private, max-age=300, stale-while-revalidate=1500')
    const served = (await app.cacheService.stats()).routes['/executive/overview']
    await page.locator('#overview-load').click()
    await waitFor('the browser\'s copy', async () => (await page.locator('#overview-source').innerText()).startsWith('browser cache'))
    t.same((await app.cacheService.stats()).routes['/executive/overview'], served, 'the server was not asked')
    await page.locator('#overview-revalidate').click()
    await waitFor('a revalidation', async () => (await page.locator('#overview-source').innerText()).startsWith('revalidated: 304'))

    // Invalidate ws1, then read it: misses.
    await waitFor('steady figures', async () => {
      const before = await number(page, 'misses')
      await new Promise((resolve) => setTimeout(resolve, 1200))
      return await number(page, 'misses') === before
    })
    const missesBefore = await number(page, 'misses')
    await page.locator('#invalidate').click()
    await waitFor('the invalidation', async () => /^invalidate ws1: \{"tags":[1-9]\d*\}/.test(await page.locator('#action-status').innerText()))
    const headers = { authorization: `Bearer ${ADMIN}` }
    for (const timeframe of ['24h', '7d', '30d']) {
      const response = await fetch(`${base}/executive/overview?workspace_id=ws1&timeframe=${timeframe}`, { headers })
      t.equal(response.headers.get('x-cache'), 'MISS', `ws1 ${timeframe} was invalidated`)
    }
    await waitFor('the misses on the page', async () => await number(page, 'misses') >= missesBefore + 3)

    await page.locator('#warm').click()
    await waitFor('the warming', async () => /^warm ws1: \{"ok":6,"failed":0\}/.test(await page.locator('#action-status').innerText()))
    t.equal((await fetch(`${base}/executive/overview?workspace_id=ws1&timeframe=7d`, { headers })).headers.get('x-cache'), 'HIT')

    mkdirSync(dirname(SCREENSHOT), { recursive: true })
    await page.screenshot({ path: SCREENSHOT, fullPage: true })
    t.ok(existsSync(SCREENSHOT), `screenshot at ${SCREENSHOT}`)
    t.same(errors, [], 'no error in the page')
  })
}
