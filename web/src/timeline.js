// The timeline: a histogram of connections over time with a brush to pick the
// range. The server sends the histogram with the graph (`timeline`), for the
// whole history, so the brush can widen the range as well as narrow it.

import { axisBottom, brushX, max, scaleLinear, scaleTime, select } from 'd3';

export class Timeline {
  constructor(container, onBrush) {
    this.container = container;
    this.onBrush = onBrush;
    this.svg = select(container).append('svg');
    this.bars = this.svg.append('g');
    this.axis = this.svg.append('g').attr('class', 'axis');
    this.brushLayer = this.svg.append('g').attr('class', 'brush');
    this.caption = this.svg.append('text').attr('class', 'caption').attr('x', 8).attr('y', 12).attr('font-size', 10).attr('fill', '#5a6672');
    this.quiet = false;
  }

  /** Draws `buckets` ([{start, count}], start in ms) and marks [from, to]. */
  render(buckets, from, to, what = 'connections') {
    const width = this.container.clientWidth || 800;
    const height = this.container.clientHeight || 64;
    this.svg.attr('viewBox', `0 0 ${width} ${height}`);
    const data = buckets.filter((b) => b.start !== null).sort((a, b) => a.start - b.start);
    const step = data.length > 1 ? Math.min(...data.slice(1).map((b, i) => b.start - data[i].start)) : 3600e3;
    const hours = Math.round(step / 3600e3);
    this.caption.text(`${what} per ${hours > 1 ? `${hours} hours` : 'hour'} — drag to pick a time range`);
    const lo = Math.min(data[0]?.start ?? Date.now() - 86400e3, from ?? Infinity);
    const hi = Math.max((data.at(-1)?.start ?? Date.now()) + step, to ?? -Infinity, from ?? -Infinity);
    const x = scaleTime().domain([lo, hi]).range([4, width - 4]);
    const y = scaleLinear().domain([0, max(data, (b) => b.count) || 1]).range([height - 16, 4]);
    this.bars.selectAll('rect').data(data).join('rect').attr('class', 'bar')
      .attr('x', (b) => x(b.start)).attr('width', (b) => Math.max(1, x(b.start + step) - x(b.start) - 1))
      .attr('y', (b) => y(b.count)).attr('height', (b) => y(0) - y(b.count));
    this.axis.attr('transform', `translate(0,${height - 16})`).call(axisBottom(x).ticks(Math.max(2, width / 110)).tickSizeOuter(0));
    const brush = brushX().extent([[4, 2], [width - 4, height - 16]]).on('end', (event) => {
      if (this.quiet || !event.sourceEvent) return;
      if (!event.selection) this.onBrush(null, null);
      else this.onBrush(x.invert(event.selection[0]).getTime(), x.invert(event.selection[1]).getTime());
    });
    this.quiet = true;
    this.brushLayer.call(brush).call(brush.move, from !== null || to !== null ? [x(from ?? lo), x(to ?? hi)] : null);
    this.quiet = false;
    this.x = x;
  }
}
