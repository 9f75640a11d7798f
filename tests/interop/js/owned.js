'use strict';
// One inspector (or manager) syncs with an `owned` database: push argv[3] documents with
// ids prefixed argv[2] (none when 0), then pull everything visible into a fresh replica.
// Auth: Bearer when GATEWAY_TOKEN is set (PouchDB's `fetch` option adds the header), else
// HTTP Basic as GATEWAY_USER.
const PouchDB = require('pouchdb').plugin(require('pouchdb-adapter-memory'));
const {local, remote, stats, dump, main} = require('./common');

function gatewayDb() {
  const token = process.env.GATEWAY_TOKEN;
  if (!token) return remote();
  return new PouchDB(process.env.GATEWAY_DB_URL, {
    fetch: (url, options) => {
      options.headers.set('Authorization', `Bearer ${token}`);
      return PouchDB.fetch(url, options);
    },
  });
}

main(async () => {
  const prefix = process.argv[2];
  const n = Number(process.argv[3] || 0);
  const mine = local();
  const docs = Array.from({length: n}, (_, i) => ({_id: `${prefix}-${i}`, n: i, by: prefix}));
  if (docs.length) await mine.bulkDocs(docs);
  const push = await mine.replicate.to(gatewayDb());
  const replica = local();
  const pull = await replica.replicate.from(gatewayDb());
  // a second sync of the first replica must not bring anybody else's documents either
  const again = await mine.replicate.from(gatewayDb());
  return {
    push: stats(push),
    pull: stats(pull),
    again: stats(again),
    replica_ids: (await dump(replica)).map((row) => row.id),
    mine_ids: (await dump(mine)).map((row) => row.id),
  };
});
