'use strict';
// Fail closed: when usher cannot decide, no handler runs. Against a real
// `usher serve` whose issuer's keys cannot be fetched (KEYS_UNAVAILABLE), a
// real `usher dev` stopped under the interceptor, a port nothing listens on,
// and a fake usher (real grpc-js server, usher's own proto) for answers a
// real usher never gives: an unknown reason, contradictions, errors, silence.
// Also every reason of reasons.json through the interceptor, and a check that
// holds the handler back until usher has answered.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const grpc = require('@grpc/grpc-js');

const {
  startDev, startKeysUnavailable, startProbe, startFakeUsher, verdict, mint, closedPort, eventually,
  unary, serverStream, bidi, rejected, withTimeout, metadataOf, probePkg,
} = require('../testdata/support');
const { usherInterceptor, DPOP_ALGS, REASON_RULES, UNKNOWN_REASON_RULE } = require('..');

const AUDIENCE = 'api/invoices';
const { UNAVAILABLE, UNAUTHENTICATED, OK } = grpc.status;

// Unary, server-streaming and bidi calls with md: each refused UNAVAILABLE with reason, no handler run.
async function unavailableEverywhere(api, md, reason, what) {
  const client = api.probe();
  const before = api.log.length;
  const out = [];
  out.push(rejected((await unary(client, 'echo', { text: 'x' }, md)).err, UNAVAILABLE, reason, `${what} (unary)`));
  const s = await serverStream(client, 'count', { n: 2 }, md);
  out.push(rejected(s.err, UNAVAILABLE, reason, `${what} (stream)`));
  assert.deepEqual(s.messages, []);
  const b = await bidi(client, 'chat', ['a'], md);
  out.push(rejected(b.err, UNAVAILABLE, reason, `${what} (bidi)`));
  assert.deepEqual(b.messages, []);
  assert.deepEqual(api.log.slice(before), [], `${what}: a handler ran`);
  for (const r of out) {
    // Not the token's fault: a challenge without an error code.
    assert.equal(r.raw, `Bearer realm="${AUDIENCE}"`, `${what}: ${r.raw}`);
  }
  return out[0];
}

