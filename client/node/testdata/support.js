'use strict';
// What the tests share: a real usher (`usher dev`, `usher serve`), tokens and
// proofs from its CLI, the protected Probe server on 127.0.0.1 with real
// grpc-js stubs, a fake usher for verdicts usher itself never sends, and
// grpc-go's view of a call (testdata/goclient). Not a test file: node --test
// runs test/*.test.js only.
//
// $USHER_BIN names a built usher; without it one is built with `go build`.
// $USHER_NODE_GOCLIENT names a built testdata/goclient; without it one is built.

const assert = require('node:assert/strict');
const { spawn, execFile } = require('node:child_process');
const { promisify } = require('node:util');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const readline = require('node:readline');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const usherLib = require('..');
const { TokenService } = require('../lib/usher');

const run = promisify(execFile);
const PKG = path.resolve(__dirname, '..');
const REPO = path.resolve(PKG, '..', '..');
const START_TIMEOUT_MS = 20000;
const STOP_TIMEOUT_MS = 10000;
const CMD_TIMEOUT_MS = 15000;
const BUILD_TIMEOUT_MS = 600000;

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'usher-node-grpc-'));
process.on('exit', () => fs.rmSync(tmp, { recursive: true, force: true }));

function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms}ms`)), ms); }),
  ]).finally(() => clearTimeout(timer));
}

// Polls check() until it resolves truthy, at most ms (no sleeping to let time pass: a bounded wait for a process).
async function eventually(check, ms, what) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    try {
      const v = await check();
      if (v) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms}ms${last ? `: ${last.message}` : ''}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

let usherBinPromise;
/** The usher binary: $USHER_BIN, or one built once per test process. */
function usherBin() {
  if (!usherBinPromise) {
    usherBinPromise = (async () => {
      if (process.env.USHER_BIN) return process.env.USHER_BIN;
      const bin = path.join(tmp, 'usher');
      await run('go', ['build', '-o', bin, './cmd/usher'], { cwd: REPO, timeout: BUILD_TIMEOUT_MS, env: { ...process.env, GOTOOLCHAIN: 'local' } });
      return bin;
    })();
  }
  return usherBinPromise;
}

let goClientPromise;
/** testdata/goclient built with grpc-go (or $USHER_NODE_GOCLIENT). */
function goClientBin() {
  if (!goClientPromise) {
    goClientPromise = (async () => {
      if (process.env.USHER_NODE_GOCLIENT) return process.env.USHER_NODE_GOCLIENT;
      const bin = path.join(tmp, 'goclient');
      await run('go', ['build', '-o', bin, './client/node/testdata/goclient'], { cwd: REPO, timeout: BUILD_TIMEOUT_MS, env: { ...process.env, GOTOOLCHAIN: 'local' } });
      return bin;
    })();
  }
  return goClientPromise;
}

/** grpc-go's view of one unary call: { code, message, details, trailer }. */
async function goCall(addr, method, { auth = [], dpop = [] } = {}) {
  const args = ['-addr', addr, '-method', method];
  for (const a of auth) args.push('-auth', a);
  for (const d of dpop) args.push('-dpop', d);
  const { stdout } = await run(await goClientBin(), args, { timeout: CMD_TIMEOUT_MS });
  return JSON.parse(stdout);
}

const DEV_ADDR = /^ {2}gRPC\s+(\S+)/;
const DEV_ISSUER = /^ {2}issuer\s+(\S+)/;
const SERVE_ADDR = /msg="usher listening" addr=(\S+)/;

/** One usher process; start() resolves to its gRPC address once it prints it. */
class UsherProcess {
  constructor(args, pattern = DEV_ADDR) {
    this.args = args;
    this.pattern = pattern;
    this.lines = [];
    this.proc = null;
    this.issuer = null;
  }

  async start() {
    const bin = await usherBin();
    this.proc = spawn(bin, this.args, { stdio: ['ignore', 'pipe', 'pipe'] });
    this.exited = new Promise((resolve) => this.proc.once('exit', resolve));
    try {
      this.addr = await withTimeout(new Promise((resolve, reject) => {
        this.proc.once('error', reject);
        this.proc.once('exit', (code, signal) =>
          reject(new Error(`usher ${this.args.join(' ')} exited (${code ?? signal}) before serving:\n${this.lines.join('\n')}`)));
        for (const stream of [this.proc.stdout, this.proc.stderr]) {
          // Drained to the end so usher never blocks on a full pipe.
          readline.createInterface({ input: stream }).on('line', (line) => {
            this.lines.push(line);
            const issuer = DEV_ISSUER.exec(line);
            if (issuer) this.issuer = issuer[1];
            const m = this.pattern.exec(line);
            if (m) resolve(m[1]);
          });
        }
      }), START_TIMEOUT_MS, `usher ${this.args.join(' ')} printing its gRPC address`);
    } catch (err) {
      await this.stop();
      throw err;
    }
    return this.addr;
  }

  running() {
    return Boolean(this.proc) && this.proc.exitCode === null && this.proc.signalCode === null;
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

/** `usher dev` on 127.0.0.1:0, ready once a fresh token validates. */
async function startDev() {
  const u = new UsherProcess(['dev', '--listen', '127.0.0.1:0', '--http-listen', '127.0.0.1:0']);
  await u.start();
  assert.ok(u.issuer, `usher dev printed no issuer line:\n${u.lines.join('\n')}`);
  const token = await mint(u.addr, 'api/users');
  const client = new (TokenService())(u.addr, grpc.credentials.createInsecure());
  try {
    await eventually(() => new Promise((resolve) => {
      client.validateToken({ token, expectedAudience: 'api/users' }, { deadline: Date.now() + 2000 },
        (err, resp) => resolve(!err && resp.valid));
    }), START_TIMEOUT_MS, 'usher dev answering VALID');
  } finally {
    client.close();
  }
  return u;
}

/** `usher serve` trusting an issuer whose keys cannot be fetched: every JWT of it is KEYS_UNAVAILABLE. */
async function startKeysUnavailable() {
  const dead = `http://127.0.0.1:${await closedPort()}/`;
  const cfg = path.join(tmp, `keys-unavailable-${process.pid}-${Date.now()}.yaml`);
  fs.writeFileSync(cfg, `listen: "127.0.0.1:0"\nissuers:\n  - issuer: "${dead}"\n    jwks_uri: "${dead}jwks.json"\n    fetch_timeout: "1s"\n`);
  const u = new UsherProcess(['serve', '--config', cfg], SERVE_ADDR);
  await u.start();
  const b64url = (obj) => Buffer.from(JSON.stringify(obj)).toString('base64url');
  u.token = (audience) => `${b64url({ alg: 'RS256', kid: 'k1', typ: 'at+jwt' })}.${b64url({ iss: dead, aud: audience, exp: Math.floor(Date.now() / 1000) + 600 })}.c2ln`;
  return u;
}

