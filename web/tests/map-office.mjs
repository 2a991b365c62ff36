// Is the map readable at first sight? (issue 17) In real headless Chromium,
// against a real collector serving the generated office store
// (`Office::map_store`: 30 hosts in 4 stored groups, ~800 edges over 16 days,
// a host named with markup and hundreds of characters, a 2 kB executable):
// with no range picked the map shows the last day with data and says so;
// something is drawn; at least 10 labels are visible; no two visible labels
// overlap (bounding boxes of every visible text element, from Chromium); no
// label is wider than 320 px. The same once every group is opened, and in
// the export page with a 2,000-node / 10,000-edge graph, grouped and fully
// open. The store holds firewall hits of its last hour (map_browser.rs):
// they fold per group like connections, in their own colours, and the views
// stay as legible with them. Screenshots go to --out.
//
//   node web/tests/map-office.mjs --bin target/debug/connscope --db office.db --out DIR
//
// Prints `N passed, N failed` and exits non-zero on any failure.
import { spawn, execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync, copyFileSync } from 'node:fs';
import { request } from 'node:https';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { freePort, labelStats, launch, settled, syntheticGraph, watchedPage, withGraph } from './browser.mjs';

const arg = (name, fallback) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : fallback;
};
const bin = resolve(arg('bin', 'target/debug/connscope'));
const source = resolve(arg('db', 'office.db'));
const out = resolve(arg('out', 'target/map-office'));
mkdirSync(out, { recursive: true });
/** The widest a label may be (issue 17). */
const MAX_LABEL_PX = 320;

let passed = 0;
let failed = 0;
function check(name, ok, detail = '') {
  if (ok) {
    passed++;
    console.log(`ok - ${name}`);
  } else {
    failed++;
    console.log(`FAILED - ${name} ${detail}`);
  }
}

function get(port, path) {
  return new Promise((res, rej) => {
    const req = request({ host: '127.0.0.1', port, path, rejectUnauthorized: false, timeout: 10e3 }, (r) => {
      let text = '';
      r.on('data', (c) => (text += c));
      r.on('end', () => res({ status: r.statusCode, text }));
    });
    req.on('error', rej);
    req.on('timeout', () => req.destroy(new Error(`GET ${path}: timeout`)));
    req.end();
  });
}

/** The readability checks of one view, named by `what`; a screenshot as `shot`. */
async function readable(page, what, shot, { minLabels = 10 } = {}) {
  const stats = await labelStats(page);
  const drawn = await page.evaluate(() => ({ nodes: Number(document.body.dataset.nodes), edges: Number(document.body.dataset.edges), renderer: document.getElementById('map').dataset.renderer }));
  check(`${what}: something is drawn`, drawn.nodes > 0 && drawn.edges > 0, JSON.stringify(drawn));
  check(`${what}: at least ${minLabels} labels are visible`, stats.visible >= minLabels, `${stats.visible} visible`);
  check(`${what}: no two visible labels overlap`, stats.overlaps === 0, `${stats.overlaps} overlapping pairs, e.g. ${JSON.stringify(stats.examples)}`);
  check(`${what}: no label is wider than ${MAX_LABEL_PX} px`, stats.widest <= MAX_LABEL_PX, `widest ${stats.widest} px`);
  await page.screenshot({ path: join(out, shot) });
  console.log(`# ${what}: ${drawn.nodes} nodes, ${drawn.edges} edges (${drawn.renderer}), ${stats.visible} labels visible, ${stats.overlaps} overlapping, widest ${stats.widest} px`);
  return { ...drawn, ...stats };
}

/** Opens every group, level by level, through the link (one double-click each would do the same). */
async function openEverything(page) {
  for (let level = 0; level < 4; level++) {
    const closed = await page.evaluate(() => window.connscope.app.view.nodes.filter((n) => n.kind === 'group').map((n) => n.id));
    if (!closed.length) return;
    const loads = await page.evaluate(() => window.connscope.loads);
    await page.evaluate((ids) => {
      window.connscope.settled = false;
      const params = new URLSearchParams(location.hash.slice(1));
      const open = [...window.connscope.app.state.open, ...ids].map((id) => id.replace(/%/g, '%25').replace(/,/g, '%2C'));
      params.set('open', open.join(','));
      location.hash = params.toString();
    }, closed);
    await settled(page, loads);
  }
  throw new Error('groups still closed after 4 levels');
}

