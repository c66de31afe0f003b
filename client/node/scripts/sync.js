'use strict';
// Copies the two files this package ships from the usher repository, so that it
// works installed on its own: proto/usher/v1/usher.proto (the API's one source)
// and examples/reasons.json (internal/reasons' JSON form, the one reason table).
// test/sources.test.js fails when a copy differs from its source: run
// `npm run sync` after changing either.
const fs = require('node:fs');
const path = require('node:path');

const here = path.resolve(__dirname, '..');
const repo = path.resolve(here, '..', '..');
const copies = [
  [path.join(repo, 'proto', 'usher', 'v1', 'usher.proto'), path.join(here, 'proto', 'usher', 'v1', 'usher.proto')],
  [path.join(repo, 'examples', 'reasons.json'), path.join(here, 'reasons.json')],
];
for (const [from, to] of copies) {
  fs.mkdirSync(path.dirname(to), { recursive: true });
  fs.copyFileSync(from, to);
  console.log(`${path.relative(repo, from)} -> ${path.relative(repo, to)}`);
}
