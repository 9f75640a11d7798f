#!/usr/bin/env node
// Protocol-replay push clients for the benchmark (bench/run.py, phase "fanin-replay").
//
// Usage: node bench/replay.js '<json config>'
//
// One Node process simulates `devices` devices pushing at once.  Each device sends exactly the
// HTTP requests a PouchDB 9 push replication (`local.replicate.to(remote)`, batch_size 100)
// sends to the remote database, as recorded from bench/replicate.js (see bench/README.md),
// with the same headers (Content-Type/Accept, node-fetch's User-Agent and Accept-Encoding,
// `Connection: close`: a new TCP connection per request, Basic auth when given) and the same
// bodies: the documents of bench/docs.js with PouchDB's own revisions (md5 of the document's
// JSON).  Every body is built before the barrier, so a device costs next to no CPU while it is
// measured and the servers are what the phase measures.
//
// Config keys:
//   url              remote database URL, e.g. "http://127.0.0.1:5984/fanin_replay"  (required)
//   auth             {"username": ..., "password": ...} or null (admin party)
//   devices          number of devices pushing at once (default 20)
//   docs_per_device  documents each device pushes (default 500)
//   doc_bytes        approximate JSON size of one document (default 1000)
//   id_prefix        device d's document ids are `<id_prefix><d, 3 digits>-<i, 6 digits>`
//                    (default "r": r007-000123)
//   batch_size       documents per _revs_diff/_bulk_docs round (default 100, PouchDB's)
//   barrier          when true, print {"event":"ready",...} before the measured step and wait
//                    for one line on stdin (default false)
//   timeout_s        hard limit for the whole process (default 1800)
//
// Per device, unmeasured (before the barrier): sign-in `GET /db/` (PouchDB's remote.info()).
// Measured, all devices released together:
//   GET /                                  replication id (PouchDB's remote.id())
//   GET /db/_local/<replication id>        checkpoint read, 404 for a new replication
//   per batch of batch_size documents:
//     POST /db/_revs_diff                  {id: [rev]}; every id must come back as missing
//     POST /db/_bulk_docs                  {"docs": [...], "new_edits": false}, docs with _rev
//                                          and _revisions; any error row or non-2xx fails
//     GET /db/_local/<replication id>      checkpoint read before the write (404 the first time)
//     PUT /db/_local/<replication id>      checkpoint: the document read (with its _rev), or a
//                                          new one, updated as PouchDB's updateCheckpoint does
//
// Output: {"event":"ready"}, then {"event":"done",...} when the last device has finished (wall
// time from the release to that moment), then {"event":"result","steps":[...]} with every
// request as [kind, total_ms, ttfb_ms, status, response_bytes, started_ms_after_release,
// device] (the first six as in replicate.js).  Any unexpected answer prints
// {"event":"error",...} and exits 1.
'use strict';

const crypto = require('crypto');
const http = require('http');
const readline = require('readline');
const zlib = require('zlib');
const { makeDoc } = require('./docs');

const config = JSON.parse(process.argv[2] || '{}');
const DB_URL = new URL(config.url);
const DEVICES = config.devices ?? 20;
const PER_DEVICE = config.docs_per_device ?? 500;
const DOC_BYTES = config.doc_bytes ?? 1000;
const ID_PREFIX = config.id_prefix ?? 'r';
const BATCH = config.batch_size ?? 100;
const TIMEOUT_S = config.timeout_s ?? 1800;
const STEP = 'fanin-replay';

// PouchDB's checkpointer (updateCheckpoint in pouchdb's replication module)
const CHECKPOINT_HISTORY_SIZE = 5;
const REPLICATOR = 'pouchdb';
const CHECKPOINT_VERSION = 1;

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

const killer = setTimeout(() => {
  emit({ event: 'error', mode: 'replay', message: `replay.js timed out after ${TIMEOUT_S}s` });
  process.exit(3);
}, TIMEOUT_S * 1000);
killer.unref();

// ---------------------------------------------------------------- HTTP, as node-fetch sends it

const DB_PATH = DB_URL.pathname.replace(/\/+$/, '');
const AUTH = config.auth
  ? 'Basic ' + Buffer.from(`${config.auth.username}:${config.auth.password}`).toString('base64')
  : null;

/** A request's headers as PouchDB sends them, in node-fetch's order.  `json`: PouchDB's
 * fetchJSON (everything but remote.info() and remote.id(), which are plain fetches). */
