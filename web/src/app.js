// The connection map's entry point: wires the URL state, the data source (the
// collector's API, or the data inlined in a static export), the layout, the
// renderers, the timeline, the details panel, exports, live updates and the
// firewall mode, and the policy loop (hits, drift, the hosts' policies). With no range picked it shows the last day that has data
// (the graph says when the store's data starts and ends) and says so.

import { zoomIdentity } from 'd3';
import { Unauthorized, followEvents, getJson, setToken } from './api.js';
import { BacktestPanel } from './backtest.js';
import { downloadJson, downloadPng, downloadSvg } from './exports.js';
import { FirewallMode } from './firewall.js';
import { Layout } from './layout.js';
import { LoopPanel } from './looppanel.js';
import { MapView } from './mapview.js';
import { GROUPINGS, buildView, labelKeys, normalizeGraph, searchNodes } from './model.js';
import { renderDetails } from './panel.js';
import { formatState, parseState, timeRange } from './state.js';
import { Timeline } from './timeline.js';
import { Views } from './views.js';

const $ = (id) => document.getElementById(id);
const inlined = $('connscope-data');
const app = {
  state: parseState(location.hash),
  graph: null,
  view: null,
  scene: null,
  layout: new Layout(),
  exported: Boolean(inlined),
  /** The store's host groups and labels (`GET /api/v1/groups`, or inlined in an export); null if none. */
  groups: null,
  /** When the data starts and ends (ms), once known. */
  span: null,
};
// Tests and benchmarks read progress here; nothing in it is ever executed.
window.connscope = { app, settled: false, layoutMs: null, loads: 0, errors: [] };

/** The time range shown: the state's, with `last` resolved against the newest data. */
const currentRange = () => timeRange(app.state, Date.now(), app.span?.last ?? null);

const status = (text, cls = '') => {
  $('status').textContent = text;
  $('status').className = cls;
};

const map = new MapView($('map'), {
  onSelect: (id) => update({ sel: id ?? '' }),
  onPin: (node, pinned) => {
    app.layout.pin(node, pinned);
    map.refreshStyle();
  },
  onToggleGroup: (node) => toggleGroup(node),
  onViewChange: (t) => {
    app.state.view = `${t.x.toFixed(0)},${t.y.toFixed(0)},${t.k.toFixed(3)}`;
    // Once the gesture rests: browsers throttle frequent history updates.
    clearTimeout(app.viewTimer);
    app.viewTimer = setTimeout(writeUrl, 300);
  },
});
window.connscope.map = map;
// A view in the link wins over fitting the map to the window.
const startView = Boolean(app.state.view);
const timeline = new Timeline($('timeline'), (from, to) => {
  if (from === null) update({ range: 'all', from: '', to: '' }, true);
  else update({ range: '', from: new Date(from).toISOString(), to: new Date(to).toISOString() }, true);
});

const isoOrNull = (ms) => (ms === null ? null : new Date(ms).toISOString());
const firewall = new FirewallMode({
  onChange: () => rebuild(false),
  // As the graph is asked for: an open start means all of history.
  range: () => {
    const r = currentRange();
    return { from: isoOrNull(r.from) ?? '1970-01-01T00:00:00Z', to: isoOrNull(r.to) };
  },
});
window.connscope.firewall = firewall;
// A static export has no collector to check rulesets with.
if (app.exported) $('fw-toggle').hidden = true;
// The matrix and the table (views.js), and backtests (backtest.js): their colours win over the firewall check's.
const views = new Views({ update: (patch) => update(patch) });
const backtest = new BacktestPanel({
  exported: app.exported,
  onChange: () => rebuild(false),
  showRange: (from, to) => update({ range: '', from, to }, true),
  setHost: (host) => update({ host, show: '' }),
});
// Firewall hits, drift and the hosts' policies (looppanel.js, loop.js).
const loop = new LoopPanel({ exported: app.exported, state: () => app.state, update: (patch, reload) => update(patch, reload) });
Object.assign(window.connscope, { views, backtest, loop });

function writeUrl() {
  history.replaceState(null, '', formatState(app.state));
}

/** Changes the state; `reload` refetches the graph (the time range changed). */
function update(patch, reload = false) {
  Object.assign(app.state, patch);
  writeUrl();
  syncControls();
  if (reload) load();
  else rebuild(false);
}

function toggleGroup(node) {
  const id = node.kind === 'group' ? node.id : node.group;
  const open = new Set(app.state.open);
  if (open.has(id)) open.delete(id);
  else open.add(id);
  update({ open: [...open], sel: node.kind === 'group' ? '' : app.state.sel });
}

