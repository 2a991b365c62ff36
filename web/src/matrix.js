// The matrix view: who uses which service. Rows are host groups or hosts (the
// clients, or the servers when asked), columns are services (port/protocol,
// with the /etc/services name), a cell is the connections of the edges from
// that row to that service. Every edge falls in exactly one cell, so the
// totals are the graph's. A cell's edges, and the `connscope report edges`
// line that lists them in a terminal, show beside the matrix. Text from the
// monitored hosts is set with textContent only.

import { fmtCount, fmtTime, shellQuote } from './panel.js';
import { endLabel } from './viewdata.js';
import { el, onScroll, rowWindow, spacerRow } from './viewdom.js';

/** Pixels of the row names' column and of each service's (see views.css). */
const NAME_WIDTH = 200;
const COLUMN_WIDTH = 76;
/** Services drawn left and right of the window. */
const COLUMN_OVERSCAN = 6;

/** The default sort: rows and columns by their totals, largest first. */
const DEFAULT_SORT = 'total,total';

/**
 * Counts `edges` (graph edges) per row and service. `rows`: 'groups' or
 * 'hosts'; `side`: 'client' or 'server' (which end names the row);
 * `groups`: a `grouping()` of views.js. Returns rows and columns with their
 * totals, the cells (`row -> col -> {count, edges}`) and the grand total.
 */
export function buildMatrix(graph, edges, { rows = 'groups', side = 'client', groups }) {
  const rowMap = new Map();
  const colMap = new Map();
  const cells = new Map();
  let total = 0;
  for (const e of edges) {
    const end = side === 'server' ? e.target : e.source;
    const row = rows === 'hosts' ? endLabel(graph, end) : groups.of(end);
    const colKey = `${e.port}/${e.protocol}`;
    if (!rowMap.has(row)) rowMap.set(row, { key: row, total: 0, external: !graph.nodes.get(end)?.internal });
    if (!colMap.has(colKey)) colMap.set(colKey, { key: colKey, port: Number(e.port), protocol: e.protocol, service: e.service || '', total: 0 });
    rowMap.get(row).total += e.count;
    const col = colMap.get(colKey);
    col.total += e.count;
    if (!col.service && e.service) col.service = e.service;
    if (!cells.has(row)) cells.set(row, new Map());
    const line = cells.get(row);
    if (!line.has(colKey)) line.set(colKey, { count: 0, edges: [] });
    const cell = line.get(colKey);
    cell.count += e.count;
    cell.edges.push(e);
    total += e.count;
  }
  return { rows: [...rowMap.values()], cols: [...colMap.values()], cells, total };
}

const NAME_ORDER = new Intl.Collator('en', { numeric: true });
const byName = (a, b) => NAME_ORDER.compare(a.key, b.key);

/**
 * Orders a matrix's rows and columns by `msort` = `ROWS,COLUMNS`: rows by
 * `total`, `name` or `c:COLUMN` (that column's cells), columns by `total` or
 * `port`; totals largest first, ties by name.
 */
export function sortMatrix(matrix, msort) {
  const [rowSort, colSort] = (msort || DEFAULT_SORT).split(',');
  const rows = [...matrix.rows];
  if (rowSort === 'name') rows.sort(byName);
  else if (rowSort?.startsWith('c:')) {
    const col = rowSort.slice(2);
    const value = (r) => matrix.cells.get(r.key)?.get(col)?.count ?? 0;
    rows.sort((a, b) => value(b) - value(a) || b.total - a.total || byName(a, b));
  } else rows.sort((a, b) => b.total - a.total || byName(a, b));
  const cols = [...matrix.cols];
  if (colSort === 'port') cols.sort((a, b) => a.port - b.port || a.protocol.localeCompare(b.protocol));
  else cols.sort((a, b) => b.total - a.total || a.port - b.port);
  return { rows, cols };
}

/**
 * The `connscope report edges` line for one cell: the row's host (and the
 * direction that makes it the client or the server), or `--by group`, the
 * service, the shown range and the executable and user filters.
 */
export function cellCommand({ rows, side, row, external, col, state, range }) {
  const words = ['connscope', 'report', 'edges', '--db', 'DB'];
  if (rows === 'hosts' && !external) words.push('--host', row, '--direction', side === 'server' ? 'in' : 'out');
  else if (external) words.push('--scope', 'external');
  if (rows !== 'hosts') words.push('--by', 'group');
  words.push('--port', String(col.port), '--protocol', col.protocol);
  if (state.exe) words.push('--exe', state.exe);
  if (state.user) words.push('--user', state.user);
  if (range.from !== null && range.from !== undefined) words.push('--from', fmtTime(range.from));
  if (range.to !== null && range.to !== undefined) words.push('--to', fmtTime(range.to));
  return words.map(shellQuote).join(' ');
}

function select(label, value, options, onChange) {
  const s = el('select', null, { 'aria-label': label });
  for (const [v, text] of options) s.append(el('option', text, { value: v }));
  s.value = value;
  s.addEventListener('change', () => onChange(s.value));
  return el('label', `${label} `).appendChild(s).parentNode;
}

