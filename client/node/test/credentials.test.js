'use strict';
// The caller side against a real `usher dev` and its client-credentials token
// endpoint: one caller, two APIs over TLS (a Users API answering to api/users
// and an Invoices API answering to api/invoices, each behind the
// interceptor), call credentials that fetch a token per audience. Also DPoP
// over TLS (the proof's htu is https) on the server side.

const { describe, it, before, after, beforeEach } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const grpc = require('@grpc/grpc-js');

const {
  startDev, startProbe, startFakeUsher, verdict, tlsFixture, mint, dpopKeyPath, proof, unary, serverStream, rejected,
} = require('../testdata/support');
const {
  usherInterceptor, audienceCredentials, serviceAudiences, clientCredentialsSources, ClientCredentialsSource,
} = require('..');

const USERS = 'usher.test.v1.Users';
const INVOICES = 'usher.test.v1.Invoices';
const DEV_CLIENT = { clientId: 'usher-dev', clientSecret: 'usher-dev-secret' };
const T0 = Date.UTC(2030, 0, 1);
// The certificate names localhost (and 127.0.0.1): the server name for TLS, while :authority stays 127.0.0.1:port.
const TLS_OPTS = { 'grpc.ssl_target_name_override': 'localhost' };

const payload = (jwt) => JSON.parse(Buffer.from(jwt.split('.')[1], 'base64url').toString());
const tokenOf = (entry) => entry.authorization[0].replace(/^Bearer /, '');