/** A token from `usher mint`. */
async function mint(addr, audience, { scopes = [], ttl, kid, dpopKey, opaque = false } = {}) {
  const args = ['mint', '--addr', addr, '--audience', audience];
  for (const s of scopes) args.push('--scope', s);
  if (ttl) args.push('--ttl', ttl);
  if (kid) args.push('--kid', kid);
  if (dpopKey) args.push('--dpop-key', dpopKey);
  if (opaque) args.push('--opaque');
  const { stdout } = await run(await usherBin(), args, { timeout: CMD_TIMEOUT_MS });
  return stdout.trim();
}

/** A path for a new DPoP key (usher mint --dpop-key creates it). */
function dpopKeyPath(name = 'dpop') {
  return path.join(fs.mkdtempSync(path.join(tmp, 'key-')), `${name}.pem`);
}

/** A DPoP proof from `usher proof`. */
async function proof(key, method, uri, token) {
  const { stdout } = await run(await usherBin(), ['proof', '--key', key, '--method', method, '--uri', uri, '--token', token], { timeout: CMD_TIMEOUT_MS });
  return stdout.trim();
}

/** A 127.0.0.1 port nothing listens on (bound, then released). */
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

const LOAD = { keepCase: false, longs: String, enums: String, defaults: true, oneofs: true };
const probePkg = grpc.loadPackageDefinition(protoLoader.loadSync(path.join(__dirname, 'probe.proto'), LOAD)).usher.test.v1;
const healthPkg = grpc.loadPackageDefinition(protoLoader.loadSync(path.join(__dirname, 'health.proto'), LOAD)).grpc.health.v1;

/**
 * The protected API: usher.test.v1.Probe (Echo unary, Count server-streaming,
 * Chat bidi) and the stand-in grpc.health.v1.Health, on 127.0.0.1, behind
 * `interceptors`. Every handler that runs appends { method, claims,
 * authorization } to server.log before answering.
 */