function headers(json, length) {
  const h = {};
  if (json) {
    h['Content-Type'] = 'application/json';
    h.Accept = 'application/json';
    if (AUTH) h.Authorization = AUTH;
  } else {
    if (AUTH) h.Authorization = AUTH;
    h.Accept = '*/*';
  }
  if (length !== undefined) h['Content-Length'] = length;
  h['User-Agent'] = 'node-fetch/1.0 (+https://github.com/bitinn/node-fetch)';
  h['Accept-Encoding'] = 'gzip,deflate';
  h.Connection = 'close'; // node-fetch's default agent: a new connection per request
  return h;
}
const PLAIN_FETCH = false; // PouchDB's plain fetch: remote.info(), remote.id()
const FETCH_JSON = true; // PouchDB's fetchJSON: everything else

let requests = [];
let stepStart = process.hrtime.bigint();
const ms = (ns) => Number(ns) / 1e6;

function decode(raw, encoding) {
  if (encoding === 'gzip') return zlib.gunzipSync(raw);
  if (encoding === 'deflate') return zlib.inflateSync(raw);
  return raw;
}

/** One request on a new connection; resolves {status, body} once the body is read. */
function send(device, kind, method, path, json, body) {
  return new Promise((resolve, reject) => {
    const t0 = process.hrtime.bigint();
    let t1 = t0;
    const opts = {
      host: DB_URL.hostname,
      port: DB_URL.port || 80,
      method,
      path,
      headers: headers(json, body && body.length),
      agent: false,
    };
    const req = http.request(opts, (res) => {
      t1 = process.hrtime.bigint();
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('error', reject);
      res.on('end', () => {
        let data;
        try {
          data = decode(Buffer.concat(chunks), res.headers['content-encoding']);
        } catch (err) {
          reject(err);
          return;
        }
        const t2 = process.hrtime.bigint();
        const status = res.statusCode;
        const started = ms(t0 - stepStart);
        requests.push([kind, ms(t2 - t0), ms(t1 - t0), status, data.length, started, device]);
        resolve({ status, body: data });
      });
    });
    req.on('error', (err) => {
      reject(new Error(`device ${device}: ${method} ${path}: ${err.message}`));
    });
    req.end(body);
  });
}

function fail(device, what, res) {
  const text = res.body.toString('utf8', 0, Math.min(res.body.length, 500));
  return new Error(`device ${device}: ${what} -> ${res.status}: ${text}`);
}

function parse(device, what, res) {
  try {
    return JSON.parse(res.body);
  } catch {
    throw fail(device, `${what} (not JSON)`, res);
  }
}

// ---------------------------------------------------------------- pre-built request bodies

/** A document as PouchDB sends it from a local database: fields, then _id, _rev, _revisions. */
function wireDoc(doc) {
  // PouchDB's deterministic revision: md5 of the new document's JSON (pouchdb's rev())
  const hash = crypto.createHash('md5').update(JSON.stringify(doc), 'binary').digest('hex');
  const { _id, ...fields } = doc;
  return { ...fields, _id, _rev: `1-${hash}`, _revisions: { start: 1, ids: [hash] } };
}

