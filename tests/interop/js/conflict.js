'use strict';
// Two replicas edit the same document differently, both push, then both pull.
const {local, remote, stats, getOrNull, main} = require('./common');

main(async () => {
  const a = local();
  const b = local();
  const gateway = remote();
  await a.put({_id: 'shared', title: 'original', by: 'nobody'});
  const seed = await a.replicate.to(gateway);
  const seedPull = await b.replicate.from(gateway);

  const docA = await a.get('shared');
  await a.put({...docA, title: 'edited on A', by: 'A', onlyA: true});
  const docB = await b.get('shared');
  await b.put({...docB, title: 'edited on B', by: 'B', onlyB: [1, 2, 3]});

  const pushA = await a.replicate.to(gateway);
  const pushB = await b.replicate.to(gateway);
  const pullA = await a.replicate.from(gateway);
  const pullB = await b.replicate.from(gateway);

  async function view(db) {
    const winner = await db.get('shared', {conflicts: true});
    const branches = {};
    for (const rev of [winner._rev, ...(winner._conflicts || [])]) {
      branches[rev] = await getOrNull(db, 'shared', {rev});
    }
    return {winner, branches};
  }
  return {
    seed: stats(seed),
    seed_pull: stats(seedPull),
    push_a: stats(pushA),
    push_b: stats(pushB),
    pull_a: stats(pullA),
    pull_b: stats(pullB),
    a: await view(a),
    b: await view(b),
  };
});
