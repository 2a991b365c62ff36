// From the collector's graph JSON to what the map draws.
//
// The server already aggregates connections into edges (one per client and
// service, from hourly rollups), so the browser only filters, groups external
// addresses and merges the edges that grouping makes parallel. Everything here
// is pure data in, data out, so the static export and the served page share it.

/** @typedef {{id:string, kind:'host'|'service'|'external'|'group', label:string, internal:boolean, host?:string, address?:string, port?:number, service?:string, name?:string, members?:string[]}} MapNode */
/** @typedef {{id:string, source:string, target:string, count:number, bytes:number, firstSeen:number|null, lastSeen:number|null, processes:{name:string,count:number}[], users:{name:string,count:number}[], service:string}} MapEdge */

const ms = (t) => {
  if (t === null || t === undefined || t === '') return null;
  const v = typeof t === 'number' ? t : Date.parse(t);
  return Number.isFinite(v) ? v : null;
};

/**
 * Normalises the API's graph document (`connscope_query::Graph`, see
 * docs/API.md) into a map of nodes and a list of edges. Unknown fields are
 * ignored, so the server can grow the format.
 */
export function normalizeGraph(doc) {
  const nodes = new Map();
  for (const n of doc.nodes ?? []) {
    const kind = n.kind;
    const address = n.ip ?? (n.addresses ?? [])[0];
    nodes.set(String(n.id), {
      id: String(n.id),
      kind,
      label: String(n.label ?? n.id),
      internal: kind === 'external' ? Boolean(n.internal) : true,
      host: n.host === undefined ? undefined : String(n.host),
      address: address === undefined ? undefined : String(address),
      addresses: (n.addresses ?? []).map(String),
      port: n.port ?? undefined,
      protocol: n.protocol ?? undefined,
      service: n.service ?? undefined,
      name: n.name ?? undefined,
      domain: n.domain ?? undefined,
    });
  }
  const edges = [];
  for (const e of doc.edges ?? []) {
    const source = String(e.source);
    const target = String(e.target);
    if (!nodes.has(source) || !nodes.has(target)) continue; // the server sends both ends; be safe.
    const processes = [...(e.client_processes ?? []), ...(e.server_processes ?? [])];
    const byExe = new Map();
    const byUser = new Map();
    for (const p of processes) {
      const exe = `${p.executable || '(unknown executable)'} @ ${p.host}`;
      byExe.set(exe, (byExe.get(exe) ?? 0) + Number(p.connections ?? 0));
      if (p.user) byUser.set(p.user, (byUser.get(p.user) ?? 0) + Number(p.connections ?? 0));
    }
    for (const u of e.users ?? []) if (!byUser.has(u)) byUser.set(u, 0);
    const sorted = (m) => [...m].map(([name, count]) => ({ name, count })).sort((a, b) => b.count - a.count);
    edges.push({
      // The server's id (`connscope_query::EdgeId`), which the firewall
      // check's verdicts name too; a graph from before edge ids gets a
      // local one by position.
      id: e.id === undefined ? `edge:${edges.length}` : String(e.id),
      source,
      target,
      port: e.port,
      protocol: e.protocol,
      count: Number(e.connections ?? 0),
      failures: Number(e.failures ?? 0),
      bytes: Number(e.bytes_to_server ?? 0) + Number(e.bytes_to_client ?? 0),
      firstSeen: ms(e.first_seen),
      lastSeen: ms(e.last_seen),
      processes: sorted(byExe),
      executables: processes.map((p) => p.executable).filter(Boolean),
      users: sorted(byUser),
      service: e.service ?? nodes.get(target).service ?? '',
    });
  }
  // A service node is named after the service its edges name.
  for (const e of edges) {
    const t = nodes.get(e.target);
    if (t.kind === 'service' && e.service && !t.service) t.service = e.service;
  }
  // The server's histogram of connections when it sends one; otherwise the
  // timeline shows when the edges shown were first seen, per hour.
  let timeline = (doc.timeline ?? []).map((b) => ({ start: ms(b.start), count: Number(b.connections ?? b.count ?? 0) }));
  let timelineOf = 'connections';
  if (!timeline.length && edges.length) {
    const hours = new Map();
    for (const e of edges) if (e.firstSeen !== null) {
      const h = Math.floor(e.firstSeen / 3600e3) * 3600e3;
      hours.set(h, (hours.get(h) ?? 0) + 1);
    }
    timeline = [...hours].map(([start, count]) => ({ start, count }));
    timelineOf = 'new edges';
  }
  return { from: ms(doc.from), to: ms(doc.to), nodes, edges, timeline, timelineOf };
}

