// The benchmark's documents, shared by replicate.js (PouchDB clients) and replay.js (protocol
// replay clients): deterministic ~doc_bytes JSON objects, id `<prefix><i, 6 digits>`, a few
// scalar fields, three tags and a text of words, no attachments.
'use strict';

const WORDS = (
  'alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike ' +
  'november oscar papa quebec romeo sierra tango uniform victor whiskey xray yankee zulu'
).split(' ');

function makeDoc(i, prefix, docBytes) {
  let seed = (i * 2654435761) >>> 0;
  const rnd = () => {
    seed = (seed * 1664525 + 1013904223) >>> 0;
    return seed;
  };
  const doc = {
    _id: prefix + String(i).padStart(6, '0'),
    type: 'bench',
    n: i,
    owner: `user-${i % 97}`,
    created_at: new Date(1700000000000 + i * 1000).toISOString(),
    tags: [WORDS[rnd() % 26], WORDS[rnd() % 26], WORDS[rnd() % 26]],
    score: (rnd() % 100000) / 100,
    text: '',
  };
  const base = JSON.stringify(doc).length;
  const words = [];
  let len = 0;
  while (base + len < docBytes) {
    const w = WORDS[rnd() % 26];
    words.push(w);
    len += w.length + 1;
  }
  doc.text = words.join(' ').slice(0, Math.max(0, docBytes - base));
  return doc;
}

module.exports = { WORDS, makeDoc };
