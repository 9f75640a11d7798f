'use strict';
// Shared setup for the interop scripts: a PouchDB with the in-memory adapter, remote handles
// with HTTP Basic credentials (and a request log), and the one-JSON-line result protocol.
//
// Environment: GATEWAY_DB_URL (e.g. http://127.0.0.1:PORT/interop), GATEWAY_USER,
// GATEWAY_PASSWORD.  The scripts print progress lines as JSON objects; the last stdout line is
// the result.
const crypto = require('crypto');
const PouchDB = require('pouchdb').plugin(require('pouchdb-adapter-memory'));

const DB_URL = process.env.GATEWAY_DB_URL;
const USER = process.env.GATEWAY_USER;
const PASSWORD = process.env.GATEWAY_PASSWORD;
if (!DB_URL || !USER || !PASSWORD) {
  throw new Error('GATEWAY_DB_URL, GATEWAY_USER and GATEWAY_PASSWORD are required');
}

let localCounter = 0;

/** A fresh in-memory database (the name is unique unless one is given). */
function local(name) {
  localCounter += 1;
  return new PouchDB(name || `local-${process.pid}-${localCounter}`, {adapter: 'memory'});
}

/** The gateway database, as `user`; each request is appended to `log` as
 * {method, url, status} (and the ids asked about, for `_revs_diff`). */
function remote(opts = {}) {
  const log = opts.log || [];
  const db = new PouchDB(opts.url || DB_URL, {
    auth: {username: opts.user || USER, password: opts.password || PASSWORD},
    fetch: async (url, options) => {
      const entry = {method: (options && options.method) || 'GET', url: String(url)};
      if (/\/_revs_diff$/.test(entry.url) && typeof options.body === 'string') {
        entry.revs_diff_ids = Object.keys(JSON.parse(options.body)).sort();
      }
      log.push(entry);
      const response = await PouchDB.fetch(url, options);
      entry.status = response.status;
      return response;
    },
  });
  db.requestLog = log;
  return db;
}

/** The parts of a replication result the tests assert on. */
function stats(result) {
  return {
    ok: result.ok,
    status: result.status,
    docs_read: result.docs_read,
    docs_written: result.docs_written,
    doc_write_failures: result.doc_write_failures,
    errors: (result.errors || []).map(String),
  };
}

function sha256(value) {
  return crypto.createHash('sha256').update(typeof value === 'string' ? value : JSON.stringify(value)).digest('hex');
}

/** Everything a replica holds, in a comparable form. */
async function dump(db) {
  const res = await db.allDocs({include_docs: true, conflicts: true});
  return res.rows.map((row) => ({id: row.id, rev: row.value.rev, doc: row.doc}));
}

/** The `_local/` ids a request log wrote (PUT), in order of first write. */
function localIds(log) {
  const ids = new Set();
  for (const {method, url} of log) {
    const m = /\/_local\/([^?]+)/.exec(url);
    if (m && method === 'PUT') ids.add(decodeURIComponent(m[1]));
  }
  return [...ids];
}

/** The `since` of every `_changes` request in a request log. */
function changesSince(log) {
  return log
    .filter(({url}) => /\/_changes(\?|$)/.test(url))
    .map(({url}) => new URL(url).searchParams.get('since'));
}

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Poll `probe` (bounded number of attempts) until it returns a truthy value. */
async function waitFor(probe, attempts = 300, intervalMs = 100) {
  for (let i = 0; i < attempts; i++) {
    const value = await probe();
    if (value) return value;
    await sleep(intervalMs);
  }
  return null;
}

async function getOrNull(db, id, opts = {}) {
  try {
    return await db.get(id, opts);
  } catch (err) {
    if (err.status === 404) return null;
    throw err;
  }
}

/** Run `fn`, print its result as the last stdout line, exit non-zero on any error. */
function main(fn) {
  fn().then(
    (result) => {
      // Exit only once the (possibly large) result line has been flushed to the pipe.
      process.stdout.write(JSON.stringify(result) + '\n', () => process.exit(0));
    },
    (err) => {
      console.error('interop script failed:', err && err.stack ? err.stack : err);
      try {
        console.error(JSON.stringify(err));
      } catch (_) { /* not serialisable */ }
      process.exit(1);
    },
  );
}

module.exports = {
  PouchDB, DB_URL, USER, PASSWORD, local, remote, stats, sha256, dump, emit, sleep, waitFor,
  getOrNull, localIds, changesSince, main,
};
