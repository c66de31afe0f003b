// node-oidc-provider on loopback, for usher's interop tests (interop/*.go).
//
//   OIDC_CALLER_SECRET=… OIDC_USHER_SECRET=… OIDC_WEB_SECRET=… node server.js --port 0
//
// Listens on 127.0.0.1 only, at --port (0: any free port), and prints one JSON
// line on stdout once it serves: {"event":"ready","issuer":"http://127.0.0.1:PORT",...}.
// The issuer is that URL, without a trailing slash.
//
// Clients (client_secret_basic, secrets from the environment):
//   caller  client_credentials: with resource=R a token for R (JWT or opaque,
//           as RESOURCES says); without a resource an opaque token without aud
//   usher   usher's own client at the introspection endpoint
//   web     authorization_code with redirect_uri http://127.0.0.1/cb: ID tokens.
//           Login and consent finish by themselves (account "alice") when the
//           browser (the test's HTTP client) follows the redirects.
//   nonce-caller  as caller, with caller's secret, but its DPoP proofs must
//           carry a nonce of the provider's (RFC 9449 §8: use_dpop_nonce)
// Introspection (/token/introspection) and revocation (/token/revocation) are on.
// DPoP (RFC 9449): a token request with a DPoP proof (ES256, EdDSA or PS256)
// gets a token bound to the proof's key: token_type DPoP, cnf.jkt in a JWT
// and in the introspection answer of an opaque one. Proofs are single-use.
//
// Commands, one a line on stdin; each is answered by one JSON line on stdout:
//   rotate  adds a new key per key type and signs with it; the old keys stay
//           published until retire
//   retire  removes every key but the newest generation
//   keys    lists the published key ids
//   stop    stops gracefully (so do end of stdin, SIGTERM and SIGINT)
// Rotation swaps the Provider in place: tokens (kept in the module's memory
// adapter), the port and the issuer stay.
import * as crypto from 'node:crypto';
import * as http from 'node:http';
import * as readline from 'node:readline';
import { parseArgs } from 'node:util';

import Provider from 'oidc-provider';

const HOST = '127.0.0.1';
const REDIRECT_URI = 'http://127.0.0.1/cb';
const STOP_GRACE_MS = 2000;

// RESOURCES are the RFC 8707 resource indicators the caller may ask for: each
// is the audience of its tokens, with the token format and signing algorithm.
const RESOURCES = {
  'https://users.api.test': { format: 'jwt', alg: 'RS256', scope: 'users:read users:write' },
  'https://invoices.api.test': { format: 'jwt', alg: 'RS256', scope: 'invoices:read' },
  'https://orders.api.test': { format: 'opaque', scope: 'orders:read orders:write' },
  'https://ps256.api.test': { format: 'jwt', alg: 'PS256', scope: 'read' },
  'https://es256.api.test': { format: 'jwt', alg: 'ES256', scope: 'read' },
  'https://eddsa.api.test': { format: 'jwt', alg: 'EdDSA', scope: 'read' },
};
const TOKEN_TTL_S = 600;
// DPOP_ALGS are the proof algorithms the provider accepts: its default
// (ES256, Ed25519, EdDSA) and PS256, so that an RSA proof key is tried too.
const DPOP_ALGS = ['ES256', 'Ed25519', 'EdDSA', 'PS256'];

function fail(msg) {
  process.stderr.write(`oidc-provider (interop): ${msg}\n`);
  process.exit(2);
}

function options() {
  const { values } = parseArgs({ options: { port: { type: 'string', default: '0' } } });
  const port = Number(values.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) fail(`--port ${values.port}: want 0..65535`);
  const secrets = {};
  for (const [client, env] of [['caller', 'OIDC_CALLER_SECRET'], ['usher', 'OIDC_USHER_SECRET'], ['web', 'OIDC_WEB_SECRET']]) {
    const v = process.env[env];
    if (!v || v.length < 16) fail(`${env} is unset or shorter than 16 characters: set the ${client} client's secret`);
    secrets[client] = v;
  }
  return { port, secrets };
}

// One key per key type for each generation: RSA (RS256, PS256), P-256
// (ES256), Ed25519 (EdDSA). Newest first: the provider signs with the first
// key that fits the algorithm.
//
// The JWK comes out of the key generation itself (privateKeyEncoding), not
// from .privateKey.export() afterwards: on Node.js 20 a garbage collection
// during that export can run the finished generation job's destructor, which
// takes the lock the export holds, and the process hangs for good before it
// is ready (seen here about once in fifty starts).
function generation(n) {
  const jwk = (kty, opts) => crypto.generateKeyPairSync(kty, {
    ...opts, privateKeyEncoding: { format: 'jwk' }, publicKeyEncoding: { format: 'jwk' },
  }).privateKey;
  return [
    { ...jwk('rsa', { modulusLength: 2048 }), kid: `rsa-${n}`, use: 'sig' },
    { ...jwk('ec', { namedCurve: 'P-256' }), kid: `ec-${n}`, use: 'sig' },
    { ...jwk('ed25519'), kid: `ed-${n}`, use: 'sig' },
  ];
}

function resourceServerInfo(resource) {
  const r = RESOURCES[resource];
  if (!r) throw new Provider.errors.InvalidTarget(`unknown resource ${resource}; known: ${Object.keys(RESOURCES).join(', ')}`);
  const info = { audience: resource, scope: r.scope, accessTokenTTL: TOKEN_TTL_S, accessTokenFormat: r.format };
  if (r.format === 'jwt') info.jwt = { sign: { alg: r.alg } };
  return info;
}

