// The gateway's API as the dashboard uses it: Bearer tokens only.
//
// Every call sends `Authorization: Bearer <access token>` and `credentials: 'omit'`, so the
// browser never attaches a cookie (not even CouchDB's AuthSession cookie for this origin):
// a page on another site cannot make the browser call these APIs with the manager's
// authority, so there is no CSRF surface to defend.  The access token lives in memory only;
// the refresh token is kept in sessionStorage (this tab only, gone when it closes) so that
// reloading the page does not ask for the password again.  An answer of 401 with reason
// `token_expired` refreshes the pair once (refresh tokens rotate: concurrent callers share
// one refresh, since presenting a spent refresh token revokes the whole family) and retries.

const REFRESH_KEY = 'gateway.dashboard.refresh';

export class ApiError extends Error {
  constructor(status, body) {
    const reason = (body && (body.reason || body.error)) || `HTTP ${status}`;
    super(reason);
    this.name = 'ApiError';
    this.status = status;
    this.body = body || {};
  }
}

/** Raised when there is no (longer a) valid session: the user must sign in. */
export class SignedOut extends Error {
  constructor(message) {
    super(message || 'Please sign in.');
    this.name = 'SignedOut';
  }
}

let accessToken = null;
let refreshing = null; // the in-flight refresh, shared by every caller that got 401

function storedRefresh() {
  try {
    return sessionStorage.getItem(REFRESH_KEY);
  } catch (_) {
    return null;
  }
}

function storeRefresh(token) {
  try {
    if (token) sessionStorage.setItem(REFRESH_KEY, token);
    else sessionStorage.removeItem(REFRESH_KEY);
  } catch (_) { /* storage disabled: the session lasts as long as the page */ }
}

async function readBody(response) {
  const text = await response.text();
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch (_) {
    return {reason: text.slice(0, 200)};
  }
}

async function send(method, path, {body, token, signal} = {}) {
  const headers = {Accept: 'application/json'};
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (token) headers.Authorization = `Bearer ${token}`;
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: 'omit', // Bearer only: no cookies, hence no CSRF
    cache: 'no-store',
    signal,
  });
  return {status: response.status, body: await readBody(response)};
}

function takeTokens(body) {
  accessToken = body.access_token;
  storeRefresh(body.refresh_token);
}

/** Sign in with a name and password; resolves once the tokens are held. */
export async function login(username, password) {
  const {status, body} = await send('POST', '/api/v1/auth/login', {body: {username, password}});
  if (status !== 200) throw new ApiError(status, body);
  takeTokens(body);
}

/** Whether a refresh token from an earlier page load of this tab is available. */
export function canResume() {
  return Boolean(storedRefresh());
}

/** Exchange the refresh token for a new pair (one exchange at a time). */
export function refresh() {
  if (!refreshing) {
    refreshing = (async () => {
      const token = storedRefresh();
      if (!token) throw new SignedOut();
      const {status, body} = await send('POST', '/api/v1/auth/refresh', {
        body: {refresh_token: token},
      });
      if (status !== 200) {
        accessToken = null;
        storeRefresh(null);
        throw new SignedOut('Your session has ended; please sign in again.');
      }
      takeTokens(body);
    })().finally(() => {
      refreshing = null;
    });
  }
  return refreshing;
}

/** Revoke the session (best effort) and forget the tokens. */
export async function logout() {
  const token = accessToken;
  const refreshToken = storedRefresh();
  accessToken = null;
  storeRefresh(null);
  if (token) {
    try {
      await send('POST', '/api/v1/auth/logout', {body: {refresh_token: refreshToken || undefined}, token});
    } catch (_) { /* offline: the tokens are forgotten anyway */ }
  }
}

/** Call the API; resolves with the JSON body of a 2xx answer, else throws ApiError. */
export async function call(method, path, {body, signal} = {}) {
  if (!accessToken) await refresh();
  let sent = accessToken;
  let answer = await send(method, path, {body, token: sent, signal});
  if (answer.status === 401 && answer.body && answer.body.reason === 'token_expired') {
    if (accessToken === sent) await refresh(); // else another caller refreshed already
    sent = accessToken;
    answer = await send(method, path, {body, token: sent, signal});
  }
  if (answer.status === 401) {
    accessToken = null;
    storeRefresh(null);
    throw new SignedOut('Your session has ended; please sign in again.');
  }
  if (answer.status < 200 || answer.status > 299) throw new ApiError(answer.status, answer.body);
  return answer.body;
}

export const get = (path, options) => call('GET', path, options);
export const post = (path, body, options) => call('POST', path, {...options, body});
export const del = (path, options) => call('DELETE', path, options);
