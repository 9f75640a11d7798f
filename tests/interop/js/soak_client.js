'use strict';
// Many PouchDB replications at once in ONE Node process (tests/reliability/test_soak.py runs
// a few of these, so that 200 replications do not need 200 Node processes).
//
// argv: the path of a JSON plan:
//   {proc, password, pad_bytes, duration_ms, barrier_file,
//    slots: [{name, role, user, url (push/pull URLs are chosen from urls), db, urls: [...],
//             docs_per_round, pause_ms}]}
//
// Every slot has its own in-memory PouchDB and its own remote handles (its user's Basic
// credentials, a fetch wrapper that times `_bulk_docs` and records 5xx answers and network
// errors).  Roles:
//   pusher   writes `docs_per_round` new documents (and updates one earlier one) per round and
//            pushes them (one-shot) through the next instance; a push that succeeds
//            acknowledges the slot's own documents at their local revision (`acked`).
//   syncer   the same, then pulls (one-shot) through another instance; in an `owned`
//            database it sees the documents of its user pushed by other slots.
//   live     a live pull (`live: true, retry: true`, PouchDB's longpoll feed) that receives
//            what the others write.
// Writers stop at the deadline; the process prints {"phase": "warm"} once each writer has
// finished a round and {"phase": "stopped"} once all have stopped.  Then it waits (bounded)
// for `barrier_file`: the test writes there, per database (and per user for owned
// databases), the digest of what the server holds.  Live slots wait until their replica has
// that digest; syncers pull once more and compare.  The last line is the result.
const fs = require('fs');
const crypto = require('crypto');
const {performance} = require('perf_hooks');
const {PouchDB, local, sleep, waitFor, emit, main} = require('./common');

const CATCH_UP_ATTEMPTS = 240; // x 250 ms: a live replica must match the server within 60 s

function tallyNew() {
  return {requests: 0, bulk_docs_ms: [], server_errors: [], fetch_errors: [], closing: false};
}

/** The remote database at `url` as `user`, counted in `tally`. */
function remote(url, user, password, tally) {
  return new PouchDB(url, {
    skip_setup: true,
    auth: {username: user, password},
    fetch: async (u, opts) => {
      const method = (opts && opts.method) || 'GET';
      const bulk = method === 'POST' && /\/_bulk_docs$/.test(String(u));
      const started = performance.now();
      tally.requests += 1;
      let response;
      try {
        response = await PouchDB.fetch(u, opts);
      } catch (err) {
        if (!tally.closing) tally.fetch_errors.push(`${method} ${u}: ${err}`);
        throw err;
      }
      if (response.status >= 500) tally.server_errors.push(`${method} ${u}: ${response.status}`);
      if (bulk) tally.bulk_docs_ms.push(Math.round((performance.now() - started) * 100) / 100);
      return response;
    },
  });
}

/** {digest, count} of a replica: sha256 over "id rev\n" of its live documents, by id. */
async function digest(db) {
  const rows = (await db.allDocs()).rows.map((row) => [row.id, row.value.rev]);
  rows.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  const hash = crypto.createHash('sha256');
  for (const [id, rev] of rows) hash.update(`${id} ${rev}\n`);
  return {digest: hash.digest('hex'), count: rows.length};
}

function summary(result) {
  return {ok: result.ok, docs_written: result.docs_written,
    doc_write_failures: result.doc_write_failures, errors: (result.errors || []).map(String)};
}

/** Write this round's documents: new ones, and one earlier one updated. */
async function writeRound(db, slot, state) {
  const docs = [];
  for (let k = 0; k < slot.docs_per_round; k++) {
    docs.push({_id: `${slot.name}-${state.n}`, slot: slot.name, n: state.n, round: state.round,
      pad: state.pad});
    state.n += 1;
  }
  const earlier = state.n - slot.docs_per_round;
  if (earlier > 0) {
    const doc = await db.get(`${slot.name}-${Math.floor(Math.random() * earlier)}`);
    docs.push({...doc, round: state.round});
  }
  const failed = (await db.bulkDocs(docs)).filter((r) => r.error);
  if (failed.length) throw new Error(`${slot.name}: local writes failed ${JSON.stringify(failed)}`);
}

