// Drawing the map: one scene, two ways. SVG (through D3 joins, text via
// `.text()`) while the graph is small, canvas when it is large; the same SVG
// code writes the SVG export and the same canvas code the PNG export.
//
// A scene is `{nodes, edges, members}` where nodes carry layout positions and
// edges name their ends by id. `look` says what to emphasise: edges first seen
// since a date, search matches, the selection.

import { select } from 'd3';
import { LABEL_FONT } from './labels.js';
import { radius } from './layout.js';

export const COLORS = { host: '#2f6db5', service: '#3a9a5b', external: '#d9822b', group: '#b5552f', hostGroup: '#5477a8', edge: '#8a96a3', fresh: '#e0245e', member: '#c9d1da', selected: '#111111', blocked: '#d62728', maybe: '#e8a317', wouldBlock: '#9c27b0', policyBlocked: '#3f1d7a', drift: '#00838f' };

/** The policy loop's edge classes (loop.js kinds) and how they are drawn: their own colours, would-block dashed. */
const LOOP_CLASS = { 'would-block': 'wouldblock', blocked: 'policyblocked', drift: 'drift' };
const LOOP_COLOR = { wouldblock: COLORS.wouldBlock, policyblocked: COLORS.policyBlocked, drift: COLORS.drift };
const LOOP_DASH = { wouldblock: [5, 3] };
const loopClassOf = (cls) => Object.keys(LOOP_COLOR).find((c) => cls.startsWith(c));

/** A host's (or group's) policy badge (loop.js `policyBadge`) as a ring around its node. */
export const BADGE_RING = {
  audit: { color: '#e6a100', dash: [3, 2], width: 2 },
  enforce: { color: '#2e7d32', dash: null, width: 2 },
  mixed: { color: '#7e57c2', dash: [6, 2, 1, 2], width: 2 },
  'broken-glass': { color: '#c62828', dash: null, width: 3.5 },
  failed: { color: '#c62828', dash: [2, 2], width: 2 },
};

/** Hits and drift stay thin (4 px at most), so their labels show on hover and selection only. */
export const edgeWidth = (e) => Math.min(e.loop ? 4 : 8, 0.8 + 1.6 * Math.log10(e.count + 1));
const nodeColor = (n) => (n.kind === 'service' && !n.internal ? COLORS.external : n.kind === 'group' && n.internal ? COLORS.hostGroup : COLORS[n.kind] ?? COLORS.external);

/** Short label of a node, as drawn beside it. */
export function nodeLabel(n) {
  if (n.kind === 'service') return n.service ? `${n.label} (${n.service})` : n.label;
  return n.label;
}

/**
 * Line geometry of an edge: from the source's rim to the arrow's base, and
 * the arrow. `twoWay` (the ends talk both ways) moves it aside by its width,
 * so the two directions lie side by side instead of on top of each other.
 */
export function edgeGeometry(s, t, width, twoWay = false, lane = 0) {
  if (twoWay || lane) {
    // A lane (hits, drift) lies beside the connections between the same ends.
    const side = (twoWay ? width / 2 + 1.5 : 0) + lane * 4.5;
    const len0 = Math.hypot(t.x - s.x, t.y - s.y) || 1;
    const nx = (-(t.y - s.y) / len0) * side;
    const ny = ((t.x - s.x) / len0) * side;
    s = { ...s, x: s.x + nx, y: s.y + ny };
    t = { ...t, x: t.x + nx, y: t.y + ny };
  }
  const dx = t.x - s.x;
  const dy = t.y - s.y;
  const len = Math.hypot(dx, dy) || 1;
  const ux = dx / len;
  const uy = dy / len;
  const rs = radius(s);
  const rt = radius(t) + 1;
  const head = 4 + 1.4 * width;
  const tipX = t.x - ux * rt;
  const tipY = t.y - uy * rt;
  const baseX = tipX - ux * head;
  const baseY = tipY - uy * head;
  const half = head * 0.45;
  return {
    x1: s.x + ux * rs, y1: s.y + uy * rs, x2: baseX, y2: baseY,
    tip: [tipX, tipY], left: [baseX - uy * half, baseY + ux * half], right: [baseX + uy * half, baseY - ux * half],
  };
}

/**
 * What each edge and node looks like under `look`: 'fresh', 'old', 'dim',
 * 'selected', or in firewall mode 'blocked' and 'maybe' (`look.firewall`: view
 * edge id -> 'blocked' | 'maybe-blocked' | 'allowed'), or ''. The loop's
 * edges (`e.loop`) are 'wouldblock', 'policyblocked' or 'drift' whatever
 * else is shown: the firewall check and "new since" colour connections.
 */
