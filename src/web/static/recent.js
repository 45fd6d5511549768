// Recent crops: the chosen classifier's list (kept on the board), selected by
// click and shift-click, assigned to a class or discarded in one request.
// Crops whose features are near-identical share a group: labeling them stores
// one sample per group, and the page says so before and after.

import { op, recentUrl } from './api.js';
import { $, el, say, show, state, pct, plural, quote, colour } from './ui.js';

let entries = [];
const chosen = new Set();
let anchor = null; // index of the last click, for shift-click ranges
let count = null;

let ready = false;
export function init() {
  if (ready) return;
  ready = true;
  $('select-all').addEventListener('click', () => { entries.forEach((e) => chosen.add(e.id)); mark(); });
  $('select-none').addEventListener('click', () => { chosen.clear(); mark(); });
  $('assign').addEventListener('click', assign);
  $('discard').addEventListener('click', discard);
  state.listeners.add(changed);
}

export function enter() { refresh(); }

function changed(what) {
  if ($('page-recent').hidden) return;
  if (what === 'selected') { chosen.clear(); refresh(); return; }
  const n = state.current()?.recent_crops;
  if (what === 'tick' && n !== count) refresh();
}

async function refresh() {
  const c = state.current();
  if (!c) return;
  count = c.recent_crops;
  const r = await op(c.name, 'recent', {}, { get: true });
  if (!r.ok || c.name !== state.selected) return;
  entries = r.data.recent;
  for (const id of [...chosen]) if (!entries.some((e) => e.id === id)) chosen.delete(id);
  $('recent-empty').hidden = entries.length > 0;
  $('recent-grid').replaceChildren(...entries.map((e, i) => el('div', {
    class: 'tile', 'data-id': e.id, onclick: (ev) => click(i, ev),
    title: `${e.reason}, ${e.captured_at}`,
  },
  el('img', { src: recentUrl(c.name, e.id), alt: `recent crop ${e.id}`, loading: 'lazy' }),
  el('span', { class: 'group', style: `background:${colour(e.group, 0.9)}`, text: `g${e.group + 1}` }),
  el('div', { class: 'caption' }, el('span', { text: e.label ?? '–' }), el('span', { text: e.label ? pct(e.confidence) : '' })))));
  mark();
}

function click(i, ev) {
  const id = entries[i].id;
  if (ev.shiftKey && anchor !== null) {
    const [a, b] = [Math.min(anchor, i), Math.max(anchor, i)];
    for (const e of entries.slice(a, b + 1)) chosen.add(e.id);
  } else if (chosen.has(id)) chosen.delete(id);
  else chosen.add(id);
  anchor = i;
  mark();
}

// Show the selection and what labeling it would store.
function mark() {
  for (const t of $('recent-grid').children) t.classList.toggle('selected', chosen.has(Number(t.dataset.id)));
  const picked = entries.filter((e) => chosen.has(e.id));
  const groups = new Set(picked.map((e) => e.group)).size;
  $('recent-count').textContent = picked.length
    ? `${plural(picked.length, 'crop')} selected in ${plural(groups, 'group')} of near-identical crops`
    : `${plural(entries.length, 'crop')}, ${plural(new Set(entries.map((e) => e.group)).size, 'group')}`;
  $('assign').disabled = $('discard').disabled = picked.length === 0;
}

async function assign() {
  const label = $('assign-label').value.trim();
  if (!label) { say('recent-answer', 'Name the class to assign the crops to.', 'bad'); return; }
  const ids = [...chosen];
  say('recent-answer', `Storing ${plural(ids.length, 'crop')} as ${quote(label)}…`, 'busy');
  const r = await op(state.selected, 'label_recent', { ids, label });
  show('recent-answer', r, (d) => {
    const stored = Array.isArray(d.ids) ? d.ids.length : 1;
    const skipped = (d.skipped_similar || []).length;
    return `Stored ${plural(stored, 'sample')} of ${quote(d.label || label)} from ${plural(ids.length, 'crop')}${skipped ? `: ${plural(skipped, 'near-identical crop')} added nothing new and ${skipped === 1 ? 'was' : 'were'} not stored` : ''}. ${quote(d.label || label)} has ${plural(d.class_samples, 'sample')}.${d.error_after ? ` Stopped early: ${d.error_after}` : ''}`;
  });
  if (r.ok) chosen.clear();
  refresh();
}

async function discard() {
  const ids = [...chosen];
  const r = await op(state.selected, 'discard_recent', { ids });
  show('recent-answer', r, () => `Discarded ${plural(ids.length, 'crop')}.`);
  if (r.ok) chosen.clear();
  refresh();
}