/**
 * The group an outside address falls in: its registered domain if known (the
 * node's `domain`, else the last two labels of its `name`), else its network
 * (/24 of IPv4, /48 of IPv6).
 */
export function groupKey(node) {
  const domain = node.domain ?? (node.name ? node.name.replace(/\.$/, '').split('.').slice(-2).join('.') : '');
  if (domain.includes('.')) return { id: `group:name:${domain}`, label: `*.${domain}` };
  const address = node.address ?? node.label;
  if (/^\d+\.\d+\.\d+\.\d+$/.test(address)) {
    const p = address.split('.');
    return { id: `group:net:${p[0]}.${p[1]}.${p[2]}.0/24`, label: `${p[0]}.${p[1]}.${p[2]}.0/24` };
  }
  if (address.includes(':')) {
    const groups = expandIpv6(address);
    if (groups) return { id: `group:net:${groups.slice(0, 3).join(':')}::/48`, label: `${groups.slice(0, 3).join(':')}::/48` };
  }
  return null;
}

/** `ws-01` -> `ws-*`, `web2` -> `web*`: a name ending in a number, with that number as a wildcard; else null. */
export function namePattern(name) {
  const m = /^(.*[A-Za-z][^0-9]*?)\d+$/.exec(String(name));
  return m ? `${m[1]}*` : null;
}

/** The subnet an inside address is in: /24 of IPv4, /64 of IPv6. */
export function subnetOf(address) {
  if (!address) return null;
  if (/^\d+\.\d+\.\d+\.\d+$/.test(address)) return `${address.split('.').slice(0, 3).join('.')}.0/24`;
  const groups = expandIpv6(address);
  return groups ? `${groups.slice(0, 4).join(':')}::/64` : null;
}

/** Whether `address` lies in `cidr` (IPv4 or IPv6 `a/n`, or a bare address). */
export function inCidr(address, cidr) {
  const [net, bits] = String(cidr).split('/');
  const a = addressBits(address);
  const b = addressBits(net);
  if (a === null || b === null || a.length !== b.length) return false;
  const n = bits === undefined ? a.length : Number(bits);
  return Number.isInteger(n) && a.slice(0, n) === b.slice(0, n);
}

function addressBits(address) {
  if (!address) return null;
  if (/^\d+\.\d+\.\d+\.\d+$/.test(address)) return address.split('.').map((o) => Number(o).toString(2).padStart(8, '0')).join('');
  const groups = expandIpv6(address);
  return groups ? groups.map((g) => parseInt(g || '0', 16).toString(2).padStart(16, '0')).join('') : null;
}

/**
 * How inside hosts are grouped: `store` (the store's host groups), `name`
 * (name patterns like `ws-*`), `subnet`, `label:KEY` (a host label's value),
 * `none`, or `auto` (the store's groups when it has any, else a name pattern
 * two or more hosts share, else the subnet).
 */
export const GROUPINGS = ['auto', 'store', 'name', 'subnet', 'none'];

/**
 * The grouping function for inside nodes (hosts, and unmonitored inside
 * addresses): node -> {id, label} or null. `groups` is `GET /api/v1/groups`'s
 * answer (`{groups: [{name, kind, patterns, hosts}], host_labels: [...]}`).
 */
