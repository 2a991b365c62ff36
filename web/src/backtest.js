// Backtesting on the map: would plans learned on the past have let the next
// days through? The user picks when learning ends (and where it starts and
// testing ends, and which planners); the collector learns every host's plan
// and replays the tested days against it (`GET /api/v1/firewall/backtest`,
// the same work as `connscope firewall backtest`). The panel shows per
// planner what would have been blocked beside the surface the plans allow,
// per host for the planner chosen, and the map and the table colour that
// planner's blocked edges. The collector names each blocked edge with its
// graph id, so nothing here builds one.
//
// A static export has no collector to learn from: the panel says so.
// Host names come from the monitored machines: text only.

import { getJson } from './api.js';
import { fmtCount } from './panel.js';
import { el } from './viewdom.js';

const $ = (id) => document.getElementById(id);
const DAY = 86400e3;

/** A datetime-local field's value for an instant (local time, as the map's range fields). */
function localField(ms) {
  return new Date(ms - new Date(ms).getTimezoneOffset() * 60e3).toISOString().slice(0, 19);
}
const fieldIso = (value) => (value ? new Date(value).toISOString() : '');

/**
 * A planner's blocked edges by graph edge id: `{outcome, connections,
 * notSeen}`. An edge both of whose ends log is reported by both hosts: it is
 * `blocked` when both plans block it all, else `maybe-blocked`.
 */
export function blockedEdges(planner) {
  const out = new Map();
  for (const host of planner.hosts) {
    for (const b of host.blocked) {
      if (!b.edge) continue;
      const seen = out.get(b.edge);
      if (!seen) out.set(b.edge, { outcome: b.outcome, connections: b.connections, notSeen: b.not_seen_in_learning });
      else {
        if (seen.outcome !== b.outcome) seen.outcome = 'maybe-blocked';
        seen.connections = Math.max(seen.connections, b.connections);
      }
    }
  }
  return out;
}

/**
 * The backtest panel. `onChange` runs when the colours change; `showRange(from,
 * to)` sets the map's range (ISO strings); `setHost(name)` its host filter.
 */
export class BacktestPanel {
  constructor({ exported, onChange, showRange, setHost }) {
    this.exported = exported;
    this.onChange = onChange;
    this.showRange = showRange;
    this.setHost = setHost;
    /** The last report (`/api/v1/firewall/backtest`'s answer), or null. */
    this.report = null;
    /** Graph edge id -> verdict of the planner chosen, or null. */
    this.byEdge = null;
    this.pending = 0;
    $('bt-toggle').addEventListener('click', () => this.show($('backtest').hidden));
    if (exported) {
      $('bt-form').hidden = true;
      $('bt-export-note').hidden = false;
      return;
    }
    $('bt-run').addEventListener('click', () => this.run());
    $('bt-clear').addEventListener('click', () => this.clear());
    $('bt-planner').addEventListener('change', () => this.choose());
    $('bt-show-tested').addEventListener('click', () => this.report && this.showRange(this.report.learn_to, this.report.until));
  }

  show(open) {
    $('backtest').hidden = !open;
    $('bt-toggle').setAttribute('aria-expanded', String(open));
  }

  /** Fills empty fields from the data the map shows: test its last 4 days, learn on what came before. */
  suggest(graph) {
    if (this.exported || $('bt-learn-to').value) return;
    const buckets = graph.timeline.filter((b) => b.count > 0 && b.start !== null);
    const last = buckets.length ? Math.max(...buckets.map((b) => b.start)) : Math.max(...graph.edges.map((e) => e.lastSeen ?? -Infinity));
    if (!Number.isFinite(last)) return;
    const until = Math.floor(last / DAY) * DAY + DAY;
    $('bt-until').value = localField(until);
    $('bt-learn-to').value = localField(until - 4 * DAY);
  }

  async run() {
    const learnTo = fieldIso($('bt-learn-to').value);
    if (!learnTo) return this.fail('Pick when learning ends (learn to).');
    const planners = [...document.querySelectorAll('#bt-planners input:checked')].map((i) => i.value);
    if (!planners.length) return this.fail('Pick at least one planner.');
    const ticket = ++this.pending;
    $('bt-status').textContent = 'learning and replaying…';
    $('bt-error').hidden = true;
    try {
      const report = await getJson('api/v1/firewall/backtest', {
        learn_from: fieldIso($('bt-learn-from').value),
        learn_to: learnTo,
        until: fieldIso($('bt-until').value),
        planner: planners.join(','),
        window: $('bt-window').value.trim(),
      });
      if (ticket !== this.pending) return;
      this.report = report;
      const select = $('bt-planner');
      const before = select.value;
      select.replaceChildren(...report.planners.map((p) => el('option', p.planner, { value: p.planner })));
      if (report.planners.some((p) => p.planner === before)) select.value = before;
      $('bt-status').textContent = `learned ${report.learn_from} .. ${report.learn_to}, tested .. ${report.until}`;
      this.renderTotals();
      this.choose();
    } catch (err) {
      if (ticket === this.pending) this.fail(err.message);
    }
  }