describe('audienceCredentials: a token per API', { timeout: 120000 }, () => {
  let usher;
  let tls;
  let users;
  let invoices;
  let tokenUrl;
  let fetches; // every token request: { audience, resource, grantType, auth }
  let now;
  const closers = [];

  // fetch, counted and inspected on its way to the real token endpoint.
  const countingFetch = async (url, init) => {
    const form = new URLSearchParams(init.body);
    fetches.push({
      url, audience: form.getAll('audience'), resource: form.getAll('resource'), grantType: form.get('grant_type'),
      auth: init.headers.authorization, secretInForm: form.has('client_secret'),
    });
    return fetch(url, init);
  };

  before(async () => {
    usher = await startDev();
    tokenUrl = `${usher.issuer}/token`;
    tls = await tlsFixture();
    const serverCreds = () => grpc.ServerCredentials.createSsl(null, [{ private_key: tls.key, cert_chain: tls.cert }], false);
    const iu = usherInterceptor({ target: usher.addr, audience: 'api/users' });
    const ii = usherInterceptor({ target: usher.addr, audience: 'api/invoices' });
    users = await startProbe([iu], { credentials: serverCreds() });
    invoices = await startProbe([ii], { credentials: serverCreds() });
    closers.push(() => users.stop(), () => invoices.stop(), () => iu.close(), () => ii.close());
  });

  after(async () => {
    for (const close of closers.reverse()) await close();
    if (usher) await usher.stop();
  });

  beforeEach(() => {
    fetches = [];
    now = T0;
  });

  const channel = (callCreds) => grpc.credentials.combineChannelCredentials(grpc.credentials.createSsl(tls.cert), callCreds);
  const creds = (extra = {}) => audienceCredentials({
    audiences: { [USERS]: 'api/users', [INVOICES]: 'api/invoices' },
    clientCredentials: { tokenUrl, ...DEV_CLIENT, fetch: countingFetch, now: () => now, ...extra },
  });

  it('each API gets a token for its own audience only, fetched once per audience', async () => {
    const cc = channel(creds());
    const u = users.client('Users', cc, users.addr, TLS_OPTS);
    const i = invoices.client('Invoices', cc, invoices.addr, TLS_OPTS);
    const uBefore = users.log.length;
    const iBefore = invoices.log.length;
    for (let n = 0; n < 2; n += 1) {
      const a = await unary(u, 'get', { text: 'u' }, {});
      assert.ok(a.resp, a.err && a.err.details);
      assert.deepEqual(a.resp.audience, ['api/users']);
      const b = await unary(i, 'get', { text: 'i' }, {});
      assert.ok(b.resp, b.err && b.err.details);
      assert.deepEqual(b.resp.audience, ['api/invoices']);
    }
    const s = await serverStream(u, 'list', { n: 2 }, {});
    assert.equal(s.err, null, s.err && s.err.details);
    assert.deepEqual(s.messages.map((m) => m.audience), [['api/users'], ['api/users']]);

    const seenByUsers = users.log.slice(uBefore);
    const seenByInvoices = invoices.log.slice(iBefore);
    assert.deepEqual(seenByUsers.map((e) => e.method), ['Users.Get', 'Users.Get', 'Users.List']);
    assert.deepEqual(seenByInvoices.map((e) => e.method), ['Invoices.Get', 'Invoices.Get']);
    for (const e of seenByUsers) assert.equal(payload(tokenOf(e)).aud, 'api/users', 'the Users API got a token for another audience');
    for (const e of seenByInvoices) assert.equal(payload(tokenOf(e)).aud, 'api/invoices', 'the Invoices API got a token for another audience');
    const usersTokens = new Set(seenByUsers.map(tokenOf));
    const invoicesTokens = new Set(seenByInvoices.map(tokenOf));
    assert.equal(usersTokens.size, 1, 'one Users token, reused');
    assert.equal(invoicesTokens.size, 1, 'one Invoices token, reused');
    for (const t of usersTokens) assert.ok(!invoicesTokens.has(t), 'the Users token reached the Invoices API');

    assert.deepEqual(fetches.map((f) => [f.audience, f.resource, f.grantType]).sort(),
      [[['api/invoices'], ['api/invoices'], 'client_credentials'], [['api/users'], ['api/users'], 'client_credentials']]);
    for (const f of fetches) {
      assert.equal(f.url, tokenUrl);
      assert.equal(f.auth, `Basic ${Buffer.from('usher-dev:usher-dev-secret').toString('base64')}`, 'client_secret_basic');
      assert.equal(f.secretInForm, false);
    }
  });

  it('a token is reused until shortly (10s) before it expires, then fetched again', async () => {
    const cc = channel(creds());
    const u = users.client('Users', cc, users.addr, TLS_OPTS);
    assert.ok((await unary(u, 'get', { text: 'u' }, {})).resp);
    const first = tokenOf(users.log.at(-1));
    const ttlMs = (payload(first).exp - payload(first).iat) * 1000; // usher dev: expires_in is the token's lifetime
    now = T0 + ttlMs - 10000 - 1;
    assert.ok((await unary(u, 'get', { text: 'u' }, {})).resp);
    assert.equal(tokenOf(users.log.at(-1)), first);
    assert.equal(fetches.length, 1);
    now = T0 + ttlMs - 10000;
    assert.ok((await unary(u, 'get', { text: 'u' }, {})).resp);
    assert.equal(fetches.length, 2, 'refreshed 10s before expiry');
    assert.notEqual(tokenOf(users.log.at(-1)), first);
  });

  it('a service with no audience: the call fails before anything is sent, no token is fetched', async () => {
    const p = users.client('Probe', channel(creds()), users.addr, TLS_OPTS);
    const before = users.log.length;
    const { err } = await unary(p, 'echo', { text: 'x' }, {});
    assert.equal(err.code, grpc.status.UNAUTHENTICATED, err.details);
    assert.match(err.details, /no audience configured for \/usher\.test\.v1\.Probe\/Echo \(service usher\.test\.v1\.Probe\)/);
    assert.equal(users.log.length, before);
    assert.equal(fetches.length, 0);
  });

  it('a method entry wins over its service entry', async () => {
    const cc = channel(audienceCredentials({
      audiences: { [USERS]: 'api/users', [`/${USERS}/List`]: 'api/invoices' },
      clientCredentials: { tokenUrl, ...DEV_CLIENT, fetch: countingFetch },
    }));
    const u = users.client('Users', cc, users.addr, TLS_OPTS);
    assert.ok((await unary(u, 'get', { text: 'u' }, {})).resp);
    const s = await serverStream(u, 'list', { n: 1 }, {});
    rejected(s.err, grpc.status.UNAUTHENTICATED, 'AUDIENCE_MISMATCH', 'List sent the Invoices token, as configured');
    const audienceFor = serviceAudiences({ [USERS]: 'a', [`/${USERS}/List`]: 'b' });
    assert.equal(audienceFor(`/${USERS}/Get`), 'a');
    assert.equal(audienceFor(`/${USERS}/List`), 'b');
    assert.throws(() => audienceFor('/other.Svc/Get'), /no audience configured/);
  });

  it('the token endpoint refusing (wrong secret): UNAUTHENTICATED before anything is sent; an outage is not remembered', async () => {
    const bad = users.client('Users', channel(creds({ clientSecret: 'not-the-secret-7f3a' })), users.addr, TLS_OPTS);
    const before = users.log.length;
    let { err } = await unary(bad, 'get', { text: 'u' }, {});
    assert.equal(err.code, grpc.status.UNAUTHENTICATED, err.details);
    assert.match(err.details, /token endpoint .* \(audience api\/users\) refused: invalid_client/);
    assert.ok(!err.details.includes('not-the-secret-7f3a'), 'the secret is not in the message');
    assert.equal(users.log.length, before);

    let down = true;
    const flaky = users.client('Users', channel(audienceCredentials({
      audiences: { [USERS]: 'api/users' },
      clientCredentials: {
        tokenUrl, ...DEV_CLIENT, fetch: (url, init) => (down ? Promise.reject(new Error('connect ECONNREFUSED')) : countingFetch(url, init)),
      },
    })), users.addr, TLS_OPTS);
    ({ err } = await unary(flaky, 'get', { text: 'u' }, {}));
    assert.equal(err.code, grpc.status.UNAVAILABLE, err.details);
    assert.match(err.details, /did not answer: connect ECONNREFUSED/);
    down = false;
    const ok = await unary(flaky, 'get', { text: 'u' }, {});
    assert.ok(ok.resp, ok.err && ok.err.details);
  });

  it('a DPoP token from the endpoint is refused, never sent as Bearer', async () => {
    const src = new ClientCredentialsSource({
      tokenUrl, ...DEV_CLIENT,
      fetch: async () => new Response(JSON.stringify({ access_token: 'x.y.z', token_type: 'DPoP', expires_in: 60 }), { status: 200 }),
    }, 'api/users');
    await assert.rejects(src.token(), (err) => err.code === grpc.status.UNAUTHENTICATED && /type "DPoP", not Bearer/.test(err.message));
  });

  it('sources can be made once and shared; client_secret_post is available', async () => {
    const sources = clientCredentialsSources({ tokenUrl, ...DEV_CLIENT, authStyle: 'post', fetch: countingFetch }, ['api/users', 'api/invoices']);
    const tok = await sources['api/users'].token();
    assert.equal(payload(tok.accessToken).aud, 'api/users');
    assert.equal(tok.tokenType, 'Bearer');
    assert.ok(tok.expiresAt > Date.now());
    assert.equal(fetches.at(-1).auth, undefined);
    assert.equal(fetches.at(-1).secretInForm, true);
    assert.equal(await sources['api/users'].token(), tok, 'cached');
    const [a, b] = await Promise.all([sources['api/invoices'].token(), sources['api/invoices'].token()]);
    assert.equal(a, b);
    assert.equal(fetches.filter((f) => f.audience[0] === 'api/invoices').length, 1, 'concurrent callers share one request');
  });

  it('grpc-js refuses these credentials on a plaintext channel', () => {
    assert.throws(() => grpc.credentials.combineChannelCredentials(grpc.credentials.createInsecure(), creds()), /insecure/);
  });

  describe('DPoP over TLS: the proof is for https://{:authority}/{package.Service}/{Method}', () => {
    for (const [label, tlsOption] of [['detected', undefined], ['configured', true]]) {
      it(`valid with a proof for https (${label}); a proof for http is INVALID_PROOF`, async () => {
        const i = usherInterceptor({ target: usher.addr, audience: 'api/invoices', tls: tlsOption });
        const api = await startProbe([i], {
          credentials: grpc.ServerCredentials.createSsl(null, [{ private_key: tls.key, cert_chain: tls.cert }], false),
        });
        try {
          const client = api.probe(grpc.credentials.createSsl(tls.cert), api.addr, TLS_OPTS);
          const key = dpopKeyPath();
          const tok = await mint(usher.addr, 'api/invoices', { dpopKey: key });
          const method = '/usher.test.v1.Probe/Echo';
          const good = await unary(client, 'echo', { text: 'x' }, { authorization: `DPoP ${tok}`, dpop: await proof(key, 'POST', `https://${api.addr}${method}`, tok) });
          assert.ok(good.resp, good.err && good.err.details);
          assert.equal(api.log.at(-1).claims.confirmation.jkt, payload(tok).cnf.jkt);
          const { err } = await unary(client, 'echo', { text: 'x' }, { authorization: `DPoP ${tok}`, dpop: await proof(key, 'POST', `http://${api.addr}${method}`, tok) });
          const r = rejected(err, grpc.status.UNAUTHENTICATED, 'INVALID_PROOF', 'proof for http over TLS');
          assert.equal(r.info.metadata.expected, `https://${api.addr}${method}`);
        } finally {
          await api.stop();
          i.close();
        }
      });
    }
  });
});

