// The firewall mode's mapping from the collector's per-edge verdicts to the
// map's (possibly folded) edges.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { edgeKey, viewVerdict } from '../../src/firewall.js';

const verdicts = new Map([
  { source: 'host:web1', target: 'service:db1:5432/tcp', port: 5432, protocol: 'tcp', verdict: 'blocked' },
  { source: 'host:web1', target: 'external:93.184.216.34', port: 443, protocol: 'tcp', verdict: 'allowed' },
  { source: 'host:web1', target: 'external:93.184.216.35', port: 443, protocol: 'tcp', verdict: 'blocked' },
].map((e) => [edgeKey(e), e]));

test('edge keys are the ids the map gives graph edges', () => {
  assert.equal(edgeKey({ source: 'host:a', target: 'service:b:22/tcp', port: 22, protocol: 'tcp' }), 'host:a->service:b:22/tcp:22/tcp');
});

test('a view edge takes its parts\' verdict, maybe when they disagree, none when unchecked', () => {
  const one = { id: 'host:web1->service:db1:5432/tcp:5432/tcp', parts: ['host:web1->service:db1:5432/tcp:5432/tcp'] };
  assert.equal(viewVerdict(one, verdicts), 'blocked');
  const folded = { id: 'host:web1->group:net:93.184.216.0/24', parts: ['host:web1->external:93.184.216.34:443/tcp', 'host:web1->external:93.184.216.35:443/tcp'] };
  assert.equal(viewVerdict(folded, verdicts), 'maybe-blocked');
  assert.equal(viewVerdict({ id: 'host:db1->external:10.0.0.9:22/tcp' }, verdicts), null);
});