function newProvider(issuer, keys, secrets, cookieKeys, nonceSecret) {
  const basic = { token_endpoint_auth_method: 'client_secret_basic' };
  return new Provider(issuer, {
    clients: [
      { ...basic, client_id: 'caller', client_secret: secrets.caller, grant_types: ['client_credentials'], redirect_uris: [], response_types: [] },
      { ...basic, client_id: 'nonce-caller', client_secret: secrets.caller, grant_types: ['client_credentials'], redirect_uris: [], response_types: [] },
      { ...basic, client_id: 'usher', client_secret: secrets.usher, grant_types: [], redirect_uris: [], response_types: [] },
      { ...basic, client_id: 'web', client_secret: secrets.web, grant_types: ['authorization_code'], redirect_uris: [REDIRECT_URI], response_types: ['code'] },
    ],
    jwks: { keys },
    cookies: { keys: cookieKeys },
    findAccount: async (_ctx, sub) => ({ accountId: sub, claims: async () => ({ sub }) }),
    interactions: { url: async (_ctx, interaction) => `/interaction/${interaction.uid}` },
    enabledJWA: { dPoPSigningAlgValues: DPOP_ALGS },
    features: {
      devInteractions: { enabled: false },
      dPoP: {
        enabled: true,
        allowReplay: false,
        nonceSecret,
        requireNonce: (ctx) => ctx.oidc?.client?.clientId === 'nonce-caller',
      },
      clientCredentials: { enabled: true },
      introspection: { enabled: true },
      revocation: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: async (_ctx, _client, oneOf) => oneOf,
        useGrantedResource: async () => false,
        getResourceServerInfo: async (_ctx, resource) => resourceServerInfo(resource),
      },
    },
    ttl: { ClientCredentials: TOKEN_TTL_S, AccessToken: TOKEN_TTL_S, IdToken: TOKEN_TTL_S, AuthorizationCode: 60, Interaction: 300, Session: 3600, Grant: 3600 },
  });
}

// finishInteraction logs "alice" in and grants what the client asked for,
// without a page: each prompt ends in a redirect back to the authorization
// endpoint, which the caller's HTTP client follows.
async function finishInteraction(provider, req, res) {
  const { prompt, params, session, grantId } = await provider.interactionDetails(req, res);
  let result;
  if (prompt.name === 'login') {
    result = { login: { accountId: 'alice' } };
  } else if (prompt.name === 'consent') {
    const grant = grantId ? await provider.Grant.find(grantId) : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
    const d = prompt.details;
    if (d.missingOIDCScope) grant.addOIDCScope(d.missingOIDCScope.join(' '));
    if (d.missingOIDCClaims) grant.addOIDCClaims(d.missingOIDCClaims);
    for (const [indicator, scopes] of Object.entries(d.missingResourceScopes ?? {})) grant.addResourceScope(indicator, scopes.join(' '));
    result = { consent: { grantId: await grant.save() } };
  } else {
    throw new Error(`unexpected prompt ${prompt.name}`);
  }
  await provider.interactionFinished(req, res, result, { mergeWithLastSubmission: true });
}

function reply(obj) {
  process.stdout.write(`${JSON.stringify(obj)}\n`);
}

async function main() {
  const { port, secrets } = options();
  const cookieKeys = [crypto.randomBytes(32).toString('base64url')];
  const nonceSecret = crypto.randomBytes(32); // the same across rotations: nonces stay good
  let gen = 1;
  let keys = generation(gen);
  let provider;
  let callback;

  const server = http.createServer((req, res) => {
    if (req.method === 'GET' && req.url.startsWith('/interaction/')) {
      finishInteraction(provider, req, res).catch((err) => {
        process.stderr.write(`interaction: ${err.message}\n`);
        if (!res.headersSent) { res.statusCode = 400; res.end(`interaction failed: ${err.message}\n`); }
      });
      return;
    }
    callback(req, res);
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, HOST, resolve);
  });
  const issuer = `http://${HOST}:${server.address().port}`;
  const install = () => {
    provider = newProvider(issuer, keys, secrets, cookieKeys, nonceSecret);
    provider.on('server_error', (_ctx, err) => process.stderr.write(`server_error: ${err.stack}\n`));
    callback = provider.callback();
  };
  install();

  let stopping = false;
  const stop = () => {
    if (stopping) return;
    stopping = true;
    server.close(() => { reply({ event: 'stopped' }); process.exit(0); });
    server.closeIdleConnections();
    setTimeout(() => { server.closeAllConnections(); }, STOP_GRACE_MS).unref();
  };
  const kids = () => keys.map((k) => k.kid);
  const commands = {
    rotate: () => { gen += 1; keys = [...generation(gen), ...keys]; install(); return { kids: kids() }; },
    retire: () => { keys = keys.filter((k) => k.kid.endsWith(`-${gen}`)); install(); return { kids: kids() }; },
    keys: () => ({ kids: kids() }),
    stop: () => { stop(); return {}; },
  };
  const rl = readline.createInterface({ input: process.stdin });
  rl.on('line', (line) => {
    const cmd = line.trim();
    if (cmd === '') return;
    const f = commands[cmd];
    if (!f) { reply({ command: cmd, error: `unknown command; known: ${Object.keys(commands).join(', ')}` }); return; }
    reply({ command: cmd, ok: true, ...f() });
  });
  rl.on('close', stop);
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);

  reply({ event: 'ready', issuer, kids: kids(), resources: Object.keys(RESOURCES) });
}

main().catch((err) => fail(err.stack));
