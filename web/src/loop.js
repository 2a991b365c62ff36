// The policy loop on the map (issue 21), as pure data in, data out so the
// node tests and the page share it: firewall hits (`GET
// /api/v1/firewall/hits`: what a policy in audit mode would have dropped and
// what it dropped in enforce mode) and drift (`GET /api/v1/drift`: new edges
// no policy allows) become edges of their own beside the graph's
// connections, on the same nodes, so they fold into groups like any edge;
// the policy status (`GET /api/v1/policies/status`) becomes each host's
// badge; and the hosts ready to enforce are those auditing without a
// would-block hit for N days. Hits and drift are no connections: the matrix,
// the table and the counts never see them.

/** What an overlay edge is: a firewall hit of either kind, or drift. */
export const LOOP_KINDS = ['would-block', 'blocked', 'drift'];

/** The badges a host can wear, in the order the legend lists them. */
export const BADGES = ['audit', 'enforce', 'mixed', 'none', 'broken-glass', 'failed'];

const ms = (t) => {
  const v = t ? Date.parse(t) : NaN;
  return Number.isFinite(v) ? v : null;
};

/**
 * Whether an address not routed on the internet is inside, as the graph's
 * `internal` flag says (connscope-query's `scope`, docs/API.md): IPv4
 * 10/8, 172.16/12, 192.168/16, 100.64/10, 169.254/16, 127/8; IPv6
 * fc00::/7, fe80::/10, ::1, and IPv4-mapped forms of these.
 */
export function isInsideAddress(ip) {
  const s = String(ip).toLowerCase().replace(/^::ffff:(?=\d+\.)/, '');
  const v4 = /^(\d+)\.(\d+)\.\d+\.\d+$/.exec(s);
  if (v4) {
    const [a, b] = [Number(v4[1]), Number(v4[2])];
    return a === 10 || a === 127 || (a === 172 && b >= 16 && b < 32) || (a === 192 && b === 168)
      || (a === 100 && b >= 64 && b < 128) || (a === 169 && b === 254);
  }
  return s === '::1' || /^f[cd][0-9a-f]{0,2}:/.test(s) || /^fe[89ab][0-9a-f]?:/.test(s);
}

/**
 * The graph with the loop's edges added: `hits` (`{hits: [...]}`) and
 * `drift` (`{drift: [...]}`), either null. Each entry becomes an edge from
 * the client to the server as the graph draws connections: an outgoing
 * entry from its host to the remote end (the monitored host's service when
 * the remote address is one), an incoming one from the remote end to the
 * host's service. Ends the graph lacks (a blocked flow never connected)
 * are added as nodes of their own, with ids no server id can take
 * (`loop:`). Returns a new graph; `graph` is not changed.
 */
export function withLoop(graph, hits, drift) {
  const entries = [
    ...(hits?.hits ?? []).map((h) => ({ ...h, loop: h.kind })),
    ...(drift?.drift ?? []).map((d) => ({ ...d, loop: 'drift', count: d.connections })),
  ].filter((e) => LOOP_KINDS.includes(e.loop) && e.host);
  if (!entries.length) return graph;
  const nodes = new Map(graph.nodes);
  const hostByName = new Map();
  const byAddress = new Map();
  for (const n of nodes.values()) {
    if (n.kind === 'host') {
      hostByName.set(n.label, n);
      for (const a of n.addresses ?? []) byAddress.set(a, n);
    }
  }
  for (const n of nodes.values()) if (n.kind === 'external' && n.address && !byAddress.has(n.address)) byAddress.set(n.address, n);
  const services = new Map();
  for (const n of nodes.values()) if (n.kind === 'service') services.set(`${n.host}\n${n.port}\n${n.protocol ?? ''}`, n);

  const add = (node) => {
    nodes.set(node.id, node);
    return node;
  };
  const hostNode = (name, local) => hostByName.get(name) ?? (() => {
    const n = add({ id: `loop:host:${name}`, kind: 'host', label: name, internal: true, address: local, addresses: local ? [local] : [] });
    hostByName.set(name, n);
    if (local && !byAddress.has(local)) byAddress.set(local, n);
    return n;
  })();
  const addressNode = (ip, name) => byAddress.get(ip) ?? (() => {
    const n = add({ id: `loop:external:${ip}`, kind: 'external', label: name ?? ip, internal: isInsideAddress(ip), address: ip, addresses: [], name: name ?? undefined });
    byAddress.set(ip, n);
    return n;
  })();
  const serviceNode = (host, port, protocol) => {
    const key = `${host.id}\n${port}\n${protocol}`;
    const known = services.get(key) ?? services.get(`${host.id}\n${port}\n`);
    if (known) return known;
    const n = add({ id: `loop:service:${host.label}:${port}/${protocol}`, kind: 'service', label: `${host.label}:${port}`, internal: true, host: host.id, port, protocol });
    services.set(key, n);
    return n;
  };
  // The server end of an address: a monitored host's service, else the address.
  const serverAt = (ip, name, port, protocol) => {
    const n = addressNode(ip, name);
    return n.kind === 'host' ? serviceNode(n, port, protocol) : n;
  };

  const edges = [...graph.edges];
  for (const e of entries) {
    const host = hostNode(String(e.host), e.local ? String(e.local) : undefined);
    const remote = String(e.remote);
    const name = e.remote_name ?? undefined;
    const [source, target] = e.direction === 'incoming'
      ? [addressNode(remote, name), serviceNode(host, e.port, e.protocol)]
      : [host, serverAt(remote, name, e.port, e.protocol)];
    const count = Number(e.count ?? 0);
    const exe = e.executable ?? null;
    edges.push({
      id: `loop:${e.loop}:${e.host}:${e.direction}:${e.protocol}:${e.port}:${remote}:${exe ?? ''}:${e.user ?? ''}`,
      source: source.id,
      target: target.id,
      port: e.port,
      protocol: e.protocol,
      count,
      failures: 0,
      bytes: 0,
      firstSeen: ms(e.first_seen),
      lastSeen: ms(e.last_seen),
      processes: [{ name: `${exe ?? '(unknown executable)'} @ ${e.host}`, count }],
      executables: exe ? [exe] : [],
      users: e.user ? [{ name: String(e.user), count }] : [],
      service: target.service ?? '',
      loop: e.loop,
      policy: e.loop === 'drift' ? { policy: e.policy, version: e.version, mode: e.mode } : undefined,
    });
  }
  return { ...graph, nodes, edges };
}

