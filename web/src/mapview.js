// The interactive map: picks SVG or canvas by size, and handles pan, zoom,
// drag (which pins), double-click (unpin, or open/close a group) and click
// (select a node or an edge), and hover (the full name as a tooltip, the
// node's and its edges' labels first). Hit testing is done on the scene, not
// the DOM, so both renderers behave the same. Labels are placed in screen
// space (labels.js) and drawn in an SVG layer over either renderer, after
// every redraw and zoom step, so they never overlap at any scale.

import { select, pointer } from 'd3';
import { zoom, zoomIdentity } from 'd3';
import { drag } from 'd3';
import { classify, drawLabelsSvg, drawSvg, edgeGeometry, edgeWidth, nodeLabel, paintCanvas, segmentDistance } from './draw.js';
import { placeLabels } from './labels.js';
import { radius } from './layout.js';
import { edgeText } from './model.js';

/** Above these sizes the map is drawn on a canvas. */
export const CANVAS_NODES = 600;
export const CANVAS_EDGES = 2000;
/** Full redraws slower than this (ms) make pan and zoom move a snapshot. */
const SNAPSHOT_ABOVE_MS = 10;

export class MapView {
  constructor(container, { onSelect, onPin, onToggleGroup, onViewChange }) {
    this.container = container;
    this.handlers = { onSelect, onPin, onToggleGroup, onViewChange };
    this.scene = { nodes: [], edges: [], members: [] };
    this.look = { since: null, matches: null, selected: null };
    this.transform = zoomIdentity;
    this.mode = null;
    this.pending = 0;
    this.labelsPending = 0;
    /** The labels drawn now, in screen pixels (tests and the exports read them). */
    this.labels = [];
    this.hovered = null;
    this.zoom = zoom().scaleExtent([0.03, 12])
      .on('start', (event) => {
        // When a full redraw costs more than a frame's share, a pan or zoom
        // moves a snapshot of the map instead and redraws once it ends.
        if (this.mode === 'canvas' && event.sourceEvent && this.lastDrawMs > SNAPSHOT_ABOVE_MS) this.takeSnapshot();
      })
      .on('zoom', (event) => {
        this.transform = event.transform;
        if (event.sourceEvent) this.userMoved = true;
        if (this.mode === 'svg') {
          this.svgRoot.attr('transform', this.transform);
          // During a gesture the labels move with the map; placed anew at its end.
          if (event.sourceEvent) this.followLabels();
          else this.scheduleLabels();
        } else this.schedule();
        this.handlers.onViewChange?.(this.transform);
      })
      .on('end', () => {
        if (this.mode === 'svg') this.scheduleLabels();
        if (!this.snapshot) return;
        this.snapshot = null;
        this.schedule();
      });
  }

  get size() {
    return { width: this.container.clientWidth, height: this.container.clientHeight };
  }

  /** Replaces the scene (nodes with positions). Switches renderer if the size class changed. */
  setScene(scene) {
    this.scene = scene;
    const mode = scene.nodes.length > CANVAS_NODES || scene.edges.length > CANVAS_EDGES ? 'canvas' : 'svg';
    if (mode !== this.mode) this.mount(mode);
    this.refreshStyle();
  }

  setLook(look) {
    this.look = { ...this.look, ...look };
    this.refreshStyle();
  }

  refreshStyle() {
    this.scene.byId = new Map(this.scene.nodes.map((n) => [n.id, n]));
    this.scene.classes = classify(this.scene, this.look);
    this.schedule();
  }

