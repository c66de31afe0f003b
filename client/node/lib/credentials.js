'use strict';
// The caller side: grpc-js call credentials that attach, to each call, a
// token issued for the audience of the API being called (picked by the call's
// service or full method name), so that the Users API's token never reaches
// the Invoices API. Tokens come from OAuth 2.0 client credentials (RFC 6749
// §4.4) asking for the audience with both the "audience" parameter (Auth0,
// Okta, usher dev) and RFC 8707's "resource", and are reused until shortly
// before they expire. The Go counterpart is client/credentials.go
// (NewAudienceCredentials, ServiceAudiences, ClientCredentialsSources).

const grpc = require('@grpc/grpc-js');

const DEFAULT_REFRESH_BEFORE_MS = 10000; // golang.org/x/oauth2's expiryDelta
const DEFAULT_TOKEN_TIMEOUT_MS = 10000;

function credentialsError(code, message) {
  const err = new Error(message);
  err.code = code;
  return err;
}

/**
 * An audienceFor(fullMethod) from a map of gRPC service names
 * ("billing.v1.Invoices") or full method names ("/billing.v1.Invoices/Get")
 * to audiences; a method's own entry wins over its service's.
 */
function serviceAudiences(map) {
  const m = new Map(Object.entries(map || {}));
  for (const [k, v] of m) {
    if (typeof v !== 'string' || v === '') throw new TypeError(`serviceAudiences: the audience of ${JSON.stringify(k)} must be a non-empty string`);
  }
  return (fullMethod) => {
    if (m.has(fullMethod)) return m.get(fullMethod);
    const svc = String(fullMethod).replace(/^\//, '').split('/')[0];
    if (m.has(svc)) return m.get(svc);
    throw credentialsError(grpc.status.UNAUTHENTICATED,
      `usher credentials: no audience configured for ${fullMethod} (service ${svc}): add it to the audiences map`);
  };
}

// RFC 6749 §2.3.1: client id and secret form-urlencoded, then HTTP Basic.
function formEncode(s) {
  return encodeURIComponent(s).replace(/%20/g, '+').replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

/**
 * A token source for one audience from an OAuth 2.0 client-credentials
 * endpoint: token() resolves to { accessToken, tokenType, expiresAt (ms or
 * null) }, fetched once and reused until refreshBeforeMs before it expires;
 * concurrent callers share one request; a failure is not remembered.
 */
class ClientCredentialsSource {
  constructor(config, audience) {
    const {
      tokenUrl, clientId, clientSecret, scope, params = {}, authStyle = 'basic',
      fetch: fetchFn = globalThis.fetch, now = Date.now,
      refreshBeforeMs = DEFAULT_REFRESH_BEFORE_MS, timeoutMs = DEFAULT_TOKEN_TIMEOUT_MS,
    } = config || {};
    if (!tokenUrl || !clientId || clientSecret == null) {
      throw new TypeError('clientCredentials: tokenUrl, clientId and clientSecret are required');
    }
    if (typeof audience !== 'string' || audience === '') throw new TypeError('clientCredentials: an audience is required');
    if (authStyle !== 'basic' && authStyle !== 'post') throw new TypeError("clientCredentials: authStyle is 'basic' (client_secret_basic) or 'post' (client_secret_post)");
    if (typeof fetchFn !== 'function') throw new TypeError('clientCredentials: no fetch (Node >= 18 has one; or pass config.fetch)');
    Object.assign(this, { tokenUrl: String(tokenUrl), clientId, clientSecret, scope, params, authStyle, fetchFn, now, refreshBeforeMs, timeoutMs, audience });
    this.current = null;
    this.pending = null;
  }

  token() {
    if (this.current && (this.current.expiresAt === null || this.now() < this.current.expiresAt - this.refreshBeforeMs)) {
      return Promise.resolve(this.current);
    }
    if (!this.pending) {
      this.pending = this.fetchToken().then((tok) => {
        this.current = tok;
        return tok;
      }).finally(() => { this.pending = null; });
    }
    return this.pending;
  }

  async fetchToken() {
    const body = new URLSearchParams();
    body.set('grant_type', 'client_credentials');
    for (const [k, v] of Object.entries(this.params)) body.set(k, String(v));
    body.set('audience', this.audience);
    body.set('resource', this.audience);
    if (this.scope) body.set('scope', Array.isArray(this.scope) ? this.scope.join(' ') : String(this.scope));
    const headers = { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' };
    if (this.authStyle === 'basic') {
      headers.authorization = `Basic ${Buffer.from(`${formEncode(this.clientId)}:${formEncode(this.clientSecret)}`).toString('base64')}`;
    } else {
      body.set('client_id', this.clientId);
      body.set('client_secret', this.clientSecret);
    }
    const where = `token endpoint ${this.tokenUrl} (audience ${this.audience})`;
    const started = this.now();
    let res;
    let text;
    try {
      res = await this.fetchFn(this.tokenUrl, { method: 'POST', headers, body: body.toString(), signal: AbortSignal.timeout(this.timeoutMs) });
      text = await res.text();
    } catch (err) {
      throw credentialsError(grpc.status.UNAVAILABLE, `usher credentials: ${where} did not answer: ${err.message}`);
    }
    let doc = null;
    try { doc = JSON.parse(text); } catch { /* reported below */ }
    if (!res.ok) {
      const detail = doc && doc.error ? `${doc.error}${doc.error_description ? `: ${doc.error_description}` : ''}` : `HTTP ${res.status}`;
      // 4xx: this client's request or credentials are wrong; 5xx: try again later.
      throw credentialsError(res.status >= 500 ? grpc.status.UNAVAILABLE : grpc.status.UNAUTHENTICATED,
        `usher credentials: ${where} refused: ${detail}`);
    }
    if (!doc || typeof doc.access_token !== 'string' || doc.access_token === '') {
      throw credentialsError(grpc.status.UNAVAILABLE, `usher credentials: ${where} answered HTTP ${res.status} without an access_token`);
    }
    const tokenType = typeof doc.token_type === 'string' ? doc.token_type : '';
    if (tokenType !== '' && tokenType.toLowerCase() !== 'bearer') {
      throw credentialsError(grpc.status.UNAUTHENTICATED,
        `usher credentials: ${where} issued a token of type ${JSON.stringify(tokenType.slice(0, 32))}, not Bearer: a DPoP-bound token needs a proof per call, which these credentials do not make`);
    }
    const expiresIn = Number(doc.expires_in);
    const expiresAt = Number.isFinite(expiresIn) && expiresIn > 0 ? started + expiresIn * 1000 : null;
    return Object.freeze({ accessToken: doc.access_token, tokenType: tokenType || 'Bearer', expiresAt });
  }
}

/** One cached client-credentials token source per audience: { [audience]: source }. */
function clientCredentialsSources(config, audiences) {
  const out = {};
  for (const aud of audiences) out[aud] = new ClientCredentialsSource(config, aud);
  return out;
}

/**
 * grpc-js CallCredentials attaching "authorization: Bearer <token for the
 * called API's audience>" to each call.
 *   options.audiences: { service or full method name: audience } (or
 *     options.audienceFor(fullMethod) -> audience);
 *   options.sources: { audience: { token() } } (clientCredentialsSources), or
 *   options.clientCredentials: the config for clientCredentialsSources, one
 *     source per audience named in options.audiences.
 * Combine with TLS channel credentials: grpc.credentials.combineChannelCredentials(
 * grpc.credentials.createSsl(...), creds) (grpc-js refuses to combine call
 * credentials with insecure ones). A call whose API has no audience, or whose
 * token cannot be had, fails before anything is sent.
 */
function audienceCredentials(options = {}) {
  const { audiences, audienceFor: given, clientCredentials } = options;
  let { sources } = options;
  if (!given && !audiences) throw new TypeError('audienceCredentials: audiences (service name -> audience) or audienceFor is required');
  const audienceFor = given || serviceAudiences(audiences);
  if (!sources && clientCredentials) {
    if (!audiences) throw new TypeError('audienceCredentials: clientCredentials needs audiences, to know which audiences to ask for (or pass sources)');
    sources = clientCredentialsSources(clientCredentials, [...new Set(Object.values(audiences))]);
  }
  if (!sources || Object.keys(sources).length === 0) throw new TypeError('audienceCredentials: sources (audience -> token source) or clientCredentials is required');
  const table = new Map(Object.entries(sources));
  return grpc.credentials.createFromMetadataGenerator((params, callback) => {
    (async () => {
      const method = params.method_name;
      const aud = await audienceFor(method);
      const src = table.get(aud);
      if (!src) throw credentialsError(grpc.status.UNAUTHENTICATED, `usher credentials: no token source for audience ${aud} (method ${method})`);
      const tok = await src.token();
      const md = new grpc.Metadata();
      md.set('authorization', `Bearer ${tok.accessToken}`);
      return md;
    })().then((md) => callback(null, md), (err) => {
      if (typeof err.code !== 'number') err.code = grpc.status.UNAUTHENTICATED;
      callback(err);
    });
  });
}

module.exports = { audienceCredentials, serviceAudiences, clientCredentialsSources, ClientCredentialsSource };
