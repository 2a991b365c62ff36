// What the map's other views (views.js) show, as pure data: the edges the
// filters let through, what an end is called, and which group it is in.
// Shared by the matrix, the table and their tests.

import { edgeFilter, groupKey, inRange } from './model.js';

/** The graph edges the state's filters let through; `clientSide` also filters by time (an export). */
export function shownEdges(graph, state, range) {
  const keep = edgeFilter(graph, state);
  return graph.edges.filter((e) => (!range.clientSide || inRange(e, range.from, range.to)) && keep(e));
}

/** The monitored host a node stands for (itself, or a service's host), else null. */
export function hostOf(graph, id) {
  const n = graph.nodes.get(id);
  if (!n) return null;
  if (n.kind === 'host') return n;
  if (n.kind === 'service' && n.host) return graph.nodes.get(n.host) ?? null;
  return null;
}

/** What a node is called in a view: a host's name (for a service too), else the address or DNS name. */
export function endLabel(graph, id) {
  const host = hostOf(graph, id);
  if (host) return host.label;
  const n = graph.nodes.get(id);
  return n ? n.name ?? n.label : id;
}

/**
 * The group of every end the views show. `defined` are the store's groups
 * (`GET /api/v1/groups`, in the order they were added: a host in several
 * counts in the first, as `report edges --by group` does); without them,
 * hosts are grouped automatically, by name pattern (`ws-*` when two or more
 * names differ only in a trailing number), else by /24. Addresses without an
 * agent are "internal (no agent)" or, outside, their domain or network.
 */
export function grouping(graph, defined) {
  const byHost = new Map();
  if (defined?.length) {
    for (const g of defined) for (const h of g.hosts ?? []) if (!byHost.has(h)) byHost.set(h, g.name);
  } else {
    const hosts = [...graph.nodes.values()].filter((n) => n.kind === 'host');
    const stem = (name) => name.replace(/\d+$/, '');
    const stems = new Map();
    for (const h of hosts) if (/\d$/.test(h.label)) stems.set(stem(h.label), (stems.get(stem(h.label)) ?? 0) + 1);
    for (const h of hosts) {
      if (/\d$/.test(h.label) && stems.get(stem(h.label)) >= 2) byHost.set(h.label, `${stem(h.label)}*`);
      else {
        const a = /^(\d+\.\d+\.\d+)\.\d+$/.exec(h.addresses?.[0] ?? '');
        byHost.set(h.label, a ? `${a[1]}.0/24` : h.label);
      }
    }
  }
  return {
    source: defined?.length ? 'store' : 'automatic',
    of(id) {
      const host = hostOf(graph, id);
      if (host) return byHost.get(host.label) ?? '(no group)';
      const n = graph.nodes.get(id);
      if (!n) return '(unknown)';
      if (n.internal) return 'internal (no agent)';
      return groupKey(n)?.label ?? 'outside';
    },
  };
}
