// Force-directed layout that stays put between refreshes.
//
// Positions are remembered by node id, so a node that was on the map keeps its
// place when new data arrives; a new node starts beside the neighbours it
// already has, and only the new part of the graph moves much. The simulation
// is ticked by hand in time slices so a large graph settles without blocking
// the page, and the page can report when the layout has settled.

import { forceLink, forceManyBody, forceSimulation, forceX, forceY, forceCollide } from 'd3';

/** Above this many nodes, services ride on their hosts during layout. */
export const LARGE = 600;

/** A group grows with its members, so its weight shows before it is opened. */
const radius = (n) => (n.kind === 'host' ? 9 : n.kind === 'group' ? Math.min(22, 7 + 2 * Math.sqrt(n.members?.length ?? 1)) : 5);
export { radius };

export class Layout {
  constructor() {
    /** id -> {x, y, pinned} */
    this.memory = new Map();
    this.simulation = null;
    this.frame = 0;
  }

  /**
   * Lays out `nodes` with `links` (edges and host-service members). Calls
   * `onTick` after each slice of ticks and `onSettled(ms)` once the layout has
   * settled. Node objects are copied: the layout owns x/y/vx/vy/fx/fy.
   */
  run(nodes, links, onTick, onSettled) {
    this.stop();
    const started = performance.now();
    const simNodes = nodes.map((n) => ({ ...n }));
    const byId = new Map(simNodes.map((n) => [n.id, n]));
    const simLinks = links.filter((l) => byId.has(l.source) && byId.has(l.target)).map((l) => ({ ...l }));

    // Known nodes keep their place; new ones start near known neighbours.
    const neighbours = new Map();
    for (const l of simLinks) {
      (neighbours.get(l.source) ?? neighbours.set(l.source, []).get(l.source)).push(l.target);
      (neighbours.get(l.target) ?? neighbours.set(l.target, []).get(l.target)).push(l.source);
    }
    let fresh = 0;
    for (const n of simNodes) {
      const m = this.memory.get(n.id);
      if (m) {
        n.x = m.x;
        n.y = m.y;
        if (m.pinned) {
          n.fx = m.x;
          n.fy = m.y;
          n.pinned = true;
        }
      }
    }
    // Where a node starts and which column pulls it (see columnOf).
    const column = columnOf(simNodes, simLinks, byId);
    const width = 120 + 25 * Math.sqrt(simNodes.length);
    const columnX = (n) => column.get(n.id) * width;
    for (const n of simNodes) {
      if (n.x !== undefined) continue;
      const from = n.kind === 'group' ? (n.members ?? []).map((id) => this.memory.get(id)).filter(Boolean) : [this.memory.get(n.group)].filter(Boolean);
      if (!from.length) continue;
      const a = simNodes.indexOf(n) * 2.399963;
      n.x = from.reduce((sum, m) => sum + m.x, 0) / from.length + (n.kind === 'group' ? 0 : 25 * Math.cos(a));
      n.y = from.reduce((sum, m) => sum + m.y, 0) / from.length + (n.kind === 'group' ? 0 : 25 * Math.sin(a));
    }
    const unplaced = simNodes.filter((n) => n.x === undefined);
    // Known nodes hold still while the new ones find their places, so an
    // update never moves what the user has already seen.
    const held = unplaced.length && unplaced.length < simNodes.length ? simNodes.filter((n) => n.x !== undefined && n.fx === undefined) : [];
    for (const n of held) {
      n.fx = n.x;
      n.fy = n.y;
    }
    // Hosts first, so their services and peers can start beside them.
    unplaced.sort((a, b) => (a.kind === 'host' ? 0 : 1) - (b.kind === 'host' ? 0 : 1) || (neighbours.get(b.id)?.length ?? 0) - (neighbours.get(a.id)?.length ?? 0));
    const spread = 30 * Math.sqrt(simNodes.length);
    for (const [i, n] of unplaced.entries()) {
      fresh++;
      const placed = (neighbours.get(n.id) ?? []).map((id) => byId.get(id)).filter((p) => p.x !== undefined);
      if (placed.length) {
        const cx = placed.reduce((s, p) => s + p.x, 0) / placed.length;
        const cy = placed.reduce((s, p) => s + p.y, 0) / placed.length;
        const a = i * 2.399963; // golden angle: neighbours of one node fan out evenly.
        const r = 20 + 8 * Math.sqrt(i % 50);
        n.x = cx + r * Math.cos(a);
        n.y = cy + r * Math.sin(a);
      } else {
        const a = i * 2.399963;
        const r = spread * Math.sqrt((i + 0.5) / simNodes.length);
        n.x = columnX(n) + 0.4 * r * Math.cos(a);
        n.y = r * Math.sin(a);
      }
    }
    const share = simNodes.length ? fresh / simNodes.length : 0;
    const large = simNodes.length > LARGE;

    // A large graph is laid out in two steps: first its skeleton (hosts,
    // external addresses, groups: services ride on their hosts, so edges to a
    // service pull on its host), then each service is set on a ring around its
    // host. That is about a third of the nodes for the costly many-body force.
    const satellite = (n) => large && n.kind === 'service' && n.host && byId.has(n.host);
    const skeleton = simNodes.filter((n) => !satellite(n));
    const anchor = (id) => (satellite(byId.get(id)) ? byId.get(id).host : id);
    const seen = new Set();
    const skeletonLinks = [];
    for (const l of simLinks) {
      const source = anchor(l.source);
      const target = anchor(l.target);
      const key = `${source}\n${target}`;
      if (source === target || seen.has(key)) continue;
      seen.add(key);
      skeletonLinks.push({ source, target, member: l.member });
    }
    const degree = new Map();
    for (const l of skeletonLinks) {
      degree.set(l.source, (degree.get(l.source) ?? 0) + 1);
      degree.set(l.target, (degree.get(l.target) ?? 0) + 1);
    }
    const sim = forceSimulation(skeleton)
      .stop()
      .alpha(share === 0 ? 0.05 : Math.min(1, 0.25 + share))
      .alphaDecay(large ? 0.07 : 0.035)
      .alphaMin(large ? 0.003 : 0.001)
      .velocityDecay(0.45)
      .force('link', forceLink(skeletonLinks).id((d) => d.id)
        .distance((l) => (l.member ? 22 : large ? 55 : 80))
        .strength((l) => (l.member ? 0.9 : 0.6 / Math.min(degree.get(l.source.id ?? l.source), degree.get(l.target.id ?? l.target)))))
      .force('charge', forceManyBody().strength(large ? -60 : -90).theta(large ? 1.1 : 0.9).distanceMax(large ? 400 : 500))
      .force('x', forceX(columnX).strength(0.12))
      .force('y', forceY(0).strength(0.04))
      .force('together', together(skeleton));
    if (!large) sim.force('collide', forceCollide((n) => radius(n) + 3));
    this.simulation = sim;

    // Services around their hosts, in a stable order; a service that was on
    // the map before keeps its offset from its host.
    const rings = new Map();
    for (const n of simNodes) if (satellite(n)) (rings.get(n.host) ?? rings.set(n.host, []).get(n.host)).push(n);
    for (const ring of rings.values()) ring.sort((a, b) => (a.port ?? 0) - (b.port ?? 0) || (a.id < b.id ? -1 : 1));
    const placeSatellites = () => {
      for (const [hostId, ring] of rings) {
        const host = byId.get(hostId);
        const r = 16 + 2.2 * Math.sqrt(ring.length) * 3;
        ring.forEach((n, i) => {
          const m = this.memory.get(n.id);
          if (m?.dx !== undefined) {
            n.x = host.x + m.dx;
            n.y = host.y + m.dy;
          } else {
            const a = (2 * Math.PI * i) / ring.length;
            n.x = host.x + r * Math.cos(a);
            n.y = host.y + r * Math.sin(a);
          }
        });
      }
    };

    // Tick in time slices; draw at most every `drawEvery` ms while it runs.
    const drawEvery = large ? 400 : 0;
    let lastDraw = 0;
    const step = () => {
      const sliceEnd = performance.now() + (large ? 40 : 14);
      while (sim.alpha() >= sim.alphaMin() && performance.now() < sliceEnd) sim.tick();
      const done = sim.alpha() < sim.alphaMin();
      if (done || performance.now() - lastDraw >= drawEvery) {
        placeSatellites();
        this.remember(simNodes, byId);
        onTick(simNodes);
        lastDraw = performance.now();
      }
      if (!done) this.frame = requestAnimationFrame(step);
      else {
        this.frame = 0;
        for (const n of held) n.fx = n.fy = undefined;
        onSettled(performance.now() - started, simNodes);
      }
    };
    this.frame = requestAnimationFrame(step);
    return simNodes;
  }

