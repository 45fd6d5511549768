// The live view: the camera's newest frame (an MJPEG stream the daemon encodes
// only while a page shows it) with every classifier's region, name, stable
// label and confidence drawn on a canvas above it, and a dot when its backbone
// ran (green) or the gate skipped its unchanged crop (grey). Regions are drawn,
// moved and resized with the pointer (mouse, pen or finger); the classifier
// list and settings sit beside it.

import { manager } from './api.js';
import { $, el, say, show, state, fractions, colour, pct, quote } from './ui.js';

const HANDLE = 12; // px of a corner handle
const MIN = 0.02; // smallest region side, as a fraction
let selectHook = () => {};
let creating = false;
let draft = null; // the region being drawn for a new classifier
let drag = null; // {mode, corner, start, orig, name}
let edited = null; // {name, region} shown until the daemon has it
const marks = new Map(); // name -> {kind, until}
const seen = new Map(); // name -> {runs, skipped}
const users = new Set(); // pages that show the stream

export function onSelect(fn) { selectHook = fn; }

// The stream runs while a page that shows it is open.
export function want(who, on) {
  const img = $('live-image');
  if (on) users.add(who); else users.delete(who);
  if (users.size && !img.getAttribute('src')) img.src = `/api/live.mjpeg?t=${Date.now()}`;
  if (!users.size && img.getAttribute('src')) { img.removeAttribute('src'); img.src = ''; img.removeAttribute('src'); }
}

let ready = false;
export function init() {
  if (ready) return;
  ready = true;
  const img = $('live-image');
  img.addEventListener('load', () => { $('no-frame').hidden = true; draw(); });
  img.addEventListener('error', () => { $('no-frame').hidden = !users.size; });
  new ResizeObserver(draw).observe($('stage'));
  const c = $('overlay');
  c.addEventListener('pointerdown', down);
  c.addEventListener('pointermove', move);
  c.addEventListener('pointerup', up);
  c.addEventListener('pointercancel', () => { drag = null; draw(); });
  $('new-classifier').addEventListener('click', () => startCreate(true));
  $('create-cancel').addEventListener('click', () => startCreate(false));
  $('create-name').addEventListener('input', enableCreate);
  $('create-form').addEventListener('submit', create);
  $('settings').addEventListener('submit', saveSettings);
  $('rename-button').addEventListener('click', rename);
  $('delete-classifier').addEventListener('click', () => { $('delete-what').textContent = state.selected; $('delete-confirm').hidden = false; });
  $('delete-no').addEventListener('click', () => { $('delete-confirm').hidden = true; });
  $('delete-yes').addEventListener('click', remove);
  state.listeners.add(changed);
}

export function enter() { want('live', true); list(); fillSettings(); draw(); }
export function leave() { want('live', false); }

function changed(what) {
  if (what === 'tick' || what === 'classifiers') {
    const now = performance.now();
    for (const c of state.classifiers) {
      const last = seen.get(c.name);
      if (last && c.backbone_runs > last.runs) marks.set(c.name, { kind: 'run', until: now + 900 });
      else if (last && c.skipped > last.skipped) marks.set(c.name, { kind: 'skip', until: now + 900 });
      seen.set(c.name, { runs: c.backbone_runs, skipped: c.skipped });
    }
    if (edited && state.classifiers.some((c) => c.name === edited.name && same(c.region, edited.region))) edited = null;
  }
  if ($('page-live').hidden) return;
  $('no-frame').hidden = !!state.frame;
  list();
  if (what !== 'tick') fillSettings();
  draw();
}

const same = (a, b) => a && b && ['x', 'y', 'width', 'height'].every((k) => Math.abs(a[k] - b[k]) < 1e-3);

function regionOf(c) {
  if (edited && edited.name === c.name) return edited.region;
  if (drag && drag.name === c.name) return drag.region;
  return fractions(c.region, state.frame);
}

// The classifier list: rebuilt when the set changes, updated in place otherwise
// (an element under the pointer is not replaced every second).
function list() {
  const ul = $('classifier-list');
  const names = state.classifiers.map((c) => c.name).join('\n');
  if (ul.dataset.names !== names) {
    ul.dataset.names = names;
    ul.replaceChildren(...state.classifiers.map((c, i) => el('li', { 'data-name': c.name, onclick: () => selectHook(c.name) },
      el('span', { style: `color:${colour(i)}` }, '■ ', c.name), el('span', { class: 'state' }))));
  }
  state.classifiers.forEach((c, i) => {
    const li = ul.children[i];
    const l = c.latest;
    li.classList.toggle('selected', c.name === state.selected);
    li.lastChild.textContent = !c.head ? 'not taught yet' : l?.label ? `${l.label} ${pct(l.confidence)}` : '…';
  });
}

// Canvas pixels per CSS pixel, and the canvas sized to the image.
function size() {
  const c = $('overlay');
  const r = c.getBoundingClientRect();
  const dpr = window.devicePixelRatio || 1;
  if (c.width !== Math.round(r.width * dpr) || c.height !== Math.round(r.height * dpr)) {
    c.width = Math.round(r.width * dpr);
    c.height = Math.round(r.height * dpr);
  }
  return { w: c.width, h: c.height, dpr };
}