function syncControls() {
  const s = app.state;
  const local = (iso) => {
    const ms = Date.parse(iso);
    if (Number.isNaN(ms)) return '';
    const d = new Date(ms - new Date(ms).getTimezoneOffset() * 60e3);
    return d.toISOString().slice(0, 19);
  };
  const r = currentRange();
  $('from').value = r.from !== null ? local(new Date(r.from).toISOString()) : '';
  $('to').value = r.to !== null ? local(new Date(r.to).toISOString()) : '';
  for (const b of document.querySelectorAll('#presets button')) b.setAttribute('aria-pressed', String(b.dataset.range === s.range));
  $('f-host').value = s.host;
  $('f-port').value = s.port;
  $('f-exe').value = s.exe;
  $('f-user').value = s.user;
  $('f-dir').value = s.dir;
  $('f-scope').value = s.scope;
  syncGroupings();
  $('search').value = s.q;
  $('since').value = s.since ? local(s.since) : '';
}

/** The grouping switch: the fixed choices plus one per host label key of the store. */
function syncGroupings() {
  const select = $('grouping');
  const wanted = [...GROUPINGS, ...labelKeys(app.groups).map((k) => `label:${k}`)];
  if ([...select.options].map((o) => o.value).join('\n') !== wanted.join('\n')) {
    const names = { auto: 'groups: auto', store: 'store groups', name: 'name pattern', subnet: 'subnet', none: 'no grouping' };
    select.replaceChildren(...wanted.map((v) => {
      const o = document.createElement('option');
      o.value = v;
      o.textContent = names[v] ?? `label ${v.slice(6)}`;
      return o;
    }));
  }
  select.value = app.state.group || 'auto';
}

function bindControls() {
  const text = (id, key) => $(id).addEventListener('input', (e) => update({ [key]: e.target.value }));
  text('f-host', 'host');
  text('f-port', 'port');
  text('f-exe', 'exe');
  text('f-user', 'user');
  text('search', 'q');
  $('f-dir').addEventListener('change', (e) => update({ dir: e.target.value }));
  $('f-scope').addEventListener('change', (e) => update({ scope: e.target.value }));
  // Another grouping folds other nodes: what was open is closed again.
  $('grouping').addEventListener('change', (e) => update({ group: e.target.value === 'auto' ? '' : e.target.value, open: [], sel: '' }));
  $('empty-widest').addEventListener('click', () => update({ range: 'all', from: '', to: '', host: '', port: '', exe: '', user: '', dir: '', scope: '' }, true));
  const when = (v) => (v ? new Date(v).toISOString() : '');
  $('from').addEventListener('change', (e) => update({ range: '', from: when(e.target.value), to: app.state.to || (app.state.range ? '' : app.state.to) }, true));
  $('to').addEventListener('change', (e) => {
    const r = currentRange();
    update({ range: '', from: r.from !== null ? new Date(r.from).toISOString() : '', to: when(e.target.value) }, true);
  });
  $('since').addEventListener('change', (e) => update({ since: when(e.target.value) }));
  for (const b of document.querySelectorAll('#presets button')) b.addEventListener('click', () => update({ range: b.dataset.range, from: '', to: '' }, true));
  $('search').addEventListener('keydown', (e) => {
    if (e.key !== 'Enter') return;
    const hits = app.scene.nodes.filter((n) => map.look.matches?.has(n.id));
    if (hits.length) map.fit(hits);
  });
  const name = () => `connscope-map-${new Date().toISOString().slice(0, 19).replace(/:/g, '')}`;
  $('export-svg').addEventListener('click', () => downloadSvg(map, `${name()}.svg`));
  $('export-png').addEventListener('click', () => downloadPng(map, `${name()}.png`));
  $('export-json').addEventListener('click', () => downloadJson(app, `${name()}.json`));
  $('login').addEventListener('submit', (e) => {
    e.preventDefault();
    setToken($('login-token').value);
    $('login').hidden = true;
    // The stream, too, waited for a token.
    load().then(() => live.mode === 'login' && startLive());
  });
  window.addEventListener('hashchange', () => {
    const before = JSON.stringify(currentRange());
    app.state = parseState(location.hash);
    syncControls();
    if (JSON.stringify(currentRange()) !== before) load();
    else rebuild(false);
  });
}

/** The span of an export's data: its edges' first and last times. */
function spanOfEdges(graph) {
  const first = Math.min(...graph.edges.map((e) => e.firstSeen ?? Infinity));
  const last = Math.max(...graph.edges.map((e) => e.lastSeen ?? -Infinity));
  return Number.isFinite(first) && Number.isFinite(last) ? { first, last } : null;
}

