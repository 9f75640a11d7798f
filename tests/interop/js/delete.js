'use strict';
// A deletion on one replica travels as a tombstone through the gateway to the other.
const {local, remote, stats, getOrNull, main} = require('./common');

main(async () => {
  const a = local();
  const b = local();
  const gateway = remote();
  await a.bulkDocs([{_id: 'keep', v: 1}, {_id: 'doomed', v: 1}]);
  const push1 = await a.replicate.to(gateway);
  const pull1 = await b.replicate.from(gateway);
  const beforeB = await getOrNull(b, 'doomed');

  const doomed = await a.get('doomed');
  const removed = await a.remove(doomed);
  const push2 = await a.replicate.to(gateway);
  const pull2 = await b.replicate.from(gateway);

  let afterStatus = 200;
  try {
    await b.get('doomed');
  } catch (err) {
    afterStatus = err.status;
  }
  // The tombstone itself is on B: the deleted revision can be read by rev.
  const tombstone = await getOrNull(b, 'doomed', {rev: removed.rev});
  const all = await b.allDocs();
  return {
    push1: stats(push1),
    pull1: stats(pull1),
    push2: stats(push2),
    pull2: stats(pull2),
    before_b: beforeB,
    deleted_rev: removed.rev,
    after_status: afterStatus,
    tombstone,
    b_ids: all.rows.map((row) => row.id),
  };
});
