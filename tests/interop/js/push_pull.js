'use strict';
// Push N generated documents from one replica to the gateway, pull them into a second one.
// argv: N
const {local, remote, stats, sha256, dump, main} = require('./common');

function makeDoc(i) {
  return {
    _id: 'doc' + String(i).padStart(5, '0'),
    n: i,
    text: 'x'.repeat(100),
    nested: {even: i % 2 === 0, list: [i, i * 2, String(i)], unicode: 'Grüße ☃ ' + i},
    nothing: null,
  };
}

main(async () => {
  const n = Number(process.argv[2] || 1000);
  const a = local();
  const b = local();
  const gateway = remote();
  const docs = [];
  for (let i = 0; i < n; i++) docs.push(makeDoc(i));
  const written = await a.bulkDocs(docs);
  if (written.some((r) => r.error)) throw new Error('local bulkDocs failed');

  const push = await a.replicate.to(gateway);
  const pull = await b.replicate.from(gateway);

  const dumpA = await dump(a);
  const dumpB = await dump(b);
  return {
    push: stats(push),
    pull: stats(pull),
    a_count: dumpA.length,
    b_count: dumpB.length,
    a_digest: sha256(dumpA),
    b_digest: sha256(dumpB),
    identical: JSON.stringify(dumpA) === JSON.stringify(dumpB),
    revs: Object.fromEntries(dumpB.map((row) => [row.id, row.rev])),
    b_docs: dumpB.map((row) => row.doc),
  };
});