/** A direction's mode from its stage: `audit`, `enforce`, or `mixed` when some ports run the other way. */
export function directionMode(stage) {
  if (!stage || !stage.mode) return null;
  return stage.except_ports?.length ? 'mixed' : stage.mode;
}

/**
 * A host's badge from its entry of `/api/v1/policies/status`: what the
 * host's firewall does now. `broken-glass` and `failed` as the agent
 * reported; `none` without a policy or before the agent loaded one; else
 * the modes of the two directions: `audit` or `enforce` when both agree,
 * else `mixed`.
 */
export function policyBadge(entry) {
  if (!entry) return 'none';
  if (entry.state === 'broken-glass' || entry.state === 'failed') return entry.state;
  if (!entry.policy || entry.state !== 'loaded' || !entry.staging) return 'none';
  const modes = new Set([directionMode(entry.staging.inbound), directionMode(entry.staging.outbound)]);
  return modes.size === 1 && !modes.has('mixed') && !modes.has(null) ? [...modes][0] : 'mixed';
}

/** Per host name, its status entry and badge. */
export function policyByHost(status) {
  const m = new Map();
  for (const h of status?.hosts ?? []) m.set(String(h.host), { ...h, badge: policyBadge(h) });
  return m;
}

/**
 * The lines a host's panel shows of its policy (text only): the policy and
 * version, each direction's mode with the ports staged the other way, the
 * state, whether the host runs the latest assignment, the reason of a
 * failure and when it last reported.
 */
export function policyFacts(entry) {
  if (!entry) return [['policy', 'no status for this host']];
  const facts = [['policy', entry.policy ? `${entry.policy} v${entry.version ?? '?'}` : 'none assigned']];
  for (const dir of ['inbound', 'outbound']) {
    const stage = entry.staging?.[dir];
    if (!stage) continue;
    const ports = (stage.except_ports ?? []).map((p) => `${p.port}/${p.protocol}`).join(', ');
    const other = stage.mode === 'audit' ? 'enforce' : 'audit';
    facts.push([dir, ports ? `${stage.mode} (${other}: ${ports})` : stage.mode]);
  }
  if (entry.staged_since) facts.push(['staged since', entry.staged_since]);
  facts.push(['state', entry.state ?? 'unknown']);
  if (entry.revision !== null && entry.revision !== undefined) {
    const loaded = entry.loaded_revision;
    facts.push(['revision', loaded === null || loaded === undefined ? `${entry.revision} (not loaded yet)`
      : loaded < entry.revision ? `${entry.revision} (host runs ${loaded}: not applied yet)` : String(entry.revision)]);
  }
  if (entry.reason) facts.push(['reason', entry.reason]);
  facts.push(['reported', entry.reported_at ?? 'never']);
  return facts;
}

/**
 * The hosts ready to enforce: a loaded policy with at least one direction
 * still auditing since (`staged_since`, when the current version and
 * staging were put in place) at least `days` days before `now` (ms), and
 * no would-block hit in `recentHits` (the hits of those last `days` days).
 * A host whose status has no `staged_since` (an older collector) is never
 * ready: how long it audited is unknown. Each with the directions still in
 * audit and since when; by host name.
 */
export function readyToEnforce(status, recentHits, { days = 7, now = Date.now() } = {}) {
  const noisy = new Set((recentHits?.hits ?? []).filter((h) => h.kind === 'would-block').map((h) => String(h.host)));
  const ready = [];
  for (const [host, entry] of policyByHost(status)) {
    if (entry.state !== 'loaded' || !entry.policy || !entry.staging) continue;
    const auditing = ['inbound', 'outbound'].filter((d) => {
      const stage = entry.staging[d];
      return stage && (stage.mode === 'audit' || (stage.except_ports ?? []).length > 0);
    });
    const since = ms(entry.staged_since);
    if (!auditing.length || noisy.has(host) || since === null || since > now - days * 86400e3) continue;
    ready.push({ host, policy: entry.policy, version: entry.version, auditing, since: entry.staged_since });
  }
  return ready.sort((a, b) => (a.host < b.host ? -1 : a.host > b.host ? 1 : 0));
}

/** Per loop kind, the edges and their count (hits, or drift connections) among `edges`. */
export function loopCounts(edges) {
  const counts = Object.fromEntries(LOOP_KINDS.map((k) => [k, { edges: 0, count: 0 }]));
  for (const e of edges) if (e.loop) {
    counts[e.loop].edges++;
    counts[e.loop].count += e.count;
  }
  return counts;
}