describe('usher cannot decide: UNAVAILABLE, fail closed', { timeout: 120000 }, () => {
  it('KEYS_UNAVAILABLE from usher serve', async () => {
    const serve = await startKeysUnavailable();
    const i = usherInterceptor({ target: serve.addr, audience: AUDIENCE, timeoutMs: 5000 });
    const api = await startProbe([i]);
    try {
      const r = await unavailableEverywhere(api, { authorization: `Bearer ${serve.token(AUDIENCE)}` }, 'KEYS_UNAVAILABLE', 'keys unavailable');
      assert.match(r.details.message, /^KEYS_UNAVAILABLE: /);
      assert.equal(r.info.metadata.expected_audience, AUDIENCE);
      assert.deepEqual(i.cacheStats(), { hits: 0, misses: 3, size: 0 }, 'KEYS_UNAVAILABLE is never cached');
    } finally {
      await api.stop();
      i.close();
      await serve.stop();
    }
  });

  for (const cache of [false, undefined]) {
    it(`usher stopped under a running service: VALIDATION_UNAVAILABLE within the timeout (cache ${cache === false ? 'off' : 'on, new token'})`, async () => {
      const usher = await startDev();
      const i = usherInterceptor({ target: usher.addr, audience: AUDIENCE, timeoutMs: 1500, ...(cache === false ? { cache: false } : {}) });
      const api = await startProbe([i]);
      try {
        const client = api.probe();
        const tok = await mint(usher.addr, AUDIENCE);
        const fresh = await mint(usher.addr, AUDIENCE);
        assert.ok((await unary(client, 'echo', { text: 'x' }, { authorization: `Bearer ${tok}` })).resp, 'valid while usher runs');
        await usher.stop();
        const start = Date.now();
        const r = await unavailableEverywhere(api, { authorization: `Bearer ${cache === false ? tok : fresh}` }, 'VALIDATION_UNAVAILABLE', 'usher stopped');
        assert.ok(Date.now() - start < 3 * 1500 + 2000, `three calls took ${Date.now() - start}ms`);
        assert.match(r.details.message, new RegExp(`^usher could not validate the token: usher at ${usher.addr.replace(/\./g, '\\.')}: (UNAVAILABLE|DEADLINE_EXCEEDED): `));
        assert.deepEqual(r.info.metadata, {});
      } finally {
        await api.stop();
        i.close();
        await usher.stop();
      }
    });
  }

  it('usher never reachable (a closed port), and terse mode says only "retry later"', async () => {
    const target = `127.0.0.1:${await closedPort()}`;
    for (const terse of [false, true]) {
      const i = usherInterceptor({ target, audience: AUDIENCE, timeoutMs: 1000, terse });
      const api = await startProbe([i]);
      try {
        const r = await unavailableEverywhere(api, { authorization: 'Bearer a.b.c' }, 'VALIDATION_UNAVAILABLE', `closed port (terse ${terse})`);
        if (terse) assert.equal(r.details.message, 'token validation unavailable; retry later');
        else assert.ok(r.details.message.includes(target), r.details.message);
      } finally {
        await api.stop();
        i.close();
      }
    }
  });

  it('usher past the deadline (it never answers): UNAVAILABLE after timeoutMs', async () => {
    const fake = await startFakeUsher(() => new Promise(() => {})); // never answers
    const i = usherInterceptor({ target: fake.addr, audience: AUDIENCE, timeoutMs: 300 });
    const api = await startProbe([i]);
    try {
      const start = Date.now();
      const { err } = await unary(api.probe(), 'echo', { text: 'x' }, { authorization: 'Bearer a.b.c' });
      const took = Date.now() - start;
      const r = rejected(err, UNAVAILABLE, 'VALIDATION_UNAVAILABLE', 'deadline');
      assert.match(r.details.message, /DEADLINE_EXCEEDED/);
      assert.ok(took >= 250 && took < 5000, `took ${took}ms`);
      assert.deepEqual(api.log, []);
    } finally {
      await api.stop();
      i.close();
      await fake.stop();
    }
  });

  it('usher answering with a gRPC error (not a verdict): UNAVAILABLE, never let through', async () => {
    let code = grpc.status.INVALID_ARGUMENT;
    const fake = await startFakeUsher(() => { throw { code, details: 'fake failure' }; });
    const i = usherInterceptor({ target: fake.addr, audience: AUDIENCE });
    const api = await startProbe([i]);
    try {
      for (code of [grpc.status.INVALID_ARGUMENT, grpc.status.INTERNAL, grpc.status.UNAUTHENTICATED, grpc.status.PERMISSION_DENIED, grpc.status.UNIMPLEMENTED]) {
        const r = rejected((await unary(api.probe(), 'echo', { text: 'x' }, { authorization: 'Bearer a.b.c' })).err, UNAVAILABLE, 'VALIDATION_UNAVAILABLE', `usher error ${code}`);
        assert.match(r.details.message, /fake failure/);
      }
      assert.deepEqual(api.log, []);
    } finally {
      await api.stop();
      i.close();
      await fake.stop();
    }
  });
});

