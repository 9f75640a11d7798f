'use strict';
// Replicate with CouchDB's cookie auth: POST /_session once, then send the AuthSession
// cookie on every request (what a browser does by itself) instead of credentials.
const PouchDB = require('pouchdb').plugin(require('pouchdb-adapter-memory'));
const {local, stats, dump, main, USER, PASSWORD} = require('./common');

main(async () => {
  const base = new URL(process.env.GATEWAY_DB_URL);
  const login = await PouchDB.fetch(`${base.origin}/_session`, {
    method: 'POST',
    headers: {'Content-Type': 'application/json'},
    body: JSON.stringify({name: USER, password: PASSWORD}),
  });
  const setCookie = login.headers.get('set-cookie') || '';
  const cookie = setCookie.split(';')[0];
  const statuses = [];
  const gateway = new PouchDB(process.env.GATEWAY_DB_URL, {
    fetch: async (url, options) => {
      options.headers.set('Cookie', cookie);
      const response = await PouchDB.fetch(url, options);
      statuses.push(response.status);
      return response;
    },
  });
  const a = local();
  await a.bulkDocs([{_id: 'c1', v: 1}, {_id: 'c2', v: 2}]);
  const push = await a.replicate.to(gateway);
  const b = local();
  const pull = await b.replicate.from(gateway);
  return {
    login_status: login.status,
    cookie_name: cookie.split('=')[0],
    push: stats(push),
    pull: stats(pull),
    ids: (await dump(b)).map((r) => r.id),
    statuses,
  };
});
