'use strict';
// Bidirectional sync between two replicas via the gateway, with seeded random edits on both
// sides (including edits of the same documents), converges to identical replicas.
// argv: seed
const {local, remote, stats, dump, sha256, main} = require('./common');

function rng(seed) {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

async function randomEdits(db, rand, tag, n) {
  const ops = [];
  for (let k = 0; k < n; k++) {
    const ids = (await db.allDocs()).rows.map((row) => row.id);
    const r = rand();
    if (r < 0.2 || ids.length === 0) {
      const id = `${tag}-new-${k}`;
      await db.put({_id: id, v: 0, tag});
      ops.push(['create', id]);
    } else if (r < 0.3) {
      const id = ids[Math.floor(rand() * ids.length)];
      await db.remove(await db.get(id));
      ops.push(['delete', id]);
    } else {
      const id = ids[Math.floor(rand() * ids.length)];
      const doc = await db.get(id);
      doc.v = (doc.v || 0) + 1;
      doc[`edited_by_${tag}`] = k;
      await db.put(doc);
      ops.push(['update', id]);
    }
  }
  return ops;
}

main(async () => {
  const rand = rng(Number(process.argv[2] || 42));
  const a = local();
  const b = local();
  const gateway = remote();
  const seed = [];
  for (let i = 0; i < 20; i++) seed.push({_id: `s${String(i).padStart(2, '0')}`, v: 0});
  await a.bulkDocs(seed);
  const rounds = [];
  rounds.push(await a.sync(gateway));
  rounds.push(await b.sync(gateway));

  // Both sides edit concurrently (overlapping ids make conflicts).
  const opsA = await randomEdits(a, rand, 'A', 25);
  const opsB = await randomEdits(b, rand, 'B', 25);
  for (let round = 0; round < 2; round++) {
    rounds.push(await a.sync(gateway));
    rounds.push(await b.sync(gateway));
  }
  rounds.push(await a.sync(gateway));

  // A second wave of edits on one side only, after the sides have converged.
  const opsA2 = await randomEdits(a, rand, 'A2', 10);
  rounds.push(await a.sync(gateway));
  rounds.push(await b.sync(gateway));

  const dumpA = await dump(a);
  const dumpB = await dump(b);
  const summary = (r) => ({push: stats(r.push), pull: stats(r.pull)});
  return {
    ops: {a: opsA, b: opsB, a2: opsA2},
    rounds: rounds.map(summary),
    a: dumpA,
    b: dumpB,
    a_digest: sha256(dumpA),
    b_digest: sha256(dumpB),
  };
});