export function draw() {
  const c = $('overlay');
  const { w, h, dpr } = size();
  const g = c.getContext('2d');
  g.clearRect(0, 0, w, h);
  const now = performance.now();
  state.classifiers.forEach((cl, i) => {
    const r = regionOf(cl);
    if (!r) return;
    const [x, y, rw, rh] = [r.x * w, r.y * h, r.width * w, r.height * h];
    const sel = cl.name === state.selected;
    g.lineWidth = (sel ? 3 : 2) * dpr;
    g.strokeStyle = colour(i);
    g.strokeRect(x, y, rw, rh);
    const l = cl.latest;
    const caption = `${cl.name}: ${!cl.head ? 'not taught' : l?.label ? `${l.label} ${pct(l.confidence)}` : '…'}`;
    g.font = `${13 * dpr}px system-ui, sans-serif`;
    const tw = g.measureText(caption).width + 24 * dpr;
    const ty = y > 20 * dpr ? y - 20 * dpr : y;
    g.fillStyle = colour(i, 0.85);
    g.fillRect(x, ty, tw, 20 * dpr);
    g.fillStyle = '#000';
    g.fillText(caption, x + 18 * dpr, ty + 14.5 * dpr);
    const m = marks.get(cl.name);
    if (m && m.until > now) {
      g.beginPath();
      g.arc(x + 9 * dpr, ty + 10 * dpr, 5 * dpr, 0, Math.PI * 2);
      g.fillStyle = m.kind === 'run' ? '#1fd15c' : '#9aa0a6';
      g.fill();
    }
    if (sel) {
      g.fillStyle = colour(i);
      for (const [cx, cy] of corners(r, w, h)) g.fillRect(cx - HANDLE * dpr / 2, cy - HANDLE * dpr / 2, HANDLE * dpr, HANDLE * dpr);
    }
  });
  if (draft) {
    g.setLineDash([6 * dpr, 4 * dpr]);
    g.strokeStyle = '#fff';
    g.lineWidth = 2 * dpr;
    g.strokeRect(draft.x * w, draft.y * h, draft.width * w, draft.height * h);
    g.setLineDash([]);
  }
  if (marks.size && [...marks.values()].some((m) => m.until > now)) requestAnimationFrame(draw);
}

const corners = (r, w, h) => [[r.x * w, r.y * h], [(r.x + r.width) * w, r.y * h],
  [r.x * w, (r.y + r.height) * h], [(r.x + r.width) * w, (r.y + r.height) * h]];

// The pointer as fractions of the frame.
function at(e) {
  const r = $('overlay').getBoundingClientRect();
  return { x: clamp((e.clientX - r.left) / r.width), y: clamp((e.clientY - r.top) / r.height) };
}
const clamp = (v) => Math.min(1, Math.max(0, v));

function down(e) {
  const p = at(e);
  $('overlay').setPointerCapture(e.pointerId);
  if (creating) {
    drag = { mode: 'draw', start: p };
    draft = { x: p.x, y: p.y, width: 0, height: 0 };
    return;
  }
  const { w, h, dpr } = size();
  const cur = state.current();
  const r = cur && regionOf(cur);
  if (r) {
    const px = { x: p.x * w, y: p.y * h };
    const hit = corners(r, w, h).findIndex(([cx, cy]) => Math.abs(cx - px.x) <= HANDLE * dpr && Math.abs(cy - px.y) <= HANDLE * dpr);
    if (hit >= 0) { drag = { mode: 'resize', corner: hit, start: p, orig: { ...r }, region: { ...r }, name: cur.name }; return; }
  }
  // The smallest region under the pointer: nested regions stay reachable.
  const under = state.classifiers
    .map((c) => ({ c, r: regionOf(c) }))
    .filter(({ r }) => r && p.x >= r.x && p.x <= r.x + r.width && p.y >= r.y && p.y <= r.y + r.height)
    .sort((a, b) => a.r.width * a.r.height - b.r.width * b.r.height)[0];
  if (!under) return;
  if (under.c.name !== state.selected) selectHook(under.c.name);
  drag = { mode: 'move', start: p, orig: { ...under.r }, region: { ...under.r }, name: under.c.name, moved: false };
}

function move(e) {
  if (!drag) return;
  const p = at(e);
  const dx = p.x - drag.start.x;
  const dy = p.y - drag.start.y;
  if (drag.mode === 'draw') {
    draft = { x: Math.min(p.x, drag.start.x), y: Math.min(p.y, drag.start.y),
      width: Math.abs(dx), height: Math.abs(dy) };
  } else if (drag.mode === 'move') {
    const o = drag.orig;
    drag.moved = drag.moved || Math.abs(dx) + Math.abs(dy) > 0.003;
    drag.region = { x: clamp(Math.min(o.x + dx, 1 - o.width)), y: clamp(Math.min(o.y + dy, 1 - o.height)), width: o.width, height: o.height };
  } else {
    const o = drag.orig;
    let [x0, y0, x1, y1] = [o.x, o.y, o.x + o.width, o.y + o.height];
    if (drag.corner === 0 || drag.corner === 2) x0 = Math.min(p.x, x1 - MIN); else x1 = Math.max(p.x, x0 + MIN);
    if (drag.corner === 0 || drag.corner === 1) y0 = Math.min(p.y, y1 - MIN); else y1 = Math.max(p.y, y0 + MIN);
    drag.region = { x: x0, y: y0, width: x1 - x0, height: y1 - y0 };
    drag.moved = true;
  }
  draw();
}

