// Benchmark: the map with a synthetic graph of 2,000 nodes and 10,000 edges
// (by default) in real headless Chromium. Measures the time until the layout
// has settled and frame times during scripted pan and zoom, from
// requestAnimationFrame timestamps. Prints a table; writes a screenshot.
//
//   node web/tests/bench-map.mjs [--nodes N] [--edges M] [--out DIR] [--html FILE]
//
// The page is the static export form (the same code, data inlined), written
// by `connscope map export` when --html is given, else assembled here from
// web/dist (scripts/build-web) with the same escaping.
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { build } from 'esbuild';
import { launch, syntheticGraph, watchedPage } from './browser.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const arg = (name, fallback) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : fallback;
};
const nodes = Number(arg('nodes', 2000));
const edges = Number(arg('edges', 10000));
const out = resolve(arg('out', join(here, '../../target/map-bench')));
mkdirSync(out, { recursive: true });

function assemble(graph) {
  const dist = join(here, '../dist');
  const html = readFileSync(join(dist, 'index.html'), 'utf8');
  const data = JSON.stringify(graph).replace(/</g, '\\u003c').replace(/>/g, '\\u003e').replace(/&/g, '\\u0026');
  return html
    .replace(/<meta http-equiv="Content-Security-Policy"[^>]*>/, '')
    .replace('<link rel="stylesheet" href="app.css">', () => `<style>${readFileSync(join(dist, 'app.css'), 'utf8')}</style>`)
    .replace('<script src="app.js"></script>', () => `<script type="application/json" id="connscope-data">${data}</script><script>${readFileSync(join(dist, 'app.js'), 'utf8')}</script>`);
}

let file = arg('html');
if (!file) {
  file = join(out, `synthetic-${nodes}-${edges}.html`);
  writeFileSync(file, assemble(syntheticGraph({ nodes, edges })));
}

const { context, close } = await launch();
try {
  const { page, problems } = await watchedPage(context);
  const t0 = Date.now();
  await page.goto(pathToFileURL(resolve(file)).href);
  await page.waitForFunction(() => window.connscope?.settled, null, { timeout: 60e3, polling: 50 });
  const wall = Date.now() - t0;
  const info = await page.evaluate(() => ({
    layoutMs: window.connscope.layoutMs,
    sinceNavigation: performance.now(),
    renderer: document.getElementById('map').dataset.renderer,
    nodes: Number(document.body.dataset.nodes),
    edges: Number(document.body.dataset.edges),
  }));

  const drawMs = await page.evaluate(() => {
    const times = [];
    for (let i = 0; i < 15; i++) {
      const t = performance.now();
      window.connscope.map.draw();
      times.push(performance.now() - t);
    }
    return times.sort((a, b) => a - b)[7];
  });
  // Frame times while panning and zooming with the mouse, as a user would.
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
  const cx = box.x + box.width / 2;
  const cy = box.y + box.height / 2;
  // Press on empty space (a corner) so the gesture pans rather than drags a node.
  await page.mouse.move(box.x + 5, box.y + 5);
  await page.mouse.down();
  for (let i = 0; i < 90; i++) await page.mouse.move(box.x + 5 + 4 * i, box.y + 5 + 2 * i);
  await page.mouse.up();
  await page.mouse.move(cx, cy);
  for (let i = 0; i < 40; i++) await page.mouse.wheel(0, -60);
  for (let i = 0; i < 40; i++) await page.mouse.wheel(0, 60);
  const frames = await page.evaluate(() => {
    window.stopFrames = true;
    return window.frameTimes;
  });
  // Peer, same page, same data: d3-force as most D3 maps use it (defaults,
  // every node in the simulation, 300 ticks), ticked flat out.
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
      resolveDir: join(here, '..'),
    },
    bundle: true, write: false, format: 'iife', logLevel: 'warning',
  });
  await page.addScriptTag({ content: baseline.outputFiles[0].text });
  const baselineMs = await page.evaluate(() => window.baselineLayout(JSON.parse(document.getElementById('connscope-data').textContent)));
  await page.waitForTimeout(600); // the redraw after the gesture
  await page.screenshot({ path: join(out, `map-${nodes}-${edges}.png`) });
  const sorted = [...frames].sort((a, b) => a - b);
  const pct = (p) => sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))];
  const mean = frames.reduce((s, x) => s + x, 0) / frames.length;
  const result = {
    nodes: info.nodes, edges: info.edges, renderer: info.renderer,
    layout_ms: Math.round(info.layoutMs), load_to_settled_ms: Math.round(info.sinceNavigation), wall_ms: wall,
    frames: frames.length, frame_mean_ms: +mean.toFixed(1), frame_p50_ms: +pct(0.5).toFixed(1), frame_p95_ms: +pct(0.95).toFixed(1),
    frame_max_ms: +sorted.at(-1).toFixed(1), fps: +(1000 / mean).toFixed(1), draw_ms: +drawMs.toFixed(1), peer_layout_ms: Math.round(baselineMs),
  };
  console.log('| nodes | edges | renderer | layout settled (ms) | page load to settled (ms) | frames | mean frame (ms) | p50 | p95 | max | fps |');
  console.log('|---|---|---|---|---|---|---|---|---|---|---|');
  console.log(`| ${result.nodes} | ${result.edges} | ${result.renderer} | ${result.layout_ms} | ${result.load_to_settled_ms} | ${result.frames} | ${result.frame_mean_ms} | ${result.frame_p50_ms} | ${result.frame_p95_ms} | ${result.frame_max_ms} | ${result.fps} |`);
  console.log(`full redraw (median of 15): ${result.draw_ms} ms`);
  console.log(`peer: d3-force defaults on all nodes, 300 ticks: ${result.peer_layout_ms} ms (ratio ${(result.peer_layout_ms / result.layout_ms).toFixed(1)}x)`);
  console.log(JSON.stringify(result));
  if (problems.length) {
    console.error(problems.join('\n'));
    process.exitCode = 1;
  }
} finally {
  await close();
}
