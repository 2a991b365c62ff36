// The table view: every edge the map shows, one row each, with the columns of
// `connscope report edges` (client, server, port, service, protocol,
// connections, failures, bytes, first and last seen, processes, users),
// sortable by any column, narrowed by a filter box, and downloadable as CSV
// holding exactly the rows and columns shown, in the order shown.
//
// Tens of thousands of rows stay fast because only the rows in the window
// are in the DOM (fixed row height, spacer rows above and below). Cells are
// set with textContent only; in the CSV every text cell is quoted (RFC 4180)
// and one that starts like a formula (`= + - @`, tab, CR) is prefixed with
// `'`, so a hostile process name is one inert cell in a spreadsheet (CSV
// injection).

import { download } from './exports.js';
import { fmtBytes, fmtCount } from './panel.js';
import { endLabel } from './viewdata.js';
import { el, onScroll, rowWindow, spacerRow } from './viewdom.js';

/** The columns: `value` is what sorts, filters and goes into the CSV; `show` formats it for the screen. */
export const COLUMNS = [
  { key: 'client', title: 'client' },
  { key: 'server', title: 'server' },
  { key: 'port', title: 'port', numeric: true },
  { key: 'service', title: 'service' },
  { key: 'protocol', title: 'protocol' },
  { key: 'connections', title: 'connections', numeric: true, show: fmtCount },
  { key: 'failures', title: 'failures', numeric: true, show: fmtCount },
  { key: 'bytes', title: 'bytes', numeric: true, show: fmtBytes },
  { key: 'first_seen', title: 'first seen' },
  { key: 'last_seen', title: 'last seen' },
  { key: 'processes', title: 'processes' },
  { key: 'users', title: 'users' },
];
/** Shown while a backtest colours the edges: what the chosen planner's plans did to the edge. */
export const BACKTEST_COLUMN = { key: 'backtest', title: 'backtest' };

const iso = (ms) => (ms === null || ms === undefined ? '' : new Date(ms).toISOString().replace('.000Z', 'Z'));

/** The backtest's verdict on an edge as the table shows it: blocked or maybe, and whether no plan could have known it. */
const backtestText = (verdict) => (verdict ? `${verdict.outcome}${verdict.notSeen ? ' (not seen while learning)' : ''}` : '');

/**
 * One row per graph edge. `blocked` (optional) maps graph edge ids to the
 * backtest's verdict on them (`{outcome, notSeen}`).
 */
export function tableRows(graph, edges, blocked = null) {
  return edges.map((e) => ({
    id: e.id,
    client: endLabel(graph, e.source),
    server: endLabel(graph, e.target),
    port: Number(e.port),
    service: e.service || '',
    protocol: e.protocol ?? '',
    connections: e.count,
    failures: e.failures ?? 0,
    bytes: e.bytes,
    first_seen: iso(e.firstSeen),
    last_seen: iso(e.lastSeen),
    processes: e.processes.map((p) => p.name).join('; '),
    users: e.users.map((u) => u.name).join('; '),
    backtest: backtestText(blocked?.get(e.id)),
  }));
}

/** The columns shown: the report's, and the backtest's while one is shown. */
export const columnsFor = (blocked) => (blocked ? [...COLUMNS, BACKTEST_COLUMN] : COLUMNS);

/** Rows whose text in any shown column contains `text` (case-insensitive). */
export function filterRows(rows, text, columns = COLUMNS) {
  const q = String(text ?? '').trim().toLowerCase();
  if (!q) return rows;
  return rows.filter((r) => columns.some((c) => String(r[c.key]).toLowerCase().includes(q)));
}

/** Text in natural order (ws-2 before ws-10); one collator, as making one per comparison is slow. */
const TEXT_ORDER = new Intl.Collator('en', { numeric: true });

