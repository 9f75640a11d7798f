#!/usr/bin/env node
// One PouchDB replication client for the benchmark (bench/run.py drives it).
//
// Usage: node bench/replicate.js '<json config>'
//
// Config keys:
//   url            remote database URL, e.g. "http://127.0.0.1:5984/bench"   (required)
//   auth           {"username": ..., "password": ...} or null (admin party)
//   mode           "push" | "pull" | "incremental" | "fanin"                  (required)
//   docs           number of documents the mode works with (default 10000)
//   doc_bytes      approximate JSON size of one document (default 1000)
//   id_prefix      document id prefix (default "doc-")
//   change_fraction  share of docs changed by the incremental mode (default 0.01)
//   barrier        when true, before each measured step print {"event":"ready",...} and wait
//                  for one line on stdin, so the driver can sample server CPU exactly around
//                  the step (default false)
//   timeout_s      hard limit for the whole process (default 1800)
//   batch_size     PouchDB replication batch_size (default: PouchDB's own, 100)
//
// Steps per mode (unmeasured setup happens before each "ready"):
//   push         setup: fill a local memory db            step "push": replicate.to(remote)
//   pull         -                                        step "pull": replicate.from(remote)
//   incremental  setup: pull all, push all (checkpoints), change change_fraction of the docs
//                step "incremental": push;  setup: catch-up pull
//                step "noop": push then pull, both transferring nothing
//   fanin        setup: fill a local memory db            step "fanin": replicate.to(remote)
//
// Output: a short JSON line per finished step ({"event":"done",...}, for the barrier) and, last,
// one JSON result line ({"event":"result","steps":[...]}) with every step in full.  Every HTTP request PouchDB makes is timed through the
// `fetch` option (time to headers and time to the end of the body) and reported per step as
// [kind, total_ms, ttfb_ms, status, response_bytes, started_ms_after_step_start].
'use strict';

const path = require('path');
const readline = require('readline');

const ROOT = path.resolve(__dirname, '..');
const nm = (name) => require(path.join(ROOT, 'node_modules', name));
const PouchDB = nm('pouchdb').plugin(nm('pouchdb-adapter-memory'));
const nodeFetch = nm('node-fetch');
const docs = require('./docs');

const config = JSON.parse(process.argv[2] || '{}');
const mode = config.mode;
const N = config.docs ?? 10000;
const DOC_BYTES = config.doc_bytes ?? 1000;
const PREFIX = config.id_prefix ?? 'doc-';
const TIMEOUT_S = config.timeout_s ?? 1800;

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

const killer = setTimeout(() => {
  emit({ event: 'error', mode, message: `replicate.js timed out after ${TIMEOUT_S}s` });
  process.exit(3);
}, TIMEOUT_S * 1000);
killer.unref();

// ---------------------------------------------------------------- request timing

let requests = [];
let stepStart = process.hrtime.bigint();

function kindOf(url, method) {
  const p = new URL(url).pathname.replace(/\/+$/, '');
  const parts = p.split('/').filter(Boolean);
  if (parts.length === 0) return 'server';
  if (parts.length === 1) return `db_${method}`;
  const seg = decodeURIComponent(parts[1]);
  if (seg === '_local') return `_local_${method}`;
  if (seg.startsWith('_')) return seg;
  return `doc_${method}`;
}

async function timedFetch(url, opts) {
  const method = ((opts && opts.method) || 'GET').toUpperCase();
  const t0 = process.hrtime.bigint();
  const res = await PouchDB.fetch(url, opts);
  const t1 = process.hrtime.bigint();
  const body = await res.buffer();
  const t2 = process.hrtime.bigint();
  requests.push([
    kindOf(url, method),
    Number(t2 - t0) / 1e6,
    Number(t1 - t0) / 1e6,
    res.status,
    body.length,
    Number(t0 - stepStart) / 1e6,
  ]);
  return new nodeFetch.Response(body, {
    status: res.status,
    statusText: res.statusText,
    headers: res.headers,
    url: res.url,
  });
}

function remoteDb() {
  const opts = { fetch: timedFetch, skip_setup: true };
  if (config.auth) opts.auth = config.auth;
  return new PouchDB(config.url, opts);
}

let localCounter = 0;
function localDb() {
  localCounter += 1;
  return new PouchDB(`bench-local-${process.pid}-${localCounter}`, { adapter: 'memory' });
}

// ---------------------------------------------------------------- documents

function makeDoc(i) {
  return docs.makeDoc(i, PREFIX, DOC_BYTES);
}

