// Small helpers shared by the pages: elements, answers in words, the state the
// event stream keeps current.

export const $ = (id) => document.getElementById(id);

// An element with attributes (`on<event>` become listeners) and children.
export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    // Through the CSSOM: the Content Security Policy refuses style attributes.
    else if (k === 'style') e.style.cssText = v;
    else e.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) {
    if (c !== null && c !== undefined) e.append(c instanceof Node ? c : String(c));
  }
  return e;
}

// Show `text` in the answer line `id`: kind is ok, bad or busy.
export function say(id, text, kind = 'ok') {
  const e = $(id);
  if (!e) return;
  e.textContent = text;
  e.className = `answer ${kind}`;
}

// Show an API result in `id`: `words(data)` when it went well, the error when not.
export function show(id, r, words) {
  if (r.ok) say(id, words(r.data || {}), 'ok');
  else say(id, r.error || 'failed', 'bad');
  return r.ok;
}

export const pct = (v) => (v === null || v === undefined ? '–' : `${Math.round(v * 100)}%`);
export const plural = (n, one, many = `${one}s`) => `${n} ${n === 1 ? one : many}`;
export const quote = (s) => `“${s}”`;

// What every page reads: the classifiers as the last tick drew them, which one
// is chosen, the newest frame's size. Pages subscribe to changes.
export const state = {
  classifiers: [],
  selected: null,
  frame: null,
  tick: null,
  maxImageBytes: null,
  listeners: new Set(),
  current() { return this.classifiers.find((c) => c.name === this.selected) || null; },
  changed(what) { for (const f of this.listeners) f(what); },
};

// A region of the classifier as fractions of the frame.
export function fractions(region, frame) {
  if (!region) return { x: 0, y: 0, width: 1, height: 1 };
  if (region.unit === 'px') {
    if (!frame) return null;
    return { x: region.x / frame.width, y: region.y / frame.height,
      width: region.width / frame.width, height: region.height / frame.height };
  }
  return { x: region.x, y: region.y, width: region.width, height: region.height };
}

// Colours for classifiers and groups, one per index.
export function colour(i, alpha = 1) {
  const hue = (i * 137.508 + 200) % 360;
  return `hsla(${hue}, 85%, 55%, ${alpha})`;
}

// Why `file` cannot be sent (too large for the device), or null.
export function tooLarge(file) {
  const max = state.maxImageBytes;
  if (!max || file.size <= max) return null;
  return `${file.name} is ${(file.size / 1048576).toFixed(1)} MiB; the device takes images up to ${(max / 1048576).toFixed(1)} MiB (learn.max_image_bytes)`;
}
