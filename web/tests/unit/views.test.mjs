// Unit tests of the other views' pure parts: the matrix's counts, order and
// report line, the table's rows, filter, order and CSV (RFC 4180, formulas
// defused), the automatic groups, and the backtest's blocked edges. Run by
// `node --test web/tests/unit/` (crates/map/tests/web_units.rs under cargo test).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { blockedEdges } from '../../src/backtest.js';
import { buildMatrix, cellCommand, sortMatrix } from '../../src/matrix.js';
import { normalizeGraph } from '../../src/model.js';
import { COLUMNS, csvField, filterRows, sortRows, tableRows, toCsv } from '../../src/table.js';
import { grouping, shownEdges } from '../../src/viewdata.js';
import { ROW_HEIGHT, rowWindow } from '../../src/viewdom.js';

const HOSTILE = '=HYPERLINK("http://x.invalid","a"),\n"b"';
const graph = normalizeGraph({
  nodes: [
    { kind: 'host', id: 'host:ws-01', label: 'ws-01', addresses: ['10.0.1.1'] },
    { kind: 'host', id: 'host:ws-02', label: 'ws-02', addresses: ['10.0.1.2'] },
    { kind: 'host', id: 'host:fs', label: 'fs', addresses: ['10.0.2.1'] },
    { kind: 'service', id: 'service:fs:445/tcp', label: 'fs:445', host: 'host:fs', port: 445, protocol: 'tcp' },
    { kind: 'external', id: 'external:192.0.2.7', label: '192.0.2.7', ip: '192.0.2.7', internal: false },
  ],
  edges: [
    { id: 'a', source: 'host:ws-01', target: 'service:fs:445/tcp', port: 445, protocol: 'tcp', service: 'microsoft-ds', connections: 5, bytes_to_server: 10, bytes_to_client: 5,
      first_seen: '2025-03-01T10:00:00Z', last_seen: '2025-03-02T10:00:00Z', client_processes: [{ host: 'ws-01', executable: HOSTILE, user: '@me', connections: 5 }], users: ['@me'] },
    { id: 'b', source: 'host:ws-02', target: 'service:fs:445/tcp', port: 445, protocol: 'tcp', service: 'microsoft-ds', connections: 3, first_seen: '2025-03-01T11:00:00Z', last_seen: '2025-03-01T12:00:00Z' },
    { id: 'c', source: 'host:ws-01', target: 'external:192.0.2.7', port: 443, protocol: 'tcp', service: 'https', connections: 7, first_seen: '2025-03-03T11:00:00Z', last_seen: '2025-03-03T12:00:00Z' },
  ],
});

test('automatic groups: a name pattern shared by two hosts, else the /24; outside by network', () => {
  const g = grouping(graph, null);
  assert.equal(g.source, 'automatic');
  assert.equal(g.of('host:ws-01'), 'ws-*');
  assert.equal(g.of('service:fs:445/tcp'), '10.0.2.0/24');
  assert.equal(g.of('external:192.0.2.7'), '192.0.2.0/24');
  const stored = grouping(graph, { groups: [{ name: 'clients', hosts: ['ws-01'] }, { name: 'also', hosts: ['ws-01', 'ws-02'] }] });
  assert.equal(stored.source, 'store');
  assert.equal(grouping(graph, null, 'subnet').of('host:ws-01'), '10.0.1.0/24', 'the map\'s grouping switch holds here too');
  assert.equal(stored.of('host:ws-01'), 'clients', 'a host counts in the first group that has it');
  assert.equal(stored.of('host:ws-02'), 'also');
  assert.equal(stored.of('host:fs'), '(no group)');
});

test('the matrix puts every edge in one cell: totals are the edges\' connections', () => {
  const edges = shownEdges(graph, { host: '', port: '', exe: '', user: '', dir: '', scope: '' }, { from: null, to: null });
  const m = buildMatrix(graph, edges, { rows: 'groups', side: 'client', groups: grouping(graph, null) });
  assert.equal(m.total, 15);
  assert.deepEqual(m.rows.map((r) => [r.key, r.total]), [['ws-*', 15]]);
  assert.deepEqual(m.cells.get('ws-*').get('445/tcp').count, 8);
  const servers = buildMatrix(graph, edges, { rows: 'hosts', side: 'server', groups: null });
  assert.deepEqual(servers.rows.map((r) => [r.key, r.total]).sort(), [['192.0.2.7', 7], ['fs', 8]]);
  const order = sortMatrix(servers, 'name,port');
  assert.deepEqual(order.rows.map((r) => r.key), ['192.0.2.7', 'fs']);
  assert.deepEqual(order.cols.map((c) => c.key), ['443/tcp', '445/tcp']);
  assert.deepEqual(sortMatrix(servers, 'c:443/tcp,total').rows.map((r) => r.key), ['192.0.2.7', 'fs']);
  assert.deepEqual(sortMatrix(servers, '').cols.map((c) => c.key), ['445/tcp', '443/tcp']);
});

