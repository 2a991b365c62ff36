// Shared by the browser tests and the benchmark: a real headless Debian
// Chromium driven by playwright-core, with a fresh profile each time and no
// network chatter of its own.
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { request } from 'node:https';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

export const CHROMIUM = process.env.CONNSCOPE_CHROMIUM || '/usr/bin/chromium';

export async function launch({ ignoreHTTPSErrors = false } = {}) {
  const profile = mkdtempSync(join(tmpdir(), 'connscope-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1400, height: 900 },
    ignoreHTTPSErrors,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
      '--no-first-run', '--disable-sync', '--disable-quic'],
  });
  const close = async () => {
    await context.close();
    rmSync(profile, { recursive: true, force: true });
  };
  return { context, close };
}

/**
 * Opens a page that records every sign of injected code running: dialogs,
 * and a flag that the hostile test data would set. Returns the page and the
 * list of such signs, plus console errors and CSP violations.
 */
export async function watchedPage(context) {
  const page = await context.newPage();
  const alarms = [];
  const problems = [];
  page.on('dialog', async (dialog) => {
    alarms.push(`dialog: ${dialog.type()} ${dialog.message()}`);
    await dialog.dismiss();
  });
  page.on('console', (msg) => {
    // The event stream is cut when a page navigates away (and a collector
    // without one answers 404; the map then polls).
    // Before logging in, the API answers 401: that is how the map learns it must ask.
    // A malformed ruleset is refused with 400: the firewall panel shows why.
    const url = msg.location()?.url ?? '';
    const expected = url.endsWith('/api/v1/events/stream') || (url.includes('/api/v1/') && msg.text().includes('status of 401'))
      || (url.includes('/api/v1/firewall/check') && msg.text().includes('status of 400'))
      || (url.includes('/api/v1/firewall/backtest') && msg.text().includes('status of 400'))
      // A collector without the policy side answers 404: the map's policy panel says so.
      || ((url.includes('/api/v1/policies/status') || url.includes('/api/v1/drift')) && msg.text().includes('status of 404'));
    if (msg.type() === 'error' && !expected) problems.push(`console: ${msg.text()} (${url})`);
  });
  page.on('pageerror', (err) => problems.push(`pageerror: ${err.message}`));
  return { page, alarms, problems };
}

/** Synthetic graph in the API's format (connscope_query::Graph): hosts, their services, external addresses. */
export function syntheticGraph({ nodes = 2000, edges = 10000, seed = 1 } = {}) {
  let s = seed;
  const rand = () => ((s = (s * 1103515245 + 12345) % 2147483648) / 2147483648);
  const hostCount = Math.round(nodes * 0.15);
  const serviceCount = Math.round(nodes * 0.55);
  const externalCount = nodes - hostCount - serviceCount;
  const t0 = Date.parse('2025-01-01T00:00:00Z');
  const out = { from: '2025-01-01T00:00:00Z', to: '2025-02-01T00:00:00Z', nodes: [], edges: [] };
  const ports = [22, 80, 443, 5432, 6379, 53, 8080, 3306];
  for (let i = 0; i < hostCount; i++) out.nodes.push({ kind: 'host', id: `host:h${i}`, label: `h${i}.lan`, addresses: [`10.0.${i >> 8}.${i & 255}`] });
  const services = [];
  for (let i = 0; i < serviceCount; i++) {
    const h = i % hostCount;
    const p = ports[Math.floor(i / hostCount) % ports.length] + Math.floor(i / (hostCount * ports.length));
    const id = `service:h${h}.lan:${p}/tcp`;
    services.push([id, p]);
    out.nodes.push({ kind: 'service', id, label: `h${h}.lan:${p}`, host: `host:h${h}`, port: p, protocol: 'tcp' });
  }
  const externals = [];
  for (let i = 0; i < externalCount; i++) {
    const ip = `198.${18 + (i >> 8)}.${i & 255}.7`; // one per /24: none folds into a group
    externals.push([`external:${ip}`, 443]);
    out.nodes.push({ kind: 'external', id: `external:${ip}`, label: ip, ip, internal: false });
  }
  const seen = new Set();
  while (out.edges.length < edges) {
    const h = Math.floor(rand() ** 1.5 * hostCount);
    const [target, port] = rand() < 0.75 ? services[Math.floor(rand() ** 2 * services.length)] : externals[Math.floor(rand() * externals.length)];
    const key = `${h}>${target}`;
    if (seen.has(key) || target.startsWith(`service:h${h}.lan:`)) continue;
    seen.add(key);
    const first = t0 + Math.floor(rand() * 30 * 86400e3);
    const connections = 1 + Math.floor(rand() ** 4 * 5000);
    out.edges.push({ source: `host:h${h}`, target, port, protocol: 'tcp', connections, failures: 0,
      bytes_to_server: Math.floor(rand() * 1e6), bytes_to_client: Math.floor(rand() * 1e7),
      first_seen: new Date(first).toISOString(), last_seen: new Date(first + rand() * 86400e3).toISOString(),
      client_processes: [{ host: `h${h}.lan`, executable: '/usr/bin/curl', user: 'root', connections }], server_processes: [], users: ['root'] });
  }
  return out;
}

/**
 * What a reader sees of the map's text: every text element in the map that
 * is visible (rendered, not transparent, inside the map's box), with its
 * bounding box from Chromium, the pairs of them that overlap, and the widest.
 */