  remember(simNodes, byId) {
    for (const n of simNodes) {
      const m = this.memory.get(n.id);
      const host = n.kind === 'service' && n.host ? byId.get(n.host) : null;
      this.memory.set(n.id, { x: n.x, y: n.y, pinned: m?.pinned ?? false, dx: host ? n.x - host.x : undefined, dy: host ? n.y - host.y : undefined });
    }
  }

  /** Pins a node where it is (after a drag), or unpins it. */
  pin(node, pinned) {
    node.pinned = pinned;
    node.fx = pinned ? node.x : null;
    node.fy = pinned ? node.y : null;
    this.memory.set(node.id, { ...this.memory.get(node.id), x: node.x, y: node.y, pinned });
  }

  stop() {
    if (this.frame) cancelAnimationFrame(this.frame);
    this.frame = 0;
  }
}

/**
 * Each node's column: -1 inside clients (more connections out than in),
 * 0 inside servers (a host's services count as its own), 1 the outside.
 */
function columnOf(nodes, links, byId) {
  const flow = new Map(nodes.map((n) => [n.id, 0]));
  const owner = (id) => {
    const n = byId.get(id);
    return n.kind === 'service' && n.host && byId.has(n.host) ? n.host : id;
  };
  for (const l of links) {
    if (l.member) continue;
    flow.set(owner(l.source), flow.get(owner(l.source)) - (l.count ?? 1));
    flow.set(owner(l.target), flow.get(owner(l.target)) + (l.count ?? 1));
  }
  return new Map(nodes.map((n) => [n.id, !n.internal ? 1 : n.kind === 'service' || flow.get(owner(n.id)) > 0 ? 0 : -1]));
}

/** A force that pulls the members of each opened group towards their centre. */
function together(nodes) {
  return (alpha) => {
    const centres = new Map();
    for (const n of nodes) {
      if (!n.group) continue;
      const c = centres.get(n.group) ?? centres.set(n.group, { x: 0, y: 0, n: 0 }).get(n.group);
      c.x += n.x;
      c.y += n.y;
      c.n++;
    }
    for (const n of nodes) {
      const c = n.group && centres.get(n.group);
      if (!c || c.n < 2) continue;
      n.vx += (c.x / c.n - n.x) * 0.2 * alpha;
      n.vy += (c.y / c.n - n.y) * 0.2 * alpha;
    }
  };
}
