// Unit tests of the map's pure parts: the graph model, the URL state and the
// report command line. Run by `node --test web/tests/unit/` (and by
// crates/map/tests/web_units.rs under cargo test).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { INTERNET, buildView, edgeText, groupKey, hostGrouper, namePattern, normalizeGraph, searchNodes } from '../../src/model.js';
import { reportCommand, shellQuote } from '../../src/panel.js';
import { formatState, parseState, timeRange } from '../../src/state.js';

const doc = {
  from: '2025-03-01T00:00:00Z',
  to: '2025-04-01T00:00:00Z',
  nodes: [
    { kind: 'host', id: 'host:a', label: 'a', addresses: ['10.0.0.1'] },
    { kind: 'host', id: 'host:b', label: 'b', addresses: ['10.0.0.2'] },
    { kind: 'service', id: 'service:b:22/tcp', label: 'b:22', host: 'host:b', port: 22, protocol: 'tcp' },
    { kind: 'external', id: 'external:192.0.2.1', label: '192.0.2.1', ip: '192.0.2.1', internal: false },
    { kind: 'external', id: 'external:192.0.2.9', label: '192.0.2.9', ip: '192.0.2.9', internal: false },
    { kind: 'external', id: 'external:2001:db8:1::5', label: '2001:db8:1::5', ip: '2001:db8:1::5', internal: false },
  ],
  edges: [
    { id: 'host:a->service:b:22/tcp:22/tcp', source: 'host:a', target: 'service:b:22/tcp', port: 22, protocol: 'tcp', connections: 5, failures: 0, bytes_to_server: 10, bytes_to_client: 20,
      first_seen: '2025-03-01T10:00:00Z', last_seen: '2025-03-02T10:00:00Z',
      client_processes: [{ host: 'a', executable: '/usr/bin/ssh', user: 'joe', connections: 5 }],
      server_processes: [{ host: 'b', executable: '/usr/sbin/sshd', user: 'root', connections: 4 }], users: ['joe', 'root'], service: 'ssh' },
    { id: 'host:a->external:192.0.2.1:443/tcp', source: 'host:a', target: 'external:192.0.2.1', port: 443, protocol: 'tcp', connections: 2, failures: 0, bytes_to_server: 0, bytes_to_client: 0,
      first_seen: '2025-03-10T10:00:00Z', last_seen: '2025-03-10T10:00:00Z',
      client_processes: [{ host: 'a', executable: '/usr/bin/curl', user: 'joe', connections: 2 }], server_processes: [], users: ['joe'] },
    { id: 'host:b->external:192.0.2.9:443/tcp', source: 'host:b', target: 'external:192.0.2.9', port: 443, protocol: 'tcp', connections: 3, failures: 0, bytes_to_server: 0, bytes_to_client: 0,
      first_seen: '2025-03-01T10:00:00Z', last_seen: '2025-03-20T10:00:00Z',
      client_processes: [{ host: 'b', executable: '/usr/bin/apt', user: 'root', connections: 3 }], server_processes: [], users: ['root'] },
    { source: 'host:a', target: 'external:gone', port: 1, protocol: 'tcp', connections: 1 },
  ],
};
const graph = normalizeGraph(doc);
// Host grouping has its own tests below; these see hosts one by one.
const state = (patch = {}) => ({ ...parseState('#range=all&group=none'), ...patch });
const ids = (list) => list.map((x) => x.id).sort();

test('the API graph is read with its processes and users', () => {
  assert.equal(graph.nodes.size, 6);
  assert.equal(graph.edges.length, 3, 'an edge to a node not in the document is dropped');
  const ssh = graph.edges[0];
  assert.equal(ssh.count, 5);
  assert.equal(ssh.bytes, 30);
  assert.equal(ssh.firstSeen, Date.parse('2025-03-01T10:00:00Z'));
  assert.deepEqual(ssh.processes.map((p) => p.name), ['/usr/bin/ssh @ a', '/usr/sbin/sshd @ b']);
  assert.deepEqual(ssh.users, [{ name: 'joe', count: 5 }, { name: 'root', count: 4 }]);
  assert.equal(graph.nodes.get('host:a').address, '10.0.0.1');
  assert.equal(ssh.service, 'ssh');
  assert.equal(graph.nodes.get('service:b:22/tcp').service, 'ssh', 'a service node takes the name its edges give');
  assert.equal(graph.timelineOf, 'new edges', 'without a server histogram the timeline says what it shows');
});

