// Quality: how good the chosen classifier's head is, from the report computed
// at every retrain: per-class leave-one-out accuracy, the confusion matrix as a
// picture, the most confused pair with examples of both classes, the advice,
// the heads trained so far; and "classify an image" with the current head.

import { op, sendImage, sampleUrl } from './api.js';
import { $, el, say, state, pct, plural, quote, tooLarge } from './ui.js';

let headId = null;

let ready = false;
export function init() {
  if (ready) return;
  ready = true;
  $('classify-file').addEventListener('change', classify);
  state.listeners.add(changed);
}

export function enter() { refresh(); }

function changed(what) {
  if ($('page-quality').hidden) return;
  const c = state.current();
  if (what === 'selected' || (c && c.head !== headId)) refresh();
}

async function refresh() {
  const c = state.current();
  if (!c) return;
  headId = c.head;
  const [head, hist] = await Promise.all([op(c.name, 'head', {}, { get: true }), op(c.name, 'history', {}, { get: true })]);
  if (c.name !== state.selected) return;
  report(c.name, head.ok ? head.data : null);
  history(hist.ok ? hist.data.history : []);
}

function report(name, h) {
  const q = h?.quality;
  if (!h || !h.head) {
    $('q-summary').textContent = `No head yet: teach at least two classes (${plural(h?.samples ?? 0, 'sample')} so far).`;
    $('q-classes').replaceChildren();
    $('q-advice').replaceChildren();
    $('q-confused-card').hidden = true;
    matrix([], []);
    return;
  }
  $('q-summary').textContent = q.loo_accuracy === null
    ? `${plural(q.samples, 'sample')}: too few to test (a class needs two).`
    : `${pct(q.loo_accuracy)} of ${plural(q.samples, 'sample')} right when each is left out`;
  $('q-classes').replaceChildren(
    el('tr', {}, el('th', { text: 'class' }), el('th', { text: 'samples' }), el('th', { text: 'right when left out' }), el('th')),
    ...q.per_class.map((k) => el('tr', {},
      el('td', { text: k.label }), el('td', { text: k.samples }), el('td', { text: pct(k.loo_accuracy) }),
      el('td', {}, el('div', { class: 'bar' }, el('span', { style: `width:${Math.round((k.loo_accuracy ?? 0) * 100)}%` }))))));
  $('q-advice').replaceChildren(...(q.advice || []).map((a) => el('li', { text: a })));
  matrix(h.classes, q.confusion || []);
  confused(name, q.most_confused);
}

// The confusion matrix as a heat map with counts: rows true, columns answered.
function matrix(classes, m) {
  const c = $('q-matrix');
  const g = c.getContext('2d');
  const n = classes.length;
  const dark = matchMedia('(prefers-color-scheme: dark)').matches;
  g.clearRect(0, 0, c.width, c.height);
  if (!n || !m.length) return;
  const pad = 90;
  const cell = Math.max(12, Math.floor((c.width - pad) / n));
  c.height = pad + cell * n;
  g.font = '12px system-ui, sans-serif';
  g.fillStyle = dark ? '#e8ebef' : '#1d232b';
  classes.forEach((k, i) => {
    g.textAlign = 'right';
    g.fillText(k.slice(0, 12), pad - 6, pad + i * cell + cell / 2 + 4);
    g.save();
    g.translate(pad + i * cell + cell / 2 + 4, pad - 6);
    g.rotate(-Math.PI / 3);
    g.textAlign = 'left';
    g.fillText(k.slice(0, 12), 0, 0);
    g.restore();
  });
  m.forEach((row, a) => {
    const total = row.reduce((s, v) => s + v, 0) || 1;
    row.forEach((v, p) => {
      const f = v / total;
      g.fillStyle = a === p ? `rgba(23,133,59,${0.12 + 0.88 * f})` : `rgba(194,53,43,${v ? 0.15 + 0.85 * f : 0.04})`;
      g.fillRect(pad + p * cell, pad + a * cell, cell - 2, cell - 2);
      if (cell >= 22) {
        g.fillStyle = f > 0.5 ? '#fff' : (dark ? '#e8ebef' : '#1d232b');
        g.textAlign = 'center';
        g.fillText(String(v), pad + p * cell + cell / 2 - 1, pad + a * cell + cell / 2 + 4);
      }
    });
  });
}

// The most confused pair, with a few samples of each class.
async function confused(name, pair) {
  $('q-confused-card').hidden = !pair;
  if (!pair) return;
  $('q-confused').textContent = `${plural(pair.count, 'sample')} of ${quote(pair.actual)} taken for ${quote(pair.predicted)}`;
  for (const [slot, label] of [['q-a', pair.actual], ['q-b', pair.predicted]]) {
    $(slot).textContent = label;
    const r = await op(name, 'samples', { label }, { get: true });
    const list = r.ok ? r.data.samples.slice(-6) : [];
    $(`${slot}-images`).replaceChildren(...list.map((s) => el('div', { class: 'tile' },
      el('img', { src: sampleUrl(name, s.id), alt: `${label} sample ${s.id}`, loading: 'lazy' }))));
  }
}

function history(list) {
  $('q-history').replaceChildren(
    el('tr', {}, ...['version', 'trained', 'kind', 'samples', 'classes', 'right when left out'].map((t) => el('th', { text: t }))),
    ...list.slice().reverse().map((h) => el('tr', {},
      el('td', { text: h.version }), el('td', { text: new Date(h.trained_at * 1000).toLocaleString() }),
      el('td', { text: h.kind }), el('td', { text: h.samples }), el('td', { text: h.classes.join(', ') }),
      el('td', { text: pct(h.loo_accuracy) }))));
}

async function classify(e) {
  const file = e.target.files[0];
  if (!file) return;
  const big = tooLarge(file);
  if (big) { say('classify-answer', big, 'bad'); e.target.value = ''; return; }
  const img = $('classify-image');
  img.src = URL.createObjectURL(file);
  img.hidden = false;
  say('classify-answer', 'Classifying…', 'busy');
  const r = await sendImage(state.selected, 'classify', null, file);
  e.target.value = '';
  if (!r.ok) { say('classify-answer', r.error, 'bad'); $('classify-result').replaceChildren(); return; }
  const d = r.data;
  say('classify-answer', d.label === 'unknown'
    ? `Unknown: the image is not close enough to any class (similarity ${d.similarity.toFixed(2)}, below ${d.unknown_below?.toFixed(2)}).`
    : `${quote(d.label)}, ${pct(d.confidence)} sure.`, 'ok');
  $('classify-result').replaceChildren(el('table', { class: 'table', id: 'classify-top' },
    ...d.top.map((t) => el('tr', {}, el('td', { text: t.label }), el('td', { text: pct(t.score) }),
      el('td', {}, el('div', { class: 'bar' }, el('span', { style: `width:${Math.round(t.score * 100)}%` })))))));
}