async function writer(slot, ctx) {
  const db = local(`${ctx.plan.proc}-${slot.name}`);
  const state = {n: 0, round: 0, pad: 'p'.repeat(ctx.plan.pad_bytes)};
  const out = {name: slot.name, role: slot.role, db: slot.db, user: slot.user, rounds: 0,
    failures: [], acked: {}};
  const urls = slot.urls;
  while (Date.now() < ctx.deadline) {
    await writeRound(db, slot, state);
    const via = (slot.index + state.round) % urls.length;
    try {
      const pushed = await db.replicate.to(remote(urls[via], slot.user, ctx.plan.password,
        ctx.tally));
      if (pushed.ok && pushed.doc_write_failures === 0 && !(pushed.errors || []).length) {
        for (const row of (await db.allDocs()).rows) {
          if (row.id.startsWith(`${slot.name}-`)) out.acked[row.id] = row.value.rev;
        }
      } else {
        out.failures.push({round: state.round, push: summary(pushed)});
      }
      if (slot.role === 'syncer') {
        const from = urls[(via + 1) % urls.length];
        const pulled = await db.replicate.from(remote(from, slot.user, ctx.plan.password,
          ctx.tally));
        if (!pulled.ok || pulled.doc_write_failures) {
          out.failures.push({round: state.round, pull: summary(pulled)});
        }
      }
    } catch (err) {
      out.failures.push({round: state.round, error: String(err)});
    }
    state.round += 1;
    out.rounds = state.round;
    if (state.round === 1) ctx.warm();
    const pause = slot.pause_ms * (0.5 + Math.random());
    await sleep(Math.max(0, Math.min(pause, ctx.deadline - Date.now())));
  }
  out.written = state.n;
  return {db, out};
}

async function finishSyncer(slot, db, out, ctx) {
  const target = ctx.barrier.digests[`${slot.db}/${slot.user}`];
  const pulled = await db.replicate.from(remote(slot.urls[slot.index % slot.urls.length],
    slot.user, ctx.plan.password, ctx.tally));
  out.final_pull = summary(pulled);
  out.replica = await digest(db);
  out.converged = Boolean(target) && out.replica.digest === target.digest;
  return out;
}

async function live(slot, ctx) {
  const db = local(`${ctx.plan.proc}-${slot.name}`);
  const url = slot.urls[slot.index % slot.urls.length];
  const out = {name: slot.name, role: slot.role, db: slot.db, user: slot.user, changes: 0,
    docs_written: 0, errors: [], instance: slot.index % slot.urls.length};
  const rep = db.replicate.from(remote(url, slot.user, ctx.plan.password, ctx.tally),
    {live: true, retry: true});
  rep.on('change', (info) => {
    out.changes += 1;
    out.docs_written = info.docs_written;
  });
  rep.on('denied', (err) => out.errors.push(`denied: ${err}`));
  rep.on('error', (err) => out.errors.push(String(err)));
  const complete = new Promise((resolve) => rep.on('complete', resolve));
  await ctx.barrierReady;
  const target = ctx.barrier.digests[slot.db];
  const started = Date.now();
  const matched = await waitFor(async () => (await digest(db)).digest === target.digest,
    CATCH_UP_ATTEMPTS, 250);
  out.catch_up_ms = Date.now() - started;
  out.caught_up = Boolean(matched);
  out.replica = await digest(db);
  return {out, rep, complete};
}

main(async () => {
  const plan = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
  const ctx = {plan, tally: tallyNew(), deadline: Date.now() + plan.duration_ms, barrier: null};
  const writers = plan.slots.filter((s) => s.role !== 'live');
  let warmCount = 0;
  ctx.warm = () => {
    warmCount += 1;
    if (warmCount === writers.length) emit({phase: 'warm', proc: plan.proc});
  };
  ctx.barrierReady = (async () => {
    // The test writes the barrier once every process has stopped writing (bounded wait).
    const found = await waitFor(() => fs.existsSync(plan.barrier_file), 1200, 250);
    if (!found) throw new Error(`no barrier file ${plan.barrier_file} within 300 s`);
    ctx.barrier = JSON.parse(fs.readFileSync(plan.barrier_file, 'utf8'));
  })();

  const lives = plan.slots.filter((s) => s.role === 'live').map((slot) => live(slot, ctx));
  const written = await Promise.all(writers.map((slot) => writer(slot, ctx)));
  emit({phase: 'stopped', proc: plan.proc});
  await ctx.barrierReady;

  const results = await Promise.all(written.map(({db, out}, i) =>
    writers[i].role === 'syncer' ? finishSyncer(writers[i], db, out, ctx) : out));
  const caught = await Promise.all(lives);
  ctx.tally.closing = true; // cancelling aborts the open longpolls: not errors
  for (const {rep} of caught) rep.cancel();
  await Promise.all(caught.map(({complete}) => complete));
  return {proc: plan.proc, slots: [...results, ...caught.map(({out}) => out)], tally: ctx.tally};
});
