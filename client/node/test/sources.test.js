'use strict';
// The package's copies of its two sources, and the package layout.
//
// - reasons.json must be the repository's examples/reasons.json (the JSON form
//   of internal/reasons): the reason table has one source.
// - proto/usher/v1/usher.proto must be the repository's proto: the stubs are
//   loaded from it at run time.
// `npm run sync` copies both.

const { describe, it } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const { REPO, PKG } = require('../testdata/support');
const usherLib = require('..');
const reasons = require('../lib/reasons');

const read = (...p) => fs.readFileSync(path.join(...p));

describe('copies of the repository sources', () => {
  it('reasons.json is examples/reasons.json, byte for byte (npm run sync)', () => {
    assert.ok(read(PKG, 'reasons.json').equals(read(REPO, 'examples', 'reasons.json')),
      'client/node/reasons.json differs from examples/reasons.json: run `npm run sync` in client/node');
  });

  it('proto/usher/v1/usher.proto is the repository proto, byte for byte (npm run sync)', () => {
    assert.ok(read(PKG, 'proto', 'usher', 'v1', 'usher.proto').equals(read(REPO, 'proto', 'usher', 'v1', 'usher.proto')),
      'client/node/proto/usher/v1/usher.proto differs from proto/usher/v1/usher.proto: run `npm run sync` in client/node');
  });
});

describe('the reason table', () => {
  const table = JSON.parse(read(REPO, 'examples', 'reasons.json'));
  const protoReasons = (() => {
    const def = protoLoader.loadSync('usher/v1/usher.proto', { includeDirs: [path.join(REPO, 'proto')] });
    return new Map(def['usher.v1.Reason'].type.value.map((v) => [v.name, v.number]));
  })();

  it('the interceptor\'s rules are examples/reasons.json\'s, field by field', () => {
    const want = Object.fromEntries(table.reasons.map((r) => [r.reason, {
      code: grpc.status[r.grpc_code], grpcCode: r.grpc_code, httpStatus: r.http_status, bearerError: r.bearer_error,
      cacheable: r.cacheable, retryable: r.retryable, challenge: r.challenge,
    }]));
    assert.deepEqual({ ...usherLib.REASON_RULES }, want);
    for (const [name, rule] of Object.entries(want)) assert.equal(typeof rule.code, 'number', `${name}: grpc code ${table.reasons.find((r) => r.reason === name).grpc_code}`);
    const u = table.unknown;
    assert.deepEqual({ ...usherLib.UNKNOWN_REASON_RULE }, {
      code: grpc.status[u.grpc_code], grpcCode: u.grpc_code, httpStatus: u.http_status, bearerError: u.bearer_error,
      cacheable: u.cacheable, retryable: u.retryable, challenge: u.challenge,
    });
    assert.equal(usherLib.UNKNOWN_REASON_RULE.code, grpc.status.UNAVAILABLE, 'an unknown reason fails closed');
    assert.equal(usherLib.DPOP_ALGS, table.dpop_algs);
  });

  it('names every reason of usher.proto but UNSPECIFIED, and nothing else', () => {
    const names = new Set(table.reasons.map((r) => r.reason));
    assert.equal(names.size, table.reasons.length, 'a reason listed twice');
    for (const name of names) assert.ok(protoReasons.has(name), `reasons.json names ${name}, which usher.proto does not`);
    for (const name of protoReasons.keys()) {
      if (name !== 'REASON_UNSPECIFIED') assert.ok(names.has(name), `usher.proto has ${name}, which reasons.json does not map`);
    }
  });

  it('ruleOf: VALID only for valid with REASON_VALID; contradictions and unknown reasons fail closed', () => {
    assert.equal(reasons.ruleOf({ valid: true, reason: 'REASON_VALID' }).code, grpc.status.OK);
    for (const resp of [
      { valid: true, reason: 'REASON_MALFORMED' }, { valid: false, reason: 'REASON_VALID' }, { valid: false, reason: 999 },
      { valid: true, reason: 999 }, { valid: false, reason: 'REASON_UNSPECIFIED' }, { valid: false, reason: 0 },
    ]) {
      assert.equal(reasons.ruleOf(resp), reasons.UNKNOWN, JSON.stringify(resp));
    }
    assert.equal(reasons.shortName('REASON_AUDIENCE_MISMATCH'), 'AUDIENCE_MISMATCH');
    assert.equal(reasons.shortName(999), 'REASON_999', 'as the Go interceptor names a reason it does not know');
  });
});

describe('the package layout', () => {
  const pkg = JSON.parse(read(PKG, 'package.json'));

  it('exports the entry point and its types, and ships what it loads at run time', () => {
    assert.equal(pkg.types, './index.d.ts');
    assert.deepEqual(pkg.exports['.'], { types: './index.d.ts', default: './index.js' });
    for (const f of ['index.js', 'index.d.ts', 'lib/', 'proto/', 'reasons.json']) assert.ok(pkg.files.includes(f), f);
    const lock = JSON.parse(read(PKG, 'package-lock.json'));
    assert.equal(lock.packages[''].name, pkg.name);
    assert.deepEqual(lock.packages[''].dependencies, pkg.dependencies);
    assert.match(lock.packages['node_modules/@grpc/grpc-js'].version, /^1\.(1[0-9]|[2-9][0-9])\./, 'grpc-js >= 1.10: server interceptors');
  });

  it('every name index.d.ts declares is exported, and every export is declared', () => {
    const dts = read(PKG, 'index.d.ts').toString();
    const declared = new Set([...dts.matchAll(/^export declare (?:function|class|const) (\w+)/gm)].map((m) => m[1]));
    assert.deepEqual([...declared].sort(), Object.keys(usherLib).sort());
  });

  it('resolves through its own name (package.json exports)', () => {
    assert.equal(require(pkg.name), usherLib);
  });
});
