'use strict';
// The interceptor against a real `usher dev`: a protected grpc-js server on
// 127.0.0.1 (usher.test.v1.Probe: Echo unary, Count server-streaming, Chat
// bidi; and a stand-in grpc.health.v1.Health) called through real stubs with
// real tokens, one row of the code table after the other.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const grpc = require('@grpc/grpc-js');

const {
  startDev, startProbe, mint, dpopKeyPath, proof, unary, serverStream, bidi, rejected, goCall, metadataOf,
} = require('../testdata/support');
const { usherInterceptor, claimsOf, DPOP_ALGS } = require('..');

const AUDIENCE = 'api/invoices';
const SCOPE = 'invoices.read';
const ECHO = '/usher.test.v1.Probe/Echo';
const COUNT = '/usher.test.v1.Probe/Count';
const CHAT = '/usher.test.v1.Probe/Chat';
const GO_ERROR_INFO_KEYS = ['actual', 'actual_audience', 'claim', 'expected', 'expected_audience', 'hint', 'issuer', 'kid', 'message'];
const { UNAUTHENTICATED, PERMISSION_DENIED } = grpc.status;

// The three kinds of call with the same metadata: what each got, and which handlers ran.
async function everyKind(api, md) {
  const client = api.probe();
  const before = api.log.length;
  const u = await unary(client, 'echo', { text: 'x' }, md);
  const s = await serverStream(client, 'count', { n: 2 }, md);
  const b = await bidi(client, 'chat', ['a', 'b'], md);
  return { unary: u, stream: s, bidi: b, ran: api.log.slice(before) };
}

// Every kind of call is refused alike before any handler runs; returns the unary call's rejection.
async function refusedEverywhere(api, md, code, reason, what) {
  const r = await everyKind(api, md);
  const first = rejected(r.unary.err, code, reason, `${what} (unary)`);
  for (const kind of ['stream', 'bidi']) {
    const got = rejected(r[kind].err, code, reason, `${what} (${kind})`);
    // The same challenge (its description may differ: usher's hint can name a cooldown that runs).
    for (const k of ['scheme', 'realm', 'algs', 'order']) assert.deepEqual(got.challenge[k], first.challenge[k], `${what}: ${kind}: ${got.raw}`);
    assert.equal(got.challenge.params.error, first.challenge.params.error, `${what}: ${kind}: ${got.raw}`);
    assert.deepEqual(r[kind].messages, [], `${what}: ${kind} got messages`);
  }
  assert.deepEqual(r.ran.map((e) => e.method), [], `${what}: a handler ran`);
  return first;
}