/**
 * The matrix in its section; `update(patch)` changes the shared state. A
 * fleet's matrix has hundreds of rows and services, so only the cells in
 * sight are in the page (rows as in the table, and columns), and the scroll
 * position stays when a cell is picked.
 */
export class Matrix {
  constructor(section, { update, showOnMap }) {
    this.section = section;
    this.update = update;
    this.showOnMap = showOnMap;
    /** The cell shown beside the matrix: `{row, col}` keys. */
    this.picked = null;
    this.scroller = el('div', null, { class: 'matrix-scroll' });
    this.tbody = el('tbody');
    onScroll(this.scroller, () => this.paintRows());
    // One listener for all cells.
    this.tbody.addEventListener('click', (event) => {
      const td = event.target.closest('td.cell');
      if (!td || !this.drawn) return;
      this.picked = { row: td.parentNode.dataset.row, col: td.dataset.col };
      const { graph, edges, state, range, groups } = this.drawn;
      this.render(graph, edges, state, range, groups);
    });
  }

  render(graph, edges, state, range, groups) {
    const t0 = performance.now();
    const rows = state.mrows === 'hosts' ? 'hosts' : 'groups';
    const side = state.mside === 'server' ? 'server' : 'client';
    const matrix = buildMatrix(graph, edges, { rows, side, groups });
    const order = sortMatrix(matrix, state.msort);
    const [rowSort, colSort] = (state.msort || DEFAULT_SORT).split(',');
    const sort = (r, c) => this.update({ msort: `${r ?? rowSort},${c ?? colSort}` === DEFAULT_SORT ? '' : `${r ?? rowSort},${c ?? colSort}` });

    const bar = el('div', null, { class: 'view-bar' });
    bar.append(
      select('rows', rows, [['groups', 'host groups'], ['hosts', 'hosts']], (v) => this.update({ mrows: v === 'hosts' ? 'hosts' : '' })),
      select('of', side, [['client', 'clients (who uses it)'], ['server', 'servers (who offers it)']], (v) => this.update({ mside: v === 'server' ? 'server' : '' })),
      select('sort rows', rowSort.startsWith('c:') ? 'total' : rowSort, [['total', 'by total'], ['name', 'by name']], (v) => sort(v, null)),
      select('sort columns', colSort, [['total', 'by total'], ['port', 'by port']], (v) => sort(null, v)),
    );
    bar.append(el('span', `${fmtCount(matrix.total)} connections on ${fmtCount(edges.length)} edges: ${matrix.rows.length} rows × ${matrix.cols.length} services`, { class: 'view-summary', role: 'status' }));
    const describe = { store: 'groups: the store\'s (connscope groups)', automatic: 'groups: automatic (name pattern, else subnet)' };
    if (rows === 'groups') bar.append(el('span', describe[groups.source] ?? `groups: by ${groups.source} (the map's grouping)`, { class: 'hint' }));

    const table = el('table', null, { class: 'matrix' });
    const head = el('tr');
    head.append(el('th', side === 'server' ? 'server \\ service' : 'client \\ service', { class: 'corner row' }));
    for (const c of order.cols) {
      const th = el('th', null, { class: 'col', 'data-col': c.key, title: `sort rows by ${c.key}` });
      th.append(el('span', c.key, { class: 'port' }), el('span', c.service, { class: 'service' }));
      if (rowSort === `c:${c.key}`) th.classList.add('sorted');
      th.addEventListener('click', () => sort(rowSort === `c:${c.key}` ? 'total' : `c:${c.key}`, null));
      head.append(th);
    }
    head.append(el('th', 'total', { class: 'total' }));
    const thead = el('thead');
    thead.append(head);
    const foot = el('tr', null, { class: 'totals' });
    foot.append(el('th', 'total', { class: 'row' }));
    for (const c of order.cols) foot.append(el('td', fmtCount(c.total), { class: 'total', 'data-count': String(c.total), 'data-col': c.key }));
    foot.append(el('td', fmtCount(matrix.total), { class: 'total grand', 'data-count': String(matrix.total) }));
    const tfoot = el('tfoot');
    tfoot.append(foot);
    table.append(thead, this.tbody, tfoot);
    // Fixed column widths: the browser lays out the rows in sight without measuring every cell.
    table.style.width = `${NAME_WIDTH + COLUMN_WIDTH * (order.cols.length + 1)}px`;

    let max = 1;
    for (const line of matrix.cells.values()) for (const c of line.values()) max = Math.max(max, c.count);
    const [top, left] = [this.scroller.scrollTop, this.scroller.scrollLeft];
    this.drawn = { graph, edges, state, range, groups, matrix, order, max };
    this.scroller.replaceChildren(edges.length ? table : el('p', 'No edges in this range with these filters.', { class: 'hint' }));
    const body = el('div', null, { class: 'view-body' });
    body.append(this.scroller, this.cellPanel(graph, matrix, { rows, side, state, range }));
    this.section.replaceChildren(bar, body);
    this.scroller.scrollTop = top;
    this.scroller.scrollLeft = left;
    this.section.dataset.groups = rows === 'groups' ? groups.source : '';
    this.painted = null;
    this.paintedCols = null;
    this.paintRows();
    this.renderMs = performance.now() - t0;
  }