function buildDevice(d) {
  const prefix = `${ID_PREFIX}${String(d).padStart(3, '0')}-`;
  const batches = [];
  for (let start = 0; start < PER_DEVICE; start += BATCH) {
    const docs = [];
    for (let i = start; i < Math.min(PER_DEVICE, start + BATCH); i++) {
      docs.push(wireDoc(makeDoc(i, prefix, DOC_BYTES)));
    }
    const revsDiff = {};
    for (const doc of docs) revsDiff[doc._id] = [doc._rev];
    batches.push({
      revs: revsDiff,
      revsDiffBody: Buffer.from(JSON.stringify(revsDiff)),
      bulkDocsBody: Buffer.from(JSON.stringify({ docs, new_edits: false })),
      size: docs.length,
    });
  }
  // PouchDB: md5 (base64, '/' -> '.') of both databases' ids; a fresh device, a fresh id
  const repId = crypto
    .createHash('md5')
    .update(`${crypto.randomUUID()}${config.url}${d}`)
    .digest('base64')
    .replace(/\//g, '.');
  return {
    device: d,
    batches,
    localId: `_local/${repId}`,
    localPath: `${DB_PATH}/_local/${encodeURIComponent(repId)}`,
    session: crypto.randomUUID(),
    written: 0,
    wallMs: null,
  };
}

// ---------------------------------------------------------------- one device's push

async function revsDiff(dev, batch) {
  const what = 'POST _revs_diff';
  const path = `${DB_PATH}/_revs_diff`;
  const res = await send(dev.device, '_revs_diff', 'POST', path, FETCH_JSON, batch.revsDiffBody);
  if (res.status !== 200) throw fail(dev.device, what, res);
  const answer = parse(dev.device, what, res);
  for (const [id, revs] of Object.entries(batch.revs)) {
    const missing = answer[id] && answer[id].missing;
    if (!missing || missing[0] !== revs[0]) {
      throw fail(dev.device, `${what}: ${id} ${revs[0]} is not listed as missing`, res);
    }
  }
}

async function bulkDocs(dev, batch) {
  const what = 'POST _bulk_docs';
  const path = `${DB_PATH}/_bulk_docs`;
  const res = await send(dev.device, '_bulk_docs', 'POST', path, FETCH_JSON, batch.bulkDocsBody);
  if (res.status < 200 || res.status >= 300) throw fail(dev.device, what, res);
  const rows = parse(dev.device, what, res);
  if (!Array.isArray(rows) || rows.some((r) => r.error)) throw fail(dev.device, what, res);
  dev.written += batch.size;
}

async function readCheckpoint(dev) {
  const res = await send(dev.device, '_local_GET', 'GET', dev.localPath, FETCH_JSON);
  if (res.status === 404) return null;
  if (res.status !== 200) throw fail(dev.device, 'GET _local', res);
  return parse(dev.device, 'GET _local', res);
}

/** PouchDB's updateCheckpoint: read the checkpoint, update it, write it back with its _rev. */
async function writeCheckpoint(dev, seq) {
  const doc = (await readCheckpoint(dev)) ?? {
    session_id: dev.session,
    _id: dev.localId,
    history: [],
    replicator: REPLICATOR,
    version: CHECKPOINT_VERSION,
  };
  if (doc.last_seq === seq) return;
  doc.history = (doc.history || []).filter((item) => item.session_id !== dev.session);
  doc.history.unshift({ last_seq: seq, session_id: dev.session });
  doc.history = doc.history.slice(0, CHECKPOINT_HISTORY_SIZE);
  doc.version = CHECKPOINT_VERSION;
  doc.replicator = REPLICATOR;
  doc.session_id = dev.session;
  doc.last_seq = seq;
  const body = Buffer.from(JSON.stringify(doc));
  const res = await send(dev.device, '_local_PUT', 'PUT', dev.localPath, FETCH_JSON, body);
  if (res.status < 200 || res.status >= 300 || !parse(dev.device, 'PUT _local', res).ok) {
    throw fail(dev.device, 'PUT _local', res);
  }
}

async function push(dev) {
  const t0 = process.hrtime.bigint();
  const root = await send(dev.device, 'server', 'GET', '/', PLAIN_FETCH);
  if (root.status !== 200) throw fail(dev.device, 'GET /', root);
  if ((await readCheckpoint(dev)) !== null) {
    throw new Error(`device ${dev.device}: a checkpoint ${dev.localId} already exists`);
  }
  let seq = 0; // the local database's update_seq after the batch: one change per document
  for (const batch of dev.batches) {
    await revsDiff(dev, batch);
    await bulkDocs(dev, batch);
    seq += batch.size;
    await writeCheckpoint(dev, seq);
  }
  dev.wallMs = ms(process.hrtime.bigint() - t0);
}

// ---------------------------------------------------------------- barrier + step

function nextLine() {
  return new Promise((resolve) => {
    const rl = readline.createInterface({ input: process.stdin });
    let done = false;
    rl.once('line', (line) => {
      done = true;
      rl.close();
      resolve(line);
    });
    rl.once('close', () => {
      if (!done) resolve(null);
    });
  });
}

async function signIn(dev) {
  const res = await send(dev.device, 'db_GET', 'GET', `${DB_PATH}/`, PLAIN_FETCH);
  if (res.status !== 200) throw fail(dev.device, 'sign-in GET /db/', res);
}

async function main() {
  const devices = [];
  for (let d = 0; d < DEVICES; d++) devices.push(buildDevice(d));
  await Promise.all(devices.map(signIn));
  requests = [];
  if (config.barrier) {
    emit({ event: 'ready', step: STEP });
    if ((await nextLine()) === null) throw new Error('stdin closed while waiting at the barrier');
  }
  const startEpoch = Date.now();
  const t0 = process.hrtime.bigint();
  stepStart = t0;
  await Promise.all(devices.map(push));
  const done = {
    event: 'done',
    step: STEP,
    wall_ms: ms(process.hrtime.bigint() - t0),
    start_epoch_ms: startEpoch,
    end_epoch_ms: Date.now(),
    docs_read: 0,
    docs_written: devices.reduce((n, dev) => n + dev.written, 0),
    doc_write_failures: 0,
    devices: devices.map((dev) => ({
      device: dev.device,
      wall_ms: dev.wallMs,
      docs_written: dev.written,
    })),
  };
  emit(done);
  emit({ event: 'result', mode: 'replay', steps: [{ ...done, requests }] });
}

main()
  .then(() => process.exit(0))
  .catch((err) => {
    const message = String((err && (err.stack || err.message)) || err);
    emit({ event: 'error', mode: 'replay', message });
    process.exit(1);
  });
