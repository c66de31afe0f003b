'use strict';
// usherAuth against a real usher: `usher dev` (and `usher serve` for KEYS_UNAVAILABLE) started per test,
// and against the table of reasons, ../reasons.json (without usher).
//
//   cd examples/node && npm ci && node --test
//
// $USHER_BIN names a built usher; without it the tests build one with `go build`.

const { describe, it, before, after, beforeEach, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const { spawn, execFile } = require('node:child_process');
const { promisify } = require('node:util');
const fs = require('node:fs');
const http = require('node:http');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const readline = require('node:readline');

const {
  createUsherAuth, Unauthorized, Forbidden, ServiceUnavailable, REJECTIONS, UNKNOWN_REASON, DPOP_ALGS,
} = require('./usherAuth');
const { createApp } = require('./example-server');

const run = promisify(execFile);
const REPO = path.resolve(__dirname, '..', '..');
const START_TIMEOUT_MS = 20000;
const STOP_TIMEOUT_MS = 10000;
const CMD_TIMEOUT_MS = 15000;
const TEST_TIMEOUT_MS = 60000;

let tmp;
let usherBin;

before(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'usher-node-'));
  usherBin = process.env.USHER_BIN;
  if (!usherBin) {
    usherBin = path.join(tmp, 'usher');
    await run('go', ['build', '-o', usherBin, './cmd/usher'], { cwd: REPO, timeout: 600000 });
  }
}, { timeout: 600000 });

