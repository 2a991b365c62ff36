// The details panel for a selected node or edge. Built from DOM nodes with
// textContent only: host names, executable paths and user names come from
// the monitored machines and are shown as text, never parsed as markup.

import { verdictsOf, viewVerdict } from './firewall.js';
import { policyFacts } from './loop.js';

export const fmtTime = (ms) => (ms === null || ms === undefined ? '—' : new Date(ms).toISOString().replace('.000Z', 'Z'));
export const fmtCount = (n) => Number(n).toLocaleString('en-US');
export function fmtBytes(n) {
  if (!n) return '0 B';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  const i = Math.min(units.length - 1, Math.floor(Math.log2(n) / 10));
  return `${(n / 2 ** (10 * i)).toFixed(i ? 1 : 0)} ${units[i]}`;
}

function el(tag, text, attrs = {}) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  return e;
}

function table(rows, head) {
  const t = el('table');
  if (head) {
    const tr = el('tr');
    for (const h of head) tr.append(el('th', h));
    t.append(tr);
  }
  for (const row of rows) {
    const tr = el('tr');
    for (const cell of row) tr.append(typeof cell === 'number' ? el('td', fmtCount(cell), { class: 'num' }) : el('td', cell));
    t.append(tr);
  }
  return t;
}

/** Quotes a word for a POSIX shell when it needs it. */
export function shellQuote(word) {
  const s = String(word);
  return /^[A-Za-z0-9_./:@%+=,-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

/**
 * The `connscope report` command line that shows the same data in a terminal.
 * `DB` stands for the collector's database file, which the page does not know.
 */
export function reportCommand({ host, port, from, to }) {
  const words = ['connscope', 'report', 'edges', '--db', 'DB'];
  if (host) words.push('--host', host);
  if (port) words.push('--port', port);
  if (from !== null && from !== undefined) words.push('--from', fmtTime(from));
  if (to !== null && to !== undefined) words.push('--to', fmtTime(to));
  return words.map(shellQuote).join(' ');
}

function tallyTable(title, tallies, unit = 'connections') {
  const frag = document.createDocumentFragment();
  frag.append(el('h3', title));
  frag.append(tallies.length ? table(tallies.slice(0, 50).map((t) => [t.name, t.count]), ['name', unit]) : el('p', 'none recorded'));
  return frag;
}

function merge(lists) {
  const m = new Map();
  for (const list of lists) for (const t of list) m.set(t.name, (m.get(t.name) ?? 0) + t.count);
  return [...m].map(([name, count]) => ({ name, count })).sort((a, b) => b.count - a.count);
}

const LOOP_TEXT = { 'would-block': 'WOULD BLOCK (policy in audit mode)', blocked: 'BLOCKED (policy in enforce mode)', drift: 'DRIFT (no policy allows it)' };

/** A host's policy: its badge and status (loop.js `policyFacts`). */
function policySection(entry) {
  const frag = document.createDocumentFragment();
  frag.append(el('h3', 'Policy'));
  if (!entry) {
    frag.append(el('p', 'no policy data for this host', { class: 'hint' }));
    return frag;
  }
  frag.append(el('p', entry.badge, { class: `badge ${entry.badge}`, 'data-badge': entry.badge }));
  frag.append(table(policyFacts(entry)));
  return frag;
}

/** The hits and drift among `edges`: kind, peer, processes with their users, count. */
function loopSection(edges, label, own, kindOf) {
  const frag = document.createDocumentFragment();
  const loops = edges.filter((e) => e.loop);
  if (!loops.length) return frag;
  frag.append(el('h3', 'Firewall hits and drift'));
  const rows = loops.sort((a, b) => b.count - a.count).slice(0, 100).map((e) => [
    e.loop,
    // A service's label names its port already.
    `${own.has(e.source) ? `→ ${label(e.target)}` : `← ${label(e.source)}`}${kindOf(e.target) === 'service' ? `/${e.protocol}` : ` ${e.port}/${e.protocol}`}`,
    `${e.processes.map((p) => p.name).join(', ')} (${e.users.map((u) => u.name).join(', ') || 'user unknown'})`,
    e.count,
  ]);
  frag.append(table(rows, ['kind', 'peer', 'process (user)', 'count']));
  return frag;
}

const VERDICT_TEXT = { blocked: 'BLOCKED', 'maybe-blocked': 'MAYBE BLOCKED', allowed: 'allowed' };

/** Why the checked ruleset blocks (or lets through) an edge: rules and unknowns, as text. */
function firewallSection(edge, firewall) {
  const checked = verdictsOf(edge, firewall.byKey);
  const frag = document.createDocumentFragment();
  if (!checked.length) return frag;
  const verdict = viewVerdict(edge, firewall.byKey);
  frag.append(el('h3', `Firewall check for ${firewall.host}`));
  frag.append(el('p', VERDICT_TEXT[verdict], { class: `fw-verdict ${verdict}` }));
  const reasons = el('ul', null, { class: 'fw-reasons' });
  const seen = new Set();
  const reason = (text) => {
    if (seen.has(text)) return;
    seen.add(text);
    reasons.append(el('li', text));
  };
  for (const c of checked) {
    for (const d of c.dropped_by) reason(`dropped by ${d}`);
    for (const u of c.unknowns) reason(`not decidable from the data: ${u}`);
    if (c.verdict !== 'blocked') for (const a of c.accepted_by) reason(`accepted by ${a}`);
  }
  if (!seen.size) reason(verdict === 'allowed' ? 'no rule drops it (chain policies accept)' : 'no rule named');
  frag.append(reasons);
  return frag;
}

/**
 * Fills `aside` with the details of `id` (a node or edge of `view`), or hides
 * it when nothing is selected. `range` is the time range shown;
 * `actions.firewall` the firewall check shown on the map, if any.
 */
export function renderDetails(aside, view, graph, id, range, actions) {
  aside.replaceChildren();
  const node = view.nodes.find((n) => n.id === id);
  const edge = node ? null : view.edges.find((e) => e.id === id);
  aside.hidden = !node && !edge;
  if (aside.hidden) return;
  const close = el('button', '×', { class: 'close', type: 'button', 'aria-label': 'close' });
  close.addEventListener('click', () => actions.select(null));
  aside.append(close);
  const label = (nid) => view.nodes.find((n) => n.id === nid)?.label ?? graph.nodes.get(nid)?.label ?? view.groups?.get(nid)?.label ?? nid;

  if (node) {
    // A host's panel counts the connections to its services too; hits and drift apart.
    const own = new Set([id, ...view.nodes.filter((n) => n.kind === 'service' && n.host === id).map((n) => n.id)]);
    const touching = view.edges.filter((e) => own.has(e.source) || own.has(e.target));
    const edges = touching.filter((e) => !e.loop);
    aside.append(el('h2', node.label));
    const facts = [['kind', node.internal ? `${node.kind} (internal)` : `${node.kind} (external)`]];
    if (node.address) facts.push(['address', node.address]);
    if (node.name) facts.push(['name', node.name]);
    if (node.port !== undefined) facts.push(['port', `${node.port}${node.service ? ` (${node.service})` : ''}`]);
    if (node.host) facts.push(['host', label(node.host)]);
    const count = edges.reduce((s, e) => s + e.count, 0);
    facts.push(['connections', fmtCount(count)], ['bytes', fmtBytes(edges.reduce((s, e) => s + e.bytes, 0))]);
    const first = Math.min(...edges.map((e) => e.firstSeen ?? Infinity));
    const last = Math.max(...edges.map((e) => e.lastSeen ?? -Infinity));
    facts.push(['first seen', fmtTime(Number.isFinite(first) ? first : null)], ['last seen', fmtTime(Number.isFinite(last) ? last : null)]);
    if (node.inside) facts.push(['connections inside', fmtCount(node.inside)]);
    for (const [kind, n] of Object.entries(node.insideLoop ?? {})) facts.push([`${kind} inside`, fmtCount(n)]);
    aside.append(table(facts));
    if (node.kind === 'host' && actions.policy) aside.append(policySection(actions.policy(node.label)));
    if (node.kind === 'group' && node.internal && actions.policy) {
      aside.append(el('h3', 'Policies'));
      aside.append(table(node.members.slice(0, 100).map((m) => {
        const entry = actions.policy(label(m));
        return [label(m), entry ? `${entry.badge}${entry.policy ? ` (${entry.policy} v${entry.version ?? '?'})` : ''}` : 'no policy data'];
      }), ['host', 'policy']));
    }
    aside.append(loopSection(touching, label, own, (nid) => view.nodes.find((n) => n.id === nid)?.kind));
    if (node.kind === 'group') {
      const open = el('button', 'Expand group', { type: 'button', class: 'expand' });
      open.addEventListener('click', () => actions.toggleGroup(node));
      aside.append(open);
      aside.append(el('h3', `${node.members.length} ${node.internal ? 'hosts' : 'members'}`));
      aside.append(table(node.members.slice(0, 100).map((m) => [label(m)])));
    }
    if (node.group) {
      const close = el('button', `Close into ${label(node.group)}`, { type: 'button', class: 'collapse' });
      close.addEventListener('click', () => actions.toggleGroup(node));
      aside.append(close);
    }
    aside.append(el('h3', 'Connections'));
    const rows = edges.sort((a, b) => b.count - a.count).slice(0, 100)
      .map((e) => [own.has(e.source) ? `→ ${label(e.target)}` : `← ${label(e.source)} → ${label(e.target)}`, e.service || '', e.count, fmtTime(e.lastSeen)]);
    aside.append(table(rows, ['peer', 'service', 'count', 'last seen']));
    aside.append(tallyTable('Processes', merge(edges.map((e) => e.processes))));
    aside.append(tallyTable('Users', merge(edges.map((e) => e.users))));
    const host = node.kind === 'host' ? node.label : node.kind === 'service' ? label(node.host) : node.address ?? node.label;
    aside.append(el('h3', 'Same data in a terminal'));
    aside.append(el('pre', reportCommand({ host, port: node.kind === 'service' ? node.port : undefined, from: range.from, to: range.to }), { class: 'command' }));
    aside.append(el('p', 'DB: the collector\'s database file (--db).', { class: 'hint' }));
  } else if (edge.loop) {
    aside.append(el('h2', `${label(edge.source)} → ${label(edge.target)}`));
    aside.append(el('p', LOOP_TEXT[edge.loop], { class: `loop-kind ${edge.loop}` }));
    const facts = [
      ['service', edge.service || `${edge.port}/${edge.protocol}`],
      [edge.loop === 'drift' ? 'connections' : 'hits', fmtCount(edge.count)],
      ['first seen', fmtTime(edge.firstSeen)],
      ['last seen', fmtTime(edge.lastSeen)],
    ];
    if (edge.policy) facts.push(['policy', `${edge.policy.policy ?? '?'} v${edge.policy.version ?? '?'} (${edge.policy.mode ?? '?'})`]);
    aside.append(table(facts));
    const unit = edge.loop === 'drift' ? 'connections' : 'hits';
    aside.append(tallyTable('Processes', edge.processes, unit));
    aside.append(tallyTable('Users', edge.users, unit));
    const s = graph.nodes.get(edge.source);
    const host = s?.kind === 'host' ? s.label : label(graph.nodes.get(edge.target)?.host ?? edge.target);
    aside.append(el('h3', 'Same data in a terminal'));
    const since = range.from !== null && range.from !== undefined ? ['--since', fmtTime(range.from)] : [];
    const words = ['connscope', 'report', edge.loop === 'drift' ? 'drift' : 'hits', '--db', 'DB', ...(edge.loop === 'drift' ? [] : ['--host', host]), ...since];
    aside.append(el('pre', words.map(shellQuote).join(' '), { class: 'command' }));
  } else {
    aside.append(el('h2', `${label(edge.source)} → ${label(edge.target)}`));
    aside.append(table([
      ['service', edge.service || '—'],
      ['connections', fmtCount(edge.count)],
      ['bytes', fmtBytes(edge.bytes)],
      ['first seen', fmtTime(edge.firstSeen)],
      ['last seen', fmtTime(edge.lastSeen)],
    ]));
    if (actions.firewall) aside.append(firewallSection(edge, actions.firewall));
    aside.append(tallyTable('Processes', edge.processes));
    aside.append(tallyTable('Users', edge.users));
    const s = graph.nodes.get(edge.source);
    const t = graph.nodes.get(edge.target);
    const host = s?.kind === 'host' ? s.label : t?.kind === 'service' ? label(t.host) : label(edge.source);
    aside.append(el('h3', 'Same data in a terminal'));
    aside.append(el('pre', reportCommand({ host, port: t?.port, from: range.from, to: range.to }), { class: 'command' }));
    aside.append(el('p', 'DB: the collector\'s database file (--db).', { class: 'hint' }));
  }
}