  fail(message) {
    $('bt-error').textContent = message;
    $('bt-error').hidden = false;
    $('bt-status').textContent = '';
  }

  clear() {
    this.pending++;
    this.report = null;
    this.byEdge = null;
    for (const id of ['bt-totals', 'bt-hosts']) $(id).replaceChildren();
    $('bt-planner').replaceChildren();
    $('bt-status').textContent = '';
    $('bt-error').hidden = true;
    $('bt-on-map').textContent = '';
    this.onChange();
  }

  /** The planners side by side: what each would have blocked, and what it allows. */
  renderTotals() {
    const t = el('table', null, { class: 'bt-totals' });
    const head = el('tr');
    const rolling = new Map(this.report.rolling.map((r) => [r.planner, r]));
    const titles = ['planner', 'tested', 'blocked', 'blocked edges', 'not seen while learning', 'rules', 'ports', 'peer networks', 'addresses allowed'];
    if (rolling.size) titles.push('settled: new edges a week');
    for (const h of titles) head.append(el('th', h));
    t.append(head);
    for (const p of this.report.planners) {
      const tr = el('tr', null, { 'data-planner': p.planner });
      const cells = [
        ['planner', p.planner],
        ['tested_connections', p.tested_connections],
        ['blocked_connections', p.blocked_connections],
        ['blocked_edges', p.blocked_edges],
        ['not_seen', `${fmtCount(p.not_seen_connections)} on ${fmtCount(p.not_seen_edges)} edges`],
        ['rules', p.surface.rules],
        ['ports', p.surface.ports],
        ['peers', p.surface.peers],
        ['address_space', p.surface.address_space],
      ];
      // The rolling windows' stability figure (none without windows, or with too few).
      const settled = rolling.get(p.planner)?.new_edges_per_week;
      if (rolling.size) cells.push(['new_edges_per_week', settled === null || settled === undefined ? '—' : settled.toFixed(1)]);
      for (const [key, v] of cells) tr.append(el('td', typeof v === 'number' ? fmtCount(v) : v, { 'data-key': key, 'data-value': String(typeof v === 'number' ? v : v), class: typeof v === 'number' ? 'num' : '' }));
      t.append(tr);
    }
    $('bt-totals').replaceChildren(t);
  }

  /** Shows the chosen planner per host and colours its blocked edges. */
  choose() {
    const planner = this.report?.planners.find((p) => p.planner === $('bt-planner').value);
    if (!planner) return;
    this.byEdge = blockedEdges(planner);
    const t = el('table', null, { class: 'bt-hosts' });
    const head = el('tr');
    for (const h of ['host', 'tested', 'blocked', 'blocked edges', 'not seen', 'ports', 'peer networks', 'addresses allowed']) head.append(el('th', h));
    t.append(head);
    const hosts = [...planner.hosts].sort((a, b) => b.blocked_connections - a.blocked_connections || a.host.localeCompare(b.host));
    for (const h of hosts) {
      const tr = el('tr', null, { 'data-host': h.host });
      if (h.blocked_connections) tr.className = 'blocked';
      const name = el('td');
      const link = el('button', h.no_history ? `${h.host} (no history)` : h.host, { type: 'button', class: 'link', title: `show ${h.host} on the map` });
      link.addEventListener('click', () => this.setHost(h.host));
      name.append(link);
      tr.append(name);
      const notSeen = h.blocked.filter((b) => b.not_seen_in_learning).reduce((n, b) => n + b.connections, 0);
      for (const v of [h.tested_connections, h.blocked_connections, h.blocked.length, notSeen, h.surface.ports, h.surface.peers]) tr.append(el('td', fmtCount(v), { class: 'num' }));
      tr.append(el('td', h.surface.address_space, { class: 'num' }));
      t.append(tr);
    }
    $('bt-hosts').replaceChildren(el('h3', `Per host, planner ${planner.planner}`), t);
    this.onChange();
  }

  /** Graph edge id -> the chosen planner's verdict, while a backtest is shown. */
  blocked() {
    return this.byEdge;
  }

  /**
   * Per view edge id, its colour class for the map ('blocked' or
   * 'maybe-blocked'); a folded edge is blocked when all its parts are. Also
   * says how many of the blocked edges the map's range shows. Null when off.
   */
  colours(viewEdges) {
    if (!this.byEdge) return null;
    const map = new Map();
    let shown = 0;
    for (const e of viewEdges) {
      const parts = e.parts ?? [e.id];
      const hits = parts.filter((id) => this.byEdge.has(id));
      if (!hits.length) continue;
      shown += hits.length;
      map.set(e.id, hits.length === parts.length && hits.every((id) => this.byEdge.get(id).outcome === 'blocked') ? 'blocked' : 'maybe-blocked');
    }
    $('bt-on-map').textContent = `${fmtCount(shown)} of ${fmtCount(this.byEdge.size)} blocked edges are in the map's range${shown < this.byEdge.size ? ' (show the tested days to see them all)' : ''}`;
    return map;
  }
}
