// The manager dashboard: live changes, open conflicts, checkpoint lag and sync activity.
// Plain ES modules, no build step.  Every value from the server is put on the page with
// textContent (never innerHTML), and the CSP allows no inline script.
import * as api from './api.js';
import {drawChart} from './chart.js';
import {display, fieldDiff} from './diff.js';

const STAFF = new Set(['manager', 'admin']);
const MAX_FEED_ROWS = 300;
const LONGPOLL_TIMEOUT_MS = 25000;
const REFRESH_DEBOUNCE_MS = 750;
const STATS_EVERY_MS = 60000;
const CHECKPOINTS_EVERY_MS = 30000;
const CONFLICTS_EVERY_MS = 60000;
const STRATEGY_LABELS = {keep_mine: 'keep mine', keep_theirs: 'keep theirs', merge: 'merge'};
const RESET_DISABLED = 'Only admins can reset checkpoints (DELETE /api/v1/checkpoints).';

const $ = (id) => document.getElementById(id);

const state = {
  user: null,
  controller: null, // aborts the feed loop and the timers' work on sign-out
  timers: [],
  refreshTimer: null,
  conflictsNext: null,
  conflictsGeneration: 0,
  selected: null, // the ConflictRecord shown in the detail pane
  lastStats: null,
};

// --- small DOM helpers ----------------------------------------------------------------------

function el(tag, {text, className, title, data} = {}, children = []) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  if (title) node.title = title;
  for (const [key, value] of Object.entries(data || {})) node.dataset[key] = value;
  for (const child of children) node.append(child);
  return node;
}

function td(text, options = {}) {
  return el('td', {text, ...options});
}

function formatTime(iso) {
  if (!iso) return '—';
  const at = new Date(iso);
  if (Number.isNaN(at.getTime())) return iso;
  const today = new Date();
  return at.toDateString() === today.toDateString() ? at.toLocaleTimeString() : at.toLocaleString();
}

function shortRev(rev) {
  if (!rev) return '—';
  const [generation, hash] = rev.split('-', 2);
  return hash && hash.length > 10 ? `${generation}-${hash.slice(0, 10)}…` : rev;
}

function showNotice(node, message, kind) {
  node.textContent = message;
  node.className = `notice ${kind || ''}`.trim();
  node.hidden = !message;
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener('abort', done, {once: true});
  });
}

// --- views and session ----------------------------------------------------------------------

function show(view) {
  for (const id of ['login-view', 'forbidden-view', 'dashboard-view']) $(id).hidden = id !== view;
  $('session').hidden = view === 'login-view';
}

function showLogin(message) {
  stopDashboard();
  clearDashboard();
  state.user = null;
  show('login-view');
  showNotice($('login-error'), message || '', 'error');
  $('username').focus();
}

function showForbidden() {
  stopDashboard();
  clearDashboard();
  const who = state.user ? ` You are signed in as ${state.user.username} (${state.user.role}).` : '';
  $('forbidden-message').textContent =
    `The dashboard is for managers and admins only.${who} Its APIs answer 403 Forbidden to other users.`;
  show('forbidden-view');
}

/** Sign-out and permission errors leave the dashboard; true when `err` was one. */
function leaveOn(err) {
  if (err instanceof api.SignedOut) {
    showLogin(err.message);
    return true;
  }
  if (err instanceof api.ApiError && err.status === 403) {
    showForbidden();
    return true;
  }
  return false;
}

async function enter() {
  const me = await api.get('/api/v1/auth/me');
  state.user = me;
  $('who').textContent = `${me.username} (${me.role})`;
  if (!STAFF.has(me.role)) {
    showForbidden();
    return;
  }
  show('dashboard-view');
  startDashboard();
}

