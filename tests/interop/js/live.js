'use strict';
// Continuous pull: prints {"ready": true} once caught up, then waits (bounded polling) for the
// document named in argv[2] (written by the test through the gateway's HTTP API), then writes
// a second document through another remote handle and waits for that one too.
const {local, remote, emit, waitFor, getOrNull, main} = require('./common');

main(async () => {
  const expectedId = process.argv[2];
  const b = local();
  const events = [];
  let pausedOnce;
  const caughtUp = new Promise((resolve) => { pausedOnce = resolve; });
  const rep = b.replicate.from(remote(), {live: true, retry: true});
  rep.on('paused', (err) => { events.push(err ? 'paused-error' : 'paused'); if (!err) pausedOnce(); });
  rep.on('active', () => events.push('active'));
  rep.on('error', (err) => events.push('error:' + String(err)));
  const completed = new Promise((resolve) => rep.on('complete', resolve));
  await caughtUp;
  const initial = (await b.allDocs()).rows.map((row) => row.id);
  emit({ready: true, initial});

  const fromHttp = await waitFor(() => getOrNull(b, expectedId));

  const writer = remote();
  const put = await writer.put({_id: 'from-pouch-writer', source: 'second remote handle'});
  const fromWriter = await waitFor(() => getOrNull(b, 'from-pouch-writer'));

  rep.cancel();
  const complete = await completed;
  return {
    from_http: fromHttp,
    from_writer: fromWriter,
    writer_rev: put.rev,
    complete_status: complete && complete.status,
    errors: events.filter((e) => e.startsWith('error')),
  };
});
