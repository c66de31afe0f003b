'use strict';
// Bearer- and DPoP-token checks for Node HTTP services, answered by usher.
//
//   const auth = createUsherAuth({ target: '127.0.0.1:50051', audience: 'api/invoices' });
//   const claims = await auth.check(req.headers.authorization, {
//     requiredScopes: ['invoices.read'],
//     dpop: req.headers.dpop, method: req.method, uri: 'https://api.example.com/invoices',
//   });
//
// check() asks usher.v1.TokenService/ValidateToken with the service's own
// audience and maps the verdict to HTTP: Unauthorized (401, RFC 6750
// error="invalid_token") for a token usher rejects, Forbidden (403,
// error="insufficient_scope") for a missing scope, ServiceUnavailable (503)
// when usher cannot decide (KEYS_UNAVAILABLE, unreachable, past the
// deadline). It fails closed: no verdict, no access.
//
// A DPoP-bound token (RFC 9449) comes as "Authorization: DPoP <token>" with a
// DPoP header holding a proof made for this request: pass that header, the
// request's method and its URI (scheme, host, path; the query is dropped),
// and usher checks the proof. Sent as Bearer or without its proof, a bound
// token is PROOF_MISSING; a bad proof is INVALID_PROOF. Both, and any
// rejection of a request that used the DPoP scheme, are answered with a DPoP
// challenge (RFC 9449 section 7.1). clientCertSha256 (base64url SHA-256 of the
// DER client certificate of the TLS connection) is for certificate-bound
// tokens (RFC 8705).

const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const PROTO_ROOT = path.join(__dirname, '..', '..', 'proto');
const PROTO_FILE = 'usher/v1/usher.proto';

let tokenServiceCtor;
function loadTokenService() {
  if (!tokenServiceCtor) {
    const def = protoLoader.loadSync(PROTO_FILE, {
      includeDirs: [PROTO_ROOT],
      keepCase: false, // expected_audience -> expectedAudience
      longs: String,
      enums: String, // reason: 'REASON_AUDIENCE_MISMATCH'
      defaults: true,
      oneofs: true,
    });
    tokenServiceCtor = grpc.loadPackageDefinition(def).usher.v1.TokenService;
  }
  return tokenServiceCtor;
}

// What each usher.v1.Reason of a rejection means to the caller: the HTTP status, the
// RFC 6750 error ('' when the token is not at fault) and the challenge's scheme when it
// must be DPoP whatever scheme the token came with. The same list as internal/reasons,
// whose JSON form examples/reasons.json usherAuth.test.js checks this against. A reason
// not listed (UNSPECIFIED, VALID in a rejection, one a newer usher sends) fails closed
// like an unavailable usher: UNKNOWN_REASON.
const REJECTIONS = Object.freeze({
  REASON_MALFORMED: { status: 401, error: 'invalid_token', challenge: '' },
  REASON_UNSUPPORTED_ALGORITHM: { status: 401, error: 'invalid_token', challenge: '' },
  REASON_UNTRUSTED_ISSUER: { status: 401, error: 'invalid_token', challenge: '' },
  REASON_UNKNOWN_KEY: { status: 401, error: 'invalid_token', challenge: '' },
  REASON_INVALID_SIGNATURE: { status: 401, error: 'invalid_token', challenge: '' },
  REASON_WRONG_TOKEN_TYPE: { status: 401, error: 'invalid_token', challenge: '' },
  REASON_EXPIRED: { status: 401, error: 'invalid_token', challenge: '' },
  REASON_NOT_YET_VALID: { status: 401, error: 'invalid_token', challenge: '' },
  REASON_MISSING_CLAIM: { status: 401, error: 'invalid_token', challenge: '' },
  REASON_AUDIENCE_MISMATCH: { status: 401, error: 'invalid_token', challenge: '' },
  REASON_INSUFFICIENT_SCOPE: { status: 403, error: 'insufficient_scope', challenge: '' },
  REASON_KEYS_UNAVAILABLE: { status: 503, error: '', challenge: '' },
  REASON_INACTIVE: { status: 401, error: 'invalid_token', challenge: '' },
  REASON_ISSUER_UNAVAILABLE: { status: 503, error: '', challenge: '' },
  REASON_PROOF_MISSING: { status: 401, error: 'invalid_token', challenge: 'DPoP' },
  REASON_INVALID_PROOF: { status: 401, error: 'invalid_dpop_proof', challenge: 'DPoP' },
});
const UNKNOWN_REASON = Object.freeze({ status: 503, error: '', challenge: '' });

