'use strict';
// Attachments round-trip A -> gateway -> B with identical bytes; a later edit of the document
// (attachments kept as stubs) replicates without losing them.
// env: ATT_TEXT (utf-8 text), ATT_BIN_B64 (binary, base64)
const crypto = require('crypto');
const {local, remote, stats, main} = require('./common');

const md5 = (buf) => 'md5-' + crypto.createHash('md5').update(buf).digest('base64');

async function attachmentsOf(db, id) {
  const doc = await db.get(id, {attachments: true, binary: true});
  const out = {};
  for (const [name, att] of Object.entries(doc._attachments || {})) {
    out[name] = {
      content_type: att.content_type,
      digest: att.digest,
      b64: Buffer.from(att.data).toString('base64'),
      md5: md5(Buffer.from(att.data)),
    };
  }
  return out;
}

main(async () => {
  const text = Buffer.from(process.env.ATT_TEXT, 'utf8');
  const bin = Buffer.from(process.env.ATT_BIN_B64, 'base64');
  const a = local();
  const b = local();
  const gateway = remote();

  await a.put({
    _id: 'withatt',
    title: 'has attachments',
    _attachments: {
      'note.txt': {content_type: 'text/plain', data: text},
      'blob.bin': {content_type: 'application/octet-stream', data: bin},
    },
  });
  const push1 = await a.replicate.to(gateway);
  const pull1 = await b.replicate.from(gateway);
  const aAtts = await attachmentsOf(a, 'withatt');
  const bAtts1 = await attachmentsOf(b, 'withatt');
  const bNote = await b.getAttachment('withatt', 'note.txt');

  // Edit the document without touching its attachments: they stay as stubs.
  const doc = await a.get('withatt');
  const stubsSent = doc._attachments;
  doc.title = 'edited after the attachment';
  const edit = await a.put(doc);
  const push2 = await a.replicate.to(gateway);
  const pull2 = await b.replicate.from(gateway);
  const bDoc2 = await b.get('withatt');
  const bAtts2 = await attachmentsOf(b, 'withatt');

  return {
    push1: stats(push1),
    pull1: stats(pull1),
    push2: stats(push2),
    pull2: stats(pull2),
    a: aAtts,
    b1: bAtts1,
    b_note_b64: Buffer.from(bNote).toString('base64'),
    stubs_sent: stubsSent,
    edit_rev: edit.rev,
    b_doc2: bDoc2,
    b2: bAtts2,
  };
});