async function onLogin(event) {
  event.preventDefault();
  const button = $('login-submit');
  button.disabled = true;
  showNotice($('login-error'), '', 'error');
  try {
    await api.login($('username').value.trim(), $('password').value);
    $('password').value = '';
    await enter();
  } catch (err) {
    let message = err.message;
    if (err instanceof api.ApiError && err.status === 401) message = 'Wrong user name or password.';
    if (err instanceof api.ApiError && err.status === 429) message = 'Too many failed attempts; try again later.';
    if (err instanceof TypeError) message = 'The gateway cannot be reached.';
    if (err instanceof api.ApiError && err.status === 403) showForbidden();
    else showLogin(message);
  } finally {
    button.disabled = false;
  }
}

async function onLogout() {
  const revoking = api.logout(); // forgets the tokens at once, then revokes them
  showLogin('');
  await revoking;
}

/** Forget what the last user saw (the next sign-in may be someone else). */
function clearDashboard() {
  for (const id of ['feed', 'conflicts', 'conflict-diff', 'checkpoints']) $(id).tBodies[0].replaceChildren();
  $('conflict-detail').hidden = true;
  state.selected = null;
  state.lastStats = null;
  state.conflictsNext = null;
  $('stats-summary').textContent = 'Loading…';
  const chart = $('stats-chart');
  chart.getContext('2d').clearRect(0, 0, chart.width, chart.height);
  for (const key of ['totalIn', 'totalOut', 'points']) delete chart.dataset[key];
  for (const id of ['conflict-message', 'checkpoints-message']) showNotice($(id), '', '');
}

// --- the dashboard's lifecycle --------------------------------------------------------------

function startDashboard() {
  stopDashboard();
  const controller = new AbortController();
  state.controller = controller;
  $('feed').tBodies[0].replaceChildren();
  $('feed-empty').hidden = false;
  feedLoop(controller.signal);
  loadStats();
  loadConflicts();
  loadCheckpoints();
  state.timers.push(
    setInterval(loadStats, STATS_EVERY_MS),
    setInterval(loadCheckpoints, CHECKPOINTS_EVERY_MS),
    setInterval(() => loadConflicts(), CONFLICTS_EVERY_MS),
  );
}

function stopDashboard() {
  if (state.controller) state.controller.abort();
  state.controller = null;
  state.timers.forEach(clearInterval);
  state.timers = [];
  clearTimeout(state.refreshTimer);
}

/** After changes arrive: refresh what they may have changed (once per burst). */
function scheduleRefresh() {
  clearTimeout(state.refreshTimer);
  state.refreshTimer = setTimeout(() => {
    loadConflicts();
    loadCheckpoints();
    loadStats();
  }, REFRESH_DEBOUNCE_MS);
}

/** Run a loader; sign-out and 403 leave the dashboard, other errors go to `notice`. */
async function guarded(fn, notice) {
  if (!state.controller) return;
  try {
    await fn();
    if (notice && notice.classList.contains('error')) showNotice(notice, '', '');
  } catch (err) {
    if (leaveOn(err)) return;
    if (notice) showNotice(notice, `Could not load: ${err.message}`, 'error');
    else console.warn(err);
  }
}

// --- live changes ---------------------------------------------------------------------------

function setFeedStatus(text, kind) {
  const pill = $('feed-status');
  pill.textContent = text;
  pill.className = `pill ${kind || ''}`.trim();
}

function feedRow(change) {
  const docCell = td(null, {className: 'docid'});
  docCell.append(el('span', {text: change.id}));
  if (change.deleted) docCell.append(el('span', {text: 'deleted', className: 'badge badge-deleted'}));
  const row = el('tr', {className: change.deleted ? 'deleted' : '', data: {db: change.db, id: change.id}}, [
    td(formatTime(change.at), {title: change.at || ''}),
    td(change.user || '—'),
    td(change.db),
    docCell,
    el('td', {}, [el('code', {text: shortRev(change.rev), title: change.rev || ''})]),
  ]);
  if (change.deleted) row.title = 'Deleted (a tombstone revision)';
  return row;
}

function addFeedRows(changes, newestFirst) {
  const ordered = newestFirst ? changes : [...changes].sort((a, b) =>
    (Date.parse(b.at || 0) - Date.parse(a.at || 0)) || (b.seq - a.seq));
  const tbody = $('feed').tBodies[0];
  const fragment = document.createDocumentFragment();
  for (const change of ordered) fragment.append(feedRow(change));
  tbody.prepend(fragment);
  while (tbody.rows.length > MAX_FEED_ROWS) tbody.deleteRow(-1);
  $('feed-empty').hidden = tbody.rows.length > 0;
}

