'use strict';
// PouchDB and the REST API on one inspection: pull what REST wrote, edit it locally, push.
// argv: the inspection id.
const {local, remote, stats, emit, main} = require('./common');

main(async () => {
  const id = process.argv[2];
  const db = local();
  const gateway = remote();
  const pull = await db.replicate.from(gateway);
  const pulled = await db.get(id);
  emit({pull: stats(pull), doc: pulled});
  await db.put({...pulled, title: 'edited offline', status: 'submitted'});
  const push = await db.replicate.to(gateway);
  return {push: stats(push), doc: await db.get(id)};
});