export function classify(scene, look) {
  const edgeClass = new Map();
  const nodeClass = new Map();
  const focus = look.matches ?? (look.selected ? neighbourhood(scene, look.selected) : null);
  for (const e of scene.edges) {
    const verdict = look.firewall?.get(e.id);
    let c = e.loop ? LOOP_CLASS[e.loop] : verdict === 'blocked' ? 'blocked' : verdict === 'maybe-blocked' ? 'maybe'
      : look.since === null ? '' : e.firstSeen !== null && e.firstSeen >= look.since ? 'fresh' : 'old';
    const inFocus = !focus || (look.matches ? focus.has(e.source) || focus.has(e.target) : focus.has(e.source) && focus.has(e.target));
    if (e.id === look.selected) c = 'selected';
    else if (!inFocus) c = `${c} dim`;
    edgeClass.set(e.id, c);
  }
  for (const n of scene.nodes) nodeClass.set(n.id, n.id === look.selected ? 'selected' : focus && !focus.has(n.id) ? 'dim' : '');
  return { edgeClass, nodeClass };
}

function neighbourhood(scene, id) {
  const edge = scene.edges.find((e) => e.id === id);
  if (edge) return new Set([edge.source, edge.target]);
  if (!scene.nodes.some((n) => n.id === id)) return null;
  const set = new Set([id]);
  for (const e of scene.edges) {
    if (e.source === id) set.add(e.target);
    if (e.target === id) set.add(e.source);
  }
  for (const m of scene.members) if (m.source === id || m.target === id) { set.add(m.source); set.add(m.target); }
  return set;
}

function edgeColor(cls) {
  if (cls.startsWith('selected')) return COLORS.selected;
  if (loopClassOf(cls)) return LOOP_COLOR[loopClassOf(cls)];
  if (cls.startsWith('fresh')) return COLORS.fresh;
  if (cls.startsWith('blocked')) return COLORS.blocked;
  if (cls.startsWith('maybe')) return COLORS.maybe;
  return COLORS.edge;
}
const edgeOpacity = (cls) => (cls.includes('dim') ? 0.08 : cls.startsWith('old') ? 0.3 : /^(fresh|selected|blocked|maybe|wouldblock|policyblocked|drift)/.test(cls) ? 0.95 : 0.6);

/**
 * Draws (or updates) the scene into an SVG group with D3 joins. Only
 * presentation attributes are used, so the markup stands alone as an export
 * and no inline style is needed under the page's CSP.
 */
export function drawSvg(group, scene, look) {
  const byId = new Map(scene.nodes.map((n) => [n.id, n]));
  const { edgeClass, nodeClass } = classify(scene, look);
  group.selectAll('g.layer').data(['members', 'edges', 'nodes']).join('g').attr('class', (d) => `layer ${d}`);

  group.select('g.members').selectAll('line').data(scene.members, (m) => m.id).join('line')
    .attr('class', 'member').attr('stroke', COLORS.member).attr('stroke-dasharray', '2 3')
    .attr('x1', (m) => byId.get(m.source).x).attr('y1', (m) => byId.get(m.source).y)
    .attr('x2', (m) => byId.get(m.target).x).attr('y2', (m) => byId.get(m.target).y);

  group.select('g.edges').selectAll('path').data(scene.edges, (e) => e.id).join('path')
    .attr('class', (e) => `edge ${edgeClass.get(e.id)}`)
    .attr('data-id', (e) => e.id)
    .attr('stroke', (e) => edgeColor(edgeClass.get(e.id)))
    .attr('fill', (e) => edgeColor(edgeClass.get(e.id)))
    .attr('stroke-opacity', (e) => edgeOpacity(edgeClass.get(e.id)))
    .attr('fill-opacity', (e) => edgeOpacity(edgeClass.get(e.id)))
    .attr('stroke-width', edgeWidth)
    .attr('stroke-dasharray', (e) => LOOP_DASH[loopClassOf(edgeClass.get(e.id))]?.join(' ') ?? null)
    .attr('d', (e) => {
      const g = edgeGeometry(byId.get(e.source), byId.get(e.target), edgeWidth(e), e.twoWay, e.lane);
      return `M${g.x1},${g.y1}L${g.x2},${g.y2}M${g.tip}L${g.left}L${g.right}Z`;
    });

  const node = group.select('g.nodes').selectAll('g.node').data(scene.nodes, (n) => n.id).join((enter) => {
    const g = enter.append('g');
    g.append('circle');
    // The full name as the tooltip; the drawn label (labels.js) may be cut.
    g.append('title');
    // A path, not a circle: a node's one circle is what is clicked and looked up.
    g.append('path').attr('class', 'ring').attr('fill', 'none').attr('pointer-events', 'none');
    return g;
  });
  node.attr('class', (n) => `node ${n.kind} ${nodeClass.get(n.id)}${n.pinned ? ' pinned' : ''}`)
    .attr('data-id', (n) => n.id)
    .attr('transform', (n) => `translate(${n.x},${n.y})`)
    .attr('opacity', (n) => (nodeClass.get(n.id) === 'dim' ? 0.2 : 1));
  node.select('circle').attr('r', radius).attr('fill', nodeColor)
    .attr('stroke', (n) => (nodeClass.get(n.id) === 'selected' || n.pinned ? '#111' : '#fff'))
    .attr('stroke-width', (n) => (n.kind === 'group' ? 2.5 : 1.5))
    .attr('stroke-dasharray', (n) => (n.kind === 'group' ? '3 2' : null));
  node.select('title').text(nodeLabel);
  const ring = (r) => `M${r},0A${r},${r} 0 1 0 ${-r},0A${r},${r} 0 1 0 ${r},0Z`;
  node.select('path.ring').attr('d', (n) => (BADGE_RING[n.badge] ? ring(radius(n) + 3.5) : null))
    .attr('data-badge', (n) => n.badge ?? null)
    .attr('stroke', (n) => BADGE_RING[n.badge]?.color ?? 'none')
    .attr('stroke-width', (n) => BADGE_RING[n.badge]?.width ?? 0)
    .attr('stroke-dasharray', (n) => BADGE_RING[n.badge]?.dash?.join(' ') ?? null);
}