describe('verdicts a real usher never sends (fake usher)', { timeout: 60000 }, () => {
  let fake;
  let answer;
  let api;
  let interceptor;

  before(async () => {
    fake = await startFakeUsher((req) => answer(req));
    interceptor = usherInterceptor({ target: fake.addr, audience: AUDIENCE, cache: false });
    api = await startProbe([interceptor]);
  });

  after(async () => {
    await api.stop();
    interceptor.close();
    await fake.stop();
  });

  it('an unknown reason (999, a newer usher): UNAVAILABLE, ErrorInfo reason REASON_999', async () => {
    for (const valid of [false, true]) {
      answer = () => verdict(999, { valid, claims: { subject: 's', audience: [AUDIENCE] } });
      const r = await unavailableEverywhere(api, { authorization: 'Bearer a.b.c' }, 'REASON_999', `reason 999, valid ${valid}`);
      assert.match(r.details.message, /^REASON_999: fake 999/);
    }
  });

  it('a verdict that contradicts itself, or UNSPECIFIED: UNAVAILABLE', async () => {
    for (const [reason, valid, name] of [
      ['REASON_MALFORMED', true, 'MALFORMED'], ['REASON_VALID', false, 'VALID'],
      ['REASON_UNSPECIFIED', false, 'UNSPECIFIED'], ['REASON_UNSPECIFIED', true, 'UNSPECIFIED'],
    ]) {
      answer = () => verdict(reason, { valid, claims: { subject: 's', audience: [AUDIENCE] } });
      await unavailableEverywhere(api, { authorization: 'Bearer a.b.c' }, name, `${reason} valid=${valid}`);
    }
  });

  for (const scheme of ['Bearer', 'DPoP']) {
    it(`every reason of reasons.json as the table says (scheme ${scheme})`, async () => {
      const names = Object.keys(REASON_RULES);
      assert.ok(names.length >= 17, names.join(' '));
      const client = api.probe();
      for (const name of names) {
        answer = () => verdict(name, {
          claims: { subject: 'svc', audience: ['api/other'], issuer: 'https://issuer.example', keyId: 'k1' },
          mismatch: { claim: 'scope', expected: ['a.read', 'a.write'], actual: ['a.read'] }, hint: 'do this',
        });
        const md = scheme === 'DPoP' ? { authorization: 'DPoP a.b.c', dpop: 'p.r.f' } : { authorization: 'Bearer a.b.c' };
        const before = api.log.length;
        const { resp, err } = await unary(client, 'echo', { text: 'x' }, md);
        const rule = REASON_RULES[name];
        if (rule.code === OK) {
          assert.ok(resp, `${name}: ${err && err.details}`);
          assert.equal(api.log.length, before + 1);
          continue;
        }
        const short = name.replace(/^REASON_/, '');
        const r = rejected(err, rule.code, short, `${name} (${scheme})`);
        assert.equal(api.log.length, before, `${name}: the handler ran`);
        const wantScheme = rule.challenge === 'DPoP' || scheme === 'DPoP' ? 'DPoP' : 'Bearer';
        assert.equal(r.challenge.scheme, wantScheme, `${name}: ${r.raw}`);
        if (wantScheme === 'DPoP') assert.equal(r.challenge.algs, DPOP_ALGS);
        else assert.equal(r.challenge.realm, AUDIENCE);
        assert.equal(r.challenge.params.error ?? '', rule.bearerError, `${name}: ${r.raw}`);
        assert.equal(r.challenge.params.scope, rule.bearerError === 'insufficient_scope' ? 'a.write' : undefined, `${name}: ${r.raw}`);
        assert.equal(r.details.message, `${short}: fake ${name} (hint: do this)`);
        assert.deepEqual(r.info.metadata, {
          hint: 'do this', message: `fake ${name}`, expected_audience: AUDIENCE, actual_audience: 'api/other',
          issuer: 'https://issuer.example', kid: 'k1', claim: 'scope', expected: 'a.read a.write', actual: 'a.read',
          ...(rule.bearerError === 'insufficient_scope' ? { missing_scopes: 'a.write' } : {}),
        }, name);
      }
      assert.equal(UNKNOWN_REASON_RULE.code, UNAVAILABLE);
    });
  }

  it('what the interceptor asks: the configured audience and scopes; for DPoP the proof, POST and http://{:authority}{method}', async () => {
    const i = usherInterceptor({ target: fake.addr, audience: AUDIENCE, cache: false, scopes: { '/usher.test.v1.Probe/Echo': ['b', 'a'] } });
    const own = await startProbe([i]);
    try {
      answer = () => verdict('REASON_VALID', { claims: { subject: 's', audience: [AUDIENCE] } });
      const from = fake.requests.length;
      const client = own.probe();
      assert.ok((await unary(client, 'echo', { text: 'x' }, metadataOf({ authorization: 'Bearer t1', audience: 'api/users' }))).resp);
      assert.ok((await unary(client, 'echo', { text: 'x' }, { authorization: 'DPoP t2', dpop: 'p.r.f' })).resp);
      const other = own.probe(grpc.credentials.createInsecure(), own.addr, { 'grpc.default_authority': 'api.example.com:80' });
      assert.ok((await serverStream(other, 'count', { n: 1 }, { authorization: 'DPoP t3', dpop: 'p.r.g' })).err === null);
      const got = fake.requests.slice(from).map((r) => ({
        token: r.token, expectedAudience: r.expectedAudience, requiredScopes: r.requiredScopes, scheme: r.scheme,
        dpopProof: r.dpopProof, httpMethod: r.httpMethod, httpUri: r.httpUri, clientCertificateSha256: r.clientCertificateSha256,
      }));
      assert.deepEqual(got, [
        { token: 't1', expectedAudience: AUDIENCE, requiredScopes: ['b', 'a'], scheme: 'Bearer', dpopProof: '', httpMethod: '', httpUri: '', clientCertificateSha256: '' },
        { token: 't2', expectedAudience: AUDIENCE, requiredScopes: ['b', 'a'], scheme: 'DPoP', dpopProof: 'p.r.f', httpMethod: 'POST', httpUri: `http://${own.addr}/usher.test.v1.Probe/Echo`, clientCertificateSha256: '' },
        { token: 't3', expectedAudience: AUDIENCE, requiredScopes: [], scheme: 'DPoP', dpopProof: 'p.r.g', httpMethod: 'POST', httpUri: 'http://api.example.com/usher.test.v1.Probe/Count', clientCertificateSha256: '' },
      ]);
    } finally {
      await own.stop();
      i.close();
    }
  });
});