// The proof algorithms usher accepts, announced in a DPoP challenge (RFC 9449 section 7.1).
const DPOP_ALGS = 'ES256 ES384 ES512 EdDSA PS256 PS384 PS512 RS256 RS384 RS512'; // reasons.json "dpop_algs"

// The authorization schemes check() takes, by their lower-case name.
const SCHEMES = Object.freeze({ bearer: 'Bearer', dpop: 'DPoP' });
const SEND = 'send "Authorization: Bearer <access token>" (or "Authorization: DPoP <access token>" with a DPoP proof header)';

const STATUS_NAME = Object.fromEntries(Object.entries(grpc.status).map(([k, v]) => [v, k]));

class UsherAuthError extends Error {
  constructor(reason, message, { hint = '', wwwAuthenticate = null, mismatch = null, missingScopes = [], verdict = null } = {}) {
    super(message);
    this.name = new.target.name;
    this.reason = reason; // usher's Reason without REASON_, or MISSING_CREDENTIALS, INVALID_CREDENTIALS, VALIDATION_UNAVAILABLE
    this.hint = hint;
    this.wwwAuthenticate = wwwAuthenticate;
    this.mismatch = mismatch; // { claim, expected, actual } or null
    this.missingScopes = missingScopes;
    this.verdict = verdict; // the ValidateTokenResponse, when usher answered
  }

  get headers() {
    const h = { 'content-type': 'application/json', 'cache-control': 'no-store' };
    if (this.wwwAuthenticate) h['www-authenticate'] = this.wwwAuthenticate;
    return h;
  }

  body() {
    const doc = { error: this.title, reason: this.reason, message: this.message };
    if (this.hint) doc.hint = this.hint;
    return JSON.stringify(doc);
  }
}

class Unauthorized extends UsherAuthError {
  get status() { return 401; }
  get title() { return 'Unauthorized'; }
}

class Forbidden extends UsherAuthError {
  get status() { return 403; }
  get title() { return 'Forbidden'; }
}

class ServiceUnavailable extends UsherAuthError {
  get status() { return 503; }
  get title() { return 'Service Unavailable'; }
}

