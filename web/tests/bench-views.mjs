// Benchmark: the matrix and table views with a synthetic graph of 2,000
// nodes and 10,000 edges (by default) in real headless Chromium, in the
// static-export form of the page built from this checkout. Measures each
// view's render (from the graph already loaded), the table's sort, filter,
// scroll frames and CSV download, and, as the peer in the same page and run,
// the plain way: every row of the table in the DOM at once. Prints a table.
//
//   node web/tests/bench-views.mjs [--nodes N] [--edges M] [--services S] [--out DIR]
import { execFileSync } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { exportPage, launch, syntheticGraph, watchedPage } from './browser.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const arg = (name, fallback) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : fallback;
};
const nodes = Number(arg('nodes', 2000));
const edges = Number(arg('edges', 10000));
const out = resolve(arg('out', join(here, '../../target/views-bench')));
mkdirSync(out, { recursive: true });
const dist = join(out, 'dist');
execFileSync('node', [join(here, '../build.mjs'), dist], { stdio: 'inherit' });
const file = join(out, `views-${nodes}-${edges}.html`);
// A fleet offers many services: spread the synthetic services over `--services`
// ports (ids are opaque, so only ports and names change), for a wide matrix.
const services = Number(arg('services', 150));
const graph = syntheticGraph({ nodes, edges });
const portOf = new Map();
for (const n of graph.nodes) if (n.kind === 'service') portOf.set(n.id, (n.port = 1000 + (portOf.size % services)));
for (const e of graph.edges) if (portOf.has(e.target)) e.port = portOf.get(e.target);
writeFileSync(file, exportPage(graph, dist));

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const { context, close } = await launch();
try {
  const { page, problems } = await watchedPage(context);
  await page.goto(`${pathToFileURL(file).href}#range=all`);
  await page.waitForFunction(() => window.connscope?.settled, null, { timeout: 120e3, polling: 50 });
  const frame = () => page.evaluate(() => new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done))));
  // Wall time of a click until two frames later, and the view's own render time.
  const timed = async (action, read) => {
    const t0 = await page.evaluate(() => performance.now());
    await action();
    await frame();
    const t1 = await page.evaluate(() => performance.now());
    return { wall: t1 - t0, render: await page.evaluate(read) };
  };
  const runs = (n, f) => (async () => { const r = []; for (let i = 0; i < n; i++) r.push(await f(i)); return r; })();
  const tableMs = () => window.connscope.views.table.renderMs;
  const matrixMs = () => window.connscope.views.matrix.renderMs;

  const tableOpen = await runs(5, async () => {
    const r = await timed(() => page.click('#view-switch button[data-show="table"]'), tableMs);
    await page.click('#view-switch button[data-show="map"]');
    await frame();
    return r;
  });
  await page.click('#view-switch button[data-show="table"]');
  await frame();
  const info = await page.evaluate(() => ({ rows: window.connscope.views.table.shown.length, dom: document.querySelectorAll('#table-view tbody tr[data-id]').length }));
  const sort = await runs(5, (i) => timed(() => page.click(`#table-view th[data-key="${['client', 'bytes', 'server', 'last_seen', 'connections'][i]}"]`), tableMs));
  const filter = await runs(5, (i) => timed(() => page.fill('#table-view input.table-filter', ['h1', 'h12', '443', 'curl', ''][i]), tableMs));
  // Scroll frames: the table scrolled by script, 120 px (a wheel notch) a frame.
  const scroll = await page.evaluate(() => new Promise((done) => {
    const box = document.querySelector('#table-view .table-scroll');
    const times = [];
    let last = 0;
    let i = 0;
    const step = (t) => {
      if (last) times.push(t - last);
      last = t;
      box.scrollTop = i * 120; // about one mouse wheel notch a frame
      if (++i < 200) requestAnimationFrame(step);
      else done(times);
    };
    requestAnimationFrame(step);
  }));
  const csv = await runs(3, async () => {
    const t0 = Date.now();
    const [download] = await Promise.all([page.waitForEvent('download'), page.click('#table-view button.table-csv')]);
    const path = join(out, 'edges.csv');
    await download.saveAs(path);
    const ms = Date.now() - t0;
    rmSync(path);
    return ms;
  });
  await page.screenshot({ path: join(out, `table-${nodes}-${edges}.png`) });
  // Peer: every row in the DOM at once, as a plain table would.
  const peer = await page.evaluate(() => {
    const rows = window.connscope.views.table.shown;
    const columns = window.connscope.views.table.columns;
    const times = [];
    for (let run = 0; run < 3; run++) {
      const t = performance.now();
      const table = document.createElement('table');
      for (const r of rows) {
        const tr = document.createElement('tr');
        for (const c of columns) {
          const td = document.createElement('td');
          td.textContent = String(r[c.key]);
          tr.append(td);
        }
        table.append(tr);
      }
      document.body.append(table);
      void table.offsetHeight; // layout
      times.push(performance.now() - t);
      table.remove();
    }
    return times;
  });

  const groups = await runs(5, async () => {
    const r = await timed(() => page.click('#view-switch button[data-show="matrix"]'), matrixMs);
    await page.click('#view-switch button[data-show="map"]');
    await frame();
    return r;
  });
  await page.click('#view-switch button[data-show="matrix"]');
  await frame();
  const groupsSize = await page.evaluate(() => [window.connscope.views.matrix.drawn.order.rows.length, document.querySelectorAll('#matrix-view thead th.col').length, document.querySelectorAll('#matrix-view tbody tr[data-row]').length]);
  const hosts = await runs(5, (i) => timed(() => page.selectOption('#matrix-view select[aria-label="rows"]', i % 2 ? 'groups' : 'hosts'), matrixMs));
  await page.selectOption('#matrix-view select[aria-label="rows"]', 'hosts');
  await frame();
  const hostsSize = await page.evaluate(() => [window.connscope.views.matrix.drawn.order.rows.length, document.querySelectorAll('#matrix-view thead th.col').length, document.querySelectorAll('#matrix-view tbody tr[data-row]').length]);
  await page.screenshot({ path: join(out, `matrix-${nodes}-${edges}.png`) });
  const hostRuns = hosts.filter((_, i) => i % 2 === 0);

  const ms = (x) => x.toFixed(1);
  const line = (what, list) => console.log(`| ${what} | ${ms(median(list.map((r) => r.render)))} | ${ms(median(list.map((r) => r.wall)))} |`);
  console.log(`${nodes} nodes, ${edges} edges: table of ${info.rows} rows (${info.dom} in the DOM); matrix ${groupsSize[0]} x ${groupsSize[1]} (groups), ${hostsSize[0]} x ${hostsSize[1]} (hosts, ${hostsSize[2]} rows in the DOM)`);
  console.log('| what (median of runs) | view render (ms) | click to drawn (ms) |');
  console.log('|---|---:|---:|');
  line('table: switch to it', tableOpen);
  line('table: sort by a column', sort);
  line('table: filter', filter);
  line('matrix: switch to it (groups)', groups);
  line('matrix: rows by host', hostRuns);
  console.log(`| table: scroll, mean frame (200 frames) | - | ${ms(scroll.reduce((s, x) => s + x, 0) / scroll.length)} |`);
  console.log(`| table: CSV of all rows, click to file | - | ${median(csv)} |`);
  console.log(`| peer: every row in the DOM at once | ${ms(median(peer))} | - |`);
  if (problems.length) {
    console.error(problems.join('\n'));
    process.exitCode = 1;
  }
} finally {
  await close();
  rmSync(dist, { recursive: true, force: true });
}
