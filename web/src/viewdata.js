// What the map's other views (views.js) show, as pure data: the edges the
// filters let through, what an end is called, and which group it is in.
// Shared by the matrix, the table and their tests.

import { edgeFilter, groupKey, hostGrouper, inRange } from './model.js';

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
 * The group of every end the views show, by the map's grouping (`mode`, the
 * state's `group`: the store's groups when it has any, else a name pattern
 * two or more hosts share, else the subnet; or the one the toolbar picked).
 * `groups` is the store's groups and labels as the map has them. A host the
 * grouping leaves out is "(no group)"; addresses without an agent are
 * "internal (no agent)" or, outside, their domain or network.
 */
export function grouping(graph, groups, mode) {
  const group = hostGrouper(graph, groups, mode);
  const stored = (groups?.groups ?? []).length > 0;
  const picked = !mode || mode === 'auto' ? (stored ? 'store' : 'automatic') : mode;
  return {
    source: picked,
    of(id) {
      const host = hostOf(graph, id);
      const n = host ?? graph.nodes.get(id);
      if (!n) return '(unknown)';
      if (host || n.internal) return group(n)?.label ?? (host ? '(no group)' : 'internal (no agent)');
      return groupKey(n)?.label ?? 'outside';
    },
  };
}