async function fillLocal(db, n) {
  for (let start = 0; start < n; start += 1000) {
    const chunk = [];
    for (let i = start; i < Math.min(n, start + 1000); i++) chunk.push(makeDoc(i));
    const res = await db.bulkDocs(chunk);
    const bad = res.filter((r) => r.error);
    if (bad.length) throw new Error(`local bulkDocs failed: ${JSON.stringify(bad[0])}`);
  }
}

// ---------------------------------------------------------------- barrier + steps

const rl = readline.createInterface({ input: process.stdin });
const stdinLines = [];
let stdinWaiter = null;
let stdinClosed = false;
rl.on('line', (line) => {
  if (stdinWaiter) {
    const w = stdinWaiter;
    stdinWaiter = null;
    w(line);
  } else stdinLines.push(line);
});
rl.on('close', () => {
  stdinClosed = true;
  if (stdinWaiter) stdinWaiter(null);
});

function nextLine() {
  if (stdinLines.length) return Promise.resolve(stdinLines.shift());
  if (stdinClosed) return Promise.resolve(null);
  return new Promise((resolve) => {
    stdinWaiter = resolve;
  });
}

const steps = [];

function replStats(r) {
  return {
    docs_read: r.docs_read,
    docs_written: r.docs_written,
    doc_write_failures: r.doc_write_failures,
    errors: (r.errors || []).slice(0, 5).map((e) => String(e && (e.message || e.reason || e))),
  };
}

async function step(name, fn) {
  if (config.barrier) {
    emit({ event: 'ready', step: name });
    const line = await nextLine();
    if (line === null) throw new Error('stdin closed while waiting at the barrier');
  }
  requests = [];
  const startEpoch = Date.now();
  const t0 = process.hrtime.bigint();
  stepStart = t0;
  const stats = await fn();
  const wallMs = Number(process.hrtime.bigint() - t0) / 1e6;
  const out = {
    event: 'done',
    step: name,
    wall_ms: wallMs,
    start_epoch_ms: startEpoch,
    end_epoch_ms: Date.now(),
    ...stats,
    requests,
  };
  requests = [];
  steps.push(out);
  const { requests: _r, ...slim } = out;
  emit(slim);
  return out;
}

async function quiet(fn) {
  // unmeasured setup traffic: keep it out of the step's request list
  const saved = requests;
  requests = [];
  try {
    return await fn();
  } finally {
    requests = saved;
  }
}

function sumStats(a, b) {
  return {
    docs_read: a.docs_read + b.docs_read,
    docs_written: a.docs_written + b.docs_written,
    doc_write_failures: a.doc_write_failures + b.doc_write_failures,
    errors: [...a.errors, ...b.errors],
  };
}

const replOpts = config.batch_size ? { batch_size: config.batch_size } : {};

async function main() {
  const remote = remoteDb();
  // The client signs in before any measured step (one authenticated GET /db, as an app does
  // when it opens its remote database): a server's one-off cost of checking a password
  // (the gateway's scrypt, about 40 ms of CPU, once per user per instance and 5 minutes) is
  // not billed to the documents of the step that happens to come first.
  await quiet(() => remote.info());
  if (mode === 'push' || mode === 'fanin') {
    const local = localDb();
    await fillLocal(local, N);
    await step(mode, async () => replStats(await local.replicate.to(remote, replOpts)));
  } else if (mode === 'pull') {
    const local = localDb();
    await step('pull', async () => replStats(await local.replicate.from(remote, replOpts)));
  } else if (mode === 'incremental') {
    const local = localDb();
    await quiet(async () => {
      await local.replicate.from(remote, replOpts);
      await local.replicate.to(remote, replOpts);
    });
    const info = await local.info();
    const k = Math.max(1, Math.round(info.doc_count * (config.change_fraction ?? 0.01)));
    const all = await local.allDocs({ include_docs: true, limit: info.doc_count });
    const stride = Math.max(1, Math.floor(all.rows.length / k));
    const changed = [];
    for (let j = 0; j < all.rows.length && changed.length < k; j += stride) {
      const d = all.rows[j].doc;
      d.n = -d.n;
      d.updated_at = new Date().toISOString();
      changed.push(d);
    }
    await local.bulkDocs(changed);
    await step('incremental', async () => ({
      changed_locally: changed.length,
      ...replStats(await local.replicate.to(remote, replOpts)),
    }));
    await quiet(() => local.replicate.from(remote, replOpts));
    await step('noop', async () => {
      const a = replStats(await local.replicate.to(remote, replOpts));
      const b = replStats(await local.replicate.from(remote, replOpts));
      return sumStats(a, b);
    });
  } else {
    throw new Error(`unknown mode ${mode}`);
  }
  emit({ event: 'result', mode, steps });
}

main()
  .then(() => process.exit(0))
  .catch((err) => {
    emit({ event: 'error', mode, message: String((err && (err.stack || err.message)) || err) });
    process.exit(1);
  });
