// Benchmark: the map in real headless Chromium, from page load to a settled
// layout, and frame times while panning and zooming (requestAnimationFrame
// timestamps), on
//   - the generated office store (`Office::map_store`, exported with
//     `connscope map export`): the first sight (its last day, the store's
//     groups) and all 16 days as the map before showed them (hosts one by
//     one, the outside by network);
//   - a synthetic graph of 2,000 nodes and 10,000 edges in the same page:
//     grouped (the default) and with every node shown.
// Each case is measured for this tree and, in the same run, for an older
// commit's map (`--old REV`, default 8f64b1a, where this work started: built
// from that commit's web/src with the same node_modules), on the same data. The
// peer of the layout, d3-force with its defaults on every node, is timed in
// the same page. Prints a table; writes screenshots to --shots (docs/img).
//
//   node web/tests/bench-map.mjs --bin target/debug/connscope --office-db office.db \
//       [--old REV] [--runs 3] [--shots docs/img] [--nodes 2000 --edges 10000]
//
// The office store: `cargo run -p connscope-firewall --features test-support
// --example map_office -- office.db`.
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { build } from 'esbuild';
import { labelStats, launch, settled, syntheticGraph, watchedPage, withGraph } from './browser.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const web = join(here, '..');
const arg = (name, fallback) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : fallback;
};
const bin = resolve(arg('bin', 'target/debug/connscope'));
const officeDb = resolve(arg('office-db', 'office.db'));
const old = arg('old', '8f64b1a');
const runs = Number(arg('runs', 3));
const shots = resolve(arg('shots', join(web, '../docs/img')));
const nodes = Number(arg('nodes', 2000));
const edges = Number(arg('edges', 10000));
mkdirSync(shots, { recursive: true });
const work = mkdtempSync(join(tmpdir(), 'connscope-bench-map-'));

/** The data document inlined in an export page. */
function dataOf(html) {
  const open = '<script type="application/json" id="connscope-data">';
  const start = html.indexOf(open) + open.length;
  return JSON.parse(html.slice(start, html.indexOf('</script>', start)));
}

/** An export-form page of `doc` from a bundle folder (index.html, app.js, app.css), as bench pages always were. */
function assemble(dist, doc) {
  const html = readFileSync(join(dist, 'index.html'), 'utf8');
  const data = JSON.stringify(doc).replace(/</g, '\\u003c').replace(/>/g, '\\u003e').replace(/&/g, '\\u0026');
  return html
    .replace(/<meta http-equiv="Content-Security-Policy"[^>]*>/, '')
    .replace('<link rel="stylesheet" href="app.css">', () => `<style>${readFileSync(join(dist, 'app.css'), 'utf8')}</style>`)
    .replace('<script src="app.js"></script>', () => `<script type="application/json" id="connscope-data">${data}</script><script>${readFileSync(join(dist, 'app.js'), 'utf8')}</script>`);
}

/** Builds `rev`'s map bundle (its web/src and build.mjs, today's node_modules). */
function buildOld(rev) {
  const root = join(work, 'old');
  mkdirSync(root);
  const tar = execFileSync('git', ['archive', rev, 'web/src', 'web/build.mjs'], { cwd: join(web, '..'), maxBuffer: 64 << 20 });
  execFileSync('tar', ['-x', '-C', root], { input: tar });
  symlinkSync(join(web, 'node_modules'), join(root, 'web/node_modules'));
  execFileSync('node', [join(root, 'web/build.mjs'), join(root, 'dist')], { stdio: 'inherit' });
  return join(root, 'dist');
}

/** Loads `url`, waits for the settled layout, optionally pans and zooms; returns the figures. */
async function measure(context, url, { frames = false, shot = null } = {}) {
  const { page, problems } = await watchedPage(context);
  await page.goto(url);
  await settled(page);
  const info = await page.evaluate(() => ({
    layoutMs: window.connscope.layoutMs,
    // The last draw is done: two frames after settling.
    loadMs: performance.now(),
    nodes: Number(document.body.dataset.nodes),
    edges: Number(document.body.dataset.edges),
    renderer: document.getElementById('map').dataset.renderer,
  }));
  const labels = await labelStats(page);
  // The view as loaded, before any gesture.
  if (shot) await page.screenshot({ path: join(shots, shot) });
  let frameStats = null;
  if (frames) {
    await page.evaluate(() => {
      window.frameTimes = [];
      let last = 0;
      const loop = (t) => {
        if (last) window.frameTimes.push(t - last);
        last = t;
        if (!window.stopFrames) requestAnimationFrame(loop);
      };
      requestAnimationFrame(loop);
    });
    const box = await page.locator('#map').boundingBox();
    // Press on empty space (a corner) so the gesture pans rather than drags a node.
    await page.mouse.move(box.x + 5, box.y + 5);
    await page.mouse.down();
    for (let i = 0; i < 90; i++) await page.mouse.move(box.x + 5 + 4 * i, box.y + 5 + 2 * i);
    await page.mouse.up();
    await page.mouse.move(box.x + box.width / 2, box.y + box.height / 2);
    for (let i = 0; i < 40; i++) await page.mouse.wheel(0, -60);
    for (let i = 0; i < 40; i++) await page.mouse.wheel(0, 60);
    const times = await page.evaluate(() => {
      window.stopFrames = true;
      return window.frameTimes;
    });
    const sorted = [...times].sort((a, b) => a - b);
    const mean = times.reduce((s, x) => s + x, 0) / times.length;
    frameStats = { frames: times.length, mean: mean.toFixed(1), p95: sorted[Math.floor(0.95 * sorted.length)].toFixed(1), fps: (1000 / mean).toFixed(0) };
  }
  if (problems.length) throw new Error(`${url}: ${problems.join('; ')}`);
  await page.close();
  return { ...info, labels, frameStats };
}