/**
 * Draws placed labels (labels.js: screen pixels) into an SVG group, as text
 * with a halo in the background colour. Presentation attributes only, so the
 * SVG export carries them as drawn.
 */
export function drawLabelsSvg(group, labels, look) {
  const { nodeClass } = look.classes ?? { nodeClass: new Map() };
  group.selectAll('text').data(labels, (d) => d.id).join('text')
    .attr('class', (d) => `label ${d.kind}`)
    .attr('data-id', (d) => d.id)
    .attr('x', (d) => d.x).attr('y', (d) => d.y).attr('dy', '0.32em')
    .attr('text-anchor', (d) => d.anchor)
    .attr('font-size', 10).attr('font-family', 'system-ui, sans-serif')
    .attr('fill', (d) => (d.kind === 'edge' ? '#4a5561' : '#1d232a'))
    .attr('stroke', '#fbfbfc').attr('stroke-width', 3).attr('paint-order', 'stroke')
    .attr('opacity', (d) => (nodeClass.get(d.id) === 'dim' ? 0.35 : 1))
    .text((d) => d.text);
}

/** Paints placed labels (screen pixels) on a canvas, for the PNG export. */
export function paintLabels(ctx, labels, dpr = 1) {
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.font = LABEL_FONT;
  ctx.textBaseline = 'middle';
  ctx.lineWidth = 3;
  ctx.strokeStyle = '#fbfbfc';
  for (const l of labels) {
    ctx.textAlign = l.anchor === 'middle' ? 'center' : l.anchor === 'end' ? 'right' : 'left';
    ctx.fillStyle = l.kind === 'edge' ? '#4a5561' : '#1d232a';
    ctx.strokeText(l.text, l.x, l.y);
    ctx.fillText(l.text, l.x, l.y);
  }
  ctx.textAlign = 'left';
}

/**
 * Paints the scene on a 2D canvas context under a d3-zoom transform. Edges
 * are batched by colour and width into a few paths; whatever lies outside
 * the viewport is skipped. Labels are placed and drawn apart (labels.js).
 */
