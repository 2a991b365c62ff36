// The policy loop on the map (loop.js, and the parts of model.js and draw.js
// it touches) on the sample documents of docs/API.md: the JSON the
// collector's /api/v1/firewall/hits, /api/v1/policies/status and
// /api/v1/drift answer, read from the documentation itself so the two
// cannot drift apart.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { BADGE_RING, COLORS, classify, edgeWidth } from '../../src/draw.js';
import { policyBadge, policyByHost, policyFacts, readyToEnforce, withLoop, loopCounts, isInsideAddress } from '../../src/loop.js';
import { buildView, normalizeGraph } from '../../src/model.js';

const api = readFileSync(new URL('../../../docs/API.md', import.meta.url), 'utf8');
/** The JSON block after `<!-- sample: NAME -->` in docs/API.md. */
function sample(name) {
  const m = new RegExp(`<!-- sample: ${name} -->\\n\`\`\`json\\n([\\s\\S]*?)\\n\`\`\``).exec(api);
  assert.ok(m, `docs/API.md has the sample ${name}`);
  return JSON.parse(m[1]);
}
const hits = sample('firewall-hits');
const status = sample('policies-status');
const drift = sample('drift');

// The office of the samples: ws-01 connects to srv-01's PostgreSQL; srv-01
// is monitored (10.20.0.5), the backup target of the hits.
const graph = normalizeGraph({
  nodes: [
    { id: 'host:ws-01', kind: 'host', label: 'ws-01', addresses: ['10.20.0.11'] },
    { id: 'host:srv-01', kind: 'host', label: 'srv-01', addresses: ['10.20.0.5'] },
    { id: 'service:srv-01:5432/tcp', kind: 'service', label: 'srv-01:5432', host: 'host:srv-01', port: 5432, protocol: 'tcp' },
  ],
  edges: [
    { id: 'host:ws-01->service:srv-01:5432/tcp:5432/tcp', source: 'host:ws-01', target: 'service:srv-01:5432/tcp', port: 5432, protocol: 'tcp', connections: 40,
      client_processes: [{ host: 'ws-01', executable: '/usr/bin/psql', user: 'alice', connections: 40 }] },
  ],
});

test('hits and drift become edges of their own kind on the graph\'s nodes', () => {
  const drawn = withLoop(graph, hits, drift);
  assert.equal(graph.edges.length, 1, 'the graph itself is not changed');
  const loops = drawn.edges.filter((e) => e.loop);
  assert.deepEqual(loops.map((e) => [e.loop, e.source, e.target, e.count]), [
    // ws-01 -> srv-01's rsync port: a service node is added to the monitored host.
    ['would-block', 'host:ws-01', 'loop:service:srv-01:873/tcp', 3],
    // srv-01 refused ws-02's PostgreSQL: ws-02's address has no agent yet, so an inside address node.
    ['blocked', 'loop:external:10.20.0.12', 'service:srv-01:5432/tcp', 1],
    // Drift to the outside.
    ['drift', 'host:ws-01', 'loop:external:198.51.100.7', 4],
  ]);
  const [wouldBlock, blocked, driftEdge] = loops;
  assert.deepEqual(wouldBlock.processes, [{ name: '/usr/bin/rsync @ ws-01', count: 3 }]);
  assert.deepEqual(wouldBlock.users, [{ name: 'root', count: 3 }]);
  assert.equal(wouldBlock.firstSeen, Date.parse('2026-12-04T02:00:01+00:00'));
  assert.deepEqual(blocked.processes, [{ name: '(unknown executable) @ srv-01', count: 1 }]);
  assert.deepEqual(blocked.users, []);
  assert.equal(drawn.nodes.get('loop:external:10.20.0.12').internal, true);
  assert.equal(drawn.nodes.get('loop:external:198.51.100.7').internal, false);
  assert.deepEqual(driftEdge.policy, { policy: 'workstations', version: 3, mode: 'audit' });
  for (const inside of ['fd00:17::5', 'fe80::1', '::1', '100.64.0.1', '127.0.0.1', '172.31.0.1', '::ffff:192.168.1.2']) assert.equal(isInsideAddress(inside), true, inside);
  for (const outside of ['2001:db8::1', '100.128.0.1', '172.32.0.1', '8.8.8.8', '::ffff:8.8.8.8']) assert.equal(isInsideAddress(outside), false, outside);
});

test('a hit never merges with connections: its own lane, colour and counts', () => {
  // ws-01's would-block to srv-01:5432, beside its 40 connections there.
  const sameEnds = { hits: [{ ...hits.hits[0], port: 5432, remote: '10.20.0.5', count: 2 }] };
  const view = buildView(withLoop(graph, sameEnds, null), { open: [], group: 'none' }, undefined, null);
  const [conn, hit] = ['', 'would-block'].map((k) => view.edges.find((e) => (e.loop ?? '') === k));
  assert.equal(conn.count, 40);
  assert.equal(hit.count, 2);
  assert.equal(hit.source, conn.source);
  assert.equal(hit.target, conn.target);
  assert.ok(hit.lane > 0 && !conn.lane, 'the hit lies beside the connections');
  assert.ok(edgeWidth(hit) <= 4, 'thin: labelled on hover only');
  const { edgeClass } = classify({ nodes: view.nodes, edges: view.edges, members: [] }, { since: null, matches: null, selected: null, firewall: new Map([[hit.id, 'blocked']]) });
  assert.equal(edgeClass.get(hit.id), 'wouldblock', 'a firewall check colours connections, not hits');
  assert.equal(edgeClass.get(conn.id), '');
  assert.deepEqual(loopCounts(view.edges)['would-block'], { edges: 1, count: 2 });
  const colours = new Set([COLORS.wouldBlock, COLORS.policyBlocked, COLORS.drift, COLORS.blocked, COLORS.maybe, COLORS.edge, COLORS.fresh]);
  assert.equal(colours.size, 7, 'the loop\'s colours differ from the others');
});