/** The d3-force peer: its defaults, every node in the simulation, ticked flat out, in the page at `url`. */
async function peerLayout(context, url) {
  const { page } = await watchedPage(context);
  await page.goto(url);
  const baseline = await build({
    stdin: {
      contents: `import { forceSimulation, forceLink, forceManyBody, forceCenter } from 'd3';
        window.baselineLayout = (doc) => {
          const nodes = doc.nodes.map((n) => ({ id: n.id }));
          const links = doc.edges.map((e) => ({ source: e.source, target: e.target }));
          const t = performance.now();
          const sim = forceSimulation(nodes).force('link', forceLink(links).id((d) => d.id)).force('charge', forceManyBody()).force('center', forceCenter()).stop();
          while (sim.alpha() >= sim.alphaMin()) sim.tick();
          return performance.now() - t;
        };`,
      resolveDir: web,
    },
    bundle: true, write: false, format: 'iife', logLevel: 'warning',
  });
  await page.addScriptTag({ content: baseline.outputFiles[0].text });
  const ms = await page.evaluate(() => window.baselineLayout(JSON.parse(document.getElementById('connscope-data').textContent)));
  await page.close();
  return ms;
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

const { context, close } = await launch();
try {
  const officeHtml = join(work, 'office.html');
  execFileSync(bin, ['map', 'export', '--db', officeDb, '-o', officeHtml], { stdio: ['ignore', 'ignore', 'inherit'] });
  const office = readFileSync(officeHtml, 'utf8');
  const officeDoc = dataOf(office);
  const synthetic = syntheticGraph({ nodes, edges });
  const page = (name, html) => {
    const file = join(work, name);
    writeFileSync(file, html);
    return pathToFileURL(file).href;
  };
  const oldDist = buildOld(old);
  const pages = {
    office: page('office-new.html', office),
    officeOld: page('office-old.html', assemble(oldDist, officeDoc)),
    big: page('big-new.html', withGraph(office, synthetic)),
    bigOld: page('big-old.html', assemble(oldDist, synthetic)),
  };
  const cases = [
    { name: 'office, first sight (its last day, store groups)', url: pages.office, shot: 'map-office-first.png' },
    { name: 'office, all 16 days, hosts one by one, outside by network', url: `${pages.office}#range=all&group=none&open=group:internet`, shot: 'map-office-open.png', frames: true },
    { name: `office, all 16 days (${old}, the map before)`, url: pages.officeOld, frames: true },
    { name: `${nodes}/${edges}, grouped (default)`, url: `${pages.big}#range=all`, shot: 'map-2000-10000-grouped.png' },
    { name: `${nodes}/${edges}, every node`, url: `${pages.big}#range=all&group=none&open=group:internet`, shot: 'map-2000-10000.png', frames: true },
    { name: `${nodes}/${edges} (${old}, the map before)`, url: pages.bigOld, frames: true },
  ];
  const results = cases.map(() => []);
  for (let r = 0; r < runs; r++) {
    for (const [i, c] of cases.entries()) results[i].push(await measure(context, c.url, { frames: c.frames, shot: r === runs - 1 ? c.shot : null }));
  }
  // In the pages without a CSP (the assembled ones), which inline the same data.
  const peerOffice = await peerLayout(context, pages.officeOld);
  const peerBig = await peerLayout(context, pages.bigOld);
  console.log(`Runs: ${runs}; medians (all runs: layout / load to settled in ms).`);
  console.log('| case | nodes | edges | renderer | layout settled | page load to settled | labels (overlapping) | frames | mean frame | p95 | fps |');
  console.log('|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|');
  for (const [i, c] of cases.entries()) {
    const rs = results[i];
    const m = rs.find((x) => x.loadMs === median(rs.map((y) => y.loadMs)));
    const f = m.frameStats;
    console.log(`| ${c.name} | ${m.nodes} | ${m.edges} | ${m.renderer} | ${(median(rs.map((x) => x.layoutMs)) / 1000).toFixed(2)} s | ${(m.loadMs / 1000).toFixed(2)} s | ${m.labels.visible} (${m.labels.overlaps}) | ${f?.frames ?? '-'} | ${f ? `${f.mean} ms` : '-'} | ${f ? `${f.p95} ms` : '-'} | ${f?.fps ?? '-'} |`);
    console.log(`<!-- ${c.name}: ${rs.map((x) => `${Math.round(x.layoutMs)}/${Math.round(x.loadMs)}`).join(', ')} -->`);
  }
  console.log(`| peer: d3-force defaults, all ${officeDoc.nodes.length} office nodes | ${officeDoc.nodes.length} | ${officeDoc.edges.length} | - | ${(peerOffice / 1000).toFixed(2)} s | - | - | - | - | - | - |`);
  console.log(`| peer: d3-force defaults, all ${nodes} nodes | ${nodes} | ${edges} | - | ${(peerBig / 1000).toFixed(2)} s | - | - | - | - | - | - |`);
} finally {
  await close();
  rmSync(work, { recursive: true, force: true });
}
