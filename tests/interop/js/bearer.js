'use strict';
// Replicate with a Bearer access token instead of Basic credentials: PouchDB's `fetch`
// option adds the header (how apps pass tokens).  argv: N.  env: GATEWAY_TOKEN.
const PouchDB = require('pouchdb').plugin(require('pouchdb-adapter-memory'));
const {local, stats, dump, main} = require('./common');

main(async () => {
  const n = Number(process.argv[2] || 20);
  const token = process.env.GATEWAY_TOKEN;
  const statuses = [];
  const gateway = new PouchDB(process.env.GATEWAY_DB_URL, {
    fetch: async (url, options) => {
      options.headers.set('Authorization', `Bearer ${token}`);
      const response = await PouchDB.fetch(url, options);
      statuses.push(response.status);
      return response;
    },
  });
  const a = local();
  const docs = [];
  for (let i = 0; i < n; i++) docs.push({_id: `bearer-${i}`, n: i});
  await a.bulkDocs(docs);
  const push = await a.replicate.to(gateway);
  const b = local();
  const pull = await b.replicate.from(gateway);
  return {push: stats(push), pull: stats(pull), ids: (await dump(b)).map((r) => r.id), statuses};
});
