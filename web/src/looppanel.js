// The policy loop's controls (loop.js has the data side): fetches the
// firewall hits and drift of the map's range and the hosts' policy status,
// keeps the legend of their colours and badges, and the "ready to enforce"
// view (hosts auditing for N days or more with no would-block hit in them, listed and
// highlighted on the map). The policy endpoints may be missing (an older
// collector: 404): the map then draws what it has and the panel says which
// data is missing. Everything from the network is shown with textContent.

import { getJson } from './api.js';
import { BADGES, LOOP_KINDS, loopCounts, policyByHost, readyToEnforce, withLoop } from './loop.js';

const $ = (id) => document.getElementById(id);
const DAY_MS = 86400e3;
const NAMES = { 'would-block': 'would-block', blocked: 'blocked by policy', drift: 'drift' };

/** GETs `path`, null on 404 (a collector without that endpoint); `notes` collects why data is missing. */
async function optional(path, params, what, notes) {
  try {
    return await getJson(path, params);
  } catch (err) {
    notes.push(/HTTP 404/.test(err.message) ? `no ${what} (the collector does not serve ${path})` : `no ${what}: ${err.message}`);
    return null;
  }
}

export class LoopPanel {
  /**
   * `exported`: a static export (no collector); `state()` the map's URL
   * state (`ready`, `rdays`); `update(patch)` changes it.
   */
  constructor({ exported, state, update }) {
    this.exported = exported;
    this.state = state;
    this.hits = null;
    this.drift = null;
    this.status = null;
    this.recent = null;
    this.notes = exported ? ['an exported map carries no firewall hits, drift or policy status'] : [];
    this.byHost = new Map();
    $('loop-toggle').addEventListener('click', () => this.show($('loop').hidden));
    $('loop-days').addEventListener('change', (e) => {
      const days = Math.max(1, Math.round(Number(e.target.value) || 7));
      update({ rdays: days === 7 ? '' : String(days) }, true);
    });
    $('loop-ready-show').addEventListener('change', (e) => update({ ready: e.target.checked ? '1' : '' }));
  }

  show(open) {
    $('loop').hidden = !open;
    $('loop-toggle').setAttribute('aria-expanded', String(open));
  }

  /** The days of the ready-to-enforce view (`rdays`, default 7). */
  days() {
    const n = Math.round(Number(this.state().rdays));
    return Number.isFinite(n) && n >= 1 ? n : 7;
  }

  /** Fetches hits and drift for `range` ({from, to} ISO strings), the status, and the last N days' hits. */
  async load(range) {
    if (this.exported) return;
    const notes = [];
    const since = new Date(Date.now() - this.days() * DAY_MS).toISOString();
    const [hits, drift, status, recent] = await Promise.all([
      optional('api/v1/firewall/hits', range, 'firewall hits', notes),
      optional('api/v1/drift', range, 'drift', notes),
      optional('api/v1/policies/status', {}, 'policy data', notes),
      optional('api/v1/firewall/hits', { from: since }, 'firewall hits', []),
    ]);
    Object.assign(this, { hits, drift, status, recent, notes });
    this.byHost = policyByHost(status);
  }

  /** The graph with hits and drift added (loop.js `withLoop`). */
  graphWith(graph) {
    return withLoop(graph, this.hits, this.drift);
  }

  /** A host name's status entry (with its badge), if the collector knows it. */
  entry(host) {
    return this.byHost.get(host) ?? null;
  }

  /**
   * Sets each shown host's `badge` (loop.js `policyBadge`), and each group's:
   * its hosts' badge when they agree, else `mixed`.
   */
  decorate(view, graph) {
    const label = (id) => graph.nodes.get(id)?.label;
    for (const n of view.nodes) {
      if (n.kind === 'host') n.badge = this.entry(n.label)?.badge ?? 'none';
      else if (n.kind === 'group' && n.internal) {
        const badges = new Set(n.members.map((m) => this.entry(label(m))?.badge ?? 'none'));
        n.badge = badges.size === 1 ? [...badges][0] : 'mixed';
      }
    }
  }

  /** The hosts ready to enforce (loop.js `readyToEnforce`). */
  ready() {
    return this.recent ? readyToEnforce(this.status, this.recent, { days: this.days() }) : [];
  }

  /** The shown nodes holding a ready host (its node, or the closed group it is in), when the view is on. */
  highlighted(view, graph) {
    if (!this.state().ready) return null;
    const hosts = new Set(this.ready().map((r) => r.host));
    const ids = new Set();
    for (const n of view.nodes) {
      if (n.kind === 'host' && hosts.has(n.label)) ids.add(n.id);
      if (n.kind === 'group' && n.members.some((m) => hosts.has(graph.nodes.get(m)?.label))) ids.add(n.id);
    }
    return ids.size ? ids : null;
  }

  /** Fills the legend (counts of what the view draws) and the panel. `select(host)` sets the host filter. */
  render(view, { select }) {
    const counts = loopCounts(view.edges);
    const badges = new Set(view.nodes.map((n) => n.badge).filter((b) => b && b !== 'none'));
    const legend = $('loop-legend');
    legend.replaceChildren();
    for (const kind of LOOP_KINDS) {
      if (!counts[kind].edges) continue;
      const item = document.createElement('span');
      item.className = `edge-${kind}`;
      item.dataset.kind = kind;
      item.textContent = `${NAMES[kind]} ${counts[kind].edges}`;
      legend.append(item);
    }
    for (const badge of BADGES) {
      if (!badges.has(badge)) continue;
      const item = document.createElement('span');
      item.className = `badge-${badge}`;
      item.textContent = badge;
      legend.append(item);
    }
    legend.hidden = !legend.childElementCount;

    $('loop-days').value = String(this.days());
    $('loop-ready-show').checked = Boolean(this.state().ready);
    $('loop-notes').textContent = this.notes.join('; ');
    $('loop-notes').hidden = !this.notes.length;
    const summary = [];
    for (const kind of LOOP_KINDS) summary.push(`${NAMES[kind]}: ${counts[kind].edges} edges, ${counts[kind].count} ${kind === 'drift' ? 'connections' : 'hits'}`);
    if (this.status) {
      const per = new Map();
      for (const e of this.byHost.values()) per.set(e.badge, (per.get(e.badge) ?? 0) + 1);
      summary.push(`hosts: ${BADGES.filter((b) => per.has(b)).map((b) => `${per.get(b)} ${b}`).join(', ') || 'none known'}`);
    }
    $('loop-summary').textContent = summary.join(' · ');
    const list = $('loop-ready');
    list.replaceChildren();
    if (!this.status || !this.recent) {
      list.append(Object.assign(document.createElement('li'), { textContent: this.status ? 'no firewall hits to judge by' : 'no policy data' }));
      return;
    }
    const ready = this.ready();
    if (!ready.length) list.append(Object.assign(document.createElement('li'), { textContent: `no host has audited for ${this.days()} days without would-block hits` }));
    for (const r of ready) {
      const li = document.createElement('li');
      const host = document.createElement('button');
      host.type = 'button';
      host.className = 'ready-host';
      host.textContent = r.host;
      host.addEventListener('click', () => select(r.host));
      li.append(host, document.createTextNode(` ${r.policy} v${r.version ?? '?'}, auditing ${r.auditing.join(' and ')} since ${r.since.slice(0, 10)}`));
      list.append(li);
    }
  }
}