export function hostGrouper(graph, groups, mode) {
  const stored = groups?.groups ?? [];
  const pick = !mode || mode === 'auto' ? (stored.length ? 'store' : 'auto') : mode;
  const address = (n) => n.address ?? (n.kind === 'external' ? n.label : undefined);
  if (pick === 'none') return () => null;
  if (pick === 'store') {
    const byHost = new Map();
    for (const g of stored) for (const h of g.hosts ?? []) if (!byHost.has(h)) byHost.set(h, g.name);
    return (n) => {
      let name = n.kind === 'host' ? byHost.get(n.label) : undefined;
      // Address groups also catch inside addresses no agent reports (printers).
      if (name === undefined) name = stored.find((g) => g.kind === 'addresses' && (n.kind === 'host' ? n.addresses : [address(n)]).some((a) => g.patterns.some((p) => inCidr(a, p))))?.name;
      return name === undefined ? null : { id: `hgroup:store:${name}`, label: name };
    };
  }
  if (pick.startsWith('label:')) {
    const key = pick.slice(6);
    const value = new Map((groups?.host_labels ?? []).filter((l) => l.key === key).map((l) => [l.host, l.value]));
    return (n) => (n.kind === 'host' && value.has(n.label) ? { id: `hgroup:label:${key}=${value.get(n.label)}`, label: `${key}=${value.get(n.label)}` } : null);
  }
  const byName = (n) => (n.kind === 'host' && namePattern(n.label) ? { id: `hgroup:name:${namePattern(n.label)}`, label: namePattern(n.label) } : null);
  const bySubnet = (n) => {
    const net = subnetOf(address(n));
    return net ? { id: `hgroup:subnet:${net}`, label: net } : null;
  };
  if (pick === 'name') return byName;
  if (pick === 'subnet') return bySubnet;
  // auto: a name pattern two or more hosts share, else the subnet.
  const shared = new Map();
  for (const n of graph.nodes.values()) {
    const g = byName(n);
    if (g) shared.set(g.id, (shared.get(g.id) ?? 0) + 1);
  }
  return (n) => {
    const g = byName(n);
    return g && shared.get(g.id) >= 2 ? g : bySubnet(n);
  };
}

/** The label keys of the store's host labels, for the grouping switch. */
export const labelKeys = (groups) => [...new Set((groups?.host_labels ?? []).map((l) => l.key))].sort();

/** Above this many outside nodes (after folding by domain and network), the outside is one "internet" node. */
export const INTERNET_ABOVE = 20;
export const INTERNET = 'group:internet';

function expandIpv6(address) {
  const bare = address.replace(/^\[|\](:\d+)?$/g, '');
  const [head, tail] = bare.split('::');
  const h = head ? head.split(':') : [];
  const t = tail === undefined ? [] : tail ? tail.split(':') : [];
  if (bare.includes('::')) return [...h, ...Array(Math.max(0, 8 - h.length - t.length)).fill('0'), ...t];
  return h.length === 8 ? h : null;
}

const lower = (s) => String(s ?? '').toLowerCase();
const contains = (hay, needle) => lower(hay).includes(needle);

function hostLabel(graph, node) {
  if (node.kind === 'service' && node.host && graph.nodes.has(node.host)) return graph.nodes.get(node.host).label;
  return node.label;
}

/** Whether an edge passes the filters of a view state (time is the server's job, see `inRange`). */
export function edgeFilter(graph, state) {
  const host = lower(state.host).trim();
  const port = lower(state.port).trim();
  const exe = lower(state.exe).trim();
  const user = lower(state.user).trim();
  const matchesHost = (id) => {
    const n = graph.nodes.get(id);
    return contains(hostLabel(graph, n), host) || contains(n.address, host) || contains(n.name, host);
  };
  return (e) => {
    const s = graph.nodes.get(e.source);
    const t = graph.nodes.get(e.target);
    if (host) {
      const fromHost = matchesHost(e.source);
      const toHost = matchesHost(e.target);
      if (state.dir === 'in' ? !toHost : state.dir === 'out' ? !fromHost : !(fromHost || toHost)) return false;
    } else if (state.dir === 'in' && s.internal) return false;
    else if (state.dir === 'out' && t.internal) return false;
    if (port && String(e.port ?? t.port ?? '') !== port && !contains(e.service, port)) return false;
    if (exe && !e.executables.some((x) => contains(x, exe))) return false;
    if (user && !e.users.some((u) => contains(u.name, user))) return false;
    if (state.scope === 'internal' && !(s.internal && t.internal)) return false;
    if (state.scope === 'external' && s.internal && t.internal) return false;
    return true;
  };
}