export function paintCanvas(ctx, scene, look, transform, width, height, dpr = 1) {
  const byId = scene.byId ?? new Map(scene.nodes.map((n) => [n.id, n]));
  const { edgeClass, nodeClass } = scene.classes ?? classify(scene, look);
  const { k, x: tx, y: ty } = transform;
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.fillStyle = '#fbfbfc';
  ctx.fillRect(0, 0, width, height);
  ctx.setTransform(dpr * k, 0, 0, dpr * k, dpr * tx, dpr * ty);
  // Visible world rectangle, with a margin for labels and arrows.
  const x0 = -tx / k - 20, y0 = -ty / k - 20, x1 = (width - tx) / k + 20, y1 = (height - ty) / k + 20;
  const outside = (a, b) => (a.x < x0 && b.x < x0) || (a.x > x1 && b.x > x1) || (a.y < y0 && b.y < y0) || (a.y > y1 && b.y > y1);

  ctx.lineWidth = 1 / k;
  ctx.strokeStyle = COLORS.member;
  ctx.beginPath();
  for (const m of scene.members) {
    const s = byId.get(m.source), t = byId.get(m.target);
    if (outside(s, t)) continue;
    ctx.moveTo(s.x, s.y);
    ctx.lineTo(t.x, t.y);
  }
  ctx.stroke();

  const batches = new Map();
  const arrows = k > 0.6; // smaller heads are a pixel or two: not worth their cost
  for (const e of scene.edges) {
    const s = byId.get(e.source), t = byId.get(e.target);
    if (outside(s, t)) continue;
    const cls = edgeClass.get(e.id);
    const w = Math.round(edgeWidth(e) * 2) / 2;
    const key = `${cls}|${w}`;
    let batch = batches.get(key);
    if (!batch) batches.set(key, (batch = { cls, w, lines: new Path2D(), heads: new Path2D() }));
    const g = edgeGeometry(s, t, w, e.twoWay, e.lane);
    batch.lines.moveTo(g.x1, g.y1);
    batch.lines.lineTo(g.x2, g.y2);
    if (arrows) {
      batch.heads.moveTo(g.tip[0], g.tip[1]);
      batch.heads.lineTo(g.left[0], g.left[1]);
      batch.heads.lineTo(g.right[0], g.right[1]);
      batch.heads.closePath();
    }
  }
  // Dim edges first, emphasised ones last so they stay on top.
  const order = [...batches.values()].sort((a, b) => rank(a.cls) - rank(b.cls));
  for (const b of order) {
    ctx.globalAlpha = edgeOpacity(b.cls);
    ctx.strokeStyle = ctx.fillStyle = edgeColor(b.cls);
    ctx.lineWidth = b.w;
    ctx.setLineDash(LOOP_DASH[loopClassOf(b.cls)] ?? []);
    ctx.stroke(b.lines);
    ctx.setLineDash([]);
    if (arrows) ctx.fill(b.heads);
  }
  ctx.globalAlpha = 1;

  const visible = scene.nodes.filter((n) => n.x >= x0 && n.x <= x1 && n.y >= y0 && n.y <= y1);
  for (const dim of [true, false]) {
    const byColor = new Map();
    for (const n of visible) {
      if ((nodeClass.get(n.id) === 'dim') !== dim) continue;
      const c = nodeColor(n);
      if (!byColor.has(c)) byColor.set(c, new Path2D());
      const p = byColor.get(c);
      p.moveTo(n.x + radius(n), n.y);
      p.arc(n.x, n.y, radius(n), 0, 2 * Math.PI);
    }
    ctx.globalAlpha = dim ? 0.2 : 1;
    for (const [c, p] of byColor) {
      ctx.fillStyle = c;
      ctx.fill(p);
    }
  }
  ctx.globalAlpha = 1;
  ctx.lineWidth = 2 / k;
  ctx.strokeStyle = '#111';
  for (const n of visible) {
    if (nodeClass.get(n.id) === 'selected' || n.pinned) {
      ctx.beginPath();
      ctx.arc(n.x, n.y, radius(n) + 1, 0, 2 * Math.PI);
      ctx.stroke();
    }
  }
  for (const n of visible) {
    const ring = BADGE_RING[n.badge];
    if (!ring) continue;
    ctx.strokeStyle = ring.color;
    ctx.lineWidth = ring.width;
    ctx.setLineDash(ring.dash ?? []);
    ctx.beginPath();
    ctx.arc(n.x, n.y, radius(n) + 3.5, 0, 2 * Math.PI);
    ctx.stroke();
  }
  ctx.setLineDash([]);
}

const rank = (cls) => (cls.includes('dim') ? 0 : cls.startsWith('old') ? 1 : cls === '' ? 2 : cls.startsWith('fresh') ? 3 : loopClassOf(cls) ? 5 : 4);

/** Standalone SVG markup of the scene as seen through `transform`, with its placed labels. */
export function svgMarkup(scene, look, transform, width, height, labels = []) {
  const svg = select(document.createElementNS('http://www.w3.org/2000/svg', 'svg'))
    .attr('xmlns', 'http://www.w3.org/2000/svg')
    .attr('width', width).attr('height', height).attr('viewBox', `0 0 ${width} ${height}`)
    .attr('font-family', 'system-ui, sans-serif');
  svg.append('rect').attr('width', width).attr('height', height).attr('fill', '#fbfbfc');
  const g = svg.append('g').attr('transform', transform.toString());
  drawSvg(g, scene, look);
  drawLabelsSvg(svg.append('g'), labels, { classes: classify(scene, look) });
  return new XMLSerializer().serializeToString(svg.node());
}

/** Distance from point p to segment ab. */
export function segmentDistance(px, py, ax, ay, bx, by) {
  const dx = bx - ax, dy = by - ay;
  const l2 = dx * dx + dy * dy || 1;
  const t = Math.max(0, Math.min(1, ((px - ax) * dx + (py - ay) * dy) / l2));
  return Math.hypot(px - ax - t * dx, py - ay - t * dy);
}
