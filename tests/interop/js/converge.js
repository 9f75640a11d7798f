'use strict';
// Two replicas edit one document offline and both push (A first, then B); once the gateway
// holds a single live revision again (a person resolved the conflict through the API, or
// the database's policy did), both pull.  Prints both replicas' documents.
const {local, remote, stats, emit, waitFor, main} = require('./common');

main(async () => {
  const gateway = remote();
  const a = local();
  const b = local();
  await a.put({_id: 'job', title: 'base', n: 1, site: 'A'});
  await a.replicate.to(gateway);
  await b.replicate.from(gateway);

  const docA = await a.get('job');
  await a.put({...docA, title: 'from-a'});
  const docB = await b.get('job');
  await b.put({...docB, n: 2, site: 'B'});
  const pushA = await a.replicate.to(gateway);
  const pushB = await b.replicate.to(gateway);
  emit({phase: 'pushed', push_a: stats(pushA), push_b: stats(pushB)});

  const single = await waitFor(async () => {
    const doc = await gateway.get('job', {conflicts: true});
    return !doc._conflicts;
  });
  if (!single) throw new Error('the conflict was never resolved on the gateway');
  const pullA = await a.replicate.from(gateway);
  const pullB = await b.replicate.from(gateway);
  const read = async (db) => db.get('job', {conflicts: true, revs_info: false});
  return {
    pull_a: stats(pullA),
    pull_b: stats(pullB),
    a: await read(a),
    b: await read(b),
    gateway: await gateway.get('job', {conflicts: true}),
  };
});