/** Sorts by `tsort`: a column key, `-KEY` for descending; default most connections first. */
export function sortRows(rows, tsort) {
  const spec = tsort || '-connections';
  const desc = spec.startsWith('-');
  const key = desc ? spec.slice(1) : spec;
  const column = [...COLUMNS, BACKTEST_COLUMN].find((c) => c.key === key) ?? COLUMNS[5];
  const compare = column.numeric
    ? (a, b) => a[column.key] - b[column.key]
    : (a, b) => TEXT_ORDER.compare(a[column.key], b[column.key]);
  // Ties keep a stable, meaningful order: by id.
  return [...rows].sort((a, b) => (desc ? compare(b, a) : compare(a, b)) || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}

/**
 * One CSV field (RFC 4180): numbers as they are; text always quoted, quotes
 * doubled, and a leading `= + - @`, tab or CR defused with `'` so no
 * spreadsheet reads it as a formula.
 */
export function csvField(value) {
  if (typeof value === 'number') return String(value);
  let s = String(value ?? '');
  if (/^[=+\-@\t\r]/.test(s)) s = `'${s}`;
  return `"${s.replace(/"/g, '""')}"`;
}

/** The CSV of `rows` in `columns`: a header line, CRLF line ends. */
export function toCsv(rows, columns = COLUMNS) {
  const lines = [columns.map((c) => csvField(c.title)).join(',')];
  for (const r of rows) lines.push(columns.map((c) => csvField(r[c.key])).join(','));
  return `${lines.join('\r\n')}\r\n`;
}

/** The table in its section; `update(patch)` changes the shared state. */
export class EdgeTable {
  constructor(section, { update, showOnMap }) {
    this.section = section;
    this.update = update;
    /** The rows shown, filtered and sorted (tests and the CSV read them). */
    this.shown = [];
    this.columns = COLUMNS;
    this.filter = el('input', null, { type: 'search', placeholder: 'filter rows', 'aria-label': 'filter the table', size: '24', class: 'table-filter' });
    this.filter.addEventListener('input', () => this.update({ tq: this.filter.value }));
    this.count = el('span', '', { class: 'view-summary', role: 'status' });
    this.csv = el('button', 'CSV', { type: 'button', class: 'table-csv', title: 'Download the rows shown as CSV' });
    this.csv.addEventListener('click', () => this.download());
    const bar = el('div', null, { class: 'view-bar' });
    bar.append(this.filter, this.count, this.csv);
    this.scroller = el('div', null, { class: 'table-scroll' });
    this.table = el('table', null, { class: 'edges' });
    this.thead = el('thead');
    this.tbody = el('tbody');
    this.table.append(this.thead, this.tbody);
    this.scroller.append(this.table);
    onScroll(this.scroller, () => this.paint());
    // A double-click shows the row's edge on the map, its details open.
    this.tbody.addEventListener('dblclick', (event) => {
      const id = event.target.closest('tr[data-id]')?.dataset.id;
      if (id) showOnMap(id);
    });
    section.replaceChildren(bar, this.scroller);
  }

  render(graph, edges, state, blocked) {
    const t0 = performance.now();
    // The rows only change with the edges or the backtest; filter and sort are cheap on them.
    if (this.edges !== edges || this.blocked !== blocked) {
      this.rows = tableRows(graph, edges, blocked);
      this.edges = edges;
      this.blocked = blocked;
    }
    this.columns = columnsFor(blocked);
    if (document.activeElement !== this.filter) this.filter.value = state.tq;
    this.shown = sortRows(filterRows(this.rows, state.tq, this.columns), state.tsort);
    this.sortSpec = state.tsort || '-connections';
    // Another filter or order starts at the top.
    const order = `${state.tq}\n${this.sortSpec}`;
    if (this.order !== order) this.scroller.scrollTop = 0;
    this.order = order;
    const connections = this.shown.reduce((n, r) => n + r.connections, 0);
    this.count.textContent = `${fmtCount(this.shown.length)} of ${fmtCount(this.rows.length)} edges, ${fmtCount(connections)} connections`;
    this.renderHead();
    this.painted = null;
    this.paint();
    this.renderMs = performance.now() - t0;
  }

  renderHead() {
    const tr = el('tr');
    const desc = this.sortSpec.startsWith('-');
    const key = desc ? this.sortSpec.slice(1) : this.sortSpec;
    for (const c of this.columns) {
      const th = el('th', c.title, { 'data-key': c.key, class: c.numeric ? 'num' : '', title: `sort by ${c.title}` });
      if (c.key === key) th.setAttribute('aria-sort', desc ? 'descending' : 'ascending');
      // Numbers first largest, text first A; a second click turns it round.
      th.addEventListener('click', () => {
        const first = c.numeric ? `-${c.key}` : c.key;
        const next = this.sortSpec === first ? (first.startsWith('-') ? c.key : `-${c.key}`) : first;
        this.update({ tsort: next === '-connections' ? '' : next });
      });
      tr.append(th);
    }
    this.thead.replaceChildren(tr);
  }

  /** Puts the rows of the scroll window (and some around it) in the DOM. */
  paint() {
    const total = this.shown.length;
    const range = rowWindow(this.scroller, total, this.painted, 1);
    if (!range) return;
    const [first, last] = range;
    this.painted = range;
    const out = [spacerRow(this.columns.length, first)];
    for (let i = first; i < last; i++) {
      const r = this.shown[i];
      const tr = el('tr', null, { 'data-id': r.id, 'data-index': String(i), title: 'double-click: show on the map' });
      if (r.backtest) tr.className = r.backtest.startsWith('blocked') ? 'blocked' : 'maybe';
      for (const c of this.columns) {
        const text = c.show ? c.show(r[c.key]) : String(r[c.key]);
        tr.append(el('td', text, { class: c.numeric ? 'num' : '', title: String(r[c.key]) }));
      }
      out.push(tr);
    }
    out.push(spacerRow(this.columns.length, total - last));
    this.tbody.replaceChildren(...out);
  }

  download() {
    const name = `connscope-edges-${new Date().toISOString().slice(0, 19).replace(/:/g, '')}.csv`;
    download(new Blob([toCsv(this.shown, this.columns)], { type: 'text/csv;charset=utf-8' }), name);
  }
}