  /**
   * Puts the cells in sight (and some rows and columns around them) in the
   * page; the services beside the window are one spanning cell each side,
   * which the fixed layout sizes from the header.
   */
  paintRows() {
    const { matrix, order, max } = this.drawn;
    const total = order.rows.length;
    const rows = rowWindow(this.scroller, total, this.painted, 2) ?? this.painted;
    const left = Math.max(0, this.scroller.scrollLeft - NAME_WIDTH);
    const width = this.scroller.clientWidth || 1400;
    const cols = [
      Math.max(0, Math.floor(left / COLUMN_WIDTH) - COLUMN_OVERSCAN),
      Math.min(order.cols.length, Math.ceil((left + width) / COLUMN_WIDTH) + COLUMN_OVERSCAN),
    ];
    if (rows === this.painted && this.paintedCols && this.paintedCols[0] <= cols[0] + COLUMN_OVERSCAN / 2 && this.paintedCols[1] >= cols[1] - COLUMN_OVERSCAN / 2) return;
    const [first, last] = rows;
    this.painted = rows;
    this.paintedCols = cols;
    const [firstCol, lastCol] = cols;
    const span = (n) => el('td', null, { colspan: String(n), class: 'beside' });
    const columns = order.cols.length + 2;
    const out = [spacerRow(columns, first)];
    for (const r of order.rows.slice(first, last)) {
      const tr = el('tr', null, { 'data-row': r.key });
      tr.append(el('th', r.key, { class: 'row', title: r.key }));
      if (firstCol > 0) tr.append(span(firstCol));
      const line = matrix.cells.get(r.key);
      for (const c of order.cols.slice(firstCol, lastCol)) {
        const cell = line.get(c.key);
        if (!cell) {
          tr.append(el('td'));
          continue;
        }
        const picked = this.picked?.row === r.key && this.picked?.col === c.key ? ' picked' : '';
        // Shaded in 8 steps by the cell's share of the largest, on a log
        // scale (one connection still shows); a class, not a style per cell.
        const shade = Math.round(7 * Math.log1p(cell.count) / Math.log1p(max));
        tr.append(el('td', fmtCount(cell.count), { class: `cell s${shade}${picked}`, 'data-count': String(cell.count), 'data-col': c.key }));
      }
      if (lastCol < order.cols.length) tr.append(span(order.cols.length - lastCol));
      tr.append(el('td', fmtCount(r.total), { class: 'total', 'data-count': String(r.total) }));
      out.push(tr);
    }
    out.push(spacerRow(columns, total - last));
    this.tbody.replaceChildren(...out);
  }

  /** The edges behind the picked cell and their report line; empty when none is picked. */
  cellPanel(graph, matrix, { rows, side, state, range }) {
    const aside = el('aside', null, { class: 'cell-panel' });
    const col = matrix.cols.find((c) => c.key === this.picked?.col);
    const row = matrix.rows.find((r) => r.key === this.picked?.row);
    const cell = col && row ? matrix.cells.get(row.key).get(col.key) : null;
    if (!cell) {
      aside.hidden = true;
      return aside;
    }
    const close = el('button', '×', { class: 'close', type: 'button', 'aria-label': 'close' });
    close.addEventListener('click', () => {
      this.picked = null;
      aside.hidden = true;
    });
    aside.append(close, el('h2', `${row.key} → ${col.key}${col.service ? ` (${col.service})` : ''}`));
    aside.append(el('p', `${fmtCount(cell.count)} connections on ${cell.edges.length} edges`));
    const list = el('table');
    list.append(el('tr'));
    for (const h of ['client', 'server', 'connections', 'last seen']) list.firstChild.append(el('th', h));
    for (const e of [...cell.edges].sort((a, b) => b.count - a.count).slice(0, 200)) {
      const tr = el('tr', null, { 'data-edge': e.id, class: 'link', title: 'show on the map' });
      tr.addEventListener('click', () => this.showOnMap(e.id));
      tr.append(el('td', endLabel(graph, e.source)), el('td', endLabel(graph, e.target)), el('td', fmtCount(e.count), { class: 'num' }), el('td', fmtTime(e.lastSeen)));
      list.append(tr);
    }
    aside.append(list);
    aside.append(el('h3', 'Same data in a terminal'));
    aside.append(el('pre', cellCommand({ rows, side, row: row.key, external: row.external, col, state, range }), { class: 'command' }));
    aside.append(el('p', 'DB: the collector\'s database file (--db).', { class: 'hint' }));
    return aside;
  }
}