test('a cell\'s report line names the host and direction, or the groups', () => {
  const col = { port: 445, protocol: 'tcp' };
  const state = { exe: '', user: 'www data' };
  assert.equal(cellCommand({ rows: 'hosts', side: 'client', row: 'ws-01', external: false, col, state, range: { from: 0, to: null } }),
    "connscope report edges --db DB --host ws-01 --direction out --port 445 --protocol tcp --user 'www data' --from 1970-01-01T00:00:00Z");
  assert.equal(cellCommand({ rows: 'groups', side: 'server', row: 'x', external: false, col, state: { exe: '', user: '' }, range: { from: null, to: null } }),
    'connscope report edges --db DB --by group --port 445 --protocol tcp');
});

test('table rows: the report\'s columns, filtered and sorted', () => {
  const rows = tableRows(graph, graph.edges, new Map([['c', { outcome: 'blocked', notSeen: false }], ['b', { outcome: 'maybe-blocked', notSeen: true }]]));
  const a = rows.find((r) => r.id === 'a');
  assert.deepEqual([a.client, a.server, a.port, a.service, a.connections, a.bytes, a.users], ['ws-01', 'fs', 445, 'microsoft-ds', 5, 15, '@me']);
  assert.equal(a.processes, `${HOSTILE} @ ws-01`);
  assert.equal(rows.find((r) => r.id === 'c').backtest, 'blocked');
  assert.equal(rows.find((r) => r.id === 'b').backtest, 'maybe-blocked (not seen while learning)');
  assert.equal(rows.find((r) => r.id === 'a').backtest, '');
  assert.deepEqual(sortRows(rows, '').map((r) => r.id), ['c', 'a', 'b']);
  assert.deepEqual(sortRows(rows, 'client').map((r) => r.id), ['a', 'c', 'b']);
  assert.deepEqual(sortRows(rows, '-server').map((r) => r.id), ['a', 'b', 'c']);
  assert.deepEqual(filterRows(rows, 'HYPERLINK').map((r) => r.id), ['a']);
  assert.deepEqual(filterRows(rows, '  ').length, 3);
});

test('CSV: RFC 4180 quoting, formulas defused, numbers bare', () => {
  assert.equal(csvField(42), '42');
  assert.equal(csvField('plain'), '"plain"');
  assert.equal(csvField('a "b"'), '"a ""b"""');
  for (const lead of ['=', '+', '-', '@', '\t', '\r']) assert.equal(csvField(`${lead}1`), `"'${lead}1"`);
  const rows = tableRows(graph, graph.edges.filter((e) => e.id === 'a'));
  const csv = toCsv(rows, COLUMNS);
  const [head, line, end] = csv.split('\r\n');
  assert.equal(head, COLUMNS.map((c) => `"${c.title}"`).join(','));
  assert.equal(end, '');
  assert.ok(line.includes(`"'=HYPERLINK(""http://x.invalid"",""a""),\n""b"" @ ws-01"`), line);
  assert.ok(line.includes(`"'@me"`));
});

test('the backtest\'s blocked edges by graph id: both ends\' reports make one edge', () => {
  const planner = { hosts: [
    { host: 'ws-01', blocked: [{ edge: 'a', outcome: 'blocked', connections: 5, not_seen_in_learning: false }, { outcome: 'blocked', connections: 1, not_seen_in_learning: true }] },
    { host: 'fs', blocked: [{ edge: 'a', outcome: 'maybe-blocked', connections: 4, not_seen_in_learning: false }] },
  ] };
  const byEdge = blockedEdges(planner);
  assert.deepEqual([...byEdge], [['a', { outcome: 'maybe-blocked', connections: 5, notSeen: false }]]);
});

test('a windowed table draws the rows in sight and 20 either side, and nothing while they still cover it', () => {
  const scroller = { scrollTop: 0, clientHeight: 10 * ROW_HEIGHT };
  assert.deepEqual(rowWindow(scroller, 1000, null), [0, 30]);
  scroller.scrollTop = 5 * ROW_HEIGHT;
  assert.equal(rowWindow(scroller, 1000, [0, 30]), null);
  scroller.scrollTop = 500 * ROW_HEIGHT;
  assert.deepEqual(rowWindow(scroller, 1000, [0, 30]), [480, 530]);
  // Filtered down to 3 rows while scrolled far: the window is the start again.
  assert.deepEqual(rowWindow(scroller, 3, null), [0, 3]);
});
