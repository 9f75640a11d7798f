'use strict';
// Replicate twice in each direction: the second run resumes from the checkpoint.
const {local, remote, stats, main, localIds, changesSince} = require('./common');

main(async () => {
  const n = Number(process.argv[2] || 50);
  const a = local();
  const b = local();
  const docs = [];
  for (let i = 0; i < n; i++) docs.push({_id: `cp${String(i).padStart(3, '0')}`, i});
  await a.bulkDocs(docs);

  const push1Log = [];
  const push1 = await a.replicate.to(remote({log: push1Log}));
  const push2Log = [];
  const push2 = await a.replicate.to(remote({log: push2Log}));

  const pull1Log = [];
  const pull1 = await b.replicate.from(remote({log: pull1Log}));
  const pull2Log = [];
  const pull2 = await b.replicate.from(remote({log: pull2Log}));

  // PouchDB's replication ids are base64 (with "+" -> "_"), so 1 in 64 starts with "_":
  // write and read one such checkpoint the way PouchDB's Checkpointer does.
  const gateway = remote();
  const underscoreId = '_local/_qeEqLVmaO54VsU1aNQQGg==';
  const underscorePut = await gateway.put({_id: underscoreId, last_seq: 7, session_id: 's'});
  const underscoreGet = await gateway.get(underscoreId);

  const pullIds = localIds(pull1Log);
  const localCheckpoint = pullIds.length ? await b.get('_local/' + pullIds[0]) : null;
  return {
    push1: stats(push1),
    push2: stats(push2),
    pull1: stats(pull1),
    pull2: stats(pull2),
    push_local_ids: localIds(push1Log),
    pull_local_ids: pullIds,
    push2_local_ids: localIds(push2Log),
    pull2_changes_since: changesSince(pull2Log),
    pull2_requests: pull2Log,
    local_checkpoint: localCheckpoint,
    underscore_put: underscorePut,
    underscore_get: underscoreGet,
  };
});
