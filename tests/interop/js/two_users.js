'use strict';
// One local database pushes to the gateway as GATEWAY_USER, then (more documents) as the
// user in argv[2]: same source, same target URL, hence the same replication id for both.
const {local, remote, stats, PASSWORD, main, localIds} = require('./common');

async function pushAs(db, user) {
  const log = [];
  const gateway = remote({user, password: PASSWORD, log});
  const result = await db.replicate.to(gateway);
  const ids = localIds(log);
  const checkpoint = ids.length ? await gateway.get('_local/' + ids[0]) : null;
  const revsDiffIds = log.filter((r) => r.revs_diff_ids).map((r) => r.revs_diff_ids).flat();
  const checkpointReads = log.filter((r) => r.method === 'GET' && r.url.includes('/_local/'));
  return {
    push: stats(result),
    local_ids: ids,
    checkpoint,
    revs_diff_ids: revsDiffIds.sort(),
    first_checkpoint_read_status: checkpointReads.length ? checkpointReads[0].status : null,
  };
}

main(async () => {
  const second = process.argv[2];
  const db = local();
  const docs = (prefix, n) => Array.from({length: n}, (_, i) => ({_id: `${prefix}${i}`, i}));
  await db.bulkDocs(docs('first-', 10));
  const first = await pushAs(db, process.env.GATEWAY_USER);
  await db.bulkDocs(docs('second-', 5));
  const other = await pushAs(db, second);
  return {first, second: other};
});
