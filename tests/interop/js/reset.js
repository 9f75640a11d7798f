'use strict';
// Pull as GATEWAY_USER, report the checkpoint, wait until an operator resets it on the
// gateway ("delete", or "rewind N"), then pull again with the same local database.
const {local, remote, stats, emit, waitFor, getOrNull, main, localIds, changesSince} = require('./common');

main(async () => {
  const mode = process.argv[2];
  const toSeq = Number(process.argv[3] || 0);
  const db = local();
  const log1 = [];
  const pull1 = await db.replicate.from(remote({log: log1}));
  const id = '_local/' + localIds(log1)[0];
  const gateway = remote();
  const before = await gateway.get(id);
  emit({phase: 'pulled', id, last_seq: before.last_seq});
  const reset = await waitFor(async () => {
    const doc = await getOrNull(gateway, id);
    if (mode === 'delete') return doc === null;
    return doc !== null && Number(doc.last_seq) <= toSeq;
  });
  if (!reset) throw new Error('the checkpoint was never reset');
  const log2 = [];
  const pull2 = await db.replicate.from(remote({log: log2}));
  const after = await gateway.get(id);
  const rows = (await db.allDocs({include_docs: true})).rows;
  return {
    pull1: stats(pull1),
    pull2: stats(pull2),
    pull2_since: changesSince(log2),
    last_seq_after: after.last_seq,
    docs: rows.map((row) => ({id: row.id, rev: row.value.rev, n: row.doc.n})),
  };
});