async function feedLoop(signal) {
  let since = null;
  let delay = 1000;
  while (!signal.aborted) {
    try {
      const path = since === null
        ? '/api/v1/activity?limit=100'
        : `/api/v1/activity?since=${encodeURIComponent(since)}&feed=longpoll&timeout=${LONGPOLL_TIMEOUT_MS}`;
      const body = await api.get(path, {signal});
      if (signal.aborted) return;
      const first = since === null;
      since = body.since;
      delay = 1000;
      setFeedStatus('live', 'ok');
      if (body.results.length) {
        addFeedRows(body.results, first);
        if (!first) scheduleRefresh();
      }
    } catch (err) {
      if (signal.aborted) return;
      if (leaveOn(err)) return;
      if (err instanceof api.ApiError && err.status === 400) since = null; // a stale token
      setFeedStatus('reconnecting…', 'warn');
      await sleep(delay, signal);
      delay = Math.min(delay * 2, 30000);
    }
  }
}

// --- conflicts ------------------------------------------------------------------------------

function conflictRow(record) {
  const open = el('button', {text: record.doc_id, className: 'link', title: 'Show both sides'});
  open.type = 'button';
  const row = el('tr', {data: {conflictId: String(record.id)}}, [
    td(record.db),
    el('td', {className: 'docid'}, [open]),
    td(record.pushed_by || '—'),
    td(record.device || '—'),
    td(formatTime(record.created_at), {title: record.created_at || ''}),
  ]);
  if (state.selected && state.selected.id === record.id) row.classList.add('selected');
  row.addEventListener('click', () => selectConflict(record.id));
  return row;
}

async function loadConflicts({more = false} = {}) {
  await guarded(async () => {
    const generation = ++state.conflictsGeneration;
    const query = new URLSearchParams({status: 'open', limit: '50'});
    if (more && state.conflictsNext) query.set('cursor', state.conflictsNext);
    const body = await api.get(`/api/v1/conflicts?${query}`);
    if (generation !== state.conflictsGeneration) return; // a newer load is under way
    const tbody = $('conflicts').tBodies[0];
    if (!more) tbody.replaceChildren();
    for (const record of body.results) tbody.append(conflictRow(record));
    state.conflictsNext = body.next;
    $('conflicts-more').hidden = !body.next;
    $('conflicts-empty').hidden = tbody.rows.length > 0;
  });
}

async function selectConflict(id) {
  await guarded(async () => {
    const record = await api.get(`/api/v1/conflicts/${encodeURIComponent(id)}`);
    showNotice($('conflict-message'), '', '');
    renderConflict(record);
  }, $('conflict-message'));
}

function sideHeader(label, side) {
  const head = el('th', {text: label});
  if (side && side.rev) head.append(el('code', {text: ` ${shortRev(side.rev)}`, title: side.rev}));
  if (side && side.body === null) head.append(el('span', {text: ' (no body)', className: 'muted'}));
  return head;
}

function valueCell(value, changed, side) {
  const cell = el('td', {className: `value ${changed ? 'changed' : ''}`.trim(), data: {side}});
  if (value === undefined) {
    cell.classList.add('absent');
    cell.textContent = '(absent)';
  } else {
    cell.append(el('pre', {text: display(value)}));
  }
  return cell;
}

