'use strict';
// The server side: a @grpc/grpc-js server interceptor (grpc-js >= 1.10) that
// validates every call's access token through usher for the service's own
// audience, with the rules of the Go interceptor (client/interceptor.go):
//
// - exactly one `authorization` value, scheme Bearer or DPoP (any case); DPoP
//   needs exactly one `dpop` proof, sent to usher with POST and
//   <https|http>://{:authority}/{package.Service}/{Method};
// - the audience comes from this configuration, never from the request;
// - per-method required scopes; a skip list of exact full method names;
// - the check completes before the handler gets the metadata, and so before
//   it runs at all (grpc-js starts a unary or server-streaming handler after
//   the request's half-close, a client-streaming or bidi one on the metadata:
//   both come after this interceptor passes the metadata on);
// - the reason table (../reasons.json): valid → the handler runs with the
//   claims (claimsOf); INSUFFICIENT_SCOPE → PERMISSION_DENIED;
//   KEYS_UNAVAILABLE, ISSUER_UNAVAILABLE, an unknown reason, usher
//   unreachable or past the deadline → UNAVAILABLE (fail closed); every other
//   reason → UNAUTHENTICATED;
// - a rejection carries `www-authenticate` (RFC 6750, or RFC 9449's DPoP
//   challenge) and `grpc-status-details-bin` (google.rpc.Status with one
//   google.rpc.ErrorInfo, domain usher.v1, the Go interceptor's metadata keys)
//   in its trailers.

const crypto = require('node:crypto');
const grpc = require('@grpc/grpc-js');

const reasons = require('./reasons');
const { encodeStatusDetails } = require('./status');
const { VerdictCache, makeKey, DEFAULT_MAX_ENTRIES, DEFAULT_MAX_TTL_MS } = require('./cache');
const usher = require('./usher');

const ERROR_DOMAIN = 'usher.v1';
const DEFAULT_TIMEOUT_MS = 2000;

/** Never authenticated: health checks and reflection (exact full method names). */
const DEFAULT_SKIP_METHODS = Object.freeze([
  '/grpc.health.v1.Health/Check',
  '/grpc.health.v1.Health/Watch',
  '/grpc.health.v1.Health/List',
  '/grpc.reflection.v1.ServerReflection/ServerReflectionInfo',
  '/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo',
]);

const STATUS_NAME = Object.fromEntries(Object.entries(grpc.status).map(([k, v]) => [v, k]));
const FULL_METHOD = /^\/[^/]+\/[^/]+$/;

// The verified claims of each call that passed, keyed on the Metadata object
// handed on to the handler (its call.metadata): nothing a caller sends can
// put an entry here.
const CLAIMS = new WeakMap();

/**
 * The verified claims of a call this interceptor let through: pass the
 * handler's call (or its call.metadata). Each call has its own object.
 * undefined for a skipped method, or when an interceptor after usher's
 * replaced the metadata object instead of passing it on.
 */
function claimsOf(callOrMetadata) {
  if (!callOrMetadata || typeof callOrMetadata !== 'object') return undefined;
  return CLAIMS.get(callOrMetadata) || (callOrMetadata.metadata ? CLAIMS.get(callOrMetadata.metadata) : undefined);
}

// A status that ends the call instead of letting it through.
class Rejection {
  constructor(status) {
    this.status = status;
  }
}

