// End-to-end test of the map's other views (matrix, table) and the backtest
// panel in real headless Chromium, against a real collector serving a real
// SQLite store (the generated office that crates/connscope/tests/
// map_views_browser.rs writes, with its groups stored and a kiosk whose
// process and user names are CSV formulas and markup).
//
// Checks: switching views keeps the filters and the range and fetches
// nothing; the matrix's totals are the graph's connections (asked of the API
// here, independently); matrix sort and cell details; the table's sort,
// filter and virtual rows; the downloaded CSV parsed back by Python's csv
// module is the rows shown, hostile cells intact and defused; the backtest
// panel's totals are `connscope firewall backtest --format json`'s on the
// same store and its blocked edges are coloured on the map and in the table;
// the file:// export has the views but no backtest. Screenshots go to --out.
//
//   node web/tests/views-e2e.mjs --bin target/debug/connscope --db office.db --out DIR
//
// Prints `N passed, N failed` and exits non-zero on any failure.
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { checks, https, launch, startCollector, watchedPage } from './browser.mjs';

const arg = (name, fallback) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : fallback;
};
const bin = resolve(arg('bin', 'target/debug/connscope'));
const db = resolve(arg('db', ''));
const out = resolve(arg('out', 'target/views-e2e'));
mkdirSync(out, { recursive: true });
const { check, same, summary } = checks();

// The office's days (crates/firewall/src/office.rs): day 1 is 2025-12-22.
const DAY1 = '2025-12-22T00:00:00Z';
const LEARN_TO = '2026-01-03T00:00:00Z'; // learn days 1-12
const UNTIL = '2026-01-07T00:00:00Z'; // test days 13-16
const RANGE = `from=${DAY1}&to=${UNTIL}`;

const sum = (list, f = (x) => x) => list.reduce((n, x) => n + f(x), 0);

async function settled(page) {
  await page.waitForFunction(() => window.connscope?.settled && window.connscope.loads >= 1, null, { timeout: 60e3, polling: 50 });
}

/** Parses CSV text with Python's csv module (RFC 4180 dialect). */
function parseCsv(file) {
  const py = 'import csv, json, sys\nwith open(sys.argv[1], newline="", encoding="utf-8") as f:\n    print(json.dumps(list(csv.reader(f, strict=True))))';
  return JSON.parse(execFileSync('python3', ['-c', py, file], { encoding: 'utf8' }));
}

/** What a CSV cell must read for a value: numbers as they are, a formula-like text defused. */
const expectedCell = (v) => (typeof v === 'number' ? String(v) : /^[=+\-@\t\r]/.test(String(v)) ? `'${v}` : String(v));

