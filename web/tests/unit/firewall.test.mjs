// The firewall mode's mapping from the collector's per-edge verdicts to the
// map's (possibly folded) edges.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { verdictsById, viewVerdict } from '../../src/firewall.js';
import { normalizeGraph } from '../../src/model.js';

const verdicts = verdictsById({ edges: [
  { id: 'host:web1->service:db1:5432/tcp:5432/tcp', source: 'host:web1', target: 'service:db1:5432/tcp', port: 5432, protocol: 'tcp', verdict: 'blocked' },
  { id: 'host:web1->external:93.184.216.34:443/tcp', source: 'host:web1', target: 'external:93.184.216.34', port: 443, protocol: 'tcp', verdict: 'allowed' },
  { id: 'host:web1->external:93.184.216.35:443/tcp', source: 'host:web1', target: 'external:93.184.216.35', port: 443, protocol: 'tcp', verdict: 'blocked' },
] });

// The spelling of ids is the server's (connscope_query's
// `edge_keys_are_the_ids_the_map_gives_graph_edges`); here, that the map
// keeps the graph's id and finds the check's verdict under it.
test('edge keys are the ids the map gives graph edges', () => {
  const graph = normalizeGraph({
    nodes: [{ kind: 'host', id: 'host:web1', label: 'web1' }, { kind: 'service', id: 'service:db1:5432/tcp', label: 'db1:5432', host: 'host:db1' }],
    edges: [{ id: 'host:web1->service:db1:5432/tcp:5432/tcp', source: 'host:web1', target: 'service:db1:5432/tcp', port: 5432, protocol: 'tcp', connections: 1 }],
  });
  assert.equal(graph.edges[0].id, 'host:web1->service:db1:5432/tcp:5432/tcp');
  assert.equal(verdicts.get(graph.edges[0].id).verdict, 'blocked');
});

test('a view edge takes its parts\' verdict, maybe when they disagree, none when unchecked', () => {
  const one = { id: 'host:web1->service:db1:5432/tcp:5432/tcp', parts: ['host:web1->service:db1:5432/tcp:5432/tcp'] };
  assert.equal(viewVerdict(one, verdicts), 'blocked');
  const folded = { id: 'host:web1->group:net:93.184.216.0/24', parts: ['host:web1->external:93.184.216.34:443/tcp', 'host:web1->external:93.184.216.35:443/tcp'] };
  assert.equal(viewVerdict(folded, verdicts), 'maybe-blocked');
  assert.equal(viewVerdict({ id: 'host:db1->external:10.0.0.9:22/tcp' }, verdicts), null);
});
