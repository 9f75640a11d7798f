'use strict';
// A field device that keeps working while a dependency of the gateway fails
// (tests/reliability/test_dependency_faults.py): it writes a document every WRITE_EVERY_MS
// into its local database, pushes live (with retry) through the gateway at GATEWAY_DB_URL and
// pulls live (with retry) through the instance at argv[2], retrying every RETRY_MS whatever
// the gateway answers (a 503 while PostgreSQL is down).
//
// argv: pullUrl, idPrefix, stopFile, expectedFile
// 1. Prints {"phase": "live"} once both replications are started, then writes until stopFile
//    exists.
// 2. Prints {"phase": "stopped", "written": {id: rev}} and waits (bounded) until the gateway
//    holds every document it wrote, at the revision it wrote.
// 3. Waits (bounded) for expectedFile (a JSON object {id: rev} of everything acknowledged to
//    any client) and until its local replica holds each of those at that revision.
// The result: what it wrote, what it received, and how often each replication failed.
const fs = require('fs');
const {local, remote, emit, sleep, waitFor, main} = require('../../interop/js/common');

const WRITE_EVERY_MS = 40;
const RETRY_MS = 300;

function live(rep, counters, name) {
  rep.on('paused', (err) => { if (err) counters[name + '_failures'] += 1; });
  rep.on('error', (err) => counters.errors.push(`${name}: ${String(err)}`));
  return new Promise((resolve) => rep.on('complete', resolve));
}

main(async () => {
  const [pullUrl, prefix, stopFile, expectedFile] = process.argv.slice(2);
  if (!pullUrl || !prefix || !stopFile || !expectedFile) {
    throw new Error('usage: outage_client.js PULL_URL ID_PREFIX STOP_FILE EXPECTED_FILE');
  }
  const db = local();
  const counters = {push_failures: 0, pull_failures: 0, errors: []};
  const options = {live: true, retry: true, back_off_function: () => RETRY_MS};
  const push = db.replicate.to(remote(), options);
  const pull = db.replicate.from(remote({url: pullUrl}), options);
  const pushDone = live(push, counters, 'push');
  const pullDone = live(pull, counters, 'pull');
  emit({phase: 'live'});

  const written = {};
  for (let n = 0; !fs.existsSync(stopFile); n++) {
    const id = `${prefix}-${n}`;
    written[id] = (await db.put({_id: id, device: prefix, n})).rev;
    await sleep(WRITE_EVERY_MS);
  }
  emit({phase: 'stopped', written});

  const server = remote();
  const ids = Object.keys(written);
  const pushed = await waitFor(async () => {
    try {
      const res = await server.allDocs({keys: ids});
      return res.rows.every((row) => row.value && row.value.rev === written[row.key]);
    } catch (err) {
      return false;  // the gateway may still answer 503 for a moment: ask again
    }
  }, 600, 100);
  if (!pushed) throw new Error('the live push did not deliver every local write within 60 s');

  const expectedText = await waitFor(
    () => fs.existsSync(expectedFile) && fs.readFileSync(expectedFile, 'utf8'), 600, 100);
  if (!expectedText) throw new Error(`${expectedFile} did not appear within 60 s`);
  const expected = JSON.parse(expectedText);
  const wanted = Object.keys(expected);
  const pulled = await waitFor(async () => {
    const res = await db.allDocs({keys: wanted});
    return res.rows.every((row) => row.value && row.value.rev === expected[row.key]);
  }, 600, 100);
  const missing = [];
  if (!pulled) {
    const res = await db.allDocs({keys: wanted});
    for (const row of res.rows) {
      if (!(row.value && row.value.rev === expected[row.key])) missing.push(row.key);
    }
  }
  push.cancel();
  pull.cancel();
  await Promise.all([pushDone, pullDone]);
  return {written, missing, ...counters};
});