test('edges keep the server\'s ids; a graph from before edge ids still reads', () => {
  assert.deepEqual(ids(graph.edges), ['host:a->external:192.0.2.1:443/tcp', 'host:a->service:b:22/tcp:22/tcp', 'host:b->external:192.0.2.9:443/tcp']);
  const old = normalizeGraph({ ...doc, edges: doc.edges.map(({ id, ...e }) => e) });
  assert.equal(old.edges.length, 3);
  assert.equal(new Set(old.edges.map((e) => e.id)).size, 3, 'each edge still has its own id');
  assert.equal(buildView(old, state()).edges.length, 3);
});

test('external addresses fold by /24, /48 or DNS domain', () => {
  assert.equal(groupKey({ address: '192.0.2.77' }).id, 'group:net:192.0.2.0/24');
  assert.equal(groupKey({ address: '2001:db8:1::5' }).id, 'group:net:2001:db8:1::/48');
  assert.equal(groupKey({ address: '2001:db8:1:2:3:4:5:6' }).label, '2001:db8:1::/48');
  assert.equal(groupKey({ address: '192.0.2.1', name: 'cdn1.example.org.' }).id, 'group:name:example.org');
});

test('a group of two is one node with merged edges, until opened', () => {
  const view = buildView(graph, state());
  assert.deepEqual(ids(view.nodes), ['external:2001:db8:1::5', 'group:net:192.0.2.0/24', 'host:a', 'host:b', 'service:b:22/tcp']);
  assert.deepEqual(ids(view.edges), ['host:a->group:net:192.0.2.0/24', 'host:a->service:b:22/tcp:22/tcp', 'host:b->group:net:192.0.2.0/24']);
  assert.deepEqual(view.members, [{ id: 'member:service:b:22/tcp', source: 'host:b', target: 'service:b:22/tcp', member: true }]);
  const open = buildView(graph, state({ open: ['group:net:192.0.2.0/24'] }));
  assert.ok(open.nodes.some((n) => n.id === 'external:192.0.2.1' && n.group === 'group:net:192.0.2.0/24'));
  assert.equal(open.edges.length, 3);
});

test('filters: host and direction, port, executable, user, scope', () => {
  const edges = (patch) => ids(buildView(graph, state(patch)).edges);
  assert.deepEqual(edges({ host: 'b', dir: 'in' }), ['host:a->service:b:22/tcp:22/tcp']);
  assert.deepEqual(edges({ host: 'b', dir: 'out' }), ['host:b->external:192.0.2.9:443/tcp']);
  assert.deepEqual(edges({ port: '22' }), ['host:a->service:b:22/tcp:22/tcp']);
  assert.deepEqual(edges({ exe: 'curl' }), ['host:a->external:192.0.2.1:443/tcp'], 'a lone group member is not folded');
  assert.deepEqual(edges({ user: 'root', scope: 'external' }), ['host:b->external:192.0.2.9:443/tcp']);
  assert.deepEqual(edges({ scope: 'internal' }), ['host:a->service:b:22/tcp:22/tcp']);
  const filtered = buildView(graph, state({ exe: 'ssh' }));
  assert.deepEqual(ids(filtered.nodes), ['host:a', 'host:b', 'service:b:22/tcp'], "a service brings its host");
});

test('a time range filters edges in the browser where no server does (export)', () => {
  const range = { from: Date.parse('2025-03-05T00:00:00Z'), to: Date.parse('2025-03-15T00:00:00Z'), clientSide: true };
  assert.deepEqual(ids(buildView(graph, state(), range).edges), ['host:a->group:net:192.0.2.0/24', 'host:b->group:net:192.0.2.0/24']);
  const early = { from: null, to: Date.parse('2025-03-02T00:00:00Z'), clientSide: true };
  assert.deepEqual(ids(buildView(graph, state(), early).edges), ['host:a->service:b:22/tcp:22/tcp', 'host:b->external:192.0.2.9:443/tcp']);
});

test('search matches labels and addresses', () => {
  const view = buildView(graph, state());
  assert.deepEqual([...searchNodes(view, '10.0.0.2')], ['host:b']);
  assert.equal(searchNodes(view, '  '), null);
});