export async function labelStats(page) {
  return page.evaluate(() => {
    const area = document.getElementById('map').getBoundingClientRect();
    const boxes = [];
    for (const t of document.querySelectorAll('#map text')) {
      const r = t.getBoundingClientRect();
      const style = getComputedStyle(t);
      let opacity = 1;
      for (let e = t; e && e !== document.body; e = e.parentElement) opacity *= Number(getComputedStyle(e).opacity);
      if (!r.width || !r.height || style.display === 'none' || style.visibility === 'hidden' || opacity === 0) continue;
      if (r.right <= area.left || r.left >= area.right || r.bottom <= area.top || r.top >= area.bottom) continue;
      boxes.push({ text: t.textContent, x0: r.left, y0: r.top, x1: r.right, y1: r.bottom });
    }
    const overlaps = [];
    for (let i = 0; i < boxes.length; i++) {
      for (let j = i + 1; j < boxes.length; j++) {
        const a = boxes[i], b = boxes[j];
        if (a.x0 < b.x1 && b.x0 < a.x1 && a.y0 < b.y1 && b.y0 < a.y1) overlaps.push([a.text, b.text]);
      }
    }
    const widest = boxes.reduce((w, b) => Math.max(w, b.x1 - b.x0), 0);
    return { visible: boxes.length, overlaps: overlaps.length, examples: overlaps.slice(0, 3), widest: Math.round(widest * 10) / 10 };
  });
}

/**
 * The checks of a test script: `check(name, ok, detail)` prints `ok - NAME`
 * or `FAILED - NAME DETAIL`, `same(name, actual, expected)` compares as
 * JSON, `summary()` prints `N passed, N failed` (the line the cargo test
 * reads) and sets the exit code.
 */
export function checks() {
  let passed = 0;
  let failed = 0;
  const check = (name, ok, detail = '') => {
    if (ok) passed++;
    else failed++;
    console.log(ok ? `ok - ${name}` : `FAILED - ${name} ${detail}`);
  };
  const same = (name, actual, expected) => check(name, JSON.stringify(actual) === JSON.stringify(expected),
    `\n  expected ${JSON.stringify(expected)}\n  actual   ${JSON.stringify(actual)}`);
  const summary = () => {
    console.log(`${passed} passed, ${failed} failed`);
    process.exitCode = failed ? 1 : 0;
  };
  return { check, same, summary };
}

/** A free TCP port on 127.0.0.1 (ephemeral: tests run side by side). */
export function freePort() {
  return new Promise((res, rej) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => res(port));
    }).on('error', rej);
  });
}

/**
 * The export page of `html` (a `connscope map export` file) with another
 * graph document inlined in place of its own, escaped as the export escapes
 * it. The data block is not a script, so the export's CSP hashes still hold.
 */
export function withGraph(html, doc) {
  const data = JSON.stringify(doc).replace(/</g, '\\u003c').replace(/>/g, '\\u003e').replace(/&/g, '\\u0026');
  const open = '<script type="application/json" id="connscope-data">';
  const start = html.indexOf(open) + open.length;
  const end = html.indexOf('</script>', start);
  if (start < open.length || end < 0) throw new Error('not an export page: no inlined graph');
  return html.slice(0, start) + data + html.slice(end);
}

/** Resolves once the map has loaded `loads` times and its layout has settled, and two frames have drawn. */
export async function settled(page, loads = 1) {
  await page.waitForFunction((n) => window.connscope && window.connscope.loads >= n && window.connscope.settled, loads, { timeout: 60e3, polling: 50 });
  await page.evaluate(() => new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done))));
}

/** One HTTPS request to the collector on 127.0.0.1 (its certificate is self-signed). */
export function https(port, method, path, { body, token, type } = {}) {
  return new Promise((res, rej) => {
    const req = request({ host: '127.0.0.1', port, method, path, rejectUnauthorized: false, timeout: 60e3,
      headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...(type ? { 'content-type': type } : {}) } }, (r) => {
      let text = '';
      r.on('data', (c) => (text += c));
      r.on('end', () => res({ status: r.statusCode, text, headers: r.headers }));
    });
    req.on('error', rej);
    req.on('timeout', () => req.destroy(new Error(`${method} ${path}: timeout`)));
    if (body) req.write(body);
    req.end();
  });
}

/**
 * Starts `BIN collector --db DB` on a free loopback port with `args` and
 * waits (bounded) until /api/v1/health answers. Returns `{port, process}`;
 * the caller kills the process.
 */
export async function startCollector(bin, db, args = []) {
  const port = await freePort();
  const child = spawn(bin, ['collector', '--db', db, '--listen', `127.0.0.1:${port}`, ...args], { stdio: ['ignore', 'inherit', 'inherit'] });
  const deadline = Date.now() + 30e3;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`the collector exited with ${child.exitCode}`);
    try {
      if ((await https(port, 'GET', '/api/v1/health')).status === 200) return { port, process: child };
    } catch (err) {
      if (Date.now() > deadline) {
        child.kill('SIGTERM');
        throw err;
      }
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * The static-export form of the page for `graph` (same code, data inlined,
 * escaped as `connscope map export` does), assembled from a web build in
 * `dist` (`node web/build.mjs DIR`), for benchmarks on synthetic graphs.
 */
export function exportPage(graph, dist) {
  const html = readFileSync(join(dist, 'index.html'), 'utf8');
  const data = JSON.stringify(graph).replace(/</g, '\\u003c').replace(/>/g, '\\u003e').replace(/&/g, '\\u0026');
  return html
    .replace(/<meta http-equiv="Content-Security-Policy"[^>]*>/, '')
    .replace('<link rel="stylesheet" href="app.css">', () => `<style>${readFileSync(join(dist, 'app.css'), 'utf8')}</style>`)
    .replace('<script src="app.js"></script>', () => `<script type="application/json" id="connscope-data">${data}</script><script>${readFileSync(join(dist, 'app.js'), 'utf8')}</script>`);
}
