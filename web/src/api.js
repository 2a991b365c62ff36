// Talks to the collector's HTTP API. A collector that listens beyond loopback
// asks for a token: the login form keeps it in sessionStorage (gone when the tab
// closes) and every request sends it as a bearer header, never in the URL.

const TOKEN_KEY = 'connscope-token';

export class Unauthorized extends Error {}

export function token() {
  return sessionStorage.getItem(TOKEN_KEY) || '';
}

export function setToken(value) {
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
}

function headers() {
  const h = { Accept: 'application/json' };
  const t = token();
  if (t) h.Authorization = `Bearer ${t}`;
  return h;
}

/** GETs a JSON document from the API; `path` is relative to the page. */
export async function getJson(path, params = {}) {
  const url = new URL(path, document.baseURI);
  for (const [k, v] of Object.entries(params)) if (v !== null && v !== undefined && v !== '') url.searchParams.set(k, v);
  const response = await fetch(url, { headers: headers(), cache: 'no-store' });
  if (response.status === 401) throw new Unauthorized('the collector asks for a token');
  if (!response.ok) {
    const text = await response.text();
    throw new Error(`${url.pathname}: HTTP ${response.status}: ${text.slice(0, 200)}`);
  }
  return response.json();
}

/**
 * POSTs text (a ruleset) to the API and returns the JSON answer. A refusal
 * throws an Error whose `body` is the collector's JSON (`error`, `line`, `column`).
 */
export async function postText(path, params, text) {
  const url = new URL(path, document.baseURI);
  for (const [k, v] of Object.entries(params)) if (v !== null && v !== undefined && v !== '') url.searchParams.set(k, v);
  const response = await fetch(url, { method: 'POST', headers: { ...headers(), 'Content-Type': 'text/plain; charset=utf-8' }, body: text, cache: 'no-store' });
  if (response.status === 401) throw new Unauthorized('the collector asks for a token');
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    const err = new Error(body?.error ?? `${url.pathname}: HTTP ${response.status}`);
    err.body = body;
    throw err;
  }
  return body;
}

/**
 * Follows the collector's server-sent events. EventSource cannot send a bearer
 * header, so the stream is read with fetch. Calls `onOpen` once the collector
 * accepted the stream, `onEvent` per event, and resolves when the stream ends;
 * rejects if it cannot be opened.
 */
export async function followEvents(path, onEvent, { onOpen, signal } = {}) {
  const response = await fetch(new URL(path, document.baseURI), {
    headers: { ...headers(), Accept: 'text/event-stream' },
    cache: 'no-store',
    signal,
  });
  if (response.status === 401) throw new Unauthorized('the collector asks for a token');
  if (!response.ok || !response.body) throw new Error(`${path}: HTTP ${response.status}`);
  onOpen?.();
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = block.split('\n').filter((l) => l.startsWith('data:')).map((l) => l.slice(5).trimStart()).join('\n');
      const type = (block.split('\n').find((l) => l.startsWith('event:')) || 'event:message').slice(6).trim();
      if (data || type !== 'message') onEvent({ type, data });
    }
  }
}
