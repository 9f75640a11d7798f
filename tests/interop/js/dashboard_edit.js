'use strict';
// A field device's session, for the dashboard test: push a report and a scratch document,
// edit the report and delete the scratch document (a tombstone), push again, then pull
// everything into a fresh replica (which leaves a pull checkpoint in the gateway's registry).
const {local, remote, stats, main} = require('./common');

main(async () => {
  const device = local();
  const gateway = remote();
  const created = await device.bulkDocs([
    {_id: 'site-report', status: 'draft', site: 'North yard'},
    {_id: 'scratch', note: 'temporary'},
  ]);
  if (created.some((r) => r.error)) throw new Error('local bulkDocs failed');
  const firstPush = await device.replicate.to(gateway);

  const report = await device.get('site-report');
  const edited = await device.put({...report, status: 'submitted'});
  const removed = await device.remove(await device.get('scratch'));
  const secondPush = await device.replicate.to(gateway);

  const replica = local();
  const pull = await replica.replicate.from(gateway);
  const pulled = await replica.allDocs();
  return {
    report_rev: edited.rev,
    scratch_rev: removed.rev,
    push: [stats(firstPush), stats(secondPush)],
    pull: stats(pull),
    pulled: pulled.rows.map((row) => row.id),
  };
});
