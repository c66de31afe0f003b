'use strict';
// The verdict cache's rules (the Go cache's, client/cache.go), through the
// interceptor on a real grpc-js server, with a fake usher that counts what it
// is asked and a clock the test moves; and once against a real usher that is
// stopped under a cached verdict.

const { describe, it, before, after, beforeEach } = require('node:test');
const assert = require('node:assert/strict');
const grpc = require('@grpc/grpc-js');

const {
  startDev, startProbe, startFakeUsher, verdict, mint, eventually, unary, serverStream, bidi, rejected,
} = require('../testdata/support');
const { usherInterceptor, REASON_RULES } = require('..');
const { makeKey } = require('../lib/cache');

const AUDIENCE = 'api/invoices';
const T0 = Date.UTC(2030, 0, 1); // the fake clock's start, ms
const seconds = (ms) => ({ seconds: String(Math.floor(ms / 1000)), nanos: 0 });

describe('the verdict cache', { timeout: 60000 }, () => {
  let fake;
  let answer;
  let now;
  const open = [];

  before(async () => {
    fake = await startFakeUsher((req) => answer(req));
  });

  after(async () => {
    for (const close of open.splice(0).reverse()) await close();
    await fake.stop();
  });

  beforeEach(() => {
    now = T0;
    answer = () => verdict('REASON_VALID', { claims: { subject: 's', audience: [AUDIENCE], expiresAt: seconds(T0 + 3600000) } });
  });

  // A protected server whose cache runs on the test's clock.
  async function protectedApi(opts = {}) {
    const i = usherInterceptor({
      target: fake.addr, audience: AUDIENCE, now: () => now,
      scopes: { '/usher.test.v1.Probe/Echo': ['a', 'b'], '/usher.test.v1.Probe/Count': ['b', 'a'], '/usher.test.v1.Probe/Chat': ['c'] },
      ...opts,
    });
    const api = await startProbe([i]);
    open.push(() => api.stop(), () => i.close());
    const client = api.probe();
    const asked = () => fake.requests.length;
    const echo = (md) => unary(client, 'echo', { text: 'x' }, md);
    return { i, api, client, asked, echo };
  }

  it('a repeated token costs no call to usher; the key is token, audience and sorted scopes', async () => {
    const { i, client, asked, echo } = await protectedApi();
    const a0 = asked();
    for (let n = 0; n < 3; n += 1) assert.ok((await echo({ authorization: 'Bearer t1' })).resp);
    assert.equal(asked() - a0, 1, 'three calls, one question');
    // Count needs the same scopes in another order: the same key.
    assert.equal((await serverStream(client, 'count', { n: 1 }, { authorization: 'Bearer t1' })).err, null);
    assert.equal(asked() - a0, 1, 'scopes [b a] share the entry of [a b]');
    assert.equal(makeKey('t1', AUDIENCE, ['b', 'a']), makeKey('t1', AUDIENCE, ['a', 'b']));
    assert.ok(!makeKey('t1', AUDIENCE, []).includes('t1'), 'the key holds a hash of the token, not the token');
    // Chat needs another scope, t2 is another token: each asks.
    assert.equal((await bidi(client, 'chat', [], { authorization: 'Bearer t1' })).err, null);
    assert.ok((await echo({ authorization: 'Bearer t2' })).resp);
    assert.equal(asked() - a0, 3, 'another token and other scopes are other keys');
    assert.deepEqual(i.cacheStats(), { hits: 3, misses: 3, size: 3 });
  });

  it('never past the token\'s exp, nor past maxTtlMs', async () => {
    const { asked, echo } = await protectedApi({ cache: { maxTtlMs: 60000 } });
    answer = () => verdict('REASON_VALID', { claims: { subject: 's', audience: [AUDIENCE], expiresAt: seconds(T0 + 10000) } });
    const a0 = asked();
    assert.ok((await echo({ authorization: 'Bearer short' })).resp);
    now = T0 + 9999;
    assert.ok((await echo({ authorization: 'Bearer short' })).resp);
    assert.equal(asked() - a0, 1, 'cached until exp');
    now = T0 + 10000;
    assert.ok((await echo({ authorization: 'Bearer short' })).resp);
    assert.equal(asked() - a0, 2, 'at exp usher is asked again');

    answer = () => verdict('REASON_VALID', { claims: { subject: 's', audience: [AUDIENCE], expiresAt: seconds(T0 + 3600000) } });
    now = T0;
    const a1 = asked();
    assert.ok((await echo({ authorization: 'Bearer long' })).resp);
    now = T0 + 59999;
    assert.ok((await echo({ authorization: 'Bearer long' })).resp);
    assert.equal(asked() - a1, 1, 'cached within maxTtlMs');
    now = T0 + 60000;
    assert.ok((await echo({ authorization: 'Bearer long' })).resp);
    assert.equal(asked() - a1, 2, 'after maxTtlMs usher is asked again');
  });

  it('a verdict for a token already past exp is not kept', async () => {
    const { asked, echo } = await protectedApi();
    answer = () => verdict('REASON_VALID', { claims: { subject: 's', audience: [AUDIENCE], expiresAt: seconds(T0 - 1000) } });
    const a0 = asked();
    assert.ok((await echo({ authorization: 'Bearer stale' })).resp);
    assert.ok((await echo({ authorization: 'Bearer stale' })).resp);
    assert.equal(asked() - a0, 2);
  });

  it('only what reasons.json marks cacheable is kept (each reason twice: one question or two)', async () => {
    const { asked, echo } = await protectedApi();
    const names = [...Object.keys(REASON_RULES), 'REASON_UNSPECIFIED', 999];
    let checked = 0;
    for (const name of names) {
      answer = () => verdict(name, { claims: { subject: 's', audience: [AUDIENCE], expiresAt: seconds(T0 + 3600000) } });
      const token = `Bearer tok-${name}`;
      const a0 = asked();
      const first = await echo({ authorization: token });
      const second = await echo({ authorization: token });
      assert.equal(Boolean(first.resp), Boolean(second.resp), `${name}: the cached answer differs`);
      const rule = REASON_RULES[name];
      const want = rule && rule.cacheable ? 1 : 2;
      assert.equal(asked() - a0, want, `${name}: asked ${asked() - a0} times, cacheable ${rule ? rule.cacheable : 'unknown reason: never'}`);
      checked += 1;
    }
    assert.equal(checked, Object.keys(REASON_RULES).length + 2);
    for (const never of ['REASON_KEYS_UNAVAILABLE', 'REASON_ISSUER_UNAVAILABLE', 'REASON_UNKNOWN_KEY', 'REASON_PROOF_MISSING', 'REASON_INVALID_PROOF']) {
      assert.equal(REASON_RULES[never].cacheable, false, never);
    }
  });

  it('never an answer usher did not give (a transport error)', async () => {
    const { asked, echo } = await protectedApi();
    let fail = true;
    answer = () => {
      if (fail) throw { code: grpc.status.UNAVAILABLE, details: 'fake outage' };
      return verdict('REASON_VALID', { claims: { subject: 's', audience: [AUDIENCE], expiresAt: seconds(T0 + 3600000) } });
    };
    rejected((await echo({ authorization: 'Bearer flaky' })).err, grpc.status.UNAVAILABLE, 'VALIDATION_UNAVAILABLE', 'outage');
    fail = false;
    const a0 = asked();
    assert.ok((await echo({ authorization: 'Bearer flaky' })).resp, 'the next call asks again, and gets through');
    assert.equal(asked() - a0, 1);
  });

  it('never a sender-constrained verdict: claims with cnf, or a call with a DPoP proof', async () => {
    const { asked, echo } = await protectedApi();
    answer = () => verdict('REASON_VALID', { claims: { subject: 's', audience: [AUDIENCE], expiresAt: seconds(T0 + 3600000), confirmation: { jkt: 'abc' } } });
    let a0 = asked();
    assert.ok((await echo({ authorization: 'Bearer bound' })).resp);
    assert.ok((await echo({ authorization: 'Bearer bound' })).resp);
    assert.equal(asked() - a0, 2, 'claims with a confirmation');

    answer = () => verdict('REASON_VALID', { claims: { subject: 's', audience: [AUDIENCE], expiresAt: seconds(T0 + 3600000) } });
    a0 = asked();
    assert.ok((await echo({ authorization: 'DPoP dp', dpop: 'p.r.1' })).resp);
    assert.ok((await echo({ authorization: 'DPoP dp', dpop: 'p.r.2' })).resp);
    assert.equal(asked() - a0, 2, 'a DPoP call is neither answered from nor stored in the cache');
    assert.ok((await echo({ authorization: 'Bearer dp' })).resp);
    assert.equal(asked() - a0, 3, 'nothing was stored for the DPoP calls');
  });

  it('bounded: the least recently used entry goes first', async () => {
    const { asked, echo } = await protectedApi({ cache: { maxEntries: 2 } });
    const a0 = asked();
    for (const t of ['e1', 'e2', 'e1', 'e3']) assert.ok((await echo({ authorization: `Bearer ${t}` })).resp); // e2 is the oldest when e3 comes
    assert.equal(asked() - a0, 3);
    assert.ok((await echo({ authorization: 'Bearer e1' })).resp);
    assert.equal(asked() - a0, 3, 'e1 (used recently) is kept');
    assert.ok((await echo({ authorization: 'Bearer e2' })).resp);
    assert.equal(asked() - a0, 4, 'e2 was evicted');
  });

  it('concurrent identical misses share one question', async () => {
    const held = [];
    answer = () => new Promise((resolve) => held.push(resolve));
    const { asked, echo } = await protectedApi();
    const a0 = asked();
    const calls = Array.from({ length: 5 }, () => echo({ authorization: 'Bearer same' }));
    await eventually(() => held.length > 0, 10000, 'usher asked');
    await new Promise((r) => setImmediate(r));
    assert.equal(held.length, 1);
    held[0](verdict('REASON_VALID', { claims: { subject: 's', audience: [AUDIENCE], expiresAt: seconds(T0 + 3600000) } }));
    for (const { resp, err } of await Promise.all(calls)) assert.ok(resp, err && err.details);
    assert.equal(asked() - a0, 1);
  });

  it('cache: false asks usher on every call', async () => {
    const { i, asked, echo } = await protectedApi({ cache: false });
    const a0 = asked();
    for (let n = 0; n < 3; n += 1) assert.ok((await echo({ authorization: 'Bearer nc' })).resp);
    assert.equal(asked() - a0, 3);
    assert.deepEqual(i.cacheStats(), { hits: 0, misses: 0, size: 0 });
  });
});

describe('the verdict cache with a real usher', { timeout: 60000 }, () => {
  it('a cached VALID answers while usher is down; a new token fails closed', async () => {
    const usher = await startDev();
    const i = usherInterceptor({ target: usher.addr, audience: AUDIENCE, timeoutMs: 1000 });
    const api = await startProbe([i]);
    try {
      const client = api.probe();
      const tok = await mint(usher.addr, AUDIENCE);
      const other = await mint(usher.addr, AUDIENCE);
      assert.ok((await unary(client, 'echo', { text: 'x' }, { authorization: `Bearer ${tok}` })).resp);
      await usher.stop();
      const { resp, err } = await unary(client, 'echo', { text: 'x' }, { authorization: `Bearer ${tok}` });
      assert.ok(resp, err && err.details);
      assert.equal(api.log.at(-1).claims.subject, 'usher-dev');
      rejected((await unary(client, 'echo', { text: 'x' }, { authorization: `Bearer ${other}` })).err, grpc.status.UNAVAILABLE, 'VALIDATION_UNAVAILABLE', 'new token');
      assert.deepEqual(i.cacheStats(), { hits: 1, misses: 2, size: 1 });
    } finally {
      await api.stop();
      i.close();
      await usher.stop();
    }
  });
});
