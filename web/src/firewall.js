// Firewall mode: which edges would a ruleset block? The user picks a host and
// pastes or loads an nftables ruleset; the collector replays that host's
// recorded edges through it (POST /api/v1/firewall/check, the same checker as
// `connscope firewall check`) and the map colours the answer: blocked red,
// maybe blocked amber. Ruleset text, rule locations and error messages are
// shown with textContent only: a ruleset's comments are as untrusted as
// anything else on this page.

import { postText } from './api.js';

/** The check's verdicts by edge id: the server names each edge with its graph id. */
export const verdictsById = (answer) => new Map(answer.edges.map((e) => [String(e.id), e]));

/**
 * The verdict of a view edge, which may fold several graph edges (a group):
 * 'blocked' or 'allowed' when every checked part agrees, else 'maybe-blocked';
 * null when none of its parts was checked (another host's edge).
 */
export function viewVerdict(edge, byKey) {
  const verdicts = (edge.parts ?? [edge.id]).map((id) => byKey.get(id)?.verdict).filter(Boolean);
  if (!verdicts.length) return null;
  if (verdicts.every((v) => v === 'blocked')) return 'blocked';
  if (verdicts.every((v) => v === 'allowed')) return 'allowed';
  return 'maybe-blocked';
}

/** The checked graph edges a view edge stands for. */
export function verdictsOf(edge, byKey) {
  return (edge.parts ?? [edge.id]).map((id) => byKey.get(id)).filter(Boolean);
}

const $ = (id) => document.getElementById(id);

/**
 * The firewall control. `onChange` is called whenever the result changes (or
 * is cleared); `range()` gives the `{from, to}` ISO strings of the map's range.
 */
export class FirewallMode {
  constructor({ onChange, range }) {
    this.onChange = onChange;
    this.range = range;
    /** `{host, ruleset, answer, byKey}` of the last successful check, or null. */
    this.result = null;
    this.pending = 0;
    $('fw-toggle').addEventListener('click', () => this.show($('firewall').hidden));
    $('fw-file').addEventListener('change', async (e) => {
      const file = e.target.files?.[0];
      if (!file) return;
      $('fw-ruleset').value = await file.text();
      this.check();
    });
    $('fw-check').addEventListener('click', () => this.check());
    $('fw-clear').addEventListener('click', () => this.clear());
  }

  show(open) {
    $('firewall').hidden = !open;
    $('fw-toggle').setAttribute('aria-expanded', String(open));
  }

  /** Offers the graph's monitored hosts; keeps the choice when it still exists. */
  setHosts(hosts) {
    const select = $('fw-host');
    const current = select.value;
    const options = hosts.map((h) => {
      const o = document.createElement('option');
      o.value = h;
      o.textContent = h;
      return o;
    });
    select.replaceChildren(...options);
    if (hosts.includes(current)) select.value = current;
  }

  /** Checks the ruleset in the text area against the chosen host's edges. */
  async check() {
    const host = $('fw-host').value;
    const ruleset = $('fw-ruleset').value;
    if (!host) return this.fail('Pick a host first.');
    if (!ruleset.trim()) return this.fail('Paste or load a ruleset first.');
    await this.run(host, ruleset);
  }

  /** Checks again with the same ruleset (the graph changed: a new range, live data). */
  async refresh() {
    if (this.result) await this.run(this.result.host, this.result.ruleset);
  }

  async run(host, ruleset) {
    const ticket = ++this.pending;
    $('fw-summary').textContent = 'checking…';
    try {
      const answer = await postText('api/v1/firewall/check', { host, ...this.range() }, ruleset);
      if (ticket !== this.pending) return;
      this.result = { host, ruleset, answer, byKey: verdictsById(answer) };
      $('fw-error').hidden = true;
      $('fw-error').textContent = '';
      const notEvaluated = answer.unsupported.length ? `; ${answer.unsupported.length} statements not evaluated (treated as unknown)` : '';
      $('fw-summary').textContent = `${host}: ${answer.blocked} blocked, ${answer.maybe_blocked} may be blocked, ${answer.allowed} allowed of ${answer.edges.length} edges${notEvaluated}`;
      $('fw-count-blocked').textContent = String(answer.blocked);
      $('fw-count-maybe').textContent = String(answer.maybe_blocked);
      $('fw-count-allowed').textContent = String(answer.allowed);
      this.onChange();
    } catch (err) {
      if (ticket === this.pending) this.fail(err.message, err.body);
    }
  }

  /** Shows why the ruleset was refused; the map goes back to normal colours. */
  fail(message, body = null) {
    this.result = null;
    const where = body?.line ? `line ${body.line}${body.column ? `, column ${body.column}` : ''}: ` : '';
    $('fw-error').textContent = `${where}${message}`;
    $('fw-error').hidden = false;
    $('fw-summary').textContent = '';
    for (const id of ['fw-count-blocked', 'fw-count-maybe', 'fw-count-allowed']) $(id).textContent = '0';
    this.onChange();
  }

  clear() {
    this.pending++;
    this.result = null;
    $('fw-error').hidden = true;
    $('fw-summary').textContent = '';
    for (const id of ['fw-count-blocked', 'fw-count-maybe', 'fw-count-allowed']) $(id).textContent = '0';
    this.onChange();
  }

  /** Per view edge id, its verdict (for the map's colours); null when off. */
  colours(viewEdges) {
    if (!this.result) return null;
    const map = new Map();
    for (const e of viewEdges) {
      const v = viewVerdict(e, this.result.byKey);
      if (v) map.set(e.id, v);
    }
    return map;
  }
}
