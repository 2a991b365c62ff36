// Labels that never overlap. A map with a label on every node and edge is
// unreadable long before it is large (a 30-host office drew 461 labels with
// 1,821 overlapping pairs), so labels are placed in screen space, greedily by
// priority (selected, hovered, search hits, then the busiest nodes), each at
// the first of a few spots beside its node where it collides with no label
// already placed; the rest wait for zoom or hover. Long names are cut with an
// ellipsis (the panel and the tooltip have the full text). Edge labels show
// on hover or selection, or when the edge is drawn wide enough to carry one.

/** Font of every label, on the page and when measured. */
export const LABEL_FONT = '10px system-ui, sans-serif';
/** The widest a node label may be, in pixels (issue 17 allows 320). */
export const MAX_NODE_LABEL = 200;
const MAX_EDGE_LABEL = 120;
const HEIGHT = 13;
/** Space kept free around each label. */
const GAP = 2;
/** An edge at least this wide on screen is labelled without being pointed at. */
const WIDE_EDGE = 5;
/** The widest an edge is drawn, in map units (draw.js `edgeWidth`). */
const MAX_EDGE_WIDTH = 8;

let measurer = null;
const widths = new Map();
/** Width of `text` in the label font (cached; canvas measuring, no layout). */
export function textWidth(text) {
  let w = widths.get(text);
  if (w === undefined) {
    measurer ??= document.createElement('canvas').getContext('2d');
    measurer.font = LABEL_FONT;
    w = measurer.measureText(text).width;
    if (widths.size > 20000) widths.clear();
    widths.set(text, w);
  }
  return w;
}

/** `text` cut with an ellipsis to at most `max` pixels. */
export function fitText(text, max) {
  if (textWidth(text) <= max) return text;
  let lo = 0;
  let hi = text.length;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (textWidth(`${text.slice(0, mid)}…`) <= max) lo = mid;
    else hi = mid - 1;
  }
  return `${text.slice(0, lo)}…`;
}

/** Boxes in a uniform grid, for collision queries in constant time. */
class Occupancy {
  constructor(cell = 64) {
    this.cell = cell;
    /** Cell key (column * 65536 + row, screen coordinates are small) -> boxes. */
    this.cells = new Map();
  }

  /** Whether `b` overlaps no box but those of node `own` (a label may touch its own node). */
  free(b, own) {
    const c = this.cell;
    for (let i = Math.floor(b.x0 / c); i <= Math.floor(b.x1 / c); i++) {
      for (let j = Math.floor(b.y0 / c); j <= Math.floor(b.y1 / c); j++) {
        const boxes = this.cells.get(i * 65536 + j);
        if (!boxes) continue;
        for (const o of boxes) if (o.node !== own && b.x0 < o.x1 && o.x0 < b.x1 && b.y0 < o.y1 && o.y0 < b.y1) return false;
      }
    }
    return true;
  }

  add(b) {
    const c = this.cell;
    for (let i = Math.floor(b.x0 / c); i <= Math.floor(b.x1 / c); i++) {
      for (let j = Math.floor(b.y0 / c); j <= Math.floor(b.y1 / c); j++) {
        const key = i * 65536 + j;
        const boxes = this.cells.get(key);
        if (boxes) boxes.push(b);
        else this.cells.set(key, [b]);
      }
    }
  }
}

/**
 * Places labels for `scene` seen through `transform` in a `width` x `height`
 * window. `nodeText(n)` is a node's full label, `edgeText(e)` an edge's;
 * `radius(n)` a node's radius and `edgeWidth(e)` an edge's, in map units.
 * `look` has `selected`, `hovered` and `matches` (ids). Returns
 * `[{id, kind, text, full, x, y, anchor}]` in screen pixels (x, y: the
 * text's anchor point and middle line).
 */