/** Fetches the graph for the state's time range (or reads the inlined one), and the store's groups. */
async function load() {
  try {
    let doc;
    if (app.exported) {
      doc = JSON.parse(inlined.textContent);
      app.groups = doc.groups ?? null;
      app.graph = normalizeGraph(doc);
      app.span = spanOfEdges(app.graph);
    } else {
      status('loading…');
      const fetchGraph = () => {
        const r = currentRange();
        // An open start means all of history; the API's default would be the last day.
        return getJson('api/v1/graph', { from: isoOrNull(r.from) ?? '1970-01-01T00:00:00Z', to: isoOrNull(r.to) });
      };
      // A collector from before groups: the map groups by itself. (Without a
      // token the graph's request says so.)
      const groups = getJson('api/v1/groups').catch(() => null);
      const before = JSON.stringify(currentRange());
      doc = await fetchGraph();
      const span = doc.data_span ? { first: Date.parse(doc.data_span.first), last: Date.parse(doc.data_span.last) } : null;
      app.span = span && Number.isFinite(span.first) && Number.isFinite(span.last) ? span : null;
      // The last day with data is older than the clock's: ask for that day.
      // Hits and drift of the range shown, which the data span may have moved.
      const r = currentRange();
      const looped = loop.load({ from: isoOrNull(r.from) ?? '1970-01-01T00:00:00Z', to: isoOrNull(r.to) });
      if (JSON.stringify(currentRange()) !== before) doc = await fetchGraph();
      app.groups = await groups;
      await looped;
      app.graph = normalizeGraph(doc);
    }
    const fresh = !window.connscope.loads;
    window.connscope.loads++;
    syncControls();
    rebuild(true, fresh);
    // New edges or another range: the shown verdicts must cover them too.
    if (firewall.result) firewall.refresh();
  } catch (err) {
    if (err instanceof Unauthorized) {
      $('login').hidden = false;
      $('login-error').textContent = sessionStorage.length ? 'That token was not accepted.' : '';
      status('login needed');
      return;
    }
    window.connscope.errors.push(String(err));
    status(`error: ${err.message}`, 'error');
  }
}

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
/** `Jan 7`, in UTC like the rest of connscope's times. */
const day = (ms) => `${MONTHS[new Date(ms).getUTCMonth()]} ${new Date(ms).getUTCDate()}`;
/** `Jan 7 23:59` (UTC). */
const minute = (ms) => `${day(ms)} ${new Date(ms).toISOString().slice(11, 16)}`;

/** What the status line says of the range: which, and why when the map picked it. */
function rangeText(r) {
  const spans = app.span ? `data spans ${day(app.span.first)} - ${day(app.span.last)} (UTC)` : 'no data yet';
  if (r.auto && !r.relative) return `showing ${minute(r.from)} - ${minute(r.to)}, the last day with data; ${spans}`;
  if (r.auto) return `showing the last 24 hours; ${spans}`;
  if (r.from === null && r.to === null) return `showing all data; ${spans}`;
  const end = r.to === null ? 'now' : minute(r.to);
  return `showing ${r.from === null ? 'the start' : minute(r.from)} - ${end}; ${spans}`;
}

/** An empty map says why (range, filters) and offers the widest view. */
function showEmpty(r, empty) {
  $('empty').hidden = !empty;
  if (!empty) return;
  const s = app.state;
  const filters = ['host', 'port', 'exe', 'user', 'dir', 'scope'].filter((k) => s[k]).map((k) => `${k} ${s[k]}`);
  const why = [];
  if (!app.span) why.push('the store holds no connections yet');
  else {
    if (filters.length) why.push(`the filters (${filters.join(', ')}) match nothing`);
    why.push(`the range ${rangeText(r).replace(/^showing /, '')}`);
  }
  $('empty-why').textContent = `Nothing to show: ${why.join('; ')}.`;
  $('empty-widest').hidden = !app.span;
}