describe('the interceptor against usher dev', { timeout: 120000 }, () => {
  let usher;
  let api; // guardRepeatedHeaders on
  let interceptor;
  const closers = [];

  before(async () => {
    usher = await startDev();
    interceptor = usherInterceptor({
      target: usher.addr, audience: AUDIENCE, scopes: { [ECHO]: [SCOPE], [COUNT]: [SCOPE], [CHAT]: [SCOPE] },
    });
    api = await startProbe([interceptor], { guard: true });
    closers.push(() => api.stop(), () => interceptor.close());
  });

  after(async () => {
    for (const close of closers.reverse()) await close();
    if (usher) await usher.stop();
  });

  const token = (opts = {}) => mint(usher.addr, opts.audience || AUDIENCE, { scopes: [SCOPE], ...opts });
  const bearer = async (opts) => ({ authorization: `Bearer ${await token(opts)}` });

  it('valid: every kind of handler runs, with the verified claims from claimsOf(call)', async () => {
    const tok = await token();
    const r = await everyKind(api, { authorization: `Bearer ${tok}` });
    for (const kind of ['unary', 'stream', 'bidi']) assert.equal(r[kind].err ?? null, null, `${kind}: ${r[kind].err && r[kind].err.details}`);
    assert.deepEqual(r.unary.resp, { text: 'x', subject: 'usher-dev', audience: [AUDIENCE] });
    assert.deepEqual(r.stream.messages.map((m) => [m.text, m.subject, m.audience]), [['0', 'usher-dev', [AUDIENCE]], ['1', 'usher-dev', [AUDIENCE]]]);
    assert.deepEqual(r.bidi.messages.map((m) => [m.text, m.subject]), [['a', 'usher-dev'], ['b', 'usher-dev']]);
    assert.deepEqual(r.ran.map((e) => e.method), ['Echo', 'Count', 'Chat']);
    for (const { method, claims } of r.ran) {
      assert.ok(claims, `${method}: no claims`);
      assert.equal(claims.subject, 'usher-dev');
      assert.deepEqual(claims.audience, [AUDIENCE]);
      assert.deepEqual(claims.scopes, [SCOPE]);
      assert.equal(claims.clientId, 'usher-dev');
      assert.equal(claims.tokenType, 'at+jwt');
      assert.equal(claims.keyId, 'dev-rs256');
      assert.equal(claims.issuer, usher.issuer);
      assert.ok(claims.expiresAt instanceof Date && claims.expiresAt > new Date(), String(claims.expiresAt));
      assert.equal(claims.raw.aud, AUDIENCE);
      assert.deepEqual(claims.confirmation, {});
    }
  });

  it('claims are the call\'s own: a handler changing them changes no other call\'s (cached verdict)', async () => {
    const md = await bearer();
    const client = api.probe();
    const before = api.log.length;
    assert.ok((await unary(client, 'echo', { text: '1' }, md)).resp);
    const first = api.log[before].claims;
    first.scopes.push('admin');
    first.raw.scope = 'admin';
    assert.ok((await unary(client, 'echo', { text: '2' }, md)).resp);
    const second = api.log[before + 1].claims;
    assert.notEqual(second, first);
    assert.deepEqual(second.scopes, [SCOPE]);
    assert.equal(second.raw.scope, SCOPE);
    assert.ok(interceptor.cacheStats().hits >= 1, JSON.stringify(interceptor.cacheStats()));
  });

  it('no authorization: UNAUTHENTICATED MISSING_CREDENTIALS, a Bearer challenge without an error', async () => {
    const { info, raw } = await refusedEverywhere(api, {}, UNAUTHENTICATED, 'MISSING_CREDENTIALS', 'no authorization');
    assert.equal(raw, `Bearer realm="${AUDIENCE}"`); // RFC 6750 §3.1: no error code when no credentials came
    assert.deepEqual(info.metadata, {});
  });

  it('two authorization values: UNAUTHENTICATED INVALID_CREDENTIALS (sent by grpc-go; guardRepeatedHeaders)', async () => {
    const good = `Bearer ${await token()}`;
    for (const auth of [[good, good], [good, 'Bearer other'], ['Bearer other', good]]) {
      const before = api.log.length;
      const got = await goCall(api.addr, ECHO, { auth });
      assert.equal(got.code, 'Unauthenticated', JSON.stringify(got));
      assert.equal(got.message, '2 authorization values: send exactly one');
      assert.deepEqual(got.details, [{ type: 'google.rpc.ErrorInfo', reason: 'INVALID_CREDENTIALS', domain: 'usher.v1' }]);
      assert.deepEqual(got.trailer['www-authenticate'],
        [`Bearer realm="${AUDIENCE}", error="invalid_request", error_description="2 authorization values: send exactly one"`]);
      assert.equal(api.log.length, before, 'the handler ran');
    }
    assert.equal((await goCall(api.addr, ECHO, { auth: [good] })).code, 'OK', 'one value from grpc-go');
  });

  it('without guardRepeatedHeaders, Node\'s HTTP/2 keeps the first authorization only (why the guard exists)', async () => {
    const bare = await startProbe([interceptor]);
    try {
      const good = `Bearer ${await token()}`;
      const users = `Bearer ${await token({ audience: 'api/users' })}`;
      let got = await goCall(bare.addr, ECHO, { auth: [users, good] });
      assert.equal(got.code, 'Unauthenticated', JSON.stringify(got));
      assert.equal(got.details[0].reason, 'AUDIENCE_MISMATCH', 'the first value is the one checked');
      got = await goCall(bare.addr, ECHO, { auth: [good, users] });
      assert.equal(got.code, 'OK', JSON.stringify(got));
      assert.deepEqual(bare.log.map((e) => e.authorization), [[good]], 'the handler sees the value that was checked, alone');
    } finally {
      await bare.stop();
    }
  });

  it('another scheme, a bare token or an empty one: UNAUTHENTICATED INVALID_CREDENTIALS, error="invalid_request"', async () => {
    const tok = await token();
    for (const [value, why] of [
      ['Basic dXNlcjpwYXNz', 'authorization scheme "Basic": this service takes Bearer or DPoP tokens'],
      [tok, `authorization scheme "${tok.slice(0, 32)}...": this service takes Bearer or DPoP tokens`],
      ['Bearer', 'empty Bearer token'],
      ['Token abc', 'authorization scheme "Token": this service takes Bearer or DPoP tokens'],
    ]) {
      const { challenge, info, raw, details } = await refusedEverywhere(api, { authorization: value }, UNAUTHENTICATED, 'INVALID_CREDENTIALS', value.slice(0, 20));
      assert.equal(challenge.scheme, 'Bearer', raw);
      assert.equal(challenge.realm, AUDIENCE);
      assert.deepEqual(challenge.order, ['error', 'error_description']);
      assert.equal(challenge.params.error, 'invalid_request');
      assert.equal(details.message, why);
      assert.equal(challenge.params.error_description, why.replace(/"/g, "'"), 'quotes cannot be in a quoted-string: replaced');
      assert.deepEqual(info.metadata, {});
    }
    const { challenge } = await refusedEverywhere(api, { authorization: 'DPoP' }, UNAUTHENTICATED, 'INVALID_CREDENTIALS', 'empty DPoP');
    assert.equal(challenge.scheme, 'DPoP');
    assert.equal(challenge.algs, DPOP_ALGS);
    assert.equal(challenge.params.error, 'invalid_request');
  });

  it('a value with white space around it never reaches the interceptor (Node\'s HTTP/2, RFC 9113 §8.2.1): refused', async () => {
    const tok = await token();
    for (const value of [`Bearer ${tok} `, ' Bearer x', 'Bearer    ']) {
      await refusedEverywhere(api, { authorization: value }, UNAUTHENTICATED, 'MISSING_CREDENTIALS', JSON.stringify(value.slice(0, 10)));
    }
  });

  it('the scheme is case-insensitive, and so is the metadata key', async () => {
    const tok = await token();
    const client = api.probe();
    for (const md of [{ authorization: `bearer ${tok}` }, { authorization: `BEARER   ${tok}` }, { Authorization: `Bearer ${tok}` }]) {
      const { resp, err } = await unary(client, 'echo', { text: 'x' }, md);
      assert.ok(resp, `${Object.keys(md)[0]}: ${md[Object.keys(md)[0]].slice(0, 10)}: ${err && err.details}`);
    }
  });

  it('malformed: UNAUTHENTICATED MALFORMED, error="invalid_token"', async () => {
    const { challenge, info } = await refusedEverywhere(api, { authorization: 'Bearer not.a.jwt' }, UNAUTHENTICATED, 'MALFORMED', 'malformed');
    assert.equal(challenge.params.error, 'invalid_token');
    assert.ok(challenge.params.error_description.startsWith('MALFORMED: '), challenge.params.error_description);
    assert.equal(info.metadata.expected_audience, AUDIENCE);
    assert.ok(info.metadata.message);
  });

  it('expired: UNAUTHENTICATED EXPIRED with a hint', async () => {
    const { challenge, info } = await refusedEverywhere(api, await bearer({ ttl: '-5m' }), UNAUTHENTICATED, 'EXPIRED', 'expired');
    assert.equal(challenge.params.error, 'invalid_token');
    assert.ok(info.metadata.hint, JSON.stringify(info.metadata));
    assert.ok(challenge.params.error_description.includes('(hint: '), challenge.params.error_description);
  });

  it('a key the issuer does not publish: UNAUTHENTICATED UNKNOWN_KEY', async () => {
    const { challenge } = await refusedEverywhere(api, await bearer({ kid: 'not-published' }), UNAUTHENTICATED, 'UNKNOWN_KEY', 'unknown kid');
    assert.equal(challenge.params.error, 'invalid_token');
  });

  it('audience mismatch: UNAUTHENTICATED AUDIENCE_MISMATCH; ErrorInfo metadata with the Go interceptor\'s keys', async () => {
    const { challenge, info, details } = await refusedEverywhere(api, await bearer({ audience: 'api/users', scopes: ['users.read'] }),
      UNAUTHENTICATED, 'AUDIENCE_MISMATCH', 'audience mismatch');
    assert.deepEqual(Object.keys(info.metadata).sort(), GO_ERROR_INFO_KEYS);
    assert.equal(info.metadata.expected_audience, AUDIENCE);
    assert.equal(info.metadata.actual_audience, 'api/users');
    assert.equal(info.metadata.claim, 'aud');
    assert.equal(info.metadata.expected, AUDIENCE);
    assert.equal(info.metadata.actual, 'api/users');
    assert.equal(info.metadata.message, 'token audience [api/users] does not include api/invoices');
    assert.match(info.metadata.hint, /Users API/);
    assert.equal(info.metadata.issuer, usher.issuer);
    assert.equal(info.metadata.kid, 'dev-rs256');
    assert.equal(details.message, `AUDIENCE_MISMATCH: ${info.metadata.message} (hint: ${info.metadata.hint})`);
    assert.equal(challenge.realm, AUDIENCE);
    assert.deepEqual(challenge.order, ['error', 'error_description']);
    assert.equal(challenge.params.error, 'invalid_token');
    assert.equal(challenge.params.error_description, details.message.replace(/"/g, "'"));
  });

  it('audience in the request metadata is ignored: the configured one is asked for', async () => {
    const users = await token({ audience: 'api/users' });
    const md = metadataOf({ authorization: `Bearer ${users}`, audience: 'api/users', 'expected-audience': 'api/users', 'x-usher-audience': 'api/users', resource: 'api/users' });
    const { info } = await refusedEverywhere(api, md, UNAUTHENTICATED, 'AUDIENCE_MISMATCH', 'audience in metadata');
    assert.equal(info.metadata.expected_audience, AUDIENCE);
  });

  it('insufficient scope: PERMISSION_DENIED INSUFFICIENT_SCOPE, error="insufficient_scope", scope="<missing>"', async () => {
    const { challenge, info } = await refusedEverywhere(api, await bearer({ scopes: ['invoices.write'] }), PERMISSION_DENIED, 'INSUFFICIENT_SCOPE', 'scope');
    assert.deepEqual(challenge.order, ['error', 'error_description', 'scope']);
    assert.equal(challenge.params.error, 'insufficient_scope');
    assert.equal(challenge.params.scope, SCOPE);
    assert.equal(info.metadata.missing_scopes, SCOPE);
    assert.equal(info.metadata.claim, 'scope');
    assert.deepEqual(Object.keys(info.metadata).sort(), [...GO_ERROR_INFO_KEYS, 'missing_scopes'].sort());
    assert.equal(info.metadata.actual, 'invoices.write');
  });

  it('the skip list matches exact full method names: Health/Check passes, Health/CheckX is checked', async () => {
    const health = api.health();
    const before = api.log.length;
    for (const md of [{}, { authorization: 'Bearer not.a.jwt' }]) {
      const { resp, err } = await unary(health, 'check', { service: '' }, md);
      assert.ok(resp, err && err.details);
    }
    assert.deepEqual(api.log.slice(before).map((e) => [e.method, e.claims]), [['Check', undefined], ['Check', undefined]], 'skipped: no claims');
    const { err } = await unary(health, 'checkX', { service: '' }, {});
    rejected(err, UNAUTHENTICATED, 'MISSING_CREDENTIALS', 'CheckX');
    const ok = await unary(health, 'checkX', { service: '' }, await bearer());
    assert.ok(ok.resp, ok.err && ok.err.details);
    assert.equal(api.log.at(-1).method, 'CheckX');
    assert.equal(api.log.at(-1).claims.subject, 'usher-dev');
  });

  it('a skip entry of its own is exact too; the scopes apply per method', async () => {
    const i = usherInterceptor({ target: usher.addr, audience: AUDIENCE, skip: [ECHO], scopes: { [COUNT]: ['invoices.write'] } });
    const own = await startProbe([i]);
    try {
      const client = own.probe();
      assert.ok((await unary(client, 'echo', { text: 'x' }, {})).resp, 'Echo is skipped');
      const md = await bearer(); // invoices.read only
      rejected((await serverStream(client, 'count', { n: 1 }, md)).err, PERMISSION_DENIED, 'INSUFFICIENT_SCOPE', 'Count needs invoices.write');
      assert.equal((await bidi(client, 'chat', ['a'], md)).err, null, 'Chat needs no scope');
      rejected((await bidi(client, 'chat', ['a'], {})).err, UNAUTHENTICATED, 'MISSING_CREDENTIALS', 'Chat is not skipped');
    } finally {
      await own.stop();
      i.close();
    }
  });

  describe('DPoP', () => {
    const htu = (method) => `http://${api.addr}${method}`;

    it('a DPoP-bound token with its proof: valid, with cnf.jkt in the claims (unary and streaming)', async () => {
      const key = dpopKeyPath();
      const tok = await token({ dpopKey: key });
      const client = api.probe();
      const before = api.log.length;
      const u = await unary(client, 'echo', { text: 'x' }, { authorization: `DPoP ${tok}`, dpop: await proof(key, 'POST', htu(ECHO), tok) });
      assert.ok(u.resp, u.err && u.err.details);
      const s = await serverStream(client, 'count', { n: 1 }, { authorization: `dpop ${tok}`, dpop: await proof(key, 'POST', htu(COUNT), tok) });
      assert.equal(s.err, null, s.err && s.err.details);
      const ran = api.log.slice(before);
      assert.deepEqual(ran.map((e) => e.method), ['Echo', 'Count']);
      for (const { claims } of ran) {
        assert.deepEqual(Object.keys(claims.confirmation), ['jkt']);
        assert.equal(claims.confirmation.jkt, claims.raw.cnf.jkt);
      }
    });

    it('the same token sent as Bearer: UNAUTHENTICATED PROOF_MISSING with a DPoP challenge', async () => {
      const key = dpopKeyPath();
      const tok = await token({ dpopKey: key });
      for (const md of [{ authorization: `Bearer ${tok}` }, { authorization: `Bearer ${tok}`, dpop: await proof(key, 'POST', htu(ECHO), tok) }]) {
        const { challenge, info } = await refusedEverywhere(api, md, UNAUTHENTICATED, 'PROOF_MISSING', `as Bearer${md.dpop ? ' with a proof' : ''}`);
        assert.equal(challenge.scheme, 'DPoP');
        assert.equal(challenge.algs, DPOP_ALGS);
        assert.equal(challenge.params.error, 'invalid_token');
        assert.ok(challenge.params.error_description.startsWith('PROOF_MISSING: '), challenge.params.error_description);
        assert.match(info.metadata.hint, /DPoP/);
      }
    });

    it('DPoP without a proof, with two, or with one for another URI or replayed: PROOF_MISSING / INVALID_PROOF', async () => {
      const key = dpopKeyPath();
      const tok = await token({ dpopKey: key });
      let r = await refusedEverywhere(api, { authorization: `DPoP ${tok}` }, UNAUTHENTICATED, 'PROOF_MISSING', 'no proof');
      assert.equal(r.challenge.scheme, 'DPoP');
      assert.equal(r.challenge.params.error, 'invalid_token');
      assert.match(r.challenge.params.error_description, /without a proof/);

      const p1 = await proof(key, 'POST', htu(ECHO), tok);
      const p2 = await proof(key, 'POST', htu(ECHO), tok);
      r = await refusedEverywhere(api, metadataOf({ authorization: `DPoP ${tok}`, dpop: [p1, p2] }), UNAUTHENTICATED, 'INVALID_PROOF', 'two proofs');
      assert.equal(r.challenge.params.error, 'invalid_dpop_proof');
      assert.match(r.challenge.params.error_description, /^2 dpop values/);
      const viaGo = await goCall(api.addr, ECHO, { auth: [`DPoP ${tok}`], dpop: [p1, p2] });
      assert.equal(viaGo.code, 'Unauthenticated');
      assert.equal(viaGo.details[0].reason, 'INVALID_PROOF');

      const client = api.probe();
      const other = await unary(client, 'echo', { text: 'x' }, { authorization: `DPoP ${tok}`, dpop: await proof(key, 'POST', htu(COUNT), tok) });
      r = rejected(other.err, UNAUTHENTICATED, 'INVALID_PROOF', 'proof for another method');
      assert.equal(r.challenge.scheme, 'DPoP');
      assert.equal(r.challenge.params.error, 'invalid_dpop_proof');
      assert.equal(r.info.metadata.claim, 'htu');
      assert.equal(r.info.metadata.expected, htu(ECHO), 'the interceptor asks for http://{:authority}/{package.Service}/{Method}');

      const p = await proof(key, 'POST', htu(ECHO), tok);
      assert.ok((await unary(client, 'echo', { text: 'x' }, { authorization: `DPoP ${tok}`, dpop: p })).resp);
      rejected((await unary(client, 'echo', { text: 'x' }, { authorization: `DPoP ${tok}`, dpop: p })).err, UNAUTHENTICATED, 'INVALID_PROOF', 'replayed');
    });

    it('any rejection of a DPoP request has a DPoP challenge', async () => {
      const key = dpopKeyPath();
      const tok = await token({ audience: 'api/users', dpopKey: key });
      const { err } = await unary(api.probe(), 'echo', { text: 'x' }, { authorization: `DPoP ${tok}`, dpop: await proof(key, 'POST', htu(ECHO), tok) });
      const { challenge } = rejected(err, UNAUTHENTICATED, 'AUDIENCE_MISMATCH', 'DPoP token for another API');
      assert.equal(challenge.scheme, 'DPoP');
      assert.equal(challenge.params.error, 'invalid_token');
    });
  });

  it('a Go caller decodes the ErrorInfo with status.FromError(err).Details(), and reads www-authenticate', async () => {
    const users = `Bearer ${await token({ audience: 'api/users' })}`;
    const node = rejected((await unary(api.probe(), 'echo', { text: 'x' }, { authorization: users })).err, UNAUTHENTICATED, 'AUDIENCE_MISMATCH', 'node');
    const got = await goCall(api.addr, ECHO, { auth: [users] });
    assert.equal(got.code, 'Unauthenticated');
    assert.equal(got.message, node.details.message);
    assert.deepEqual(got.details, [{ type: 'google.rpc.ErrorInfo', reason: 'AUDIENCE_MISMATCH', domain: 'usher.v1', metadata: node.info.metadata }]);
    assert.deepEqual(got.trailer['www-authenticate'], [node.raw]);

    const scope = await goCall(api.addr, ECHO, { auth: [`Bearer ${await token({ scopes: [] })}`] });
    assert.equal(scope.code, 'PermissionDenied');
    assert.equal(scope.details[0].reason, 'INSUFFICIENT_SCOPE');
    assert.equal(scope.details[0].metadata.missing_scopes, SCOPE);
  });

  it('terse mode (public edges): the reason only, no error_description, no ErrorInfo metadata but missing_scopes', async () => {
    const i = usherInterceptor({ target: usher.addr, audience: AUDIENCE, terse: true, scopes: { [ECHO]: [SCOPE] } });
    const edge = await startProbe([i]);
    try {
      const client = edge.probe();
      let r = rejected((await unary(client, 'echo', { text: 'x' }, await bearer({ audience: 'api/users' }))).err, UNAUTHENTICATED, 'AUDIENCE_MISMATCH', 'terse');
      assert.equal(r.details.message, 'AUDIENCE_MISMATCH');
      assert.equal(r.raw, `Bearer realm="${AUDIENCE}", error="invalid_token"`);
      assert.deepEqual(r.info.metadata, {});
      r = rejected((await unary(client, 'echo', { text: 'x' }, await bearer({ scopes: [] }))).err, PERMISSION_DENIED, 'INSUFFICIENT_SCOPE', 'terse scope');
      assert.equal(r.details.message, 'INSUFFICIENT_SCOPE');
      assert.equal(r.raw, `Bearer realm="${AUDIENCE}", error="insufficient_scope", scope="${SCOPE}"`);
      assert.deepEqual(r.info.metadata, { missing_scopes: SCOPE });
      assert.ok((await unary(client, 'echo', { text: 'x' }, await bearer())).resp);
    } finally {
      await edge.stop();
      i.close();
    }
  });

  it('with other interceptors: those after usher\'s see only calls it let through; claims follow the metadata object', async () => {
    const seen = [];
    // passes the metadata object on (the usual case) / replaces it with a copy
    const observer = (name, replace) => (methodDescriptor, call) => new grpc.ServerInterceptingCall(call, {
      start: (next) => next({
        onReceiveMetadata: (md, pass) => {
          seen.push(name);
          pass(replace ? md.clone() : md);
        },
      }),
    });
    for (const [replace, wantClaims] of [[false, true], [true, false]]) {
      const i = usherInterceptor({ target: usher.addr, audience: AUDIENCE });
      const own = await startProbe([i, observer('after', replace)]);
      try {
        seen.length = 0;
        const client = own.probe();
        rejected((await unary(client, 'echo', { text: 'x' }, {})).err, UNAUTHENTICATED, 'MISSING_CREDENTIALS', 'no token');
        assert.deepEqual(seen, [], 'an interceptor after usher\'s saw a refused call');
        const { resp, err } = await unary(client, 'echo', { text: 'x' }, await bearer());
        assert.ok(resp, err && err.details);
        assert.deepEqual(seen, ['after']);
        assert.equal(Boolean(own.log.at(-1).claims), wantClaims, `metadata ${replace ? 'replaced' : 'passed on'}`);
        if (!wantClaims) assert.equal(resp.subject, '', 'no claims: the handler answered without them');
      } finally {
        await own.stop();
        i.close();
      }
    }
  });

  it('refuses a configuration it cannot enforce', () => {
    assert.throws(() => usherInterceptor({ target: usher.addr }), /audience is required/);
    assert.throws(() => usherInterceptor({ target: usher.addr, audience: '' }), /audience is required/);
    assert.throws(() => usherInterceptor({ audience: AUDIENCE }), /target is required/);
    assert.throws(() => usherInterceptor({ target: usher.addr, audience: AUDIENCE, scopes: { 'usher.test.v1.Probe/Echo': ['a'] } }), /not a full method name/);
    assert.throws(() => usherInterceptor({ target: usher.addr, audience: AUDIENCE, scopes: { [ECHO]: 'a' } }), /array of scope names/);
    assert.throws(() => usherInterceptor({ target: usher.addr, audience: AUDIENCE, skip: ['grpc.health.v1.Health/Check'] }), /not a full method name/);
    assert.throws(() => usherInterceptor({ target: usher.addr, audience: AUDIENCE, cache: { maxEntries: 0 } }), /must be positive/);
    assert.throws(() => usherInterceptor({ target: usher.addr, audience: AUDIENCE, timeoutMs: 0 }), /timeoutMs/);
  });

  it('claimsOf is undefined for anything the interceptor did not let through', () => {
    assert.equal(claimsOf(undefined), undefined);
    assert.equal(claimsOf(new grpc.Metadata()), undefined);
    assert.equal(claimsOf({ metadata: metadataOf({ authorization: 'Bearer x' }) }), undefined);
  });
});
