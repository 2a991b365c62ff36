// The map's other views of the same data: a matrix (who uses which service)
// and a searchable table of edges. Administrators planning firewall rules
// think in tables as much as in pictures, so these are one click away and
// show exactly what the map shows: they read the graph the map already
// fetched, with the same filters and time range, so switching view never
// fetches anything. The active view is in the URL fragment (`show=`), so a
// link opens it.
//
// Unlike the map, the views never fold external addresses into groups: a row
// is one edge of the graph (a client and a service), as `connscope report
// edges` lists them.

import { getJson } from './api.js';
import { Matrix } from './matrix.js';
import { EdgeTable } from './table.js';
import { formatState } from './state.js';
import { grouping, shownEdges } from './viewdata.js';

export const VIEWS = ['map', 'matrix', 'table'];

const $ = (id) => document.getElementById(id);

/**
 * State keys only the views read: changing them redraws the view, not the
 * map. The map stays drawn (and current) under the views, so switching back
 * to it needs nothing either.
 */
const OWN_KEYS = new Set(['show', 'mrows', 'mside', 'msort', 'tsort', 'tq']);

/**
 * The view switch and the two views. `update(patch)` changes the shared
 * state as the map's controls do. Groups are the map's: the store's groups
 * it fetched (or the export inlined) under the grouping its toolbar picked.
 */
export class Views {
  constructor({ update }) {
    const own = (patch) => {
      if (!this.last || !Object.keys(patch).every((k) => OWN_KEYS.has(k))) return update(patch);
      // The views' own settings: into the link, and a redraw of the view alone.
      Object.assign(this.last[0].state, patch);
      history.replaceState(null, '', formatState(this.last[0].state));
      this.render(...this.last);
    };
    // An edge shown on the map: selected (its details open), or the folded edge it is part of.
    const showOnMap = (id) => {
      const edge = this.last?.[0].view?.edges.find((e) => (e.parts ?? [e.id]).includes(id));
      update({ show: '', sel: edge ? edge.id : '' });
    };
    this.matrix = new Matrix($('matrix-view'), { update: own, showOnMap });
    this.table = new EdgeTable($('table-view'), { update: own, showOnMap });
    for (const b of document.querySelectorAll('#view-switch button[data-show]')) {
      b.addEventListener('click', () => own({ show: b.dataset.show === 'map' ? '' : b.dataset.show }));
    }
  }

  /**
   * Shows the view the state asks for, drawn from `app.graph` under its
   * state; `range` is the shown time range (ms), `blocked` the backtest's
   * verdicts by graph edge id while one is shown.
   */
  render(app, range, blocked) {
    this.last = [app, range, blocked];
    const show = VIEWS.includes(app.state.show) ? app.state.show : 'map';
    for (const b of document.querySelectorAll('#view-switch button[data-show]')) b.setAttribute('aria-pressed', String(b.dataset.show === show));
    $('matrix-view').hidden = show !== 'matrix';
    $('table-view').hidden = show !== 'table';
    document.body.dataset.show = show;
    if (show === 'map' || !app.graph) return;
    // The same edges are reused while the graph and filters stay: the table keeps its rows.
    const key = [app.state.host, app.state.port, app.state.exe, app.state.user, app.state.dir, app.state.scope, range.from, range.to].map(String).join('\n');
    if (this.edgesFor?.graph !== app.graph || this.edgesFor.key !== key) {
      this.edgesFor = { graph: app.graph, key, edges: shownEdges(app.graph, app.state, { from: range.from, to: range.to, clientSide: app.exported }) };
    }
    const edges = this.edgesFor.edges;
    if (show === 'matrix') {
      this.matrix.render(app.graph, edges, app.state, range, grouping(app.graph, app.groups, app.state.group));
    } else this.table.render(app.graph, edges, app.state, blocked);
  }
}
