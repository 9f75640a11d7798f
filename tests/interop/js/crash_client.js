'use strict';
// A device with a large local database that pushes it through a gateway the test kills with
// SIGKILL and restarts at random moments (tests/reliability/test_crash.py).
//
// argv: index, docCount, rounds, sharedCount, batchSize, barrierFile
//
// Round 0 creates the client's own documents `p{index}-{n}` (n < docCount, ~1 KB bodies);
// round r > 0 edits those with n % rounds === r.  Every round also edits the shared documents
// `shared-{k}` (k < sharedCount) on this client's own branch, so the gateway ends up with one
// conflicting branch per client.  Bodies are `body(...)` below (the test computes the same).
// After each round's local writes, a live push with retry (constant back-off, as a field app
// would configure it) runs until PouchDB reports it caught up and `_revs_diff` says the
// gateway is missing nothing of the local database; then the next round starts.
//
// Creates `barrierFile.sent-{index}` as its first `_bulk_docs` is sent.
// Prints {"phase": "pushed", ...counters} after the last round, waits (bounded) for
// `barrierFile`, pulls once (retrying a failed pull) and prints its whole replica.  Counters:
// `_bulk_docs` requests sent, cut off (the connection died: a kill), answered with a 5xx;
// pushes paused by an error and retried; documents the gateway refused (`denied`).
const crypto = require('crypto');
const fs = require('fs');
const {PouchDB, DB_URL, USER, PASSWORD, local, emit, sleep, waitFor, dump, main} = require('./common');

const RETRY_MS = 200;
const PUSH_ATTEMPTS = 1500; // x 100 ms: a round's push must finish within 150 s
const PULL_ATTEMPTS = 20;

function payload(index, n, round) {
  return crypto.createHash('sha256').update(`${index}:${n}:${round}`).digest('hex').repeat(15);
}

/** The body of own document n after `round` (the test builds the same). */
function ownBody(index, n, round) {
  return {owner: index, n, round, payload: payload(index, n, round)};
}

/** The body of shared document k on this client's branch after `round`. */
function sharedBody(index, k, round) {
  return {shared: k, by: index, round, payload: payload(index, `shared-${k}`, round)};
}

/** The gateway database; counts `_bulk_docs` requests and how each ended, and creates
 * `sentMarker` (once) as the first one is sent: the test holds the gateway's writes until
 * then and kills the process, so that at least one `_bulk_docs` is cut whatever the
 * machine's speed. */
function server(counters, sentMarker) {
  return new PouchDB(DB_URL, {
    auth: {username: USER, password: PASSWORD},
    fetch: async (url, options) => {
      const bulk = /\/_bulk_docs(\?|$)/.test(String(url));
      if (bulk && counters.bulk_docs_sent === 0) fs.writeFileSync(sentMarker, '');
      if (bulk) counters.bulk_docs_sent += 1;
      let response;
      try {
        response = await PouchDB.fetch(url, options);
      } catch (err) {
        if (bulk) counters.bulk_docs_cut += 1;
        throw err;
      }
      if (response.status >= 500) {
        counters.responses_5xx.push(`${(options && options.method) || 'GET'} ${url}: ${response.status}`);
      }
      return response;
    },
  });
}

async function writeRound(db, index, docCount, rounds, sharedCount, round) {
  const ids = [];
  for (let n = 0; n < docCount; n++) if (round === 0 || n % rounds === round) ids.push(n);
  const existing = await db.allDocs({keys: ids.map((n) => `p${index}-${n}`)});
  const docs = ids.map((n, i) => {
    const row = existing.rows[i];
    return {_id: `p${index}-${n}`, ...(row.value ? {_rev: row.value.rev} : {}), ...ownBody(index, n, round)};
  });
  const shared = [];
  for (let k = 0; k < sharedCount; k++) shared.push(`shared-${k}`);
  const current = await db.allDocs({keys: shared});
  shared.forEach((id, k) => {
    const row = current.rows[k];
    docs.push({_id: id, ...(row.value ? {_rev: row.value.rev} : {}), ...sharedBody(index, k, round)});
  });
  const results = await db.bulkDocs(docs);
  const failed = results.filter((r) => r.error);
  if (failed.length) throw new Error(`local writes failed: ${JSON.stringify(failed.slice(0, 3))}`);
}