function renderConflict(record) {
  state.selected = record;
  for (const row of $('conflicts').tBodies[0].rows) {
    row.classList.toggle('selected', row.dataset.conflictId === String(record.id));
  }
  $('conflict-detail').hidden = false;
  $('conflict-title').textContent = `${record.db} / ${record.doc_id}`;
  const pushed = record.pushed_by ? `pushed by ${record.pushed_by}` : 'pushed';
  const device = record.device ? ` from ${record.device}` : '';
  let meta = `Conflict #${record.id}, ${pushed}${device}, ${formatTime(record.created_at)} — ${record.status}`;
  if (record.status !== 'open') {
    meta += ` (${record.strategy || '?'} by ${record.resolved_by || '?'}, revision ${record.resolved_rev || '?'})`;
  }
  $('conflict-meta').textContent = meta;

  const ancestor = record.ancestor && record.ancestor.body !== null && record.ancestor.body !== undefined
    ? record.ancestor : null;
  const head = $('conflict-diff-head');
  head.replaceChildren(el('th', {text: 'Field'}));
  if (ancestor) head.append(sideHeader('Ancestor', ancestor));
  head.append(sideHeader('Theirs (server)', record.theirs), sideHeader('Mine (pushed)', record.mine));

  const rows = fieldDiff(record.mine && record.mine.body, record.theirs && record.theirs.body,
    ancestor ? ancestor.body : null);
  const tbody = $('conflict-diff').tBodies[0];
  tbody.replaceChildren();
  for (const row of rows) {
    const tr = el('tr', {className: row.clash ? 'clash' : row.differs || row.mineChanged || row.theirsChanged ? 'changed' : '',
      data: {field: row.field}}, [el('th', {text: row.field, className: 'field'})]);
    if (ancestor) tr.append(valueCell(row.ancestor, false, 'ancestor'));
    tr.append(valueCell(row.theirs, row.theirsChanged, 'theirs'), valueCell(row.mine, row.mineChanged, 'mine'));
    tbody.append(tr);
  }
  for (const button of document.querySelectorAll('#conflict-detail [data-strategy]')) {
    button.disabled = record.status !== 'open';
    if (button.dataset.strategy === 'merge') {
      button.title = ancestor
        ? 'Three-way merge field by field against the common ancestor'
        : 'No common ancestor body is stored: a merge is likely to be refused';
    }
  }
}