  mount(mode) {
    this.container.replaceChildren();
    this.mode = mode;
    const { width, height } = this.size;
    let surface;
    if (mode === 'svg') {
      surface = select(this.container).append('svg').attr('class', 'map-svg');
      this.svgRoot = surface.append('g');
      this.svgRoot.attr('transform', this.transform);
      this.canvas = null;
    } else {
      surface = select(this.container).append('canvas').attr('class', 'map-canvas');
      this.canvas = surface.node();
      this.resizeCanvas(width, height);
      this.svgRoot = null;
    }
    this.surface = surface;
    this.labelLayer = select(this.container).append('svg').attr('class', 'labels').attr('aria-hidden', 'true').append('g');
    this.container.dataset.renderer = mode;
    const legend = document.createElement('div');
    legend.className = 'legend';
    for (const [cls, text] of [['host', 'host'], ['service', 'service'], ['external', 'outside'], ['host-group', 'host group'], ['group', 'outside group (double-click opens)'], ['fresh', 'new since']]) {
      const item = document.createElement('span');
      item.className = cls;
      item.textContent = text;
      legend.append(item);
    }
    this.container.append(legend);
    const dragging = drag()
      .container(() => surface.node())
      .subject((event) => {
        const n = this.nodeAt(...this.transform.invert([event.x, event.y]));
        return n ? { node: n, x: event.x, y: event.y } : null;
      })
      .on('drag', (event) => {
        const [x, y] = this.transform.invert([event.x, event.y]);
        const n = event.subject.node;
        n.x = n.fx = x;
        n.y = n.fy = y;
        this.schedule();
      })
      .on('end', (event) => this.handlers.onPin?.(event.subject.node, true));
    surface.call(dragging).call(this.zoom).on('dblclick.zoom', null);
    surface.call(this.zoom.transform, this.transform);
    surface.on('click', (event) => {
      const [x, y] = this.transform.invert(pointer(event, surface.node()));
      const hit = this.nodeAt(x, y) ?? this.edgeAt(x, y);
      this.handlers.onSelect?.(hit ? hit.id : null);
    });
    surface.on('dblclick', (event) => {
      const n = this.nodeAt(...this.transform.invert(pointer(event, surface.node())));
      if (!n) return;
      if (n.kind === 'group' || (n.group && !n.pinned)) this.handlers.onToggleGroup?.(n);
      else if (n.pinned) this.handlers.onPin?.(n, false);
    });
    surface.on('mousemove', (event) => {
      if (event.buttons) return;
      const [x, y] = this.transform.invert(pointer(event, surface.node()));
      const node = this.nodeAt(x, y);
      const hit = node ?? (this.mode === 'svg' ? this.edgeAt(x, y) : null);
      const id = hit?.id ?? null;
      if (id === this.hovered) return;
      this.hovered = id;
      this.container.title = !hit ? '' : node ? nodeLabel(node) : `${nodeLabel(this.scene.byId.get(hit.source))} → ${nodeLabel(this.scene.byId.get(hit.target))}: ${edgeText(hit)}`;
      this.scheduleLabels();
    });
    if (!this.resizeObserver) {
      this.resizeObserver = new ResizeObserver(() => {
        if (this.canvas) this.resizeCanvas(this.size.width, this.size.height);
        this.schedule();
      });
      this.resizeObserver.observe(this.container);
    }
  }

  resizeCanvas(width, height) {
    const dpr = window.devicePixelRatio || 1;
    this.canvas.width = Math.max(1, Math.round(width * dpr));
    this.canvas.height = Math.max(1, Math.round(height * dpr));
  }

  nodeAt(x, y) {
    let best = null;
    let bestD = Infinity;
    const slack = 3 / this.transform.k;
    for (const n of this.scene.nodes) {
      const d = Math.hypot(n.x - x, n.y - y);
      if (d <= radius(n) + slack && d < bestD) { best = n; bestD = d; }
    }
    return best;
  }

  edgeAt(x, y) {
    const byId = this.scene.byId;
    let best = null;
    let bestD = Infinity;
    for (const e of this.scene.edges) {
      const g = edgeGeometry(byId.get(e.source), byId.get(e.target), edgeWidth(e), e.twoWay, e.lane);
      const d = segmentDistance(x, y, g.x1, g.y1, g.tip[0], g.tip[1]);
      if (d <= edgeWidth(e) / 2 + 4 / this.transform.k && d < bestD) { best = e; bestD = d; }
    }
    return best;
  }