const dir = mkdtempSync(join(tmpdir(), 'connscope-views-e2e-'));
let collector;
let browser;
try {
  collector = await startCollector(bin, db);
  const { port } = collector;
  const base = `https://127.0.0.1:${port}/`;
  const graphDoc = JSON.parse((await https(port, 'GET', `/api/v1/graph?from=${DAY1}&to=${UNTIL}`)).text);
  const graphConnections = sum(graphDoc.edges, (e) => e.connections);

  browser = await launch({ ignoreHTTPSErrors: true });
  const { context } = browser;
  const { page, alarms, problems } = await watchedPage(context);
  const graphFetches = [];
  page.on('request', (r) => r.url().includes('/api/v1/graph') && graphFetches.push(r.url()));
  await page.goto(`${base}#${RANGE}`);
  await settled(page);

  // The matrix, one click away, reads the graph the map fetched.
  await page.click('#view-switch button[data-show="matrix"]');
  await page.waitForSelector('#matrix-view:not([hidden]) table.matrix', { timeout: 10e3 });
  await page.waitForFunction(() => document.getElementById('matrix-view').dataset.groups === 'store', null, { timeout: 10e3 });
  check('the active view is in the URL', page.url().includes('show=matrix'), page.url());
  const matrix = () => page.evaluate(() => {
    const num = (e) => Number(e.dataset.count);
    const rows = [...document.querySelectorAll('#matrix-view tbody tr[data-row]')];
    return {
      rows: rows.map((r) => r.dataset.row),
      rowTotals: rows.map((r) => num(r.querySelector('td.total'))),
      rowCells: rows.map((r) => [...r.querySelectorAll('td.cell')].reduce((n, td) => n + num(td), 0)),
      cols: [...document.querySelectorAll('#matrix-view thead th.col')].map((th) => th.dataset.col),
      colTotals: [...document.querySelectorAll('#matrix-view tfoot td.total:not(.grand)')].map(num),
      grand: num(document.querySelector('#matrix-view tfoot td.grand')),
      view: window.connscope.app.view.edges.reduce((n, e) => n + e.count, 0),
    };
  });
  const m = await matrix();
  // The map's group level does not draw the edges inside a group; the matrix counts every edge.
  check('matrix: the grand total is the graph\'s connections (asked of the API)', m.grand === graphConnections && m.view <= graphConnections, JSON.stringify({ grand: m.grand, api: graphConnections, map: m.view }));
  check('matrix: row totals and column totals add up to it, each row\'s cells to its total',
    sum(m.rowTotals) === m.grand && sum(m.colTotals) === m.grand && m.rowCells.every((n, i) => n === m.rowTotals[i]), JSON.stringify(m));
  check('matrix: rows are the store\'s groups (and the kiosk outside them), largest first',
    ['workstations', 'admins', '(no group)'].every((g) => m.rows.includes(g)) && m.rowTotals.every((n, i) => i === 0 || m.rowTotals[i - 1] >= n), JSON.stringify(m.rows));
  check('matrix: columns are services with their names, largest first', m.cols.includes('445/tcp') && m.colTotals.every((n, i) => i === 0 || m.colTotals[i - 1] >= n)
    && (await page.textContent('#matrix-view th.col[data-col="445/tcp"]')).includes('microsoft-ds'), JSON.stringify(m.cols));
  await page.selectOption('#matrix-view select[aria-label="sort rows"]', 'name');
  const byName = await matrix();
  same('matrix: rows sorted by name on request', byName.rows, [...m.rows].sort((a, b) => a.localeCompare(b, 'en', { numeric: true })));
  await page.click('#matrix-view th.col[data-col="445/tcp"]');
  const byCol = await page.evaluate(() => [...document.querySelectorAll('#matrix-view tbody tr[data-row]')].map((r) => Number(r.querySelector('td[data-col="445/tcp"]')?.dataset.count ?? 0)));
  check('matrix: a column header sorts the rows by that service', byCol.every((n, i) => i === 0 || byCol[i - 1] >= n) && byCol[0] > 0, JSON.stringify(byCol));
  await page.click('#matrix-view tr[data-row="workstations"] td.cell[data-col="445/tcp"]');
  await page.waitForSelector('#matrix-view .cell-panel:not([hidden])', { timeout: 5e3 });
  const cell = await page.evaluate(() => ({
    count: Number(document.querySelector('#matrix-view tr[data-row="workstations"] td.cell[data-col="445/tcp"]').dataset.count),
    edges: [...document.querySelectorAll('#matrix-view .cell-panel tr[data-edge]')].map((tr) => tr.dataset.edge),
    listed: [...document.querySelectorAll('#matrix-view .cell-panel tr[data-edge] td.num')].reduce((n, td) => n + Number(td.textContent.replace(/,/g, '')), 0),
    command: document.querySelector('#matrix-view .cell-panel pre.command').textContent,
  }));
  const expectedCell445 = graphDoc.edges.filter((e) => e.port === 445 && /^host:ws-/.test(e.source));
  check('matrix: a cell lists the edges behind it, adding up to it', cell.listed === cell.count && cell.edges.length === expectedCell445.length
    && cell.count === sum(expectedCell445, (e) => e.connections), JSON.stringify({ ...cell, api: expectedCell445.length }));
  same('matrix: and the report line that shows them in a terminal', cell.command,
    `connscope report edges --db DB --by group --port 445 --protocol tcp --from ${DAY1} --to ${UNTIL}`);
  await page.selectOption('#matrix-view select[aria-label="rows"]', 'hosts');
  const hosts = await matrix();
  const clients = new Set(graphDoc.edges.map((e) => e.source));
  check('matrix: rows by host, one per client, same total', hosts.rows.length === clients.size && hosts.grand === graphConnections && hosts.rows.includes('ws-01'), `${hosts.rows.length} rows, ${clients.size} clients`);
  await page.screenshot({ path: join(out, 'matrix.png') });

  // Filters and range are shared: a filter set on the matrix holds on the map and the table.
  await page.fill('#f-host', 'ws-0');
  await page.waitForFunction(() => document.querySelectorAll('#matrix-view tbody tr[data-row]').length > 0 && window.connscope.app.state.host === 'ws-0');
  const filtered = await matrix();
  check('matrix: a filter narrows it like the map', filtered.grand === filtered.view && filtered.grand < graphConnections && filtered.grand > 0, JSON.stringify({ grand: filtered.grand, map: filtered.view }));
  await page.click('#view-switch button[data-show="table"]');
  await page.waitForSelector('#table-view:not([hidden]) tbody tr[data-id]', { timeout: 10e3 });
  const tableState = await page.evaluate(() => ({
    host: document.getElementById('f-host').value,
    from: document.getElementById('from').value,
    to: document.getElementById('to').value,
    rows: window.connscope.views.table.rows.length,
    edges: window.connscope.app.graph.edges.filter((e) => window.connscope.app.view.edges.some((v) => v.parts.includes(e.id))).length,
    connections: window.connscope.views.table.shown.reduce((n, r) => n + r.connections, 0),
  }));
  check('table: same filter, same range, the edges the map shows', tableState.host === 'ws-0' && tableState.from.startsWith('2025-12-22') && tableState.to.startsWith('2026-01-07')
    && tableState.rows === tableState.edges && tableState.connections === filtered.grand, JSON.stringify(tableState));
  await page.click('#view-switch button[data-show="map"]');
  await page.waitForFunction(() => document.getElementById('table-view').hidden && document.body.dataset.show === 'map');
  check('back on the map the filter still holds', (await page.evaluate(() => window.connscope.app.view.edges.reduce((n, e) => n + e.count, 0))) === filtered.grand);
  same('switching views fetched no graph (one fetch for the range)', graphFetches.length, 1);
  await page.fill('#f-host', '');

  // The table: sort, filter, virtual rows.
  await page.click('#view-switch button[data-show="table"]');
  await page.waitForFunction(() => window.connscope.views.table.rows.length === window.connscope.app.graph.edges.length);
  const table = () => page.evaluate(() => {
    const t = window.connscope.views.table;
    return { shown: t.shown.map((r) => ({ ...r })), columns: t.columns.map((c) => c.key), dom: document.querySelectorAll('#table-view tbody tr[data-id]').length, count: t.count.textContent };
  });
  let t = await table();
  check('table: one row per edge of the graph, most connections first', t.shown.length === graphDoc.edges.length && t.shown.every((r, i) => i === 0 || t.shown[i - 1].connections >= r.connections), `${t.shown.length} rows`);
  same('table: the report\'s columns', t.columns, ['client', 'server', 'port', 'service', 'protocol', 'connections', 'failures', 'bytes', 'first_seen', 'last_seen', 'processes', 'users']);
  check('table: only the rows in the window are in the page', t.dom < 120 && t.dom > 10, `${t.dom} rows in the DOM of ${t.shown.length}`);
  await page.evaluate(() => { document.querySelector('#table-view .table-scroll').scrollTop = 1e9; });
  await page.waitForFunction((n) => document.querySelector(`#table-view tbody tr[data-index="${n - 1}"]`), t.shown.length, { timeout: 5e3 });
  check('table: scrolled to the end, the last row is drawn', true);
  await page.click('#table-view th[data-key="client"]');
  t = await table();
  check('table: a header sorts by its column (client, A first) and says so',
    t.shown.every((r, i) => i === 0 || t.shown[i - 1].client.localeCompare(r.client, 'en', { numeric: true }) <= 0)
    && (await page.getAttribute('#table-view th[data-key="client"]', 'aria-sort')) === 'ascending' && page.url().includes('tsort=client'), page.url());
  await page.click('#table-view th[data-key="client"]');
  t = await table();
  check('table: a second click turns it round', t.shown[0].client.localeCompare(t.shown[t.shown.length - 1].client) >= 0);
  await page.fill('#table-view input.table-filter', 'kiosk');
  await page.waitForFunction(() => window.connscope.views.table.shown.length === 3);
  t = await table();
  check('table: the filter box keeps the matching rows', t.shown.every((r) => r.client === 'kiosk-01') && t.count.startsWith('3 of'), t.count);
  const hostile = t.shown.map((r) => r.processes);
  check('table: hostile names show as text', (await page.textContent('#table-view tbody')).includes('=HYPERLINK(') && (await page.evaluate(() => document.querySelectorAll('#table-view img').length)) === 0);

  // The CSV is what is shown, parsed back by Python.
  const saved = async (button, name) => {
    const [download] = await Promise.all([page.waitForEvent('download', { timeout: 15e3 }), page.click(button)]);
    const file = join(dir, name);
    await download.saveAs(file);
    return file;
  };
  let csv = parseCsv(await saved('#table-view button.table-csv', 'kiosk.csv'));
  same('CSV: a header and the rows shown, in order, every cell as shown (formulas defused)', csv, [
    ['client', 'server', 'port', 'service', 'protocol', 'connections', 'failures', 'bytes', 'first seen', 'last seen', 'processes', 'users'],
    ...t.shown.map((r) => t.columns.map((c) => expectedCell(r[c]))),
  ]);
  const cells = csv.slice(1).flatMap((row) => row);
  check('CSV: each hostile name is one cell, intact behind the defusing quote, and no cell starts like a formula',
    csv.slice(1).every((row) => row.length === 12) && cells.every((c) => !/^[=+\-@]/.test(c))
    && hostile.every((h) => cells.includes(`'${h}`) || cells.includes(h)) && cells.some((c) => c.includes(',"\n=1+1')), JSON.stringify(csv.slice(1)));
  await page.dblclick('#table-view tbody tr[data-id]');
  await page.waitForSelector('#details:not([hidden])', { timeout: 10e3 });
  const onMap = await page.evaluate(() => {
    const sel = window.connscope.app.state.sel;
    const edge = window.connscope.app.view.edges.find((e) => e.id === sel);
    return { show: document.body.dataset.show, title: document.querySelector('#details h2').textContent, sel, parts: edge ? edge.parts ?? [edge.id] : [] };
  });
  // The row's edge, or the folded edge of the map's group level that holds it.
  check('table: a double-click shows the row\'s edge on the map with its details', onMap.show === 'map' && onMap.title.startsWith('kiosk-01 → ') && t.shown.some((r) => onMap.parts.includes(r.id)), JSON.stringify(onMap));
  // A selected edge is drawn as selected, whatever else it is: let it go.
  await page.click('#details button.close');
  await page.click('#view-switch button[data-show="table"]');
  await page.waitForSelector('#table-view:not([hidden])');
  await page.fill('#table-view input.table-filter', '');
  await page.waitForFunction((n) => window.connscope.views.table.shown.length === n, graphDoc.edges.length);
  t = await table();
  csv = parseCsv(await saved('#table-view button.table-csv', 'all.csv'));
  check('CSV: all rows of the table, though only a window of them is drawn', csv.length === t.shown.length + 1 && csv[csv.length - 1][0] === expectedCell(t.shown[t.shown.length - 1].client), `${csv.length - 1} rows of ${t.shown.length}`);
  await page.screenshot({ path: join(out, 'table.png') });

  // The backtest panel against the CLI on the same store.
  const cli = spawnSync(bin, ['firewall', 'backtest', '--db', db, '--learn-from', DAY1, '--learn-to', LEARN_TO, '--until', UNTIL, '--window', '7d', '--format', 'json'], { encoding: 'utf8' });
  const report = JSON.parse(cli.stdout);
  await page.click('#view-switch button[data-show="map"]');
  check('the backtest panel is closed until asked for', await page.evaluate(() => document.getElementById('backtest').hidden && getComputedStyle(document.getElementById('backtest')).display === 'none'));
  await page.click('#bt-toggle');
  await page.waitForSelector('#backtest:not([hidden])');
  await page.evaluate(([from, to, until]) => {
    const local = (iso) => { const ms = Date.parse(iso); return new Date(ms - new Date(ms).getTimezoneOffset() * 60e3).toISOString().slice(0, 19); };
    document.getElementById('bt-learn-from').value = local(from);
    document.getElementById('bt-learn-to').value = local(to);
    document.getElementById('bt-until').value = local(until);
  }, [DAY1, LEARN_TO, UNTIL]);
  await page.fill('#bt-window', '7d');
  await page.click('#bt-run');
  await page.waitForSelector('#bt-totals tr[data-planner]', { timeout: 120e3 });
  const panel = await page.evaluate(() => [...document.querySelectorAll('#bt-totals tr[data-planner]')].map((tr) => Object.fromEntries([...tr.querySelectorAll('td')].map((td) => [td.dataset.key, td.dataset.value]))));
  same('backtest: per planner, the panel\'s totals and rolling windows\' stability figure are the CLI\'s (connscope firewall backtest --window 7d --format json)', panel, report.planners.map((p) => ({
    planner: p.planner, tested_connections: String(p.tested_connections), blocked_connections: String(p.blocked_connections), blocked_edges: String(p.blocked_edges),
    not_seen: `${p.not_seen_connections.toLocaleString('en-US')} on ${p.not_seen_edges.toLocaleString('en-US')} edges`,
    rules: String(p.surface.rules), ports: String(p.surface.ports), peers: String(p.surface.peers), address_space: String(p.surface.address_space),
    new_edges_per_week: report.rolling.find((r) => r.planner === p.planner).new_edges_per_week.toFixed(1),
  })));
  await page.selectOption('#bt-planner', 'exact');
  const exact = report.planners.find((p) => p.planner === 'exact');
  const perHost = await page.evaluate(() => [...document.querySelectorAll('#bt-hosts tr[data-host]')].map((tr) => [tr.dataset.host, ...[...tr.querySelectorAll('td.num')].slice(0, 3).map((td) => Number(td.textContent.replace(/,/g, '')))]));
  same('backtest: per host for the planner chosen, as the CLI', perHost.sort(), exact.hosts.map((h) => [h.host, h.tested_connections, h.blocked_connections, h.blocked.length]).sort());
  const blockedIds = new Set(exact.hosts.flatMap((h) => h.blocked.map((b) => b.edge)).filter(Boolean));
  check('backtest: the collector names every blocked edge with its graph id', exact.hosts.every((h) => h.blocked.every((b) => typeof b.edge === 'string')) && blockedIds.size > 0, String(blockedIds.size));
  await page.click('#bt-show-tested');
  await page.waitForFunction((n) => window.connscope.loads >= n && window.connscope.settled && document.getElementById('from').value.startsWith('2026-01-03'), 2, { timeout: 30e3, polling: 100 });
  await page.evaluate(() => new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done))));
  const coloured = await page.evaluate(() => {
    const app = window.connscope.app;
    return {
      red: [...document.querySelectorAll('#map path.edge.blocked, #map path.edge.maybe')].map((p) => p.dataset.id).sort(),
      expected: app.view.edges.filter((e) => e.parts.some((id) => window.connscope.backtest.byEdge.has(id))).map((e) => e.id).sort(),
      inGraph: app.graph.edges.filter((e) => window.connscope.backtest.byEdge.has(e.id)).length,
      note: document.getElementById('bt-on-map').textContent,
    };
  });
  check('backtest: on the tested days every blocked edge is in the graph, and exactly those are coloured on the map',
    coloured.inGraph === blockedIds.size && coloured.red.length > 0 && JSON.stringify(coloured.red) === JSON.stringify(coloured.expected) && coloured.note.startsWith(`${blockedIds.size.toLocaleString('en-US')} of ${blockedIds.size.toLocaleString('en-US')}`),
    JSON.stringify({ ...coloured, blocked: blockedIds.size }));
  await page.screenshot({ path: join(out, 'backtest.png') });
  await page.click('#view-switch button[data-show="table"]');
  await page.waitForFunction(() => window.connscope.views.table.columns.some((c) => c.key === 'backtest'));
  const marked = await page.evaluate(() => window.connscope.views.table.rows.filter((r) => r.backtest).map((r) => [r.id, r.backtest.endsWith('(not seen while learning)')]).sort());
  const notSeenIds = new Set(exact.hosts.flatMap((h) => h.blocked.filter((b) => b.not_seen_in_learning).map((b) => b.edge)));
  same('backtest: the table has a backtest column marking the same edges, and those not seen while learning', marked, [...blockedIds].sort().map((id) => [id, notSeenIds.has(id)]));
  check('backtest: blocked rows are coloured in the table', (await page.evaluate(() => document.querySelectorAll('#table-view tbody tr.blocked, #table-view tbody tr.maybe').length)) > 0);
  await page.fill('#bt-learn-to', '');
  await page.click('#bt-run');
  check('backtest: a missing learn-to is named', (await page.textContent('#bt-error')).includes('learn to'));

  check('no dialog opened, no injected code ran', alarms.length === 0 && (await page.evaluate(() => window.__pwned)) === undefined, alarms.join('; '));
  check('no errors in the page', problems.length === 0, problems.join('\n'));

  // The static export: the views work, the backtest says it needs the collector.
  const html = join(dir, 'map.html');
  execFileSync(bin, ['map', 'export', '--db', db, '-o', html, '--from', DAY1, '--to', UNTIL], { stdio: 'inherit' });
  const exported = await watchedPage(context);
  const requests = [];
  exported.page.on('request', (r) => !r.url().startsWith('file:') && !r.url().startsWith('data:') && !r.url().startsWith('blob:') && requests.push(r.url()));
  await exported.page.goto(`${pathToFileURL(html).href}#range=all&show=matrix`);
  await settled(exported.page);
  await exported.page.waitForSelector('#matrix-view:not([hidden]) table.matrix');
  const exportedGrand = await exported.page.evaluate(() => Number(document.querySelector('#matrix-view tfoot td.grand').dataset.count));
  check('export: the matrix opens from the link, with the same total', exportedGrand === graphConnections, `${exportedGrand} vs ${graphConnections}`);
  await exported.page.click('#view-switch button[data-show="table"]');
  await exported.page.waitForSelector('#table-view:not([hidden]) tbody tr[data-id]');
  check('export: the table has every edge', (await exported.page.evaluate(() => window.connscope.views.table.shown.length)) === graphDoc.edges.length);
  await exported.page.click('#bt-toggle');
  const note = await exported.page.evaluate(() => ({
    note: !document.getElementById('bt-export-note').hidden && document.getElementById('bt-export-note').textContent,
    form: getComputedStyle(document.getElementById('bt-form')).display,
  }));
  check('export: no backtest, and the panel says why', note.form === 'none' && String(note.note).includes('not available in an exported map'), JSON.stringify(note));
  await exported.page.screenshot({ path: join(out, 'export-views.png') });
  check('export: nothing fetched, no errors', requests.length === 0 && exported.problems.length === 0 && exported.alarms.length === 0, [...requests, ...exported.problems, ...exported.alarms].join('; '));
} catch (err) {
  check(`no exception: ${err.stack}`, false);
} finally {
  if (browser) await browser.close();
  collector?.process.kill('SIGTERM');
  rmSync(dir, { recursive: true, force: true });
}
summary();
