// DOM helpers of the map's other views (matrix, table, backtest panel):
// elements made with text only (data from the monitored hosts is never
// markup), and the windowing that keeps only the rows in sight of a long
// scrolled table in the page.

/** An element with `text` as its textContent and the given attributes. */
export function el(tag, text, attrs = {}) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  return e;
}

/** Pixels per row of a windowed table: fixed, so the rows in sight follow from the scroll offset. */
export const ROW_HEIGHT = 22;
/** Rows drawn above and below the window: scrolling within them draws nothing new. */
const OVERSCAN = 20;

/**
 * Which rows of `total` to draw for a scroller, or null while the rows drawn
 * (`painted`, `[first, last)`) still cover the window.
 */
export function rowWindow(scroller, total, painted, headerRows = 0) {
  const height = scroller.clientHeight || 600;
  // Fewer rows than before: the old offset may lie past the end until the page catches up.
  const top = Math.min(scroller.scrollTop, Math.max(0, (total + headerRows) * ROW_HEIGHT - height));
  const shownFirst = Math.floor(top / ROW_HEIGHT);
  const shownLast = Math.min(total, Math.ceil((top + height) / ROW_HEIGHT));
  if (painted && painted[0] <= shownFirst && painted[1] >= shownLast) return null;
  return [Math.max(0, shownFirst - OVERSCAN), Math.min(total, shownLast + OVERSCAN)];
}

/** A row standing in for `rows` rows that are not drawn. */
export function spacerRow(columns, rows) {
  const tr = el('tr', null, { class: 'spacer', 'aria-hidden': 'true' });
  const td = el('td', null, { colspan: String(columns) });
  td.style.height = `${rows * ROW_HEIGHT}px`;
  tr.append(td);
  return tr;
}

/** Calls `paint` at most once a frame while `scroller` scrolls. */
export function onScroll(scroller, paint) {
  let frame = 0;
  scroller.addEventListener('scroll', () => {
    if (frame) return;
    frame = requestAnimationFrame(() => {
      frame = 0;
      paint();
    });
  });
}