describe('mutual TLS: the client certificate goes to usher (RFC 8705)', { timeout: 60000 }, () => {
  it('its SHA-256 thumbprint is sent with the token, and such calls bypass the verdict cache', async () => {
    const tls = await tlsFixture();
    const fake = await startFakeUsher(() => verdict('REASON_VALID', { claims: { subject: 's', audience: ['api/invoices'] } }));
    const i = usherInterceptor({ target: fake.addr, audience: 'api/invoices' });
    const api = await startProbe([i], {
      // The self-signed certificate is its own CA: the server requires and verifies a client certificate.
      credentials: grpc.ServerCredentials.createSsl(tls.cert, [{ private_key: tls.key, cert_chain: tls.cert }], true),
    });
    try {
      const client = api.probe(grpc.credentials.createSsl(tls.cert, tls.key, tls.cert), api.addr, TLS_OPTS);
      for (let n = 0; n < 2; n += 1) {
        const { resp, err } = await unary(client, 'echo', { text: 'x' }, { authorization: 'Bearer t' });
        assert.ok(resp, err && err.details);
      }
      const want = crypto.createHash('sha256').update(new crypto.X509Certificate(tls.cert).raw).digest('base64url');
      assert.deepEqual(fake.requests.map((r) => r.clientCertificateSha256), [want, want], 'asked twice: not cached');
      assert.deepEqual(i.cacheStats(), { hits: 0, misses: 0, size: 0 });
    } finally {
      await api.stop();
      i.close();
      await fake.stop();
    }
  });
});