test('the view state survives the URL', () => {
  const s = parseState('#from=2025-03-01T00:00:00Z&host=web%201&open=g1,g2&q=%3Cx%3E');
  assert.equal(s.range, '');
  assert.equal(s.host, 'web 1');
  assert.deepEqual(s.open, ['g1', 'g2']);
  assert.deepEqual(parseState(formatState(s)), s);
  assert.equal(parseState('').range, 'last');
  const now = Date.parse('2025-03-10T00:00:00Z');
  assert.deepEqual(timeRange(parseState('#range=7d'), now), { from: now - 7 * 86400e3, to: null, relative: true });
  assert.deepEqual(timeRange(parseState('#from=nonsense'), now), { from: null, to: null, relative: false });
});

test('the report command line quotes what the shell would read', () => {
  assert.equal(shellQuote('web1'), 'web1');
  assert.equal(shellQuote("it's <x>"), `'it'\\''s <x>'`);
  assert.equal(reportCommand({ host: 'web1', port: 22, from: Date.parse('2025-03-01T00:00:00Z'), to: null }),
    'connscope report edges --db DB --host web1 --port 22 --from 2025-03-01T00:00:00Z');
});

test('with no range picked the map shows the last day with data', () => {
  const now = Date.parse('2025-03-10T00:00:00Z');
  const last = Date.parse('2025-03-05T12:00:00Z');
  assert.deepEqual(timeRange(parseState(''), now, last), { from: last + 1000 - 86400e3, to: last + 1000, relative: false, auto: true });
  assert.deepEqual(timeRange(parseState(''), now, now - 60e3), { from: now - 86400e3, to: null, relative: true, auto: true }, 'recent data: the last 24 hours, live');
  assert.deepEqual(timeRange(parseState(''), now, null), { from: now - 86400e3, to: null, relative: true, auto: true }, 'span unknown yet');
  const open = { ...parseState(''), open: ['hgroup:store:a,b', 'group:internet'] };
  assert.deepEqual(parseState(formatState(open)).open, open.open, 'a group name with a comma survives the URL');
});

// ws-1..3 (10.1.0.0/24), srv (10.2.0.5) with two services, 30 outside addresses in 25 networks, one with a domain.
const office = (() => {
  const nodes = [];
  const edges = [];
  const edge = (source, target, port, connections, service) => edges.push({ id: `${source}->${target}:${port}/tcp`, source, target, port, protocol: 'tcp', connections, service,
    first_seen: '2025-03-01T10:00:00Z', last_seen: '2025-03-01T11:00:00Z', client_processes: [], server_processes: [], users: [] });
  nodes.push({ kind: 'host', id: 'host:srv', label: 'srv', addresses: ['10.2.0.5'] });
  nodes.push({ kind: 'service', id: 'service:srv:445/tcp', label: 'srv:445', host: 'host:srv', port: 445, protocol: 'tcp' });
  nodes.push({ kind: 'service', id: 'service:srv:22/tcp', label: 'srv:22', host: 'host:srv', port: 22, protocol: 'tcp' });
  for (let i = 1; i <= 3; i++) {
    nodes.push({ kind: 'host', id: `host:ws-${i}`, label: `ws-${i}`, addresses: [`10.1.0.${i}`] });
    edge(`host:ws-${i}`, 'service:srv:445/tcp', 445, 10 * i, 'microsoft-ds');
    edge(`host:ws-${i}`, 'service:srv:22/tcp', 22, 1, 'ssh');
  }
  for (let i = 0; i < 30; i++) {
    const ip = `198.51.${i % 25}.${i}`;
    nodes.push({ kind: 'external', id: `external:${ip}`, label: ip, ip, internal: false, ...(i === 0 ? { name: 'www.example.com', domain: 'example.com' } : {}) });
    edge('host:ws-1', `external:${ip}`, 443, 1, 'https');
  }
  return normalizeGraph({ nodes, edges });
})();

