// The console's JSON API (docs/console.md): every call answers the envelope
// {status, data, error, transaction}; state changes carry the session's CSRF
// token and a transaction id (a retried request is carried out once).

let csrf = null;
let onLoggedOut = () => {};

export function setCsrf(token) { csrf = token; }
export function whenLoggedOut(fn) { onLoggedOut = fn; }

function transaction() {
  const a = new Uint32Array(2);
  crypto.getRandomValues(a);
  return `web-${a[0].toString(36)}${a[1].toString(36)}`;
}

// Send a request; resolves to {ok, code, data, error}.
export async function request(path, { method = 'GET', json = null, body = null, type = null } = {}) {
  const headers = {};
  if (method !== 'GET') headers['X-CSRF-Token'] = csrf || '';
  if (json !== null) {
    headers['Content-Type'] = 'application/json';
    body = JSON.stringify(json);
  } else if (type) {
    headers['Content-Type'] = type;
  }
  let res;
  try {
    res = await fetch(path, { method, headers, body, credentials: 'same-origin' });
  } catch (e) {
    return { ok: false, code: 0, data: null, error: 'the device did not answer (network down, or the daemon stopped)' };
  }
  let v = null;
  try { v = await res.json(); } catch (e) { /* not JSON */ }
  if (res.status === 401 && !path.endsWith('/login')) onLoggedOut();
  if (v && typeof v === 'object' && 'status' in v) {
    return { ok: v.status === 'ok', code: res.status, data: v.data ?? null, error: v.error ?? null };
  }
  return { ok: res.ok, code: res.status, data: v, error: res.ok ? null : `HTTP ${res.status}` };
}

const enc = encodeURIComponent;

// An operation of classifier `name` with a JSON payload.
export function op(name, operation, payload = {}, { get = false } = {}) {
  const path = `/api/classifiers/${enc(name)}/${operation}`;
  if (get) {
    const q = new URLSearchParams(payload).toString();
    return request(q ? `${path}?${q}` : path);
  }
  return request(path, { method: 'POST', json: { ...payload, transaction: transaction() } });
}

// An operation on the set of classifiers (`create_classifier`, ...).
export function manager(operation, payload = {}, { get = false } = {}) {
  if (get) return request(`/api/ops/${operation}`);
  return request(`/api/ops/${operation}`, { method: 'POST', json: { ...payload, transaction: transaction() } });
}

// An image file as the raw body of `add_sample/<label>` or `classify`.
export function sendImage(name, operation, label, file) {
  const path = label === null
    ? `/api/classifiers/${enc(name)}/${operation}`
    : `/api/classifiers/${enc(name)}/${operation}/${enc(label)}`;
  return request(path, { method: 'POST', body: file, type: file.type || 'application/octet-stream' });
}

// A file as base64 (for `add_sample` with `apply_region`).
export function base64(file) {
  return new Promise((resolve, reject) => {
    const r = new FileReader();
    r.onload = () => resolve(String(r.result).split(',', 2)[1] || '');
    r.onerror = () => reject(r.error);
    r.readAsDataURL(file);
  });
}

export const sampleUrl = (name, id) => `/api/classifiers/${enc(name)}/samples/${id}.jpg`;
export const recentUrl = (name, id) => `/api/classifiers/${enc(name)}/recent/${id}.jpg`;
