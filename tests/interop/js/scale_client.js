'use strict';
// One of many PouchDB clients replicating through several gateway instances at once
// (tests/interop/test_scale_out.py).
//
// argv: index, url0, url1, url2 (each instance's database URL), docCount, rounds, barrierFile
//
// Every round the client writes its own documents `c{index}-{n}` (all created in round 0;
// round r > 0 updates those with n % rounds === r), edits the shared documents every client
// edits (concurrent edits from different bases: conflicts), pushes through one instance and
// pulls through another (rotated per round, so pushes and pulls cross instances).  A "live" client (index % 10 === 0) keeps a
// live pull open on one instance for the whole run instead of its one-shot pulls, and pushes
// through the other instances only: what it receives from others was written elsewhere.
//
// Once its rounds are done it prints {"phase": "pushed", ...} and waits (bounded) for
// `barrierFile` to appear (the test creates it when every client has pushed).  Then a live
// client waits until its replica matches its live instance (winners and conflicts) and cancels
// the live pull; every client does a final one-shot pull and prints its whole replica.
const fs = require('fs');
const {local, remote, stats, dump, emit, waitFor, getOrNull, main} = require('./common');

const SHARED_IDS = ['shared-0', 'shared-1', 'shared-2'];

/** Comparable state of a replica: [id, winning rev, sorted conflicts] in id order. */
function state(rows) {
  return rows
    .map((row) => [row.id, row.rev, [...((row.doc && row.doc._conflicts) || [])].sort()])
    .sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
}

function sameState(a, b) {
  return JSON.stringify(state(a)) === JSON.stringify(state(b));
}

function ownId(index, n) {
  return `c${index}-${n}`;
}

/** Round 0 creates this client's own documents; round r > 0 updates those with
 * n % rounds === r (so the last body of document n says round n % rounds).  One bulkDocs. */
async function writeOwn(db, index, docCount, round, rounds) {
  const ns = [];
  for (let n = 0; n < docCount; n++) if (round === 0 || n % rounds === round) ns.push(n);
  const ids = ns.map((n) => ownId(index, n));
  const existing = await db.allDocs({keys: ids});
  const docs = ids.map((id, k) => {
    const row = existing.rows[k];
    const n = ns[k];
    const doc = {_id: id, owner: index, n, round, text: `client ${index} doc ${n} round ${round}`};
    if (row && row.value && !row.value.deleted) doc._rev = row.value.rev;
    return doc;
  });
  const results = await db.bulkDocs(docs);
  const failed = results.filter((r) => r.error);
  if (failed.length) throw new Error(`own writes failed: ${JSON.stringify(failed)}`);
}

/** Edit every shared document on top of this replica's current winner (retrying when a
 * replicated revision extended it meanwhile). */
async function editShared(db, index, round) {
  for (const id of SHARED_IDS) {
    let done = false;
    for (let attempt = 0; attempt < 20 && !done; attempt++) {
      const current = (await getOrNull(db, id)) || {_id: id, edits: {}};
      const doc = {...current, last_editor: index, round};
      doc.edits = {...(current.edits || {}), [`c${index}`]: round};
      try {
        await db.put(doc);
        done = true;
      } catch (err) {
        if (err.status !== 409) throw err;
      }
    }
    if (!done) throw new Error(`could not edit ${id} after 20 attempts`);
  }
}

main(async () => {
  const [indexArg, url0, url1, url2, docCountArg, roundsArg, barrierFile] = process.argv.slice(2);
  const index = Number(indexArg);
  const urls = [url0, url1, url2];
  const docCount = Number(docCountArg);
  const rounds = Number(roundsArg);
  if (!Number.isInteger(index) || urls.some((u) => !u) || !docCount || !rounds || !barrierFile) {
    throw new Error('usage: scale_client.js INDEX URL0 URL1 URL2 DOC_COUNT ROUNDS BARRIER_FILE');
  }
  const isLive = index % 10 === 0;
  const liveInstance = index % urls.length;
  const db = local(`scale-client-${index}`);
  const report = {index, live: isLive, rounds: []};

  let live = null;
  let liveDone = null;
  const liveStats = {changes: 0, docs_written: 0, errors: []};
  if (isLive) {
    let caughtUpOnce;
    const caughtUp = new Promise((resolve) => { caughtUpOnce = resolve; });
    live = db.replicate.from(remote({url: urls[liveInstance]}), {live: true, retry: true});
    live.on('change', (info) => {
      liveStats.changes += 1;
      liveStats.docs_written = info.docs_written;
    });
    live.on('paused', (err) => { if (!err) caughtUpOnce(); });
    live.on('error', (err) => liveStats.errors.push(String(err)));
    liveDone = new Promise((resolve) => live.on('complete', resolve));
    await caughtUp;
  }

  for (let round = 0; round < rounds; round++) {
    const pushVia = isLive
      ? (liveInstance + 1 + (round % 2)) % urls.length
      : (index + round) % urls.length;
    const pullVia = (pushVia + 1) % urls.length;
    const entry = {round, push_via: pushVia};
    let t = Date.now();
    await writeOwn(db, index, docCount, round, rounds);
    await editShared(db, index, round);
    entry.write_ms = Date.now() - t;
    t = Date.now();
    entry.push = stats(await db.replicate.to(remote({url: urls[pushVia]})));
    entry.push_ms = Date.now() - t;
    if (!isLive) {
      entry.pull_via = pullVia;
      t = Date.now();
      entry.pull = stats(await db.replicate.from(remote({url: urls[pullVia]})));
      entry.pull_ms = Date.now() - t;
    }
    report.rounds.push(entry);
  }
  emit({phase: 'pushed', index});

  const barrier = await waitFor(() => fs.existsSync(barrierFile), 3600, 50);
  if (!barrier) throw new Error(`the barrier file ${barrierFile} did not appear within 180 s`);

  let t0 = Date.now();
  if (isLive) {
    const liveRemote = remote({url: urls[liveInstance]});
    const matched = await waitFor(
      async () => sameState(await dump(db), await dump(liveRemote)), 300, 200);
    if (!matched) {
      throw new Error(`the live pull from instance ${liveInstance} did not catch up within 60 s`);
    }
    live.cancel();
    const complete = await liveDone;
    report.live_result = {
      instance: liveInstance,
      caught_up: true,
      status: complete && complete.status,
      changes: liveStats.changes,
      docs_written: liveStats.docs_written,
      errors: liveStats.errors,
      catch_up_ms: Date.now() - t0,
    };
  }
  t0 = Date.now();

  const finalVia = isLive ? (liveInstance + 2) % urls.length : (index + rounds) % urls.length;
  report.final_pull_via = finalVia;
  report.final_pull = stats(await db.replicate.from(remote({url: urls[finalVia]})));
  report.final_pull_ms = Date.now() - t0;
  report.dump = await dump(db);
  return report;
});
