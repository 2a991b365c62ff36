// Shared by the browser tests and the benchmark: a real headless Debian
// Chromium driven by playwright-core, with a fresh profile each time and no
// network chatter of its own.
import { mkdtempSync, rmSync } from 'node:fs';
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
      || (url.includes('/api/v1/firewall/check') && msg.text().includes('status of 400'));
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

/** A free TCP port on 127.0.0.1 (the collector then binds it). */
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