async function startProbe(interceptors, { credentials, guard = false } = {}) {
  const log = [];
  const seen = (method, call) => {
    const entry = { method, claims: usherLib.claimsOf(call), authorization: call.metadata.get('authorization') };
    log.push(entry);
    return entry;
  };
  const server = new grpc.Server({ interceptors });
  server.addService(probePkg.Probe.service, {
    echo(call, callback) {
      const { claims } = seen('Echo', call);
      callback(null, { text: call.request.text, subject: claims ? claims.subject : '', audience: claims ? claims.audience : [] });
    },
    count(call) {
      const { claims } = seen('Count', call);
      for (let i = 0; i < call.request.n; i += 1) {
        call.write({ text: String(i), subject: claims ? claims.subject : '', audience: claims ? claims.audience : [] });
      }
      call.end();
    },
    chat(call) {
      const { claims } = seen('Chat', call);
      call.on('data', (req) => call.write({ text: req.text, subject: claims ? claims.subject : '' }));
      call.on('end', () => call.end());
    },
  });
  for (const name of ['Users', 'Invoices']) {
    server.addService(probePkg[name].service, {
      get(call, callback) {
        const { claims } = seen(`${name}.Get`, call);
        callback(null, { text: call.request.text, subject: claims ? claims.subject : '', audience: claims ? claims.audience : [] });
      },
      list(call) {
        const { claims } = seen(`${name}.List`, call);
        for (let i = 0; i < call.request.n; i += 1) call.write({ text: String(i), audience: claims ? claims.audience : [] });
        call.end();
      },
    });
  }
  server.addService(healthPkg.Health.service, {
    check(call, callback) { seen('Check', call); callback(null, { status: 1 }); },
    checkX(call, callback) { seen('CheckX', call); callback(null, { status: 1 }); },
  });
  const port = await new Promise((resolve, reject) => {
    server.bindAsync('127.0.0.1:0', credentials || grpc.ServerCredentials.createInsecure(), (err, p) => {
      if (err) return reject(err);
      if (guard) usherLib.guardRepeatedHeaders(server);
      return resolve(p);
    });
  });
  const addr = `127.0.0.1:${port}`;
  const clients = [];
  return {
    server, log, port, addr,
    probe(channelCredentials = grpc.credentials.createInsecure(), target = addr, options = {}) {
      const c = new probePkg.Probe(target, channelCredentials, options);
      clients.push(c);
      return c;
    },
    /** a client of service name ('Users', 'Invoices', 'Probe') */
    client(name, channelCredentials = grpc.credentials.createInsecure(), target = addr, options = {}) {
      const c = new probePkg[name](target, channelCredentials, options);
      clients.push(c);
      return c;
    },
    health() {
      const c = new healthPkg.Health(addr, grpc.credentials.createInsecure());
      clients.push(c);
      return c;
    },
    async stop() {
      for (const c of clients) c.close();
      await withTimeout(new Promise((resolve) => server.tryShutdown(() => resolve())), STOP_TIMEOUT_MS, 'probe server shutting down')
        .catch(() => server.forceShutdown());
    },
  };
}

/**
 * A fake usher.v1.TokenService on 127.0.0.1 (the shipped usher.proto, real
 * grpc-js stubs) for answers a real usher never gives: answer(request) returns
 * a ValidateTokenResponse object, or throws { code, details } to fail the
 * call. fake.requests holds every request it got.
 */
async function startFakeUsher(answer) {
  const requests = [];
  const server = new grpc.Server();
  server.addService(TokenService().service, {
    validateToken(call, callback) {
      requests.push(call.request);
      let resp;
      try {
        resp = answer(call.request);
      } catch (err) {
        callback(err);
        return;
      }
      Promise.resolve(resp).then((r) => callback(null, r), (err) => callback(err));
    },
    inspectToken(call, callback) { callback({ code: grpc.status.UNIMPLEMENTED, details: 'fake' }); },
    listIssuers(call, callback) { callback({ code: grpc.status.UNIMPLEMENTED, details: 'fake' }); },
  });
  const port = await new Promise((resolve, reject) => {
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p)));
  });
  return {
    addr: `127.0.0.1:${port}`,
    requests,
    stop: () => withTimeout(new Promise((resolve) => server.tryShutdown(() => resolve())), STOP_TIMEOUT_MS, 'fake usher shutting down')
      .catch(() => server.forceShutdown()),
  };
}

/** A verdict as usher sends it, for the fake usher. */
function verdict(reason, { valid = reason === 'REASON_VALID', claims, mismatch, message = `fake ${reason}`, hint = '' } = {}) {
  return { valid, reason, message, hint, mismatch: mismatch || null, claims: claims || null, violations: [] };
}

let tlsPromise;
/** A self-signed certificate for localhost and 127.0.0.1 made with openssl: { key, cert } (PEM Buffers). */
function tlsFixture() {
  if (!tlsPromise) {
    tlsPromise = (async () => {
      const dir = fs.mkdtempSync(path.join(tmp, 'tls-'));
      const key = path.join(dir, 'key.pem');
      const cert = path.join(dir, 'cert.pem');
      await run('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '2',
        '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1',
        '-keyout', key, '-out', cert], { timeout: CMD_TIMEOUT_MS });
      return { key: fs.readFileSync(key), cert: fs.readFileSync(cert) };
    })();
  }
  return tlsPromise;
}

