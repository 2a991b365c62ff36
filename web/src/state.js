// The whole view lives in the URL fragment, so a view can be shared by copying
// the address. The fragment (not the query string) works the same for the page
// served by the collector and for a static export opened from file://.

const KEYS = ['range', 'from', 'to', 'host', 'port', 'exe', 'user', 'dir', 'scope', 'q', 'since', 'sel', 'open', 'view',
  // The other views (views.js): which one shows, the matrix's rows and sort, the table's sort and filter.
  'show', 'mrows', 'mside', 'msort', 'tsort', 'tq'];

export const DEFAULT_RANGE = '24h';

/** Reads the view state from a URL fragment such as `#range=7d&host=web1`. */
export function parseState(hash) {
  const params = new URLSearchParams(hash.replace(/^#/, ''));
  const state = {};
  for (const key of KEYS) state[key] = params.get(key) ?? '';
  if (!state.range && !state.from && !state.to) state.range = DEFAULT_RANGE;
  state.open = state.open ? state.open.split(',').filter(Boolean) : [];
  return state;
}

/** The fragment for a state; empty values are left out to keep links short. */
export function formatState(state) {
  const params = new URLSearchParams();
  for (const key of KEYS) {
    const value = key === 'open' ? state.open.join(',') : state[key];
    if (value) params.set(key, value);
  }
  return '#' + params.toString();
}

const UNITS = { m: 60e3, h: 3600e3, d: 86400e3 };

/**
 * The time range a state asks for, in epoch milliseconds. A relative range
 * (`24h`) ends now; `all` and missing ends are open (null).
 */
export function timeRange(state, now = Date.now()) {
  if (state.range && state.range !== 'all') {
    const m = /^(\d+)([mhd])$/.exec(state.range);
    if (m) return { from: now - Number(m[1]) * UNITS[m[2]], to: null, relative: true };
  }
  if (state.range === 'all') return { from: null, to: null, relative: true };
  return { from: parseTime(state.from), to: parseTime(state.to), relative: false };
}

function parseTime(text) {
  if (!text) return null;
  const ms = Date.parse(text);
  return Number.isNaN(ms) ? null : ms;
}