// Printable ASCII without quotes or backslashes, as RFC 6750 requires of error_description.
function headerSafe(s) {
  return String(s).replace(/[^\x20-\x7e]|["\\]/g, "'");
}

function toDate(ts) {
  if (!ts) return null;
  return new Date(Number(ts.seconds) * 1000 + Math.floor((ts.nanos || 0) / 1e6));
}

function fromValue(v) {
  switch (v && v.kind) {
    case 'nullValue': return null;
    case 'numberValue': return v.numberValue;
    case 'stringValue': return v.stringValue;
    case 'boolValue': return v.boolValue;
    case 'structValue': return fromStruct(v.structValue);
    case 'listValue': return (v.listValue.values || []).map(fromValue);
    default: return undefined;
  }
}

function fromStruct(s) {
  const out = {};
  for (const [k, v] of Object.entries((s && s.fields) || {})) out[k] = fromValue(v);
  return out;
}

function toClaims(c) {
  return {
    issuer: c.issuer,
    subject: c.subject,
    audience: c.audience,
    scopes: c.scopes,
    clientId: c.clientId,
    expiresAt: toDate(c.expiresAt),
    issuedAt: toDate(c.issuedAt),
    notBefore: toDate(c.notBefore),
    jwtId: c.jwtId,
    keyId: c.keyId,
    algorithm: c.algorithm,
    tokenType: c.tokenType,
    raw: fromStruct(c.raw), // every payload claim, as JSON values
    tokenFormat: c.tokenFormat, // 'jwt', or 'opaque' for a token usher introspected
    // The token's cnf: { jkt } for a DPoP-bound token, { 'x5t#S256' } for a certificate-bound one.
    confirmation: Object.fromEntries([['jkt', c.confirmation && c.confirmation.jkt], ['x5t#S256', c.confirmation && c.confirmation.x5tS256]].filter(([, v]) => v)),
  };
}

// uri without its query and fragment, as a proof's htu is compared (RFC 9449 section 4.3).
function withoutQuery(uri) {
  return String(uri || '').split('#')[0].split('?')[0];
}

// The URI a request was made for, as this server sees it (Host header, TLS or not):
// what a DPoP proof's htu must be. Behind a proxy, build the one the caller used instead.
function requestURI(req) {
  const scheme = req.socket && req.socket.encrypted ? 'https' : 'http';
  return `${scheme}://${req.headers.host}${new URL(req.url, 'http://localhost').pathname}`;
}

class UsherAuth {
  // target: usher's gRPC address, e.g. '127.0.0.1:50051' or 'dns:///usher-headless.platform.svc.cluster.local:50051'.
  // audience: the audience this service answers to, e.g. 'api/invoices'.
  // realm: the RFC 6750 realm in WWW-Authenticate (default: the audience).
  // timeoutMs: how long one validation may take before the request is answered 503.
  // credentials: grpc.credentials.createSsl(...) for TLS; default plaintext.
  constructor({ target, audience, realm, timeoutMs = 2000, credentials, channelOptions } = {}) {
    if (!target) throw new TypeError('UsherAuth: target is required (usher\'s gRPC address)');
    if (!audience) throw new TypeError('UsherAuth: audience is required (the audience this API answers to)');
    this.target = target;
    this.audience = audience;
    this.realm = realm || audience;
    this.timeoutMs = timeoutMs;
    const TokenService = loadTokenService();
    this.client = new TokenService(target, credentials || grpc.credentials.createInsecure(), channelOptions || {});
  }

  close() {
    this.client.close();
  }

  // Resolves to the token's claims, or rejects with Unauthorized, Forbidden or ServiceUnavailable.
  // authorization: the request's Authorization value (string, undefined, or an array of values),
  // "Bearer <token>" or "DPoP <token>". dpop: the request's DPoP header (string or array);
  // method, uri: the request's method and URI (scheme, host, path; a query is dropped), which
  // a DPoP proof must have been made for. clientCertSha256: base64url SHA-256 of the DER
  // client certificate of the TLS connection, for a certificate-bound token.
  async check(authorization, { requiredScopes = [], dpop, method, uri, clientCertSha256 } = {}) {
    const { scheme, token } = this.credentials(authorization);
    const request = {
      token,
      expectedAudience: this.audience,
      requiredScopes: [...requiredScopes],
      scheme,
      dpopProof: this.proof(dpop),
      httpMethod: method || '',
      httpUri: withoutQuery(uri),
      clientCertificateSha256: clientCertSha256 || '',
    };
    let resp;
    try {
      resp = await this.validate(request);
    } catch (err) {
      const code = STATUS_NAME[err.code] || String(err.code);
      throw new ServiceUnavailable('VALIDATION_UNAVAILABLE',
        `usher at ${this.target} did not answer: ${code}: ${err.details || err.message}`,
        { hint: `not the token's fault: retry shortly, and check that usher runs and is reachable at ${this.target}` });
    }
    if (resp.valid && resp.reason === 'REASON_VALID') return toClaims(resp.claims || {});
    throw this.reject(resp, scheme);
  }

  // An Express-style middleware: on success sets req.usher to the claims and calls next();
  // on a rejection answers the request itself (status, WWW-Authenticate, JSON body). A DPoP
  // proof is checked against the request's method and requestURI(req).
  middleware({ requiredScopes = [] } = {}) {
    return (req, res, next) => {
      // headersDistinct keeps repeated DPoP headers apart (Node joins them in req.headers).
      const dpop = req.headersDistinct ? req.headersDistinct.dpop : req.headers.dpop;
      this.check(req.headers.authorization, { requiredScopes, dpop, method: req.method, uri: requestURI(req) }).then(
        (claims) => { req.usher = claims; next(); },
        (err) => {
          if (!(err instanceof UsherAuthError)) return next(err);
          res.writeHead(err.status, err.headers);
          res.end(err.body());
        });
    };
  }

  validate(req) {
    return new Promise((resolve, reject) => {
      this.client.validateToken(req, { deadline: Date.now() + this.timeoutMs }, (err, resp) => (err ? reject(err) : resolve(resp)));
    });
  }

  // { scheme: 'Bearer' | 'DPoP', token } of an Authorization value.
  credentials(header) {
    if (Array.isArray(header)) {
      if (header.length > 1) throw this.invalidRequest(`${header.length} Authorization values: send exactly one`);
      header = header[0];
    }
    if (header == null || String(header).trim() === '') {
      throw new Unauthorized('MISSING_CREDENTIALS', 'no Authorization header', {
        hint: SEND,
        wwwAuthenticate: `Bearer realm="${headerSafe(this.realm)}"`,
      });
    }
    const trimmed = String(header).trim();
    const sp = trimmed.indexOf(' ');
    const given = sp < 0 ? trimmed : trimmed.slice(0, sp);
    const token = sp < 0 ? '' : trimmed.slice(sp + 1).trim();
    const scheme = Object.hasOwn(SCHEMES, given.toLowerCase()) ? SCHEMES[given.toLowerCase()] : null;
    if (!scheme) {
      throw this.invalidRequest(`authorization scheme ${JSON.stringify(given.slice(0, 32))}: this service takes Bearer or DPoP tokens`);
    }
    if (!token) throw this.invalidRequest(`empty ${scheme} token`, scheme);
    return { scheme, token };
  }

  // The one DPoP header value, or ''.
  proof(dpop) {
    if (Array.isArray(dpop)) {
      if (dpop.length > 1) { // RFC 9449 section 4.3: not more than one DPoP header
        const why = `${dpop.length} DPoP header values: send exactly one proof`;
        throw new Unauthorized('INVALID_PROOF', why, {
          hint: 'make one fresh proof per request',
          wwwAuthenticate: dpopChallenge('invalid_dpop_proof', why),
        });
      }
      dpop = dpop[0];
    }
    return dpop == null ? '' : String(dpop).trim();
  }

  invalidRequest(why, scheme = 'Bearer') {
    return new Unauthorized('INVALID_CREDENTIALS', why, {
      hint: SEND,
      wwwAuthenticate: scheme === 'DPoP'
        ? dpopChallenge('invalid_request', why)
        : `Bearer realm="${headerSafe(this.realm)}", error="invalid_request", error_description="${headerSafe(why)}"`,
    });
  }

  reject(resp, scheme = 'Bearer') {
    const name = typeof resp.reason === 'string' ? resp.reason : `REASON_${resp.reason}`;
    const reason = name.replace(/^REASON_/, '');
    const mismatch = resp.mismatch
      ? { claim: resp.mismatch.claim, expected: resp.mismatch.expected, actual: resp.mismatch.actual }
      : null;
    let description = `${reason}: ${resp.message}`;
    if (resp.hint) description += ` (hint: ${resp.hint})`;
    const opts = { hint: resp.hint, mismatch, verdict: resp };
    const rule = Object.hasOwn(REJECTIONS, name) ? REJECTIONS[name] : UNKNOWN_REASON;
    const Err = rule.status === 401 ? Unauthorized : rule.status === 403 ? Forbidden : ServiceUnavailable;
    if (Err === ServiceUnavailable) return new ServiceUnavailable(reason, resp.message, opts); // not the token's fault: no challenge

    let challenge = rule.challenge === 'DPoP' || scheme === 'DPoP'
      ? `DPoP algs="${DPOP_ALGS}"`
      : `Bearer realm="${headerSafe(this.realm)}"`;
    if (rule.error) challenge += `, error="${rule.error}", error_description="${headerSafe(description)}"`;
    if (rule.error === 'insufficient_scope') {
      const granted = new Set(mismatch ? mismatch.actual : []);
      const missing = (mismatch ? mismatch.expected : []).filter((s) => !granted.has(s));
      challenge += `, scope="${headerSafe(missing.join(' '))}"`;
      opts.missingScopes = missing;
    }
    return new Err(reason, resp.message, { ...opts, wwwAuthenticate: challenge });
  }
}

function dpopChallenge(error, description) {
  return `DPoP algs="${DPOP_ALGS}", error="${error}", error_description="${headerSafe(description)}"`;
}

function createUsherAuth(options) {
  return new UsherAuth(options);
}

module.exports = {
  createUsherAuth, UsherAuth, UsherAuthError, Unauthorized, Forbidden, ServiceUnavailable,
  REJECTIONS, UNKNOWN_REASON, DPOP_ALGS, requestURI,
};
