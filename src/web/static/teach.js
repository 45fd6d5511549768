// Teach: the current crop of the chosen classifier, its classes as buttons
// ("Add" stores the crop, hold "Record" to store several), uploads, each class's
// samples as thumbnails (remove, move to another class), rename, merge and
// delete classes, retrain and undo. Answers are shown in words beside the action.

import { op, sendImage, base64, sampleUrl } from './api.js';
import { $, el, say, show, state, fractions, pct, plural, quote, tooLarge } from './ui.js';
import { want } from './live.js';

let classes = []; // [{label, samples}]
let quality = new Map(); // label -> leave-one-out accuracy
let headId = null;
let timer = null;
let recording = null; // label being recorded
let stopping = false;
let gallery = null; // label whose samples are shown

let ready = false;
export function init() {
  if (ready) return;
  ready = true;
  $('new-class').addEventListener('submit', newClass);
  $('retrain').addEventListener('click', retrain);
  $('undo').addEventListener('click', undo);
  const drop = $('drop');
  drop.addEventListener('dragover', (e) => { e.preventDefault(); drop.classList.add('over'); });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', (e) => { e.preventDefault(); drop.classList.remove('over'); upload([...e.dataTransfer.files]); });
  $('upload-files').addEventListener('change', (e) => { upload([...e.target.files]); e.target.value = ''; });
  state.listeners.add(changed);
}

export function enter() {
  want('teach', true);
  timer = setInterval(drawCrop, 250);
  refresh();
}

export function leave() {
  want('teach', false);
  clearInterval(timer);
  if (recording) stopRecording();
}

function changed(what) {
  if ($('page-teach').hidden) return;
  if (what === 'selected') { gallery = null; refresh(); return; }
  const c = state.current();
  if (c && c.head !== headId) refresh();
  const l = c?.latest;
  $('crop-label').textContent = !c ? '' : !c.head ? 'Not taught yet' : l?.label ? `${l.label} · ${pct(l.confidence)}` : '…';
}

// The live frame cropped to the region, scaled to fit the square canvas.
function drawCrop() {
  const img = $('live-image');
  const c = state.current();
  const canvas = $('crop');
  const g = canvas.getContext('2d');
  if (!c || !img.naturalWidth) return;
  const r = fractions(c.region, state.frame);
  if (!r) return;
  const [sx, sy, sw, sh] = [r.x * img.naturalWidth, r.y * img.naturalHeight, r.width * img.naturalWidth, r.height * img.naturalHeight];
  const s = Math.min(canvas.width / sw, canvas.height / sh);
  g.fillStyle = '#000';
  g.fillRect(0, 0, canvas.width, canvas.height);
  try {
    g.drawImage(img, sx, sy, sw, sh, (canvas.width - sw * s) / 2, (canvas.height - sh * s) / 2, sw * s, sh * s);
  } catch (e) { /* no frame decoded yet */ }
}

async function refresh() {
  const c = state.current();
  for (const e of document.querySelectorAll('.cname')) e.textContent = c ? quote(c.name) : '';
  if (!c) { classes = []; render(); return; }
  headId = c.head;
  const [cl, head] = await Promise.all([op(c.name, 'classes', {}, { get: true }), op(c.name, 'head', {}, { get: true })]);
  if (c.name !== state.selected) return;
  classes = cl.ok ? cl.data.classes : [];
  quality = new Map((head.data?.quality?.per_class || []).map((q) => [q.label, q.loo_accuracy]));
  $('class-names').replaceChildren(...classes.map((k) => el('option', { value: k.label })));
  render();
  if (gallery) showGallery(gallery);
}

function render() {
  if (recording) return; // the held button stays; redrawn when it is released
  $('classes').replaceChildren(...classes.map((k) => {
    const more = el('div', { class: 'more', hidden: true },
      el('input', { class: 'rename', value: k.label, maxlength: 64, 'aria-label': `new name of ${k.label}` }),
      el('button', { class: 'quiet', onclick: (e) => renameClass(k.label, e.target.previousSibling.value) }, 'Rename'),
      el('select', { class: 'merge', 'aria-label': `merge ${k.label} into` },
        classes.filter((o) => o.label !== k.label).map((o) => el('option', { value: o.label, text: o.label }))),
      el('button', { class: 'quiet', onclick: (e) => mergeClass(k.label, e.target.previousSibling.value) }, 'Merge into'),
      el('button', { class: 'danger', onclick: () => deleteClass(k.label) }, 'Delete class'));
    const rec = el('button', { class: 'record', title: 'hold to record' }, 'Record');
    rec.addEventListener('pointerdown', (e) => { e.preventDefault(); record(k.label, rec); });
    rec.addEventListener('contextmenu', (e) => e.preventDefault()); // a long touch
    const q = quality.get(k.label);
    return el('div', { class: 'class', 'data-label': k.label },
      el('span', { class: 'name', text: k.label }),
      el('span', { class: 'count', text: `${plural(k.samples, 'sample')}${q === undefined || q === null ? '' : ` · ${pct(q)} right`}` }),
      el('button', { class: 'add', onclick: () => addCrop(k.label) }, 'Add'),
      rec,
      el('button', { class: 'quiet', onclick: () => showGallery(k.label) }, 'Samples'),
      el('button', { class: 'quiet', onclick: () => { more.hidden = !more.hidden; } }, '…'),
      more);
  }));
}

// Store the current crop under `label`.
async function addCrop(label) {
  const c = state.selected;
  say('teach-answer', `Storing the current crop as ${quote(label)}…`, 'busy');
  const r = await op(c, 'label_frame', { label, count: 1 });
  show('teach-answer', r, (d) => `Stored the current crop as ${quote(d.label)}: ${plural(d.class_samples, 'sample')} now. The head retrains in a moment.`);
  refresh();
}