  /** Redraws on the next animation frame (several requests make one frame). */
  schedule() {
    if (this.pending) return;
    this.pending = requestAnimationFrame(() => {
      this.pending = 0;
      this.draw();
    });
  }

  /** Places and draws the labels on the next animation frame. */
  scheduleLabels() {
    if (this.labelsPending || this.pending) return;
    this.labelsPending = requestAnimationFrame(() => {
      this.labelsPending = 0;
      this.drawLabels();
    });
  }

  drawLabels() {
    if (!this.labelLayer) return;
    const { width, height } = this.size;
    this.labels = placeLabels(this.scene, this.transform, width, height, { nodeText: nodeLabel, edgeText, radius, edgeWidth },
      { selected: this.look.selected, hovered: this.hovered, matches: this.look.matches });
    this.labelsAt = this.transform;
    this.labelLayer.attr('transform', null);
    drawLabelsSvg(this.labelLayer, this.labels, { classes: this.scene.classes });
  }

  takeSnapshot() {
    const copy = document.createElement('canvas');
    copy.width = this.canvas.width;
    copy.height = this.canvas.height;
    copy.getContext('2d').drawImage(this.canvas, 0, 0);
    this.snapshot = { image: copy, transform: this.transform };
  }

  drawSnapshot() {
    const { width, height } = this.size;
    const dpr = window.devicePixelRatio || 1;
    const ctx = this.canvas.getContext('2d');
    const { image, transform: t0 } = this.snapshot;
    const t1 = this.transform;
    const ratio = t1.k / t0.k;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.fillStyle = '#fbfbfc';
    ctx.fillRect(0, 0, width, height);
    ctx.setTransform(dpr * ratio, 0, 0, dpr * ratio, dpr * (t1.x - t0.x * ratio), dpr * (t1.y - t0.y * ratio));
    ctx.drawImage(image, 0, 0, width, height);
    // The labels move with the picture until the gesture ends.
    this.followLabels();
  }

  /** Moves the placed labels as the map moved since they were placed. */
  followLabels() {
    const t0 = this.labelsAt ?? this.transform;
    const t1 = this.transform;
    const ratio = t1.k / t0.k;
    this.labelLayer?.attr('transform', `translate(${t1.x - t0.x * ratio},${t1.y - t0.y * ratio}) scale(${ratio})`);
  }

  draw() {
    const started = performance.now();
    if (this.snapshot) {
      this.drawSnapshot();
      return;
    }
    if (this.mode === 'svg') drawSvg(this.svgRoot, this.scene, this.look);
    else if (this.mode === 'canvas') {
      const { width, height } = this.size;
      paintCanvas(this.canvas.getContext('2d'), this.scene, this.look, this.transform, width, height, window.devicePixelRatio || 1);
    }
    if (this.labelsPending) cancelAnimationFrame(this.labelsPending);
    this.labelsPending = 0;
    this.drawLabels();
    this.lastDrawMs = performance.now() - started;
  }

  /** Zooms so that the whole scene (or the given nodes) fits the window. */
  fit(nodes = this.scene.nodes) {
    if (!nodes.length || !this.surface) return;
    const xs = nodes.map((n) => n.x), ys = nodes.map((n) => n.y);
    const [minX, maxX, minY, maxY] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
    const { width, height } = this.size;
    const k = Math.min(1.5, 0.9 / Math.max((maxX - minX + 60) / width, (maxY - minY + 60) / height));
    const t = zoomIdentity.translate(width / 2, height / 2).scale(k).translate(-(minX + maxX) / 2, -(minY + maxY) / 2);
    this.surface.call(this.zoom.transform, t);
  }

  setTransform(t) {
    if (this.surface) this.surface.call(this.zoom.transform, t);
    else this.transform = t;
  }
}
