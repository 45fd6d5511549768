// Status: the source and its errors, frames per second, backbone time, MQTT,
// disk and memory; and the last hour as small charts (frames per second,
// backbone milliseconds, memory, backbone runs and skipped crops per
// classifier), fed by the event stream's `sample` events.

import { request } from './api.js';
import { $, el, state, colour } from './ui.js';

let samples = [];
let every = 15;

let ready = false;
export function init() {
  if (ready) return;
  ready = true;
  state.listeners.add(changed);
}

export async function enter() {
  const [s, h] = await Promise.all([request('/api/status'), request('/api/history')]);
  if (h.ok && h.data) { samples = h.data.samples; every = h.data.every_s; }
  if (s.ok && s.data) facts(s.data);
  charts();
}

function changed(what) {
  if (what && what.sample) {
    samples.push(what.sample);
    if (samples.length > 240) samples.shift();
    if (!$('page-status').hidden) { charts(); request('/api/status').then((s) => s.ok && facts(s.data)); }
  } else if (what === 'tick' && !$('page-status').hidden && state.tick) {
    const t = state.tick;
    const d = $('status-facts');
    const src = d.querySelector('[data-k=source]');
    if (src) src.textContent = sourceText(t.source);
    const mq = d.querySelector('[data-k=mqtt]');
    if (mq) mq.textContent = t.mqtt_connected ? 'connected' : 'not connected';
  }
}

const mib = (b) => `${(b / 1048576).toFixed(0)} MiB`;

function sourceText(s) {
  if (!s) return '–';
  if (s.state === 'reconnecting') return `reconnecting in ${Math.round(s.retry_in_ms / 1000)} s: ${s.error}`;
  if (s.state === 'failed') return `failed: ${s.error}`;
  return s.state;
}

function facts(s) {
  const rates = s.rates || {};
  const rows = [
    ['source', 'Camera', sourceText(s.source)],
    ['fps', 'Frames per second', rates.fps_captured ?? '–'],
    ['backbone', 'Backbone', `${s.backbone}${rates.backbone_ms ? `, ${rates.backbone_ms} ms a run` : ''}`],
    ['mqtt', 'MQTT', s.mqtt_connected ? 'connected' : 'not connected'],
    ['disk', 'Disk (state directory)', s.disk ? `${mib(s.disk.free_bytes)} free of ${mib(s.disk.total_bytes)}${s.disk_full ? ' — full: samples are refused' : ''}` : '–'],
    ['memory', 'Memory (resident)', s.rss_kib ? mib(s.rss_kib * 1024) : '–'],
    ['uptime', 'Running for', `${Math.floor(s.uptime_s / 3600)} h ${Math.floor(s.uptime_s / 60) % 60} min`],
    ['version', 'Version', s.version],
    ['viewers', 'Live views open', s.console?.live_viewers ?? 0],
  ];
  $('status-facts').replaceChildren(...rows.flatMap(([k, name, v]) => [el('dt', { text: name }), el('dd', { 'data-k': k, text: v })]));
}

function charts() {
  const names = [...new Set(samples.flatMap((s) => s.classifiers.map((c) => c[0])))];
  const series = [
    ['Frames per second', [{ v: samples.map((s) => s.fps), c: colour(0) }]],
    ['Backbone ms per run', [{ v: samples.map((s) => s.backbone_ms), c: colour(1) }]],
    ['Memory MiB', [{ v: samples.map((s) => s.rss_mib), c: colour(2) }]],
    ...names.map((n, i) => [`${n}: backbone runs (solid) and skipped crops (dashed) per ${every} s`, [
      { v: samples.map((s) => s.classifiers.find((c) => c[0] === n)?.[1] ?? null), c: colour(i) },
      { v: samples.map((s) => s.classifiers.find((c) => c[0] === n)?.[2] ?? null), c: colour(i), dash: true }]]),
  ];
  $('charts').replaceChildren(...series.map(([title, lines]) => {
    const canvas = el('canvas', { width: 600, height: 180 });
    const last = lines[0].v.filter((x) => x !== null).at(-1);
    const box = el('div', { class: 'chart' }, el('h3', { text: `${title}${last === undefined ? '' : ` — now ${last}`}` }), canvas);
    requestAnimationFrame(() => plot(canvas, lines));
    return box;
  }));
  if (!samples.length) $('charts').append(el('p', { class: 'hint', text: `The first figures appear ${every} s after the daemon started.` }));
}

function plot(canvas, lines) {
  const g = canvas.getContext('2d');
  const [w, h] = [canvas.width, canvas.height];
  const all = lines.flatMap((l) => l.v).filter((x) => x !== null);
  const max = Math.max(1e-9, ...all) * 1.1;
  g.clearRect(0, 0, w, h);
  g.strokeStyle = 'rgba(128,128,128,.3)';
  g.strokeRect(0, 0, w, h);
  g.fillStyle = 'rgba(128,128,128,.9)';
  g.font = '20px system-ui';
  if (all.length) g.fillText(String(+(max / 1.1).toPrecision(3)), 6, 22);
  for (const l of lines) {
    g.strokeStyle = l.c;
    g.lineWidth = 3;
    g.setLineDash(l.dash ? [8, 6] : []);
    g.beginPath();
    let started = false;
    l.v.forEach((v, i) => {
      if (v === null) { started = false; return; }
      const x = l.v.length < 2 ? w : (i / (240 - 1)) * w + (240 - l.v.length) / (240 - 1) * w;
      const y = h - (v / max) * (h - 8);
      if (started) g.lineTo(x, y); else g.moveTo(x, y);
      started = true;
    });
    g.stroke();
  }
  g.setLineDash([]);
}