async function up() {
  if (!drag) return;
  const d = drag;
  drag = null;
  if (d.mode === 'draw') {
    if (draft.width < MIN || draft.height < MIN) draft = null;
    enableCreate();
    draw();
    return;
  }
  if (!d.moved) { draw(); return; }
  const region = round(d.region);
  edited = { name: d.name, region };
  draw();
  say('settings-answer', `Saving the region of ${quote(d.name)}…`, 'busy');
  const r = await manager('update_classifier', { name: d.name, region });
  if (!show('settings-answer', r, () => `The region of ${quote(d.name)} is saved; it applies from the next frame.`)) edited = null;
  draw();
}

const round = (r) => ({ x: +r.x.toFixed(4), y: +r.y.toFixed(4), width: +r.width.toFixed(4), height: +r.height.toFixed(4) });

function startCreate(on) {
  creating = on;
  draft = null;
  $('create-form').hidden = !on;
  $('new-classifier').hidden = on;
  $('live-hint').textContent = on ? 'Drag on the image to draw the new classifier\'s region.'
    : 'Click a region to select it; drag it to move, drag a corner to resize. A green dot: the backbone ran; grey: the gate skipped an unchanged crop.';
  if (on) $('create-name').focus();
  enableCreate();
  draw();
}

function enableCreate() { $('create-button').disabled = !(draft && $('create-name').value.trim()); }

async function create(e) {
  e.preventDefault();
  const name = $('create-name').value.trim();
  say('classifiers-answer', `Creating ${quote(name)}…`, 'busy');
  const r = await manager('create_classifier', { name, region: round(draft) });
  if (show('classifiers-answer', r, (d) => `Created ${quote(d.name || name)}. Teach it two classes next (Teach).`)) {
    $('create-name').value = '';
    startCreate(false);
    selectHook(r.data?.name || name);
  }
}

function fillSettings() {
  const c = state.current();
  $('settings').hidden = !c;
  if (!c) return;
  if (document.activeElement && $('settings').contains(document.activeElement)) return;
  $('settings-name').textContent = c.name;
  $('rename-to').value = c.name;
  $('t-every-frame').checked = c.trigger.every_frame;
  $('t-on-change').checked = c.trigger.on_change;
  $('t-change-threshold').value = c.trigger.change_threshold;
  $('t-interval').value = c.trigger.interval_secs;
  $('t-max-age').value = c.trigger.max_age_secs;
  $('p-publish').value = c.predictions.publish;
  $('p-smoothing').value = c.predictions.smoothing_window;
  $('p-top-k').value = c.predictions.top_k;
  $('p-min-interval').value = c.predictions.min_interval_ms;
  $('r-size').value = c.recent.size;
  $('r-below').value = Math.round(c.recent.below_confidence * 100);
  $('r-gap').value = c.recent.min_gap_secs;
}

async function saveSettings(e) {
  e.preventDefault();
  const name = state.selected;
  const num = (id) => Number($(id).value);
  const change = {
    name,
    trigger: { every_frame: $('t-every-frame').checked, on_change: $('t-on-change').checked,
      change_threshold: num('t-change-threshold'), interval_secs: num('t-interval'), max_age_secs: num('t-max-age') },
    predictions: { publish: $('p-publish').value, smoothing_window: num('p-smoothing'),
      top_k: num('p-top-k'), min_interval_ms: num('p-min-interval') },
    recent: { ...state.current().recent, size: num('r-size'), below_confidence: num('r-below') / 100, min_gap_secs: num('r-gap') },
  };
  say('settings-answer', 'Saving…', 'busy');
  const r = await manager('update_classifier', change);
  show('settings-answer', r, () => `Saved the settings of ${quote(name)}; they apply now.`);
  document.activeElement?.blur();
}

async function rename() {
  const from = state.selected;
  const to = $('rename-to').value.trim();
  if (!to || to === from) return;
  say('settings-answer', `Renaming ${quote(from)}…`, 'busy');
  const r = await manager('rename_classifier', { from, to });
  if (show('settings-answer', r, (d) => `Renamed ${quote(from)} to ${quote(d.name || to)}; its samples, head and Home Assistant entities moved with it.`)) {
    selectHook(r.data?.name || to);
  }
}

async function remove() {
  const name = state.selected;
  $('delete-confirm').hidden = true;
  say('settings-answer', `Deleting ${quote(name)}…`, 'busy');
  const r = await manager('delete_classifier', { name, confirm: true });
  show('settings-answer', r, () => `Deleted ${quote(name)} with its samples.`);
  if (r.ok) say('classifiers-answer', `Deleted ${quote(name)}.`, 'ok');
}