/** Rebuilds the view from the loaded graph; `relayout` runs the layout again. */
function rebuild(relayout, first = false) {
  if (!app.graph) return;
  const r = currentRange();
  // The map draws the loop's edges beside the connections; the matrix and the table read `app.graph` alone.
  const drawn = loop.graphWith(app.graph);
  app.view = buildView(drawn, app.state, { from: r.from, to: r.to, clientSide: app.exported }, app.groups);
  loop.decorate(app.view, drawn);
  const ids = new Set(app.view.nodes.map((n) => n.id));
  const sameNodes = app.scene && app.scene.nodes.length === ids.size && app.scene.nodes.every((n) => ids.has(n.id));
  const since = app.state.since ? Date.parse(app.state.since) : null;
  if (!relayout && sameNodes) {
    // Same nodes: keep the layout, swap the edges (filters on edges only).
    const byId = new Map(app.scene.nodes.map((n) => [n.id, n]));
    app.scene = { nodes: app.view.nodes.map((n) => Object.assign(byId.get(n.id), n, { x: byId.get(n.id).x, y: byId.get(n.id).y })), edges: app.view.edges, members: app.view.members };
    map.setScene(app.scene);
  } else {
    window.connscope.settled = false;
    const links = [...app.view.edges, ...app.view.members];
    const simNodes = app.layout.run(app.view.nodes, links, () => map.refreshStyle(), (ms) => {
      window.connscope.settled = true;
      window.connscope.layoutMs = ms;
      // Until the user pans or zooms, the map follows what it shows (a group opened, new nodes).
      if (!startView && !map.userMoved) map.fit();
    });
    app.scene = { nodes: simNodes, edges: app.view.edges, members: app.view.members };
    map.setScene(app.scene);
    if (first && app.state.view) {
      const [x, y, k] = app.state.view.split(',').map(Number);
      if ([x, y, k].every(Number.isFinite)) map.setTransform(zoomIdentity.translate(x, y).scale(k));
    } else if (first) map.fit();
  }
  if (!app.exported) firewall.setHosts([...app.graph.nodes.values()].filter((n) => n.kind === 'host').map((n) => n.label).sort());
  const searched = searchNodes(app.view, app.state.q);
  const ready = loop.highlighted(app.view, drawn);
  const matches = ready && searched ? new Set([...ready, ...searched]) : ready ?? searched;
  map.setLook({ since: Number.isNaN(since) ? null : since, matches, selected: app.state.sel || null, firewall: backtest.colours(app.view.edges) ?? firewall.colours(app.view.edges) });
  renderDetails($('details'), app.view, drawn, app.state.sel, r, { select: (id) => update({ sel: id ?? '' }), toggleGroup, firewall: firewall.result, policy: (host) => loop.entry(host) });
  loop.render(app.view, { select: (host) => update({ host, show: '' }) });
  timeline.render(app.graph.timeline, r.from, r.to, app.graph.timelineOf);
  views.render(app, r, backtest.blocked());
  backtest.suggest(app.graph);
  const e = app.view.edges.length;
  status(`${rangeText(r)} · ${app.view.nodes.length} nodes, ${e} edges${app.exported ? ' (export)' : ''}`, live.mode === 'sse' ? 'live' : '');
  showEmpty(r, app.view.nodes.length === 0);
  document.body.dataset.nodes = String(app.view.nodes.length);
  document.body.dataset.edges = String(e);
}

// Live updates: the collector sends a notice per stored batch as a
// server-sent event; each burst of notices refetches the graph once. Without
// a stream, the graph is polled instead. `mode` says which ('sse' once the
// stream is open, 'poll', 'login' until a token is given, or 'reconnecting'
// after a stream ended); `notices`
// counts the notices received. Tests read both.
const live = { mode: 'starting', notices: 0, timer: 0, poller: 0 };
window.connscope.live = live;
/** Without a stream, how often the graph is fetched again. */
const POLL_MS = 10e3;
/** Notices closer together than this make one refetch. */
const DEBOUNCE_MS = 1000;
function setLive(mode) {
  live.mode = mode;
  document.body.dataset.live = mode;
  $('status').classList.toggle('live', mode === 'sse');
}
function startLive() {
  if (app.exported) return;
  const refresh = () => {
    clearTimeout(live.timer);
    live.timer = setTimeout(() => {
      if (currentRange().relative || app.state.range === 'last') load();
    }, DEBOUNCE_MS);
  };
  const onEvent = (event) => {
    // 'ready' only opens the stream; 'ingest' is a stored batch, 'resync' lost notices.
    if (event.type !== 'ingest' && event.type !== 'resync') return;
    live.notices++;
    refresh();
  };
  const retry = () => {
    setLive('reconnecting');
    setTimeout(startLive, 5e3);
  };
  followEvents('api/v1/events/stream', onEvent, {
    onOpen: () => {
      clearInterval(live.poller);
      setLive('sse');
    },
  })
    .then(retry)
    .catch((err) => {
      // Without a token yet, the login starts it again. A stream that was
      // open and broke is tried again. No stream at all: poll.
      if (err instanceof Unauthorized) return setLive('login');
      if (live.mode === 'sse') return retry();
      setLive('poll');
      clearInterval(live.poller);
      live.poller = setInterval(() => (currentRange().relative || app.state.range === 'last') && load(), POLL_MS);
    });
}

bindControls();
syncControls();
load().then(startLive);