function metadataOf(pairs = {}) {
  const md = new grpc.Metadata();
  for (const [k, v] of Object.entries(pairs)) {
    for (const one of [].concat(v)) md.add(k, one);
  }
  return md;
}

const CALL_TIMEOUT_MS = 10000;

/** One unary call: { resp } or { err } (with err.code, err.details, err.metadata). */
function unary(client, method, request, md = {}, opts = {}) {
  return new Promise((resolve) => {
    client[method](request, md instanceof grpc.Metadata ? md : metadataOf(md), { deadline: Date.now() + CALL_TIMEOUT_MS, ...opts },
      (err, resp) => resolve(err ? { err } : { resp }));
  });
}

/** One server-streaming call: { messages, err } (err null on OK). */
function serverStream(client, method, request, md = {}, opts = {}) {
  return new Promise((resolve) => {
    const messages = [];
    const call = client[method](request, md instanceof grpc.Metadata ? md : metadataOf(md), { deadline: Date.now() + CALL_TIMEOUT_MS, ...opts });
    call.on('data', (m) => messages.push(m));
    call.on('error', (err) => resolve({ messages, err }));
    call.on('end', () => resolve({ messages, err: null }));
  });
}

/** One bidi call sending texts, then half-closing: { messages, err }. */
function bidi(client, method, texts, md = {}) {
  return new Promise((resolve) => {
    const messages = [];
    const call = client[method](md instanceof grpc.Metadata ? md : metadataOf(md), { deadline: Date.now() + CALL_TIMEOUT_MS });
    call.on('data', (m) => messages.push(m));
    call.on('error', (err) => resolve({ messages, err }));
    call.on('end', () => resolve({ messages, err: null }));
    for (const text of texts) call.write({ text });
    call.end();
  });
}

// Parses a challenge as the interceptor writes it: scheme, its first
// parameter (realm or algs), and the other auth-params in order.
function parseChallenge(value) {
  const m = /^(Bearer realm|DPoP algs)="([^"\\]*)"((?:, [a-z_]+="[^"\\]*")*)$/.exec(value || '');
  assert.ok(m, `not an RFC 6750 / RFC 9449 challenge: ${value}`);
  const params = {};
  const order = [];
  for (const [, k, v] of m[3].matchAll(/, ([a-z_]+)="([^"\\]*)"/g)) {
    params[k] = v;
    order.push(k);
  }
  return { scheme: m[1].split(' ')[0], realm: m[1] === 'Bearer realm' ? m[2] : undefined, algs: m[1] === 'DPoP algs' ? m[2] : undefined, params, order };
}

/**
 * Asserts err is a rejection by the interceptor: the gRPC code, the ErrorInfo
 * (domain usher.v1) with this reason, and a www-authenticate trailer; returns
 * { info, challenge, details }.
 */
function rejected(err, code, reason, what = '') {
  assert.ok(err, `${what}: the call succeeded`);
  const codeName = (c) => Object.entries(grpc.status).find(([, v]) => v === c)?.[0] ?? c;
  assert.equal(codeName(err.code), codeName(code), `${what}: ${err.code} ${err.details}`);
  const details = usherLib.decodeStatusDetails(err);
  assert.ok(details, `${what}: no grpc-status-details-bin in the trailers`);
  assert.equal(details.code, code, `${what}: google.rpc.Status.code`);
  assert.equal(details.message, err.details, `${what}: google.rpc.Status.message is the status message`);
  assert.equal(details.details.length, 1, `${what}: exactly one detail`);
  assert.ok(details.errorInfo, `${what}: the detail is not an ErrorInfo: ${details.details[0].typeUrl}`);
  assert.equal(details.errorInfo.domain, 'usher.v1', what);
  assert.equal(details.errorInfo.reason, reason, `${what}: ${err.details}`);
  const www = err.metadata.get('www-authenticate');
  assert.equal(www.length, 1, `${what}: www-authenticate values ${JSON.stringify(www)}`);
  return { info: details.errorInfo, challenge: parseChallenge(www[0]), raw: www[0], details };
}

module.exports = {
  REPO, PKG, tmp, run, withTimeout, eventually, usherBin, goClientBin, goCall, UsherProcess, startDev, startKeysUnavailable,
  mint, dpopKeyPath, proof, closedPort, startProbe, startFakeUsher, verdict, tlsFixture, metadataOf, unary, serverStream, bidi, parseChallenge, rejected,
  probePkg, healthPkg, CMD_TIMEOUT_MS,
};
