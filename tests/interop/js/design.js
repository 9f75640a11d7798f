'use strict';
// A _design/ document replicates like any other document.
const {local, remote, stats, getOrNull, main} = require('./common');

const DDOC = {
  _id: '_design/app',
  language: 'javascript',
  views: {
    by_type: {map: 'function (doc) { if (doc.type) { emit(doc.type, null); } }'},
    count: {map: 'function (doc) { emit(doc._id, 1); }', reduce: '_count'},
  },
  validate_doc_update: 'function (newDoc, oldDoc, userCtx) { }',
  filters: {mine: 'function (doc, req) { return true; }'},
  options: {local_seq: false},
};

main(async () => {
  const a = local();
  const b = local();
  const gateway = remote();
  await a.put(DDOC);
  await a.put({_id: 'plain', type: 'inspection'});
  const push1 = await a.replicate.to(gateway);
  const pull1 = await b.replicate.from(gateway);
  const onB = await getOrNull(b, '_design/app');

  // An update to the design doc on B goes back through the gateway to A.
  const edited = await b.put({...onB, views: {...onB.views, extra: {map: 'function (doc) {}'}}});
  const push2 = await b.replicate.to(gateway);
  const pull2 = await a.replicate.from(gateway);
  const onA = await getOrNull(a, '_design/app');
  return {
    push1: stats(push1),
    pull1: stats(pull1),
    push2: stats(push2),
    pull2: stats(pull2),
    original: (await a.get('_design/app', {rev: onB._rev})),
    on_b: onB,
    edited_rev: edited.rev,
    on_a: onA,
  };
});