// Printable ASCII without quotes or backslashes (RFC 6750 §3's error_description).
function quoteSafe(s) {
  return String(s).replace(/[^\x20-\x7e]|["\\]/g, "'");
}

function printable(s) {
  const str = String(s);
  return quoteSafe(str.length > 32 ? `${str.slice(0, 32)}...` : str);
}

// A quoted-string as the Go interceptor writes it with %q (for configured values).
function quoted(s) {
  return JSON.stringify(String(s));
}

// The values of a metadata key as strings. Node's HTTP/2 layer joins a
// repeated header it does not consider single-valued ("a, b"): a comma never
// occurs in a compact JWS, so for `dpop` each comma separates two values.
function values(metadata, key, splitCommas) {
  const out = [];
  for (const v of metadata.get(key)) {
    const s = Buffer.isBuffer(v) ? v.toString('latin1') : String(v);
    if (splitCommas) out.push(...s.split(','));
    else out.push(s);
  }
  return out;
}

function missing(required, granted) {
  const have = new Set(granted || []);
  return (required || []).filter((s) => !have.has(s));
}

function toDate(ts) {
  if (!ts) return null;
  return new Date(Number(ts.seconds) * 1000 + Math.floor(Number(ts.nanos || 0) / 1e6));
}

function fromValue(v) {
  switch (v && v.kind) {
    case 'nullValue': return null;
    case 'numberValue': return v.numberValue;
    case 'stringValue': return v.stringValue;
    case 'boolValue': return v.boolValue;
    case 'structValue': return fromStruct(v.structValue);
    case 'listValue': return ((v.listValue && v.listValue.values) || []).map(fromValue);
    default: return undefined;
  }
}

function fromStruct(s) {
  const out = {};
  for (const [k, v] of Object.entries((s && s.fields) || {})) out[k] = fromValue(v);
  return out;
}

// A fresh plain object per call: a handler may change its own claims without
// touching the cached verdict other calls share.
function toClaims(c) {
  c = c || {};
  const conf = c.confirmation || {};
  return {
    issuer: c.issuer || '',
    subject: c.subject || '',
    audience: [...(c.audience || [])],
    scopes: [...(c.scopes || [])],
    clientId: c.clientId || '',
    expiresAt: toDate(c.expiresAt),
    issuedAt: toDate(c.issuedAt),
    notBefore: toDate(c.notBefore),
    jwtId: c.jwtId || '',
    keyId: c.keyId || '',
    algorithm: c.algorithm || '',
    tokenType: c.tokenType || '',
    tokenFormat: c.tokenFormat || '',
    raw: fromStruct(c.raw), // every payload claim, as JSON values
    // The token's cnf: { jkt } for a DPoP-bound token, { 'x5t#S256' } for a certificate-bound one.
    confirmation: Object.fromEntries([['jkt', conf.jkt], ['x5t#S256', conf.x5tS256]].filter(([, v]) => v)),
  };
}

// Whether the call's connection has TLS: grpc-js's auth context says so only
// when the client's certificate was verified, so otherwise look at the HTTP/2
// session under the interceptor chain (grpc-js internals; when they cannot be
// found the answer is "no TLS", and a proof made for https fails closed).
// The `tls` option overrides both.
function connectionIsTLS(call) {
  try {
    const ctx = typeof call.getAuthContext === 'function' ? call.getAuthContext() : null;
    if (ctx && ctx.transportSecurityType === 'ssl') return true;
  } catch { /* an older grpc-js */ }
  let c = call;
  for (let i = 0; c && i < 64; i += 1) {
    if (c.stream && c.stream.session) return c.stream.session.encrypted === true;
    c = c.nextCall;
  }
  return false;
}

// RFC 8705 §3.1: base64url SHA-256 of the DER certificate the client proved in
// the TLS handshake (grpc-js hands it over only once it verified it).
function clientCertificateSha256(call) {
  try {
    const ctx = typeof call.getAuthContext === 'function' ? call.getAuthContext() : null;
    const raw = ctx && ctx.sslPeerCertificate && ctx.sslPeerCertificate.raw;
    return raw && raw.length ? crypto.createHash('sha256').update(raw).digest('base64url') : '';
  } catch {
    return '';
  }
}

// The URI a DPoP proof for a gRPC call is made for: https over TLS, http
// otherwise, the authority without its scheme's default port, the full method.
function grpcHTU(isTLS, authority, fullMethod) {
  const scheme = isTLS ? 'https' : 'http';
  const port = isTLS ? ':443' : ':80';
  const host = authority.endsWith(port) ? authority.slice(0, -port.length) : authority;
  return `${scheme}://${host}${fullMethod}`;
}

function deadlineMs(call) {
  try {
    const d = typeof call.getDeadline === 'function' ? call.getDeadline() : Infinity;
    const ms = d instanceof Date ? d.getTime() : Number(d);
    return Number.isNaN(ms) ? Infinity : ms;
  } catch {
    return Infinity;
  }
}

function describe(err) {
  if (err && typeof err.code === 'number' && STATUS_NAME[err.code]) {
    return `${STATUS_NAME[err.code]}: ${err.details || err.message}`;
  }
  return String((err && err.message) || err);
}

class Authenticator {
  /**
   * @param {object} options see index.d.ts (UsherInterceptorOptions)
   */
  constructor(options = {}) {
    const {
      target, credentials, channelOptions, client, audience, scopes = {}, skip = [],
      timeoutMs = DEFAULT_TIMEOUT_MS, terse = false, cache = {}, now = Date.now, tls,
    } = options;
    if (typeof audience !== 'string' || audience === '') {
      throw new TypeError('usherInterceptor: audience is required: the audience this service answers to, from its own configuration (e.g. api/invoices)');
    }
    if (!client && !target) {
      throw new TypeError("usherInterceptor: target is required (usher's gRPC address, e.g. 127.0.0.1:50051 or dns:///usher-headless.platform.svc.cluster.local:50051), or pass client");
    }
    if (!(timeoutMs > 0)) throw new RangeError('usherInterceptor: timeoutMs must be positive');
    if (tls !== undefined && typeof tls !== 'boolean') throw new TypeError('usherInterceptor: tls is true, false or undefined (detect)');
    this.audience = audience;
    this.target = target || '(a client passed in)';
    this.timeoutMs = timeoutMs;
    this.terse = Boolean(terse);
    this.tls = tls;
    this.scopes = new Map();
    for (const [method, list] of Object.entries(scopes)) {
      if (!FULL_METHOD.test(method)) {
        throw new TypeError(`usherInterceptor: scopes: ${JSON.stringify(method)} is not a full method name like /pkg.Service/Method`);
      }
      if (!Array.isArray(list) || !list.every((s) => typeof s === 'string' && s !== '')) {
        throw new TypeError(`usherInterceptor: scopes[${JSON.stringify(method)}] must be an array of scope names`);
      }
      this.scopes.set(method, Object.freeze([...list]));
    }
    this.skip = new Set(DEFAULT_SKIP_METHODS);
    for (const method of skip) {
      if (typeof method !== 'string' || !FULL_METHOD.test(method)) {
        throw new TypeError(`usherInterceptor: skip: ${JSON.stringify(method)} is not a full method name like /grpc.health.v1.Health/Check`);
      }
      this.skip.add(method);
    }
    if (cache === false || cache === null) {
      this.cache = null;
    } else {
      this.cache = new VerdictCache({
        maxEntries: cache.maxEntries ?? DEFAULT_MAX_ENTRIES,
        maxTtlMs: cache.maxTtlMs ?? DEFAULT_MAX_TTL_MS,
        now: cache.now || now,
      });
    }
    this.ownClient = !client;
    this.client = client || usher.connect(target, credentials, channelOptions);
    this.interceptor = this.interceptor.bind(this);
  }

  /** The grpc-js ServerInterceptor: new grpc.Server({ interceptors: [auth.interceptor] }). */
  interceptor(methodDescriptor, call) {
    const path = methodDescriptor.path;
    if (this.skip.has(path)) return new grpc.ServerInterceptingCall(call);
    let cancelled = false;
    const listener = {
      onReceiveMetadata: (metadata, next) => {
        this.authenticate(path, metadata, call).then((res) => {
          if (cancelled) return;
          if (res.status) {
            call.sendStatus(res.status); // the handler never gets the metadata, so it never runs
            return;
          }
          CLAIMS.set(metadata, res.claims);
          next(metadata);
        }).catch((err) => {
          // Only a throw from further down the chain lands here (authenticate never rejects):
          // end the call rather than leave it hanging or crash the process.
          try {
            call.sendStatus({ code: grpc.status.INTERNAL, details: `usher interceptor: ${err && err.message}`, metadata: new grpc.Metadata() });
          } catch { /* the call has ended */ }
        });
      },
      onCancel: () => { cancelled = true; },
    };
    return new grpc.ServerInterceptingCall(call, { start: (next) => next(listener) });
  }

  /** Resolves to { claims } or { status } (never rejects: anything unexpected fails closed). */
  async authenticate(path, metadata, call) {
    let dpop = false;
    try {
      const req = this.request(path, metadata, call);
      dpop = req.scheme === reasons.DPOP;
      let resp;
      try {
        const deadline = Math.min(Date.now() + this.timeoutMs, deadlineMs(call));
        const ask = () => this.validate(req, deadline);
        if (!this.cache || senderConstrained(req)) {
          resp = await ask();
        } else {
          const key = makeKey(req.token, this.audience, req.requiredScopes);
          resp = this.cache.lookup(key) || await this.cache.fetch(key, ask);
        }
      } catch (err) {
        return { status: this.unavailable(err, dpop) };
      }
      const rule = reasons.ruleOf(resp);
      if (rule.code !== grpc.status.OK) {
        return { status: this.reject(resp, rule, dpop || rule.challenge === reasons.DPOP) };
      }
      return { claims: toClaims(resp.claims) };
    } catch (err) {
      if (err instanceof Rejection) return { status: err.status };
      return { status: this.unavailable(err, dpop) };
    }
  }

  validate(req, deadline) {
    return new Promise((resolve, reject) => {
      this.client.validateToken(req, { deadline }, (err, resp) => (err ? reject(err) : resolve(resp)));
    });
  }

  // The question for usher from the call's credentials: exactly one
  // "authorization: Bearer|DPoP <token>"; for DPoP exactly one "dpop" proof;
  // the client certificate's thumbprint when the connection has a verified one.
  request(path, metadata, call) {
    const { scheme, token } = this.authorization(metadata);
    const req = {
      token,
      expectedAudience: this.audience,
      requiredScopes: [...(this.scopes.get(path) || [])],
      scheme,
      dpopProof: '',
      httpMethod: '',
      httpUri: '',
      clientCertificateSha256: clientCertificateSha256(call),
    };
    if (scheme !== reasons.DPOP) return req;
    const proofs = values(metadata, 'dpop', true);
    const authority = typeof call.getHost === 'function' ? String(call.getHost() || '') : '';
    if (proofs.length === 0) {
      throw this.challenge(true, grpc.status.UNAUTHENTICATED, reasons.INVALID_TOKEN,
        'authorization scheme DPoP without a proof: send one "dpop: <proof JWT>" with the call (RFC 9449 §7)',
        reasons.shortName('REASON_PROOF_MISSING'), null);
    }
    if (proofs.length > 1) {
      throw this.challenge(true, grpc.status.UNAUTHENTICATED, reasons.INVALID_DPOP_PROOF,
        `${proofs.length} dpop values: send exactly one proof per call (RFC 9449 §4.3)`,
        reasons.shortName('REASON_INVALID_PROOF'), null);
    }
    if (authority === '') {
      throw this.challenge(true, grpc.status.UNAUTHENTICATED, reasons.INVALID_DPOP_PROOF,
        "the call has no :authority to check the proof's htu against", reasons.shortName('REASON_INVALID_PROOF'), null);
    }
    const isTLS = typeof this.tls === 'boolean' ? this.tls : connectionIsTLS(call);
    req.dpopProof = proofs[0].trim();
    req.httpMethod = 'POST';
    req.httpUri = grpcHTU(isTLS, authority, path);
    return req;
  }

  authorization(metadata) {
    const vals = values(metadata, 'authorization', false);
    let why;
    let dpop = false;
    if (vals.length === 0) {
      throw this.challenge(false, grpc.status.UNAUTHENTICATED, '',
        'no authorization metadata: send "authorization: Bearer <access token>" (or DPoP with a dpop proof)', 'MISSING_CREDENTIALS', null);
    } else if (vals.length > 1) {
      why = `${vals.length} authorization values: send exactly one`;
    } else {
      const trimmed = vals[0].trim();
      const sp = trimmed.indexOf(' ');
      const word = sp < 0 ? trimmed : trimmed.slice(0, sp);
      const token = sp < 0 ? '' : trimmed.slice(sp + 1).trim();
      dpop = word.toLowerCase() === 'dpop';
      if (!dpop && word.toLowerCase() !== 'bearer') {
        why = `authorization scheme "${printable(word)}": this service takes Bearer or DPoP tokens`;
      } else if (token === '') {
        why = `empty ${printable(word)} token`;
      } else {
        return { scheme: dpop ? reasons.DPOP : 'Bearer', token };
      }
    }
    throw this.challenge(dpop, grpc.status.UNAUTHENTICATED, 'invalid_request', why, 'INVALID_CREDENTIALS', null);
  }

  unavailable(err, dpop) {
    const msg = this.terse
      ? 'token validation unavailable; retry later'
      : `usher could not validate the token: usher at ${this.target}: ${describe(err)}`;
    return this.challenge(dpop, grpc.status.UNAVAILABLE, '', msg, 'VALIDATION_UNAVAILABLE', null).status;
  }

  // A verdict as a status, through the reason table.
  reject(resp, rule, dpop) {
    const reason = reasons.shortName(resp.reason);
    const md = {};
    let msg = reason;
    const mismatch = resp.mismatch || null;
    if (!this.terse) {
      msg = `${reason}: ${resp.message || ''}`;
      if (resp.hint) {
        msg += ` (hint: ${resp.hint})`;
        md.hint = resp.hint;
      }
      md.message = resp.message || '';
      md.expected_audience = this.audience;
      const claims = resp.claims;
      if (claims && claims.audience && claims.audience.length > 0) md.actual_audience = claims.audience.join(' ');
      if (claims) {
        md.issuer = claims.issuer || '';
        md.kid = claims.keyId || '';
      }
      if (mismatch) {
        md.claim = mismatch.claim || '';
        md.expected = (mismatch.expected || []).join(' ');
        md.actual = (mismatch.actual || []).join(' ');
      }
    }
    if (rule.bearerError === reasons.INSUFFICIENT_SCOPE) {
      md.missing_scopes = missing(mismatch && mismatch.expected, mismatch && mismatch.actual).join(' ');
    }
    return this.challenge(dpop, rule.code, rule.bearerError, msg, reason, md).status;
  }

  // The status with www-authenticate (RFC 6750's Bearer challenge, or RFC 9449
  // §7.1's DPoP challenge) and the google.rpc.Status with its ErrorInfo.
  challenge(dpop, code, authErr, msg, reason, md) {
    let chal = dpop ? `DPoP algs="${reasons.DPOP_ALGS}"` : `Bearer realm=${quoted(this.audience)}`;
    if (authErr) {
      chal += `, error="${authErr}"`;
      if (!this.terse) chal += `, error_description="${quoteSafe(msg)}"`;
      if (authErr === reasons.INSUFFICIENT_SCOPE) chal += `, scope=${quoted((md && md.missing_scopes) || '')}`;
    }
    const meta = {};
    for (const [k, v] of Object.entries(md || {})) if (v !== '' && v != null) meta[k] = String(v);
    const trailers = new grpc.Metadata();
    trailers.set('www-authenticate', chal);
    trailers.set('grpc-status-details-bin', encodeStatusDetails(code, msg, { reason, domain: ERROR_DOMAIN, metadata: meta }));
    return new Rejection({ code, details: msg, metadata: trailers });
  }

  /** Verdict cache hits and misses (zeros without a cache). */
  cacheStats() {
    return this.cache ? this.cache.stats() : { hits: 0, misses: 0, size: 0 };
  }

  /** Closes the connection to usher when this Authenticator opened it. */
  close() {
    if (this.ownClient) this.client.close();
  }
}

// The call carries what binds a token to its sender (a DPoP proof, or a
// client certificate): its verdict holds for this call only, so it is neither
// looked up in nor stored in the cache, nor shared with a concurrent call.
function senderConstrained(req) {
  return req.scheme === reasons.DPOP || req.dpopProof !== '' || req.clientCertificateSha256 !== '';
}

/**
 * A grpc-js ServerInterceptor protecting every method but the skipped ones:
 *   new grpc.Server({ interceptors: [usherInterceptor({ target, audience: 'api/invoices' })] })
 * The returned function also has .authenticator, .cacheStats() and .close().
 */
function usherInterceptor(options) {
  const auth = new Authenticator(options);
  const fn = auth.interceptor;
  fn.authenticator = auth;
  fn.cacheStats = () => auth.cacheStats();
  fn.close = () => auth.close();
  return fn;
}

module.exports = {
  Authenticator, usherInterceptor, claimsOf, DEFAULT_SKIP_METHODS, ERROR_DOMAIN, DEFAULT_TIMEOUT_MS,
  grpcHTU, toClaims,
};