/** Whether an edge was seen inside [from, to] (ms, null = open); used where no server filters by time. */
export function inRange(edge, from, to) {
  if (from !== null && edge.lastSeen !== null && edge.lastSeen < from) return false;
  if (to !== null && edge.firstSeen !== null && edge.firstSeen > to) return false;
  return true;
}

function mergeTallies(a, b) {
  const m = new Map(a.map((x) => [x.name, x.count]));
  for (const x of b) m.set(x.name, (m.get(x.name) ?? 0) + x.count);
  return [...m].map(([name, count]) => ({ name, count })).sort((x, y) => y.count - x.count);
}

/**
 * Builds what to draw: filtered edges, the nodes they touch, folded into
 * groups unless opened (`state.open`): inside hosts (with their services)
 * into host groups (`state.group` picks how, see `hostGrouper`), outside
 * addresses into domains or networks, and those into one "internet" node when
 * there are many; then parallel edges merged, counting connections. Returns
 * `{nodes, edges, members, groups}` where `members` are the thin host-service
 * links that keep a host's services around it. `groups` is the store's
 * (`GET /api/v1/groups`), if any.
 */
export function buildView(graph, state, range = { from: null, to: null, clientSide: false }, storeGroups = null) {
  const keep = edgeFilter(graph, state);
  const filtering = Boolean(state.host || state.port || state.exe || state.user || state.dir || state.scope);
  const edges = graph.edges.filter((e) => (!range.clientSide || inRange(e, range.from, range.to)) && keep(e));

  // Groups count only the nodes this view shows.
  const shownIds = new Set();
  if (!filtering && !range.clientSide) for (const id of graph.nodes.keys()) shownIds.add(id);
  for (const e of edges) {
    for (const id of [e.source, e.target]) {
      shownIds.add(id);
      const n = graph.nodes.get(id);
      if (n.kind === 'service' && n.host) shownIds.add(n.host);
    }
  }
  const open = new Set(state.open);
  const groups = new Map();
  const join = (g, id, extra) => {
    if (!groups.has(g.id)) groups.set(g.id, { ...g, members: [], ...extra });
    groups.get(g.id).members.push(id);
  };
  const insideGroup = hostGrouper(graph, storeGroups, state.group);
  for (const n of graph.nodes.values()) {
    if (!shownIds.has(n.id) || n.kind === 'service') continue;
    const g = n.internal ? insideGroup(n) : groupKey(n);
    if (g) join(g, n.id, { internal: n.internal });
  }
  for (const [id, g] of groups) if (g.members.length < 2) groups.delete(id);
  const groupOf = new Map();
  for (const g of groups.values()) for (const m of g.members) groupOf.set(m, g.id);
  // Many outside nodes: one "internet" node first.
  const outside = new Set();
  for (const id of shownIds) {
    const n = graph.nodes.get(id);
    if (n.kind !== 'service' && !n.internal) outside.add(groupOf.get(id) ?? id);
  }
  if (outside.size > INTERNET_ABOVE) groups.set(INTERNET, { id: INTERNET, label: 'internet', internal: false, members: [...outside] });

  // The groups holding a node, innermost first.
  const ancestors = (id) => {
    const n = graph.nodes.get(id) ?? groups.get(id);
    const chain = groupOf.has(id) ? [groupOf.get(id)] : [];
    if (n && !n.internal && id !== INTERNET && groups.has(INTERNET)) chain.push(INTERNET);
    return chain;
  };
  // Where a graph node is drawn: the outermost closed group holding it (a
  // service goes where its host goes).
  const shown = (id) => {
    const n = graph.nodes.get(id);
    if (n?.kind === 'service' && n.host && graph.nodes.has(n.host)) {
      const host = shown(n.host);
      return host === n.host ? id : host;
    }
    for (const g of ancestors(id).reverse()) if (!open.has(g)) return g;
    return id;
  };

  const nodes = new Map();
  const addNode = (id) => {
    if (nodes.has(id)) return;
    if (groups.has(id)) {
      const g = groups.get(id);
      nodes.set(id, { id, kind: 'group', label: `${g.label} (${g.members.length})`, name: g.label, internal: g.internal, members: g.members, group: ancestors(id)[0] });
    } else {
      const n = graph.nodes.get(id);
      const group = n.kind === 'service' ? undefined : ancestors(id)[0];
      nodes.set(id, group ? { ...n, group } : n);
      if (n.kind === 'service' && n.host && graph.nodes.has(n.host)) addNode(n.host);
    }
  };
  if (!filtering) for (const n of graph.nodes.values()) if (n.internal || !range.clientSide) addNode(shown(n.id));

  const merged = new Map();
  for (const e of edges) {
    const source = shown(e.source);
    const target = shown(e.target);
    addNode(source);
    addNode(target);
    // Inside a closed group: counted on the group, not drawn as a loop
    // (firewall hits and drift apart from connections, see loop.js).
    if (source === target) {
      const g = nodes.get(source);
      if (e.loop) g.insideLoop = { ...g.insideLoop, [e.loop]: (g.insideLoop?.[e.loop] ?? 0) + e.count };
      else g.inside = (g.inside ?? 0) + e.count;
      continue;
    }
    // Hits and drift merge only with their own kind: they keep their colour.
    const id = source === e.source && target === e.target ? e.id : `${source}->${target}${e.loop ? `#${e.loop}` : ''}`;
    const m = merged.get(id);
    if (!m) merged.set(id, { ...e, id, source, target, parts: [e.id], services: new Set([e.service || `${e.port}/${e.protocol}`]) });
    else {
      m.count += e.count;
      m.bytes += e.bytes;
      m.firstSeen = m.firstSeen === null || (e.firstSeen !== null && e.firstSeen < m.firstSeen) ? e.firstSeen : m.firstSeen;
      m.lastSeen = m.lastSeen === null || (e.lastSeen !== null && e.lastSeen > m.lastSeen) ? e.lastSeen : m.lastSeen;
      m.processes = mergeTallies(m.processes, e.processes);
      m.executables = [...m.executables, ...e.executables];
      m.users = mergeTallies(m.users, e.users);
      if (m.service !== e.service) m.service = '';
      m.services.add(e.service || `${e.port}/${e.protocol}`);
      m.parts.push(e.id);
    }
  }
  // Ends that talk both ways: drawn side by side (draw.js).
  const pairs = new Set([...merged.values()].filter((e) => !e.loop).map((e) => `${e.source}\n${e.target}`));
  for (const e of merged.values()) e.twoWay = pairs.has(`${e.target}\n${e.source}`);
  // Hits and drift beside the connections between the same ends, each kind in a lane of its own.
  for (const e of merged.values()) if (e.loop) e.lane = 1 + ['would-block', 'blocked', 'drift'].indexOf(e.loop);
  const members = [];
  for (const n of nodes.values()) if (n.kind === 'service' && n.host && nodes.has(n.host)) members.push({ id: `member:${n.id}`, source: n.host, target: n.id, member: true });
  return { nodes: [...nodes.values()], edges: [...merged.values()], members, groups };
}

/** What an edge's label says: its service, or how many services a merged edge holds. */
export const edgeText = (e) => (e.service ? e.service : e.services?.size > 1 ? `${e.services.size} services` : String(e.port ?? ''));

/** Ids of nodes that match a search text (label, address, DNS name, service). */
export function searchNodes(view, text) {
  const q = lower(text).trim();
  if (!q) return null;
  return new Set(view.nodes.filter((n) => contains(n.label, q) || contains(n.address, q) || contains(n.name, q) || contains(n.service, q)).map((n) => n.id));
}