const dir = mkdtempSync(join(tmpdir(), 'connscope-map-office-'));
// The collector writes its certificate next to the store: a copy, in a folder of our own.
const db = join(dir, 'office.db');
copyFileSync(source, db);
const port = await freePort();
const collector = spawn(bin, ['collector', '--db', db, '--listen', `127.0.0.1:${port}`], { stdio: ['ignore', 'ignore', 'inherit'] });
let browser;
try {
  const deadline = Date.now() + 30e3;
  for (;;) {
    if (collector.exitCode !== null) throw new Error(`the collector exited with ${collector.exitCode}`);
    try {
      if ((await get(port, '/api/v1/health')).status === 200) break;
    } catch (err) {
      if (Date.now() > deadline) throw err;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  const span = JSON.parse((await get(port, '/api/v1/graph?from=-1h')).text).data_span;
  check('the graph tells the span of the data', Boolean(span?.first && span?.last), JSON.stringify(span));

  browser = await launch({ ignoreHTTPSErrors: true });
  const { page, alarms, problems } = await watchedPage(browser.context);
  const base = `https://127.0.0.1:${port}/`;

  // First sight: no range, no grouping picked.
  await page.goto(base);
  await settled(page);
  const last = Date.parse(span.last);
  const range = await page.evaluate(() => {
    const { app } = window.connscope;
    return { range: app.state.range, from: app.graph.from, to: app.graph.to, status: document.getElementById('status').textContent };
  });
  const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
  const day = (ms) => `${MONTHS[new Date(ms).getUTCMonth()]} ${new Date(ms).getUTCDate()}`;
  const minute = (ms) => `${day(ms)} ${new Date(ms).toISOString().slice(11, 16)}`;
  const to = last + 1000;
  const from = to - 86400e3;
  check('first sight: the graph asked for is the last day with data', Math.abs(range.from - from) < 1000 && Math.abs(range.to - to) < 1000, JSON.stringify({ ...range, want: [from, to] }));
  const said = `showing ${minute(from)} - ${minute(to)}, the last day with data; data spans ${day(Date.parse(span.first))} - ${day(last)}`;
  check('first sight: the status line says so', range.status.startsWith(said), `${JSON.stringify(range.status)} should start ${JSON.stringify(said)}`);
  check('first sight: the firewall panel is closed', !(await page.isVisible('#firewall')));
  const groups = await page.evaluate(() => window.connscope.app.view.nodes.filter((n) => n.kind === 'group' && n.internal).map((n) => n.label).sort());
  check('first sight: the store\'s groups are the first level', ['admins (3)', 'servers (5)', 'workstations (18)'].every((g) => groups.includes(g)) && groups.some((g) => g.startsWith('devices (')), JSON.stringify(groups));
  await readable(page, 'office, first sight', 'office-first.png');
  const loops = await page.evaluate(() => window.connscope.app.view.edges.filter((e) => e.loop).map((e) => ({ kind: e.loop, source: e.source, target: e.target, count: e.count,
    drawn: document.querySelector(`#map path.edge[data-id="${CSS.escape(e.id)}"]`)?.getAttribute('stroke') ?? null })));
  const backup = loops.find((l) => l.kind === 'would-block' && l.source === 'hgroup:store:workstations' && l.target === 'hgroup:store:servers');
  check('first sight: the workstations\' would-block hits to a server fold into one group edge, drawn violet', backup && backup.count === 3 && backup.drawn === '#9c27b0', JSON.stringify(loops));
  const refused = loops.find((l) => l.kind === 'blocked');
  check('first sight: the server\'s refused client is a blocked edge between the groups, drawn indigo', refused && refused.source === 'hgroup:store:workstations' && refused.target === 'hgroup:store:servers' && refused.drawn === '#3f1d7a', JSON.stringify(loops));

  // Every group opened: hosts, services, outside addresses.
  await openEverything(page);
  const opened = await readable(page, 'office, every group open', 'office-open.png');
  check('office, every group open: the 26 logging hosts are drawn', (await page.evaluate(() => window.connscope.app.view.nodes.filter((n) => n.kind === 'host').length)) >= 20, JSON.stringify(opened));
  const hostile = await page.evaluate(() => {
    const node = window.connscope.app.view.nodes.find((n) => n.kind === 'host' && n.label.includes('<script>'));
    if (!node) return null;
    const g = document.querySelector(`#map g.node[data-id="${CSS.escape(node.id)}"]`);
    const label = document.querySelector(`#map svg.labels text[data-id="${CSS.escape(node.id)}"]`);
    return { full: node.label, title: g?.querySelector('title')?.textContent, drawn: label?.textContent ?? null, width: label?.getBoundingClientRect().width ?? 0 };
  });
  check('a long hostile host name: full text in the tooltip, drawn cut with an ellipsis', hostile && hostile.title === hostile.full && (hostile.drawn === null || (hostile.drawn.endsWith('…') && hostile.width <= MAX_LABEL_PX)), JSON.stringify(hostile));
  // Hovering a node shows its edges' labels (and still no overlap).
  const hub = await page.evaluate(() => {
    const { app, map } = window.connscope;
    const n = app.scene.nodes.find((x) => x.id === 'host:fs') ?? app.scene.nodes[0];
    const [x, y] = map.transform.apply([n.x, n.y]);
    const box = document.getElementById('map').getBoundingClientRect();
    return { id: n.id, x: box.left + x, y: box.top + y };
  });
  await page.mouse.move(hub.x, hub.y);
  await page.waitForFunction((id) => window.connscope.map.hovered === id, hub.id, { timeout: 5e3 });
  await page.evaluate(() => new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done))));
  const hovered = await page.evaluate(() => window.connscope.map.labels.filter((l) => l.kind === 'edge').length);
  check('hovering a node shows its edges\' labels', hovered > 0, `${hovered} edge labels`);
  await readable(page, 'office, hovering a server', 'office-hover.png');
  check('office: no dialog opened, no injected code ran, no errors', alarms.length === 0 && problems.length === 0 && (await page.evaluate(() => window.__pwned)) === undefined, [...alarms, ...problems].join('; '));

  // The export of the same store: same first sight, from file://.
  const html = join(dir, 'office.html');
  execFileSync(bin, ['map', 'export', '--db', db, '-o', html], { stdio: ['ignore', 'ignore', 'inherit'] });
  const exported = await watchedPage(browser.context);
  await exported.page.goto(pathToFileURL(html).href);
  await settled(exported.page);
  const exportStatus = await exported.page.textContent('#status');
  check('export, first sight: the last day with data, said so', exportStatus.includes('the last day with data'), exportStatus);
  check('export, first sight: the firewall panel is closed', !(await exported.page.isVisible('#firewall')));
  check('export: the store\'s groups are inlined and fold the hosts', (await exported.page.evaluate(() => window.connscope.app.view.nodes.some((n) => n.id === 'hgroup:store:workstations'))));
  await readable(exported.page, 'export, first sight', 'export-first.png');

  // 2,000 nodes and 10,000 edges in the same page.
  const big = join(dir, 'big.html');
  const synthetic = syntheticGraph({ nodes: 2000, edges: 10000 });
  writeFileSync(big, withGraph(readFileSync(html, 'utf8'), synthetic));
  // An export draws its inside nodes and the outside addresses its edges reach.
  const reached = new Set(synthetic.edges.flatMap((e) => [e.source, e.target]));
  const expected = synthetic.nodes.filter((n) => n.kind !== 'external' || reached.has(n.id)).length;
  await exported.page.goto(`${pathToFileURL(big).href}#range=all`);
  await settled(exported.page);
  // Grouped, the picture is small: every node must be named.
  const groupedNodes = await exported.page.evaluate(() => Number(document.body.dataset.nodes));
  await readable(exported.page, '2,000/10,000, grouped', 'big-grouped.png', { minLabels: groupedNodes });
  await exported.page.goto(`${pathToFileURL(big).href}#range=all&group=none&open=group:internet`);
  await exported.page.reload();
  await settled(exported.page);
  const all = await readable(exported.page, '2,000/10,000, every node', 'big-open.png');
  check(`2,000/10,000, every node: all ${expected} nodes with edges drawn on a canvas`, all.nodes === expected && all.renderer === 'canvas', JSON.stringify(all));
  check('export: no dialog opened, no injected code ran, no errors', exported.alarms.length === 0 && exported.problems.length === 0, [...exported.alarms, ...exported.problems].join('; '));
} catch (err) {
  failed++;
  console.log(`FAILED - ${err.stack}`);
} finally {
  if (browser) await browser.close();
  collector.kill('SIGTERM');
  rmSync(dir, { recursive: true, force: true });
}
console.log(`${passed} passed, ${failed} failed`);
process.exitCode = failed ? 1 : 0;