test('folded into groups, hits add up per kind and stay apart from connections', () => {
  const two = { hits: [hits.hits[0], { ...hits.hits[0], host: 'ws-02', local: '10.20.0.12', count: 5 }] };
  const groups = { groups: [{ name: 'workstations', kind: 'names', patterns: ['ws-*'], hosts: ['ws-01', 'ws-02'] }] };
  const view = buildView(withLoop(graph, two, null), { open: [], group: 'store' }, undefined, groups);
  const group = view.nodes.find((n) => n.kind === 'group');
  assert.equal(group.label, 'workstations (2)');
  const hit = view.edges.find((e) => e.loop === 'would-block');
  assert.equal(hit.source, group.id);
  assert.equal(hit.count, 8);
  assert.deepEqual(hit.processes, [{ name: '/usr/bin/rsync @ ws-02', count: 5 }, { name: '/usr/bin/rsync @ ws-01', count: 3 }]);
  assert.equal(view.edges.find((e) => !e.loop).count, 40);
});

test('each host\'s badge and panel facts from the status sample', () => {
  const byHost = policyByHost(status);
  assert.deepEqual(Object.fromEntries([...byHost].map(([h, e]) => [h, e.badge])), {
    'ws-01': 'audit', 'ws-02': 'mixed', 'srv-01': 'enforce', 'ws-03': 'broken-glass', 'ws-04': 'failed', printer: 'none',
  });
  for (const badge of ['audit', 'enforce', 'mixed', 'broken-glass', 'failed']) assert.ok(BADGE_RING[badge], `${badge} has a ring`);
  assert.equal(BADGE_RING.none, undefined, 'no policy: no ring');
  assert.equal(policyBadge(null), 'none');
  assert.equal(policyBadge({ ...status.hosts[0], state: 'unknown' }), 'none', 'assigned but never loaded');
  const facts = Object.fromEntries(policyFacts(byHost.get('ws-02')));
  assert.equal(facts.policy, 'workstations v3');
  assert.equal(facts.inbound, 'enforce');
  assert.equal(facts.outbound, 'audit (enforce: 22/tcp)');
  assert.equal(facts.revision, '7 (host runs 6: not applied yet)');
  assert.equal(facts['staged since'], '2026-11-25T16:30:00+00:00');
  const glass = Object.fromEntries(policyFacts(byHost.get('ws-03')));
  assert.equal(glass.state, 'broken-glass');
  assert.equal(glass.reason, 'connscope agent firewall off by <b>root</b>', 'kept as text');
  assert.equal(Object.fromEntries(policyFacts(byHost.get('printer'))).policy, 'none assigned');
  assert.deepEqual(policyFacts(undefined), [['policy', 'no status for this host']]);
});

test('ready to enforce: hosts auditing for N days without would-block hits in them', () => {
  const now = Date.parse('2026-12-04T21:00:00Z');
  const week = { days: 7, now };
  // ws-01 had would-block hits: not ready; ws-02 audits outbound (since 25 Nov) and had none.
  assert.deepEqual(readyToEnforce(status, hits, week),
    [{ host: 'ws-02', policy: 'workstations', version: 3, auditing: ['outbound'], since: '2026-11-25T16:30:00+00:00' }]);
  // Without hits both are; enforcing, broken-glass, failed and unassigned hosts never are.
  assert.deepEqual(readyToEnforce(status, { hits: [] }, week).map((r) => r.host), ['ws-01', 'ws-02']);
  // Ten days: ws-02 has audited only nine; ws-01 fourteen.
  assert.deepEqual(readyToEnforce(status, { hits: [] }, { days: 10, now }).map((r) => r.host), ['ws-01']);
  assert.deepEqual(readyToEnforce(status, { hits: [] }, { days: 15, now }), []);
  // Exactly N days counts.
  assert.deepEqual(readyToEnforce(status, { hits: [] }, { days: 14, now: Date.parse('2026-12-04T09:00:00Z') }).map((r) => r.host), ['ws-01']);
  // A status without staged_since (an older collector): how long is unknown, never ready.
  const older = { hosts: status.hosts.map(({ staged_since: _, ...h }) => h) };
  assert.deepEqual(readyToEnforce(older, { hits: [] }, week), []);
  // Blocked hits do not count against readiness; would-block ones of another host neither.
  const blockedOnly = { hits: [{ ...hits.hits[0], kind: 'blocked' }, { ...hits.hits[0], host: 'srv-01' }] };
  assert.deepEqual(readyToEnforce(status, blockedOnly, week).map((r) => r.host), ['ws-01', 'ws-02']);
  assert.deepEqual(readyToEnforce(null, { hits: [] }, week), []);
});