describe('the check completes before the handler runs', { timeout: 60000 }, () => {
  // usher answers only when the test releases it: until then, no handler may have run.
  for (const kind of ['unary', 'server-streaming', 'bidi']) {
    it(`${kind}: no handler while usher has not answered; after VALID it runs; after a rejection never`, async () => {
      const held = [];
      const fake = await startFakeUsher(() => new Promise((resolve) => held.push(resolve)));
      const i = usherInterceptor({ target: fake.addr, audience: AUDIENCE, cache: false, timeoutMs: 10000 });
      const api = await startProbe([i]);
      const client = api.probe();
      const call = (md) => (kind === 'unary' ? unary(client, 'echo', { text: 'm1' }, md)
        : kind === 'bidi' ? bidi(client, 'chat', ['m1', 'm2'], md) : serverStream(client, 'count', { n: 2 }, md));
      try {
        for (const [answerWith, wantRan] of [[verdict('REASON_VALID', { claims: { subject: 'ok', audience: [AUDIENCE] } }), true],
          [verdict('REASON_EXPIRED', { claims: { subject: 'late', audience: [AUDIENCE] } }), false]]) {
          const before = api.log.length;
          const pending = call({ authorization: 'Bearer a.b.c' });
          await eventually(() => held.length === 1, 10000, 'usher asked');
          // usher has been asked, so the server has had the call's metadata for a while: the handler must not have run.
          await new Promise((r) => setImmediate(r));
          assert.equal(api.log.length, before, 'a handler ran before usher answered');
          held.shift()(answerWith);
          const res = await withTimeout(pending, 10000, 'the call');
          if (wantRan) {
            assert.equal(res.err ?? null, null, res.err && res.err.details);
            assert.deepEqual(api.log.slice(before).map((e) => e.claims.subject), ['ok']);
            if (kind === 'bidi') assert.deepEqual(res.messages.map((m) => m.text), ['m1', 'm2'], 'messages sent during the check reach the handler');
            if (kind === 'server-streaming') assert.equal(res.messages.length, 2);
          } else {
            rejected(res.err, UNAUTHENTICATED, 'EXPIRED', kind);
            assert.equal(api.log.length, before, 'a handler ran after a rejection');
          }
        }
      } finally {
        for (const release of held) release(verdict('REASON_EXPIRED'));
        await api.stop();
        i.close();
        await fake.stop();
      }
    });
  }

  it('probe.proto is what the tests think it is: Count server-streaming, Chat bidi', () => {
    const svc = probePkg.Probe.service;
    assert.deepEqual([svc.Echo.requestStream, svc.Echo.responseStream], [false, false]);
    assert.deepEqual([svc.Count.requestStream, svc.Count.responseStream], [false, true]);
    assert.deepEqual([svc.Chat.requestStream, svc.Chat.responseStream], [true, true]);
  });
});