after(() => {
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

// A 127.0.0.1 port nothing listens on (bound, then released).
function closedPort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

const b64url = (obj) => Buffer.from(JSON.stringify(obj)).toString('base64url');

function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms}ms`)), ms); }),
  ]).finally(() => clearTimeout(timer));
}

const DEV_ADDR = /^ {2}gRPC\s+(\S+)/;
const SERVE_ADDR = /msg="usher listening" addr=(\S+)/;

// One usher process; start() resolves once `pattern` names its gRPC address.
class UsherProcess {
  constructor(args, pattern) {
    this.args = args;
    this.pattern = pattern;
    this.lines = [];
    this.proc = null;
    this.exited = null;
  }

  start() {
    this.proc = spawn(usherBin, this.args, { stdio: ['ignore', 'pipe', 'pipe'] });
    this.exited = new Promise((resolve) => this.proc.once('exit', resolve));
    return withTimeout(new Promise((resolve, reject) => {
      this.proc.once('error', reject);
      this.proc.once('exit', (code, signal) =>
        reject(new Error(`usher ${this.args.join(' ')} exited (${code ?? signal}) before serving:\n${this.lines.join('\n')}`)));
      for (const stream of [this.proc.stdout, this.proc.stderr]) {
        // Drained to the end so usher never blocks on a full pipe.
        readline.createInterface({ input: stream }).on('line', (line) => {
          this.lines.push(line);
          const m = this.pattern.exec(line);
          if (m) resolve(m[1]);
        });
      }
    }), START_TIMEOUT_MS, `usher ${this.args.join(' ')} printing its gRPC address`).then(
      (addr) => { this.addr = addr; return addr; },
      async (err) => { await this.stop(); throw err; });
  }

  running() {
    return this.proc && this.proc.exitCode === null && this.proc.signalCode === null;
  }

  async stop() {
    if (!this.running()) return;
    this.proc.kill('SIGTERM');
    try {
      await withTimeout(this.exited, STOP_TIMEOUT_MS, 'usher stopping on SIGTERM');
    } catch {
      this.proc.kill('SIGKILL');
      await withTimeout(this.exited, STOP_TIMEOUT_MS, 'usher stopping on SIGKILL');
    }
  }
}

// Parses an RFC 6750 challenge as this helper writes it; fails on anything else.
function parseChallenge(value) {
  const m = /^Bearer realm="([^"\\]*)", error="([a-z_]+)", error_description="([^"\\]*)"(?:, scope="([^"\\]*)")?$/.exec(value || '');
  assert.ok(m, `not an RFC 6750 challenge: ${value}`);
  return { realm: m[1], error: m[2], description: m[3], scope: m[4] };
}

// Parses an RFC 9449 DPoP challenge as this helper writes it; fails on anything else.
function parseDPoPChallenge(value) {
  const m = /^DPoP algs="([A-Za-z0-9 ]+)", error="([a-z_]+)", error_description="([^"\\]*)"(?:, scope="([^"\\]*)")?$/.exec(value || '');
  assert.ok(m, `not an RFC 9449 DPoP challenge: ${value}`);
  return { algs: m[1].split(' '), error: m[2], description: m[3], scope: m[4] };
}

// reject() follows ../reasons.json (internal/reasons): every reason usher sends, and the fail-closed rest.
describe('usherAuth against ../reasons.json', () => {
  const table = JSON.parse(fs.readFileSync(path.join(__dirname, '..', 'reasons.json'), 'utf8'));
  const rules = new Map(table.reasons.map((r) => [r.reason, r]));
  // The reasons of usher.proto, as the helper's proto-loader sees them.
  const protoReasons = (() => {
    const protoLoader = require('@grpc/proto-loader');
    const def = protoLoader.loadSync('usher/v1/usher.proto', { includeDirs: [path.join(REPO, 'proto')] });
    return new Map(def['usher.v1.Reason'].type.value.map((v) => [v.name, v.number]));
  })();
  let a;
  let method;

  before(async () => {
    a = createUsherAuth({ target: `127.0.0.1:${await closedPort()}`, audience: 'api/reasons' }); // never called
    method = a.client.constructor.service.ValidateToken;
  });
  after(() => a && a.close());

  // A rejection with this reason number, through the wire format as grpc-js hands it to check().
  const verdict = (number) => method.responseDeserialize(method.responseSerialize({
    valid: false, reason: number, message: 'why', hint: 'what to do',
    mismatch: { claim: 'scope', expected: ['a.read', 'a.write'], actual: ['a.read'] },
  }));

  // [label, reason number, rule]: each reason of the table, each reason of the .proto, and unknowns.
  const cases = () => {
    const out = [];
    for (const name of new Set([...rules.keys(), ...protoReasons.keys()])) {
      assert.ok(protoReasons.has(name), `reasons.json names ${name}, which usher.proto does not`);
      // A rejection that says VALID is not to be trusted: fail closed, like a reason not listed.
      out.push([name, protoReasons.get(name), name === 'REASON_VALID' ? table.unknown : (rules.get(name) || table.unknown)]);
    }
    out.push(['REASON_999 (a newer usher)', 999, table.unknown]);
    return out;
  };

  it('the table lists the reasons usher sends, and fails closed on the rest', () => {
    assert.ok(rules.has('REASON_INSUFFICIENT_SCOPE') && rules.has('REASON_AUDIENCE_MISMATCH'));
    assert.ok(!rules.has('REASON_UNSPECIFIED'));
    assert.equal(rules.size, table.reasons.length, 'a reason listed twice');
    assert.equal(table.unknown.http_status, 503);
    assert.equal(table.unknown.bearer_error, '');
  });

  it('the helper\'s table is reasons.json, DPoP challenges included', () => {
    const want = Object.fromEntries(table.reasons.filter((r) => r.reason !== 'REASON_VALID')
      .map((r) => [r.reason, { status: r.http_status, error: r.bearer_error, challenge: r.challenge }]));
    assert.deepEqual({ ...REJECTIONS }, want);
    assert.deepEqual({ ...UNKNOWN_REASON }, { status: table.unknown.http_status, error: table.unknown.bearer_error, challenge: table.unknown.challenge });
    assert.deepEqual(table.reasons.filter((r) => r.challenge === 'DPoP').map((r) => r.reason), ['REASON_PROOF_MISSING', 'REASON_INVALID_PROOF']);
    assert.equal(DPOP_ALGS, table.dpop_algs);
  });

  it('the DPoP header and scheme are checked before asking usher', async () => {
    let err = await a.check('DPoP tok', { dpop: ['a.b.c', 'd.e.f'], method: 'GET', uri: 'https://api.example/x' })
      .then(() => assert.fail('accepted'), (e) => e);
    assert.ok(err instanceof Unauthorized, String(err));
    assert.equal(err.reason, 'INVALID_PROOF');
    const c = parseDPoPChallenge(err.wwwAuthenticate);
    assert.equal(c.algs.join(' '), DPOP_ALGS);
    assert.equal(c.error, 'invalid_dpop_proof');
    assert.match(c.description, /2 DPoP header values/);
    for (const header of ['DPoP', 'dpop   ']) {
      err = await a.check(header).then(() => assert.fail('accepted'), (e) => e);
      assert.equal(err.reason, 'INVALID_CREDENTIALS');
      assert.equal(parseDPoPChallenge(err.wwwAuthenticate).error, 'invalid_request');
    }
  });

  for (const scheme of ['Bearer', 'DPoP']) {
    it(`reject() maps every reason as reasons.json says (scheme ${scheme})`, () => checkReject(scheme));
  }

  // Every rejection as reasons.json says; its challenge is DPoP when the table says so or the token came so.
  function checkReject(scheme) {
    const classes = { 401: Unauthorized, 403: Forbidden, 503: ServiceUnavailable };
    const all = cases();
    assert.ok(all.length >= table.reasons.length + 2);
    for (const [label, number, rule] of all) {
      const what = `${label} (${number}, scheme ${scheme})`;
      const err = a.reject(verdict(number), scheme);
      assert.equal(err.status, rule.http_status, what);
      assert.ok(err instanceof classes[rule.http_status], `${what}: ${err.name}`);
      if (err.status === 401) assert.ok(err.wwwAuthenticate, `${what}: 401 without www-authenticate (RFC 7235 section 3.1)`);
      const params = {};
      if (err.wwwAuthenticate != null) {
        const m = /^(Bearer realm|DPoP algs)="[^"\\]*"((?:, [a-z_]+="[^"\\]*")*)$/.exec(err.wwwAuthenticate);
        assert.ok(m, `${what}: not an RFC 6750 or RFC 9449 challenge: ${err.wwwAuthenticate}`);
        const want = rule.challenge === 'DPoP' || scheme === 'DPoP' ? 'DPoP algs' : 'Bearer realm';
        assert.equal(m[1], want, `${what}: ${err.wwwAuthenticate}`);
        for (const [, k, v] of m[2].matchAll(/, ([a-z_]+)="([^"\\]*)"/g)) params[k] = v;
        assert.equal(err.headers['www-authenticate'], err.wwwAuthenticate, what);
      }
      assert.equal(params.error ?? '', rule.bearer_error, `${what}: ${err.wwwAuthenticate}`);
      if (rule.bearer_error) assert.ok(params.error_description, `${what}: ${err.wwwAuthenticate}`);
      if (rule.bearer_error === 'insufficient_scope') {
        assert.equal(params.scope, 'a.write', `${what}: ${err.wwwAuthenticate}`);
        assert.deepEqual(err.missingScopes, ['a.write'], what);
      } else {
        assert.equal(params.scope, undefined, `${what}: ${err.wwwAuthenticate}`);
      }
    }
  }
});

describe('usherAuth against usher dev', { timeout: TEST_TIMEOUT_MS }, () => {
  let usher;
  let addr;
  let auths;

  const auth = (audience, opts = {}) => {
    const a = createUsherAuth({ target: addr, audience, ...opts });
    auths.push(a);
    return a;
  };

  const mint = async (audience, scopes = [], ttl, { opaque = false, dpopKey } = {}) => {
    const args = ['mint', '--addr', addr, '--audience', audience];
    for (const s of scopes) args.push('--scope', s);
    if (ttl) args.push('--ttl', ttl);
    if (opaque) args.push('--opaque');
    if (dpopKey) args.push('--dpop-key', dpopKey);
    const { stdout } = await run(usherBin, args, { timeout: CMD_TIMEOUT_MS });
    const token = stdout.trim();
    assert.equal(token.split('.').length, opaque ? 1 : 3, `not ${opaque ? 'an opaque token' : 'a compact JWS'}: ${token}`);
    return token;
  };

  // A path for a DPoP key of this test, which `usher mint --dpop-key` creates.
  const dpopKey = (name = 'dpop') => path.join(fs.mkdtempSync(path.join(tmp, 'key-')), `${name}.pem`);

  const proof = async (key, method, uri, token) => {
    const { stdout } = await run(usherBin, ['proof', '--key', key, '--method', method, '--uri', uri, '--token', token], { timeout: CMD_TIMEOUT_MS });
    const p = stdout.trim();
    assert.equal(p.split('.').length, 3, `not a compact JWS: ${p}`);
    return p;
  };

  const refused = (promise) => promise.then(() => assert.fail('accepted'), (e) => e);

  beforeEach(async () => {
    auths = [];
    usher = new UsherProcess(['dev', '--listen', '127.0.0.1:0', '--http-listen', '127.0.0.1:0'], DEV_ADDR);
    addr = await usher.start();
    // Until the dev issuer's keys are loaded: a fresh token must come back VALID.
    const probe = auth('api/users');
    const token = await mint('api/users');
    const deadline = Date.now() + START_TIMEOUT_MS;
    for (;;) {
      try {
        await probe.check(`Bearer ${token}`);
        break;
      } catch (err) {
        if (!(err instanceof ServiceUnavailable) || Date.now() > deadline) throw err;
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  });

  afterEach(async () => {
    for (const a of auths) a.close();
    await usher.stop();
    assert.equal(usher.running(), false, 'usher still running after SIGTERM');
  });

  it('valid token: resolves to the claims', async () => {
    const token = await mint('api/users', ['users.read']);
    const claims = await auth('api/users').check(`Bearer ${token}`, { requiredScopes: ['users.read'] });
    assert.deepEqual(claims.audience, ['api/users']);
    assert.deepEqual(claims.scopes, ['users.read']);
    assert.equal(claims.subject, 'usher-dev');
    assert.equal(claims.clientId, 'usher-dev');
    assert.equal(claims.tokenType, 'at+jwt');
    assert.equal(claims.algorithm, 'RS256');
    assert.match(claims.issuer, /^http:\/\/127\.0\.0\.1:\d+$/);
    assert.ok(claims.expiresAt instanceof Date && claims.expiresAt > new Date(), String(claims.expiresAt));
    assert.equal(claims.raw.aud, 'api/users');
    assert.equal(claims.raw.scope, 'users.read');
    assert.equal(typeof claims.raw.exp, 'number');
  });

  it('scheme is case-insensitive, white space around the token is ignored', async () => {
    const claims = await auth('api/users').check(`bearer  ${await mint('api/users')} `);
    assert.deepEqual(claims.audience, ['api/users']);
  });

  it('token for another API: 401 AUDIENCE_MISMATCH with a hint naming Users API', async () => {
    const token = await mint('api/users', ['users.read']);
    const err = await auth('api/invoices').check(`Bearer ${token}`).then(() => assert.fail('accepted'), (e) => e);
    assert.ok(err instanceof Unauthorized, String(err));
    assert.equal(err.status, 401);
    assert.equal(err.reason, 'AUDIENCE_MISMATCH');
    assert.equal(err.message, 'token audience [api/users] does not include api/invoices');
    assert.match(err.hint, /Users API/);
    assert.match(err.hint, /api\/invoices/);
    assert.deepEqual(err.mismatch, { claim: 'aud', expected: ['api/invoices'], actual: ['api/users'] });
    const c = parseChallenge(err.wwwAuthenticate);
    assert.equal(c.realm, 'api/invoices');
    assert.equal(c.error, 'invalid_token');
    assert.ok(c.description.startsWith('AUDIENCE_MISMATCH: token audience'), c.description);
    assert.match(c.description, /Users API/);
    assert.equal(c.scope, undefined);
    assert.equal(err.headers['www-authenticate'], err.wwwAuthenticate);
    const body = JSON.parse(err.body());
    assert.equal(body.reason, 'AUDIENCE_MISMATCH');
    assert.match(body.hint, /Users API/);
  });

  it('missing scope: 403 INSUFFICIENT_SCOPE', async () => {
    const token = await mint('api/invoices', ['invoices.read']);
    const err = await auth('api/invoices')
      .check(`Bearer ${token}`, { requiredScopes: ['invoices.read', 'invoices.write'] })
      .then(() => assert.fail('accepted'), (e) => e);
    assert.ok(err instanceof Forbidden, String(err));
    assert.equal(err.status, 403);
    assert.equal(err.reason, 'INSUFFICIENT_SCOPE');
    assert.deepEqual(err.missingScopes, ['invoices.write']);
    assert.ok(err.message);
    const c = parseChallenge(err.wwwAuthenticate);
    assert.equal(c.error, 'insufficient_scope');
    assert.equal(c.scope, 'invoices.write');
    assert.ok(c.description.startsWith('INSUFFICIENT_SCOPE: '), c.description);
  });

  it('garbage: 401 MALFORMED', async () => {
    const err = await auth('api/users').check('Bearer not.a.jwt').then(() => assert.fail('accepted'), (e) => e);
    assert.ok(err instanceof Unauthorized, String(err));
    assert.equal(err.status, 401);
    assert.equal(err.reason, 'MALFORMED');
    assert.equal(err.mismatch, null);
    assert.equal(parseChallenge(err.wwwAuthenticate).error, 'invalid_token');
  });

  it('opaque token: VALID; a revoked one: 401 INACTIVE', async () => {
    const a = auth('api/users');
    const claims = await a.check(`Bearer ${await mint('api/users', ['users.read'], undefined, { opaque: true })}`);
    assert.equal(claims.tokenFormat, 'opaque');
    assert.deepEqual(claims.scopes, ['users.read']);
    // Revoked before usher has seen it: no cached answer, so introspection says inactive at once
    // (revocation of a cached token, within cache_ttl, is covered by the Go tests with a fake clock).
    const token = await mint('api/users', ['users.read'], undefined, { opaque: true });
    await run(usherBin, ['revoke', '--addr', addr, token], { timeout: CMD_TIMEOUT_MS });
    const err = await a.check(`Bearer ${token}`).then(() => assert.fail('accepted'), (e) => e);
    assert.ok(err instanceof Unauthorized, String(err));
    assert.equal(err.status, 401);
    assert.equal(err.reason, 'INACTIVE');
    assert.equal(parseChallenge(err.wwwAuthenticate).error, 'invalid_token');
  });

  it('unknown opaque token: 401 INACTIVE with a hint', async () => {
    const err = await auth('api/users').check('Bearer not-a-jwt').then(() => assert.fail('accepted'), (e) => e);
    assert.ok(err instanceof Unauthorized, String(err));
    assert.equal(err.status, 401);
    assert.equal(err.reason, 'INACTIVE');
    assert.ok(err.hint);
    assert.equal(parseChallenge(err.wwwAuthenticate).error, 'invalid_token');
  });

  it('expired: 401 EXPIRED with a hint', async () => {
    const token = await mint('api/users', [], '-5m');
    const err = await auth('api/users').check(`Bearer ${token}`).then(() => assert.fail('accepted'), (e) => e);
    assert.ok(err instanceof Unauthorized, String(err));
    assert.equal(err.reason, 'EXPIRED');
    assert.ok(err.hint);
  });

  const INVOICES = 'https://invoices.example/invoices';

  it('usher mint --dpop-key creates a private key file (0600) once', async () => {
    const key = dpopKey();
    const args = ['mint', '--addr', addr, '--audience', 'api/users', '--dpop-key', key];
    const first = await run(usherBin, args, { timeout: CMD_TIMEOUT_MS });
    assert.ok(first.stderr.includes(`created ${key}`), first.stderr);
    assert.equal(fs.statSync(key).mode & 0o777, 0o600);
    assert.ok(fs.readFileSync(key, 'utf8').startsWith('-----BEGIN PRIVATE KEY-----'));
    const again = await run(usherBin, args, { timeout: CMD_TIMEOUT_MS });
    assert.equal(again.stderr, '');
    assert.notEqual(again.stdout, first.stdout);
  });

  it('DPoP-bound token with its proof: valid, with cnf.jkt', async () => {
    const key = dpopKey();
    const token = await mint('api/invoices', ['invoices.read'], undefined, { dpopKey: key });
    const claims = await auth('api/invoices').check(`DPoP ${token}`, {
      requiredScopes: ['invoices.read'], dpop: await proof(key, 'GET', INVOICES, token), method: 'GET', uri: `${INVOICES}?page=2`,
    });
    assert.deepEqual(claims.scopes, ['invoices.read']);
    assert.deepEqual(Object.keys(claims.confirmation), ['jkt']);
    assert.equal(claims.confirmation.jkt, claims.raw.cnf.jkt);
  });

  it('DPoP-bound token as Bearer: 401 PROOF_MISSING with a DPoP challenge', async () => {
    const key = dpopKey();
    const token = await mint('api/invoices', ['invoices.read'], undefined, { dpopKey: key });
    const a = auth('api/invoices');
    const p = await proof(key, 'GET', INVOICES, token);
    for (const opts of [{}, { dpop: p, method: 'GET', uri: INVOICES }]) {
      const err = await refused(a.check(`Bearer ${token}`, opts));
      assert.ok(err instanceof Unauthorized, String(err));
      assert.equal(err.status, 401);
      assert.equal(err.reason, 'PROOF_MISSING');
      assert.match(err.hint, /DPoP/);
      const c = parseDPoPChallenge(err.wwwAuthenticate);
      assert.ok(c.algs.includes('ES256'), c.algs);
      assert.equal(c.error, 'invalid_token');
      assert.ok(c.description.startsWith('PROOF_MISSING: '), c.description);
      assert.equal(err.headers['www-authenticate'], err.wwwAuthenticate);
    }
  });

  it('a proof for another URI or by another key, or used twice: 401 INVALID_PROOF', async () => {
    const key = dpopKey('mine');
    const other = dpopKey('other');
    const token = await mint('api/invoices', ['invoices.read'], undefined, { dpopKey: key });
    await mint('api/users', [], undefined, { dpopKey: other }); // creates the other key
    const a = auth('api/invoices');
    const users = 'https://users.example/users';
    for (const [p, claim, expected, actual] of [
      [await proof(key, 'GET', users, token), 'htu', [INVOICES], [users]],
      [await proof(other, 'GET', INVOICES, token), 'jkt'],
    ]) {
      const err = await refused(a.check(`DPoP ${token}`, { dpop: p, method: 'GET', uri: INVOICES }));
      assert.ok(err instanceof Unauthorized, String(err));
      assert.equal(err.reason, 'INVALID_PROOF');
      assert.equal(err.mismatch.claim, claim);
      if (expected) assert.deepEqual([err.mismatch.expected, err.mismatch.actual], [expected, actual]);
      const c = parseDPoPChallenge(err.wwwAuthenticate);
      assert.equal(c.error, 'invalid_dpop_proof');
      assert.ok(c.description.startsWith('INVALID_PROOF: '), c.description);
    }
    const p = await proof(key, 'GET', INVOICES, token);
    await a.check(`DPoP ${token}`, { dpop: p, method: 'GET', uri: INVOICES });
    const err = await refused(a.check(`DPoP ${token}`, { dpop: p, method: 'GET', uri: INVOICES }));
    assert.equal(err.reason, 'INVALID_PROOF', 'a replayed proof');
    assert.equal(parseDPoPChallenge(err.wwwAuthenticate).error, 'invalid_dpop_proof');
  });

  it('any rejection of the DPoP scheme has a DPoP challenge', async () => {
    const key = dpopKey();
    const token = await mint('api/users', ['users.read'], undefined, { dpopKey: key });
    const err = await refused(auth('api/invoices').check(`DPoP ${token}`, { dpop: await proof(key, 'GET', INVOICES, token), method: 'GET', uri: INVOICES }));
    assert.equal(err.reason, 'AUDIENCE_MISMATCH');
    const c = parseDPoPChallenge(err.wwwAuthenticate);
    assert.equal(c.error, 'invalid_token');
    assert.ok(c.description.startsWith('AUDIENCE_MISMATCH: '), c.description);
  });

  it('no Authorization header: 401 MISSING_CREDENTIALS, challenge without error code', async () => {
    const a = auth('api/users');
    for (const header of [undefined, null, '', '   ', []]) {
      const err = await a.check(header).then(() => assert.fail('accepted'), (e) => e);
      assert.ok(err instanceof Unauthorized, `${JSON.stringify(header)}: ${err}`);
      assert.equal(err.status, 401);
      assert.equal(err.reason, 'MISSING_CREDENTIALS');
      assert.equal(err.wwwAuthenticate, 'Bearer realm="api/users"'); // RFC 6750 section 3.1
      assert.match(err.hint, /Bearer/);
    }
  });

  it('wrong scheme or empty token: 401 INVALID_CREDENTIALS, error="invalid_request"', async () => {
    const a = auth('api/users', { realm: 'example' });
    const token = await mint('api/users');
    for (const header of ['Basic dXNlcjpwYXNz', token, 'Bearer', 'Bearer   ', [`Bearer ${token}`, `Bearer ${token}`]]) {
      const err = await a.check(header).then(() => assert.fail(`accepted ${header}`), (e) => e);
      assert.ok(err instanceof Unauthorized, `${JSON.stringify(header)}: ${err}`);
      assert.equal(err.reason, 'INVALID_CREDENTIALS');
      const c = parseChallenge(err.wwwAuthenticate);
      assert.equal(c.error, 'invalid_request');
      assert.equal(c.realm, 'example');
    }
  });

  it('an empty audience is refused', () => {
    assert.throws(() => createUsherAuth({ target: addr, audience: '' }), TypeError);
  });

  it('usher stopped: 503 VALIDATION_UNAVAILABLE (fail closed)', async () => {
    const a = auth('api/users', { timeoutMs: 2000 });
    const token = await mint('api/users');
    assert.deepEqual((await a.check(`Bearer ${token}`)).audience, ['api/users']);
    await usher.stop();
    const start = Date.now();
    const err = await a.check(`Bearer ${token}`).then(() => assert.fail('accepted'), (e) => e);
    assert.ok(Date.now() - start < 3000, `took ${Date.now() - start}ms`);
    assert.ok(err instanceof ServiceUnavailable, String(err));
    assert.equal(err.status, 503);
    assert.equal(err.reason, 'VALIDATION_UNAVAILABLE');
    assert.ok(err.message.includes(addr), err.message);
    assert.match(err.hint, /not the token's fault/);
    assert.equal(err.wwwAuthenticate, null);
  });

  it('closed port: 503 VALIDATION_UNAVAILABLE', async () => {
    const token = await mint('api/users');
    const a = createUsherAuth({ target: `127.0.0.1:${await closedPort()}`, audience: 'api/users', timeoutMs: 2000 });
    auths.push(a);
    const err = await a.check(`Bearer ${token}`).then(() => assert.fail('accepted'), (e) => e);
    assert.ok(err instanceof ServiceUnavailable, String(err));
    assert.equal(err.reason, 'VALIDATION_UNAVAILABLE');
    assert.match(err.message, /UNAVAILABLE/);
  });

  it('KEYS_UNAVAILABLE from usher serve: 503', async () => {
    const dead = `http://127.0.0.1:${await closedPort()}/`;
    const cfg = path.join(tmp, `keys-unavailable-${process.pid}.yaml`);
    fs.writeFileSync(cfg, `listen: "127.0.0.1:0"\nissuers:\n  - issuer: "${dead}"\n    jwks_uri: "${dead}jwks.json"\n    fetch_timeout: "1s"\n`);
    const serve = new UsherProcess(['serve', '--config', cfg], SERVE_ADDR);
    try {
      const serveAddr = await serve.start();
      const token = `${b64url({ alg: 'RS256', kid: 'k1', typ: 'at+jwt' })}.${b64url({ iss: dead, aud: 'api/users', exp: Math.floor(Date.now() / 1000) + 600 })}.c2ln`;
      const a = createUsherAuth({ target: serveAddr, audience: 'api/users', timeoutMs: 5000 });
      auths.push(a);
      const err = await a.check(`Bearer ${token}`).then(() => assert.fail('accepted'), (e) => e);
      assert.ok(err instanceof ServiceUnavailable, String(err));
      assert.equal(err.status, 503);
      assert.equal(err.reason, 'KEYS_UNAVAILABLE');
      assert.match(err.hint, /not the token's fault/);
      assert.equal(err.wwwAuthenticate, null);
      a.close();
    } finally {
      await serve.stop();
    }
  });

  it('the example server over HTTP: 200, 401, 403, 503', async () => {
    const server = http.createServer(createApp(auth('api/invoices')));
    await new Promise((resolve, reject) => { server.once('error', reject); server.listen(0, '127.0.0.1', resolve); });
    try {
      const url = `http://127.0.0.1:${server.address().port}/invoices`;
      const get = async (authorization, dpop) => {
        const headers = authorization ? { authorization } : {};
        if (dpop) headers.dpop = dpop;
        const res = await fetch(url, { headers, signal: AbortSignal.timeout(10000) });
        return { status: res.status, challenge: res.headers.get('www-authenticate'), body: await res.json() };
      };

      let r = await get(`Bearer ${await mint('api/invoices', ['invoices.read'])}`);
      assert.equal(r.status, 200);
      assert.equal(r.body.subject, 'usher-dev');

      r = await get(`Bearer ${await mint('api/users', ['users.read'])}`);
      assert.equal(r.status, 401);
      assert.equal(r.body.reason, 'AUDIENCE_MISMATCH');
      assert.match(r.body.hint, /Users API/);
      assert.ok(r.challenge.startsWith('Bearer realm="api/invoices", error="invalid_token", error_description="AUDIENCE_MISMATCH: '), r.challenge);

      r = await get(`Bearer ${await mint('api/invoices')}`);
      assert.equal(r.status, 403);
      assert.equal(r.body.reason, 'INSUFFICIENT_SCOPE');
      assert.match(r.challenge, /error="insufficient_scope"/);

      r = await get();
      assert.equal(r.status, 401);
      assert.equal(r.body.reason, 'MISSING_CREDENTIALS');
      assert.equal(r.challenge, 'Bearer realm="api/invoices"');

      const key = dpopKey();
      const bound = await mint('api/invoices', ['invoices.read'], undefined, { dpopKey: key });
      r = await get(`DPoP ${bound}`, await proof(key, 'GET', url, bound));
      assert.equal(r.status, 200, JSON.stringify(r.body));
      assert.equal(r.body.subject, 'usher-dev');
      r = await get(`DPoP ${bound}`, await proof(key, 'GET', `${url}/other`, bound));
      assert.equal(r.status, 401);
      assert.equal(r.body.reason, 'INVALID_PROOF');
      assert.ok(r.challenge.startsWith('DPoP algs="'), r.challenge);
      assert.match(r.challenge, /error="invalid_dpop_proof"/);
      r = await get(`Bearer ${bound}`);
      assert.equal(r.status, 401);
      assert.equal(r.body.reason, 'PROOF_MISSING');
      assert.ok(r.challenge.startsWith('DPoP algs="'), r.challenge);

      const token = await mint('api/invoices', ['invoices.read']);
      await usher.stop();
      r = await get(`Bearer ${token}`);
      assert.equal(r.status, 503);
      assert.equal(r.body.reason, 'VALIDATION_UNAVAILABLE');
      assert.equal(r.challenge, null);
    } finally {
      server.closeAllConnections();
      await withTimeout(new Promise((resolve) => server.close(resolve)), STOP_TIMEOUT_MS, 'HTTP server closing');
    }
  });
});
