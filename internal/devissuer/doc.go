// Package devissuer is a development OAuth 2.0 issuer for `usher dev`, tests
// and examples. It serves, over plain HTTP on loopback:
//
//   - GET /.well-known/openid-configuration: OIDC discovery, naming the
//     endpoints below;
//   - GET /jwks.json: the public halves of three keys, kid KeyRS256 (RSA
//     2048, RS256, the default), KeyES256 (P-256, ES256) and KeyEdDSA
//     (Ed25519, EdDSA);
//   - POST /token: the client-credentials grant (RFC 6749 §4.4) for the one
//     client ClientID / ClientSecret, with the audience named by "audience"
//     or RFC 8707 "resource", plus the dev extensions "ttl" (a Go duration;
//     negative for an already expired token), "kid" (an unpublished kid
//     yields a token no JWKS key verifies) and "token_format" ("jwt", the
//     default, or "opaque"). A request with a DPoP header (RFC 9449 §5)
//     gets a token bound to the proof's key: cnf.jkt, its RFC 7638
//     thumbprint, in the JWT (or an opaque token's introspection answer)
//     and token_type "DPoP". The proof is checked as RFC 9449 §4.3 says,
//     but for ath: typ dpop+jwt, an alg of DPoPAlgorithms, a public jwk
//     that verifies it, htm POST, htu the token endpoint, iat within 60 s
//     of the issuer's clock, a jti not seen before; a bad one is 400
//     invalid_dpop_proof saying which check failed;
//   - POST /introspect: RFC 7662 token introspection, for the same client
//     with HTTP Basic only (client_secret_basic: id and secret each
//     form-urlencoded before base64, RFC 6749 §2.3.1; 401 with a Basic
//     challenge otherwise). A live opaque token of this issuer is
//     {"active":true} with iss, sub, aud, scope, client_id, exp, iat and
//     token_type "Bearer" (a DPoP-bound one: cnf and "DPoP"); anything else (unknown, revoked, expired, and
//     any JWT) is {"active":false};
//   - POST /revoke: RFC 7009 token revocation (HTTP Basic or client_id and
//     client_secret form fields), 200 whether the token was known or not.
//
// Tokens are RFC 9068 JWT access tokens (typ "at+jwt") whose iss is URL, or
// opaque ones: OpaquePrefix and 32 random bytes in base64url, whose claims
// the issuer keeps in memory (at most 10,000 live tokens; expired and
// revoked ones are dropped). Mint makes either directly, without HTTP:
//
//	iss, err := devissuer.New(ctx, "127.0.0.1:0")
//	if err != nil {
//		return err
//	}
//	defer iss.Close()
//	tok, err := iss.Mint(devissuer.MintRequest{
//		Audience: []string{"api/users"},
//		Scopes:   []string{"users.read"},
//	})
//	// trust it: service.IssuerConfig{Issuer: iss.URL(), Discovery: true}
//	opaque, err := iss.Mint(devissuer.MintRequest{Audience: []string{"api/users"}, Opaque: true})
//	// answer it: Introspection: &service.IntrospectionConfig{ClientID: devissuer.ClientID,
//	//	ClientSecretFile: <a file holding devissuer.ClientSecret>, TokenPrefixes: []string{devissuer.OpaquePrefix}}
//	iss.Revoke(opaque) // inactive from now on
//	bound, err := iss.Mint(devissuer.MintRequest{Audience: []string{"api/users"}, JKT: thumbprint})
//	// DPoP-bound: cnf.jkt, valid only with a proof signed by that key
//
// Revocation does NOT reach JWT access tokens: a validator checks them with
// the published keys, without asking the issuer, so a JWT stays valid until
// its exp whatever the revocation endpoint is told. A validator that caches
// introspection answers sees a revoked opaque token as inactive only once
// its cached answer expires.
//
// It is NOT for production: the keys and the opaque tokens live in memory
// only and are lost at every start, nothing is persisted, the one client
// has a fixed, published secret, and New refuses any address but loopback.
package devissuer