/** Whether the gateway holds every revision of the local database (one `_revs_diff`). */
async function gatewayHoldsAll(db, remote) {
  const rows = (await db.allDocs()).rows;
  const diff = {};
  for (const row of rows) diff[row.id] = [row.value.rev];
  try {
    return Object.keys(await remote.revsDiff(diff)).length === 0;
  } catch (err) {
    return false; // the gateway is down right now: ask again
  }
}

/** Push live with retry until caught up and confirmed by the gateway. */
async function pushRound(db, remote, batchSize, counters) {
  const rep = db.replicate.to(remote, {
    live: true, retry: true, batch_size: batchSize, back_off_function: () => RETRY_MS,
  });
  let caughtUp = false;
  let ended = null;
  rep.on('active', () => { caughtUp = false; });
  rep.on('paused', (err) => {
    if (err) counters.push_retries += 1;
    else caughtUp = true;
  });
  rep.on('denied', (err) => counters.denied.push(String(err && (err.reason || err.message || err))));
  rep.on('error', (err) => counters.errors.push(String(err)));
  const done = new Promise((resolve) => rep.on('complete', (info) => { ended = info || {}; resolve(); }));
  const ok = await waitFor(async () => ended || (caughtUp && await gatewayHoldsAll(db, remote)),
    PUSH_ATTEMPTS, 100);
  if (ended) throw new Error(`the live push stopped by itself: ${JSON.stringify(counters.errors)}`);
  rep.cancel();
  await done;
  if (!ok) throw new Error(`the push did not complete within ${PUSH_ATTEMPTS / 10} s`);
}

main(async () => {
  const [indexArg, docCountArg, roundsArg, sharedArg, batchArg, barrierFile] = process.argv.slice(2);
  const index = Number(indexArg);
  const docCount = Number(docCountArg);
  const rounds = Number(roundsArg);
  const sharedCount = Number(sharedArg);
  const batchSize = Number(batchArg);
  if (!Number.isInteger(index) || !docCount || !rounds || !batchSize || !barrierFile) {
    throw new Error('usage: crash_client.js INDEX DOC_COUNT ROUNDS SHARED_COUNT BATCH_SIZE BARRIER_FILE');
  }
  const counters = {
    bulk_docs_sent: 0, bulk_docs_cut: 0, responses_5xx: [], push_retries: 0, denied: [], errors: [],
  };
  const db = local(`crash-client-${index}`);
  const remote = server(counters, `${barrierFile}.sent-${index}`);
  for (let round = 0; round < rounds; round++) {
    await writeRound(db, index, docCount, rounds, sharedCount, round);
    await pushRound(db, remote, batchSize, counters);
  }
  emit({phase: 'pushed', index, ...counters});

  const barrier = await waitFor(() => fs.existsSync(barrierFile), 1800, 100);
  if (!barrier) throw new Error(`the barrier file ${barrierFile} did not appear within 180 s`);
  let pulled = null;
  for (let attempt = 1; attempt <= PULL_ATTEMPTS && !pulled; attempt++) {
    try {
      pulled = await db.replicate.from(remote, {batch_size: batchSize});
    } catch (err) {
      counters.errors.push(`pull attempt ${attempt}: ${String(err)}`);
      await sleep(RETRY_MS);
    }
  }
  if (!pulled) throw new Error(`the pull failed ${PULL_ATTEMPTS} times`);
  return {index, ...counters, pull_ok: pulled.ok, pull_failures: pulled.doc_write_failures,
          dump: await dump(db)};
});