/** The top-level field of a JSON-pointer path ("/site/name" -> "site"). */
function topField(path) {
  const first = String(path).replace(/^\//, '').split('/')[0];
  return first.replace(/~1/g, '/').replace(/~0/g, '~');
}

async function resolveSelected(strategy) {
  const record = state.selected;
  if (!record) return;
  const message = $('conflict-message');
  const buttons = document.querySelectorAll('#conflict-detail [data-strategy]');
  buttons.forEach((b) => { b.disabled = true; });
  showNotice(message, `Resolving (${STRATEGY_LABELS[strategy]})…`, '');
  try {
    const resolved = await api.post(`/api/v1/conflicts/${encodeURIComponent(record.id)}/resolve`, {strategy});
    renderConflict(resolved);
    showNotice(message, `Resolved (${STRATEGY_LABELS[strategy]}): new revision ${resolved.rev}.`, 'ok');
    loadConflicts();
  } catch (err) {
    if (leaveOn(err)) return;
    buttons.forEach((b) => { b.disabled = record.status !== 'open'; });
    if (err instanceof api.ApiError && err.status === 409 && Array.isArray(err.body.fields)) {
      const fields = err.body.fields.map(topField);
      for (const row of $('conflict-diff').tBodies[0].rows) {
        if (fields.includes(row.dataset.field)) row.classList.add('clash');
      }
      showNotice(message, `Cannot merge: both sides changed ${err.body.fields.join(', ')} differently. ` +
        'Keep one side instead.', 'error');
    } else if (err instanceof api.ApiError && err.status === 409) {
      showNotice(message, `Not resolved: ${err.message}`, 'error');
      selectConflict(record.id);
      loadConflicts();
    } else {
      showNotice(message, `Not resolved: ${err.message}`, 'error');
    }
  }
}

// --- checkpoints ----------------------------------------------------------------------------

function checkpointRow(cp, isAdmin) {
  const reset = el('button', {text: 'Reset', className: 'secondary small'});
  reset.type = 'button';
  let action;
  if (isAdmin) {
    reset.title = `Delete this checkpoint: ${cp.user}'s next replication of ${cp.db} starts over`;
    reset.addEventListener('click', () => resetCheckpoint(cp));
    action = el('td', {}, [reset]);
  } else {
    reset.disabled = true;
    // a disabled button gets no mouse events in some browsers: the wrapper shows the tooltip
    action = el('td', {}, [el('span', {title: RESET_DISABLED, className: 'tooltip'}, [reset])]);
  }
  const lag = el('td', {text: cp.lag ?? '—', className: `num ${cp.lag > 0 ? 'lagging' : ''}`.trim()});
  return el('tr', {data: {user: cp.user, db: cp.db, id: cp.id}}, [
    td(cp.user),
    td(cp.db),
    el('td', {}, [el('code', {text: cp.id.replace(/^_local\//, ''), title: cp.id})]),
    td(cp.seq ?? '—', {className: 'num'}),
    td(cp.db_seq, {className: 'num'}),
    lag,
    td(formatTime(cp.updated_at), {title: cp.updated_at || ''}),
    action,
  ]);
}

async function loadCheckpoints() {
  await guarded(async () => {
    const body = await api.get('/api/v1/checkpoints');
    const isAdmin = state.user && state.user.role === 'admin';
    const rows = [...body.results].sort((a, b) => (b.lag ?? -1) - (a.lag ?? -1));
    const tbody = $('checkpoints').tBodies[0];
    tbody.replaceChildren(...rows.map((cp) => checkpointRow(cp, isAdmin)));
    $('checkpoints-empty').hidden = rows.length > 0;
  }, $('checkpoints-message'));
}

async function resetCheckpoint(cp) {
  const what = `checkpoint ${cp.id} of ${cp.user} on ${cp.db}`;
  if (!window.confirm(`Reset ${what}? Their next replication starts over.`)) return;
  const message = $('checkpoints-message');
  try {
    const query = new URLSearchParams({user: cp.user, db: cp.db, id: cp.id});
    const answer = await api.del(`/api/v1/checkpoints?${query}`);
    showNotice(message, `Reset ${what} (${answer.changed.length} changed).`, 'ok');
  } catch (err) {
    if (err instanceof api.SignedOut) {
      leaveOn(err);
      return;
    }
    showNotice(message, `Not reset: ${err.message}`, 'error');
  }
  loadCheckpoints();
}

// --- sync activity chart --------------------------------------------------------------------

function renderStats() {
  if (!state.lastStats) return;
  const {totalIn, totalOut} = drawChart($('stats-chart'), state.lastStats);
  const busiest = state.lastStats.reduce((best, m) => (m.in + m.out > best.in + best.out ? m : best),
    state.lastStats[0]);
  let summary = `${totalIn} documents in, ${totalOut} out in the last ${state.lastStats.length} minutes.`;
  if (busiest && busiest.in + busiest.out > 0) {
    summary += ` Busiest minute: ${formatTime(busiest.at)} (${busiest.in} in, ${busiest.out} out).`;
  }
  $('stats-summary').textContent = summary;
}

async function loadStats() {
  await guarded(async () => {
    const body = await api.get('/api/v1/activity/stats?minutes=60');
    state.lastStats = body.minutes;
    renderStats();
  });
}

// --- start ----------------------------------------------------------------------------------

function wire() {
  $('login-form').addEventListener('submit', onLogin);
  $('logout').addEventListener('click', onLogout);
  $('forbidden-logout').addEventListener('click', onLogout);
  $('conflicts-refresh').addEventListener('click', () => loadConflicts());
  $('conflicts-more').addEventListener('click', () => loadConflicts({more: true}));
  $('checkpoints-refresh').addEventListener('click', () => loadCheckpoints());
  for (const button of document.querySelectorAll('#conflict-detail [data-strategy]')) {
    button.addEventListener('click', () => resolveSelected(button.dataset.strategy));
  }
  let resizeTimer = null;
  window.addEventListener('resize', () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(renderStats, 150);
  });
}

async function start() {
  wire();
  if (api.canResume()) {
    try {
      await enter();
      return;
    } catch (err) {
      if (leaveOn(err)) return;
    }
  }
  showLogin('');
}

start();