export function placeLabels(scene, transform, width, height, { nodeText, edgeText, radius, edgeWidth }, look = {}) {
  const { k, x: tx, y: ty } = transform;
  const sx = (x) => x * k + tx;
  const sy = (y) => y * k + ty;
  const byId = scene.byId ?? new Map(scene.nodes.map((n) => [n.id, n]));
  const weight = new Map();
  for (const e of scene.edges) {
    weight.set(e.source, (weight.get(e.source) ?? 0) + e.count);
    weight.set(e.target, (weight.get(e.target) ?? 0) + e.count);
  }
  // A host in focus brings its services: their edges are its connections.
  const focus = new Set([look.selected, look.hovered].filter(Boolean));
  for (const n of scene.nodes) if (n.host && focus.has(n.host)) focus.add(n.id);
  const rank = (n) => (focus.has(n.id) ? 3 : look.matches?.has(n.id) ? 2 : n.kind === 'group' || n.kind === 'host' ? 1 : 0);
  const onScreen = (x, y) => x >= 0 && x <= width && y >= 0 && y <= height;
  const nodes = scene.nodes.filter((n) => onScreen(sx(n.x), sy(n.y)))
    .sort((a, b) => rank(b) - rank(a) || (weight.get(b.id) ?? 0) - (weight.get(a.id) ?? 0) || (a.id < b.id ? -1 : 1));

  const taken = new Occupancy();
  const placed = [];
  const inside = (b) => b.x0 >= 0 && b.y0 >= 0 && b.x1 <= width && b.y1 <= height;
  // Nodes are obstacles too, so a label never covers a node it does not name.
  for (const n of nodes) {
    const r = radius(n) * k;
    taken.add({ x0: sx(n.x) - r, y0: sy(n.y) - r, x1: sx(n.x) + r, y1: sy(n.y) + r, node: n.id });
  }
  const tryPlace = (item, spots, w) => {
    for (const [x, y, anchor] of spots) {
      const x0 = anchor === 'start' ? x : anchor === 'end' ? x - w : x - w / 2;
      const b = { x0: x0 - GAP, y0: y - HEIGHT / 2 - GAP, x1: x0 + w + GAP, y1: y + HEIGHT / 2 + GAP };
      if (!inside(b) || !taken.free(b, item.id)) continue;
      taken.add(b);
      placed.push({ ...item, x, y, anchor });
      return true;
    }
    return false;
  };

  // Emphasised edges' labels come before the other nodes', the rest after.
  const edgeItems = [];
  // Zoomed out, no edge is wide enough: only the focused nodes' edges can be labelled.
  const anyWide = MAX_EDGE_WIDTH * k >= WIDE_EDGE;
  for (const e of anyWide || focus.size ? scene.edges : []) {
    const s = byId.get(e.source);
    const t = byId.get(e.target);
    if (!s || !t) continue;
    const pointed = focus.has(e.id) || focus.has(e.source) || focus.has(e.target);
    if (!pointed && edgeWidth(e) * k < WIDE_EDGE) continue;
    const mx = sx((s.x + t.x) / 2);
    const my = sy((s.y + t.y) / 2);
    if (!onScreen(mx, my)) continue;
    const full = edgeText(e);
    if (!full) continue;
    edgeItems.push({ e, pointed, mx, my, full });
  }
  edgeItems.sort((a, b) => Number(b.pointed) - Number(a.pointed) || b.e.count - a.e.count);
  const placeEdge = ({ e, mx, my, full }) => {
    const text = fitText(full, MAX_EDGE_LABEL);
    tryPlace({ id: e.id, kind: 'edge', text, full }, [[mx, my - 8, 'middle'], [mx, my + 8, 'middle'], [mx, my, 'middle']], textWidth(text));
  };
  for (const item of edgeItems) if (item.pointed) placeEdge(item);
  for (const n of nodes) {
    const full = nodeText(n);
    if (!full) continue;
    const text = fitText(full, MAX_NODE_LABEL);
    const w = textWidth(text);
    const r = radius(n) * k + 3;
    const x = sx(n.x);
    const y = sy(n.y);
    tryPlace({ id: n.id, kind: 'node', text, full }, [[x + r, y, 'start'], [x - r, y, 'end'], [x, y - r - HEIGHT / 2, 'middle'], [x, y + r + HEIGHT / 2, 'middle']], w);
  }
  for (const item of edgeItems) if (!item.pointed) placeEdge(item);
  return placed;
}