test('hosts fold into groups: the store\'s, name patterns, subnets, labels', () => {
  assert.equal(namePattern('ws-01'), 'ws-*');
  assert.equal(namePattern('fs'), null);
  const stored = { groups: [{ name: 'workstations', kind: 'names', patterns: ['ws-*'], hosts: ['ws-1', 'ws-2', 'ws-3'] }, { name: 'servers', kind: 'addresses', patterns: ['10.2.0.0/24'], hosts: [] }],
    host_labels: [{ host: 'ws-1', key: 'floor', value: '1' }, { host: 'ws-2', key: 'floor', value: '1' }] };
  const group = (mode, id, groups = stored) => hostGrouper(office, groups, mode)(office.nodes.get(id))?.id ?? null;
  assert.equal(group('auto', 'host:ws-2'), 'hgroup:store:workstations', 'the store\'s groups first');
  assert.equal(group('auto', 'host:srv'), 'hgroup:store:servers', 'an address group holds hosts by address');
  assert.equal(group('auto', 'host:ws-2', null), 'hgroup:name:ws-*', 'without store groups: a shared name pattern');
  assert.equal(group('auto', 'host:srv', null), 'hgroup:subnet:10.2.0.0/24', 'else the subnet');
  assert.equal(group('label:floor', 'host:ws-1'), 'hgroup:label:floor=1');
  assert.equal(group('label:floor', 'host:ws-3'), null);
  assert.equal(group('none', 'host:ws-1'), null);

  const view = buildView(office, { ...parseState('#range=all'), group: 'name' }, undefined, stored);
  assert.deepEqual(ids(view.nodes), ['group:internet', 'hgroup:name:ws-*', 'host:srv', 'service:srv:22/tcp', 'service:srv:445/tcp']);
  const toFiles = view.edges.find((e) => e.id === 'hgroup:name:ws-*->service:srv:445/tcp');
  assert.equal(toFiles.count, 60, 'a collapsed group\'s edges add up its members\'');
  assert.equal(edgeText(toFiles), 'microsoft-ds');
  assert.equal(edgeText(view.edges.find((e) => e.id === 'hgroup:name:ws-*->group:internet')), 'https');
  const open = buildView(office, { ...parseState('#range=all'), group: 'name', open: ['hgroup:name:ws-*'] }, undefined, stored);
  assert.ok(open.nodes.some((n) => n.id === 'host:ws-2' && n.group === 'hgroup:name:ws-*'), 'opened: its hosts, each knowing its group');
  assert.equal(open.edges.filter((e) => e.target === 'service:srv:445/tcp').length, 3);
  const grouped = buildView(office, { ...parseState('#range=all'), group: 'none', open: [] }, undefined, stored);
  assert.equal(grouped.nodes.find((n) => n.id === 'host:srv').group, undefined);
});

test('the outside folds by domain and network, and into "internet" when there are many', () => {
  const s = { ...parseState('#range=all'), group: 'none' };
  const closed = buildView(office, s);
  assert.ok(closed.nodes.some((n) => n.id === INTERNET && n.members.length === 26), '24 networks and 2 lone addresses: one internet node');
  assert.ok(!closed.nodes.some((n) => n.kind === 'external'));
  const open = buildView(office, { ...s, open: [INTERNET] });
  const outside = open.nodes.filter((n) => !n.internal);
  assert.equal(outside.length, 26);
  assert.ok(outside.some((n) => n.id === 'group:net:198.51.1.0/24' && n.group === INTERNET && n.members.length === 2));
  assert.ok(outside.some((n) => n.id === 'external:198.51.0.25' && n.group === INTERNET), 'an address alone in its network stays itself');
  const deeper = buildView(office, { ...s, open: [INTERNET, 'group:net:198.51.1.0/24'] });
  assert.ok(deeper.nodes.some((n) => n.id === 'external:198.51.1.1' && n.group === 'group:net:198.51.1.0/24'));
  assert.equal(groupKey(office.nodes.get('external:198.51.0.0')).id, 'group:name:example.com', 'the domain the naming gives wins');
});

test('the outside folds by the registered domain the collector names (public suffix list), not the last two labels', () => {
  const graph = normalizeGraph({
    nodes: [{ id: 'external:198.51.100.7', kind: 'external', label: 'cdn.static.example.co.uk', ip: '198.51.100.7', internal: false, name: 'cdn.static.example.co.uk', domain: 'example.co.uk' }],
    edges: [],
  });
  assert.equal(groupKey(graph.nodes.get('external:198.51.100.7')).id, 'group:name:example.co.uk');
});
