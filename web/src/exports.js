// Exports of the current view: SVG and PNG as drawn (whatever the renderer),
// and the JSON of the graph shown.

import { paintCanvas, paintLabels, svgMarkup } from './draw.js';

/** Saves `blob` as a file called `name` (the browser's download). */
export function download(blob, name) {
  const a = document.createElement('a');
  a.href = URL.createObjectURL(blob);
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10e3);
}

export function downloadSvg(map, name) {
  const { width, height } = map.size;
  download(new Blob([svgMarkup(map.scene, map.look, map.transform, width, height, map.labels)], { type: 'image/svg+xml' }), name);
}

export function downloadPng(map, name) {
  const { width, height } = map.size;
  const canvas = document.createElement('canvas');
  canvas.width = width * 2;
  canvas.height = height * 2;
  const ctx = canvas.getContext('2d');
  paintCanvas(ctx, map.scene, map.look, map.transform, width, height, 2);
  paintLabels(ctx, map.labels, 2);
  canvas.toBlob((blob) => download(blob, name), 'image/png');
}

export function downloadJson(app, name) {
  const iso = (ms) => (ms === null ? null : new Date(ms).toISOString());
  const doc = {
    state: app.state,
    nodes: app.scene.nodes.map(({ id, kind, label, internal, host, address, port, service, name: dns, members, x, y }) => ({ id, kind, label, internal, host, address, port, service, name: dns, members, x, y })),
    edges: app.view.edges.map((e) => ({ id: e.id, source: e.source, target: e.target, count: e.count, bytes: e.bytes, first_seen: iso(e.firstSeen), last_seen: iso(e.lastSeen), service: e.service, processes: e.processes, users: e.users })),
  };
  download(new Blob([JSON.stringify(doc, null, 1)], { type: 'application/json' }), name);
}
