// The console's entry: login, pages by the URL's fragment (#live, #teach, ...),
// the classifier picker, and the server-sent event stream that keeps the state
// current (no polling).

import { request, setCsrf, whenLoggedOut } from './api.js';
import { $, el, say, state } from './ui.js';
import * as live from './live.js';
import * as teach from './teach.js';
import * as recent from './recent.js';
import * as quality from './quality.js';
import * as status from './status.js';

const pages = { live, teach, recent, quality, status };
let events = null;
let page = null;

async function boot() {
  whenLoggedOut(loggedOut);
  const r = await request('/api/session');
  if (r.data) state.maxImageBytes = r.data.max_image_bytes;
  if (r.data && (r.data.authenticated || !r.data.login_required)) {
    setCsrf(r.data.csrf);
    start();
  } else {
    loggedOut();
  }
}

function loggedOut() {
  if (events) events.close();
  events = null;
  live.leave();
  $('app').hidden = true;
  $('login').hidden = false;
  $('password').focus();
}

$('login-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  say('login-answer', 'Checking…', 'busy');
  const r = await request('/api/login', { method: 'POST', json: { password: $('password').value } });
  if (!r.ok) {
    say('login-answer', r.error || 'failed', 'bad');
    return;
  }
  $('password').value = '';
  say('login-answer', '');
  setCsrf(r.data.csrf);
  start();
});

$('logout').addEventListener('click', async () => {
  await request('/api/logout', { method: 'POST' });
  loggedOut();
});

function start() {
  $('login').hidden = true;
  $('app').hidden = false;
  for (const p of Object.values(pages)) p.init?.();
  connect();
  route();
}

// The event stream: `tick` every second, `classifiers` when the set changes.
function connect() {
  if (events) events.close();
  events = new EventSource('/api/events');
  const pill = $('connection');
  events.onopen = () => { pill.textContent = 'live'; pill.className = 'pill ok'; };
  events.onerror = async () => {
    pill.textContent = 'reconnecting'; pill.className = 'pill bad';
    // A closed session: back to the login (EventSource cannot read the 401).
    const r = await request('/api/session');
    if (r.data && r.data.login_required && !r.data.authenticated) loggedOut();
  };
  events.addEventListener('tick', (e) => {
    const t = JSON.parse(e.data);
    state.tick = t;
    state.frame = t.frame;
    setClassifiers(t.classifiers);
    state.changed('tick');
  });
  events.addEventListener('classifiers', (e) => {
    setClassifiers(JSON.parse(e.data));
    state.changed('classifiers');
  });
  events.addEventListener('sample', (e) => state.changed({ sample: JSON.parse(e.data) }));
}

function setClassifiers(list) {
  const names = list.map((c) => c.name).join('\n');
  const before = state.classifiers.map((c) => c.name).join('\n');
  state.classifiers = list;
  if (!list.some((c) => c.name === state.selected)) state.selected = list[0]?.name ?? null;
  if (names !== before) {
    const pick = $('classifier');
    pick.replaceChildren(...list.map((c) => el('option', { value: c.name, text: c.name })));
    pick.value = state.selected ?? '';
    state.changed('selected');
  }
}

$('classifier').addEventListener('change', (e) => select(e.target.value));

// Choose classifier `name` on every page.
export function select(name) {
  if (state.selected === name) return;
  state.selected = name;
  $('classifier').value = name;
  state.changed('selected');
}
live.onSelect(select);

function route() {
  const name = (location.hash.slice(1) || 'live').split('/')[0];
  const next = pages[name] ? name : 'live';
  for (const [n, p] of Object.entries(pages)) {
    $(`page-${n}`).hidden = n !== next;
    if (n !== next && page === n) p.leave?.();
  }
  for (const a of document.querySelectorAll('nav a')) a.classList.toggle('active', a.dataset.page === next);
  page = next;
  pages[next].enter?.();
}
window.addEventListener('hashchange', route);

boot();
