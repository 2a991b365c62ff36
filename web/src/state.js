// The whole view lives in the URL fragment, so a view can be shared by copying
// the address. The fragment (not the query string) works the same for the page
// served by the collector and for a static export opened from file://.

const KEYS = ['range', 'from', 'to', 'host', 'port', 'exe', 'user', 'dir', 'scope', 'group', 'q', 'since', 'sel', 'open', 'view',
  // The other views (views.js): which one shows, the matrix's rows and sort, the table's sort and filter.
  'show', 'mrows', 'mside', 'msort', 'tsort', 'tq',
  // The policy loop (looppanel.js): the ready-to-enforce view highlighted, and its days.
  'ready', 'rdays'];

/**
 * With no range picked the map shows the last day that has data (`last`):
 * the last 24 hours when data is recent, else the 24 hours up to the newest
 * data, so a first look at an old store is never empty.
 */
export const DEFAULT_RANGE = 'last';
const DAY_MS = 86400e3;
/** Data newer than this counts as recent: `last` then follows the clock. */
const RECENT_MS = 3600e3;

/** Reads the view state from a URL fragment such as `#range=7d&host=web1`. */
export function parseState(hash) {
  const params = new URLSearchParams(hash.replace(/^#/, ''));
  const state = {};
  for (const key of KEYS) state[key] = params.get(key) ?? '';
  if (!state.range && !state.from && !state.to) state.range = DEFAULT_RANGE;
  // Ids are opaque (a group's name may hold a comma): each is escaped once more.
  state.open = state.open ? state.open.split(',').filter(Boolean).map(decodeURIComponent) : [];
  return state;
}

/** The fragment for a state; empty values are left out to keep links short. */
export function formatState(state) {
  const params = new URLSearchParams();
  for (const key of KEYS) {
    const value = key === 'open' ? state.open.map((id) => id.replace(/%/g, '%25').replace(/,/g, '%2C')).join(',') : state[key];
    if (value) params.set(key, value);
  }
  return '#' + params.toString();
}

const UNITS = { m: 60e3, h: 3600e3, d: 86400e3 };

/**
 * The time range a state asks for, in epoch milliseconds. A relative range
 * (`24h`) ends now; `all` and missing ends are open (null). `last` needs the
 * newest data's time (`lastData`, ms; null while unknown): the day up to it,
 * or the last 24 hours (relative) when it is recent or unknown; `auto` marks it.
 */
export function timeRange(state, now = Date.now(), lastData = null) {
  if (state.range === DEFAULT_RANGE) {
    if (lastData !== null && lastData < now - RECENT_MS) return { from: lastData + 1000 - DAY_MS, to: lastData + 1000, relative: false, auto: true };
    return { from: now - DAY_MS, to: null, relative: true, auto: true };
  }
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