async function newClass(e) {
  e.preventDefault();
  const label = $('new-label').value.trim();
  if (!label) return;
  await addCrop(label);
  $('new-label').value = '';
}

// Hold to record: up to N crops over T seconds until the button is released.
async function record(label, button) {
  if (recording) return;
  const count = Math.min(50, Math.max(1, Number($('rec-count').value) || 20));
  const secs = Math.min(60, Math.max(1, Number($('rec-secs').value) || 10));
  recording = label;
  button.classList.add('recording');
  // Released anywhere (the pointer may have left the button): stop.
  const release = () => {
    for (const ev of ['pointerup', 'pointercancel', 'blur']) window.removeEventListener(ev, release);
    stopRecording();
  };
  for (const ev of ['pointerup', 'pointercancel', 'blur']) window.addEventListener(ev, release);
  say('teach-answer', `Recording ${quote(label)}… release to stop.`, 'busy');
  const r = await op(state.selected, 'label_frame', {
    label, count, interval_ms: Math.max(50, Math.min(10000, Math.round(secs * 1000 / count))), skip_similar: 0.97,
  });
  recording = null;
  button.classList.remove('recording');
  show('teach-answer', r, (d) => `Stored ${plural(d.ids.length, 'crop')} as ${quote(d.label)}${d.skipped_similar ? ` (${plural(d.skipped_similar, 'near-identical crop')} skipped)` : ''}: ${plural(d.class_samples, 'sample')} now.`);
  refresh();
}

async function stopRecording() {
  if (!recording || stopping) return;
  stopping = true;
  await op(state.selected, 'stop_label_frame', {});
  stopping = false;
}

async function upload(files) {
  const c = state.selected;
  const label = $('upload-label').value.trim();
  if (!label) { say('upload-answer', 'Name the class the images belong to first.', 'bad'); return; }
  const crop = $('upload-crop').checked;
  let added = 0;
  const refused = [];
  for (const [i, f] of files.entries()) {
    say('upload-answer', `Uploading ${i + 1} of ${files.length}…`, 'busy');
    const big = tooLarge(f);
    if (big) { refused.push(big); continue; }
    const r = crop
      ? await op(c, 'add_sample', { label, image: await base64(f), apply_region: true })
      : await sendImage(c, 'add_sample', label, f);
    if (r.ok) added += 1; else refused.push(`${f.name}: ${r.error}`);
  }
  const text = `Added ${plural(added, 'image')} to ${quote(label)}.${refused.length ? ` Refused ${refused.length}: ${refused.join('; ')}` : ''}`;
  say('upload-answer', text, refused.length ? 'bad' : 'ok');
  refresh();
}

async function retrain() {
  say('teach-answer', 'Retraining…', 'busy');
  const r = await op(state.selected, 'retrain', {});
  show('teach-answer', r, (d) => (d.head
    ? `Retrained on ${plural(d.samples, 'sample')}: ${pct(d.quality?.loo_accuracy)} of samples right when left out (a ${d.kind} head, ${Math.round(d.quality?.train_ms ?? 0)} ms).`
    : `No head: teach at least two classes (${plural(d.samples, 'sample')} so far).`));
  refresh();
}

async function undo() {
  const r = await op(state.selected, 'remove_sample', { last: true });
  show('teach-answer', r, (d) => `Removed the newest sample (#${d.removed}).`);
  refresh();
}

async function renameClass(from, to) {
  const r = await op(state.selected, 'rename_class', { from, to });
  show('teach-answer', r, (d) => `Renamed ${quote(from)} to ${quote(to)} (${plural(d.moved, 'sample')}).`);
  refresh();
}

async function mergeClass(from, into) {
  if (!into) return;
  const r = await op(state.selected, 'merge_class', { from, into });
  show('teach-answer', r, (d) => `Merged ${quote(from)} into ${quote(into)} (${plural(d.moved, 'sample')} moved).`);
  refresh();
}

async function deleteClass(label) {
  const r = await op(state.selected, 'delete_class', { label });
  show('teach-answer', r, (d) => `Deleted ${quote(label)} and its ${plural(d.deleted, 'sample')}.`);
  if (gallery === label) gallery = null;
  refresh();
}

async function showGallery(label) {
  gallery = label;
  const c = state.selected;
  const r = await op(c, 'samples', { label }, { get: true });
  $('gallery-card').hidden = false;
  $('gallery-label').textContent = quote(label);
  if (!r.ok) { say('gallery-answer', r.error, 'bad'); return; }
  const others = classes.filter((k) => k.label !== label);
  $('gallery').replaceChildren(...r.data.samples.map((s) => el('div', { class: 'tile', 'data-id': s.id },
    el('img', { src: sampleUrl(c, s.id), alt: `sample ${s.id}`, loading: 'lazy' }),
    el('button', { class: 'x', title: 'remove this sample', onclick: () => removeSample(s.id) }, '×'),
    el('select', { 'aria-label': 'move to class', onchange: (e) => moveSample(s.id, e.target.value) },
      el('option', { value: '', text: 'move to…' }), others.map((k) => el('option', { value: k.label, text: k.label }))))));
}

async function removeSample(id) {
  const r = await op(state.selected, 'remove_sample', { id });
  show('gallery-answer', r, () => `Removed sample #${id}.`);
  refresh();
}

async function moveSample(id, label) {
  if (!label) return;
  const r = await op(state.selected, 'move_sample', { id, label });
  show('gallery-answer', r, (d) => `Moved sample #${id} from ${quote(d.from)} to ${quote(d.label)}.`);
  refresh();
}
