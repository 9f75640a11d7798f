'use strict';
// A replica pulls, goes offline while the test deletes documents (and purges tombstones,
// or resets this replica's checkpoint), then pulls again when the document `signal-N`
// appears.  argv: the number of rounds.  Each round prints the replica's live ids, the
// `since` of its pull, and the pull's error if it was refused.
const {local, remote, stats, emit, waitFor, getOrNull, main, changesSince} = require('./common');

async function pull(db) {
  const log = [];
  try {
    const result = await db.replicate.from(remote({log}));
    return {ok: true, stats: stats(result), since: changesSince(log)};
  } catch (err) {
    return {ok: false, status: err.status, error: err.name || err.error, reason: err.reason || err.message,
            since: changesSince(log)};
  }
}

main(async () => {
  const rounds = Number(process.argv[2] || 1);
  const replica = local();
  const watcher = remote();
  const ids = async () => (await replica.allDocs()).rows.map((r) => r.id).filter((id) => !id.startsWith('signal-'));
  const first = await pull(replica);
  emit({round: 0, pull: first, ids: await ids()});
  const out = [];
  for (let round = 1; round <= rounds; round++) {
    const seen = await waitFor(() => getOrNull(watcher, `signal-${round}`));
    if (!seen) throw new Error(`signal-${round} never came`);
    const result = await pull(replica);
    const line = {round, pull: result, ids: await ids()};
    out.push(line);
    if (round < rounds) emit(line);
  }
  return out[out.length - 1];
});
