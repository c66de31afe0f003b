// Package devissuer is a development OAuth 2.0 issuer for `usher dev`, tests
// and examples. It serves, over plain HTTP on loopback:
//
//   - GET /.well-known/openid-configuration: OIDC discovery;
//   - GET /jwks.json: the public halves of three keys, kid KeyRS256 (RSA
//     2048, RS256, the default), KeyES256 (P-256, ES256) and KeyEdDSA
//     (Ed25519, EdDSA);
//   - POST /token: the client-credentials grant (RFC 6749 §4.4) for the one
//     client ClientID / ClientSecret, with the audience named by "audience"
//     or RFC 8707 "resource", plus the dev extensions "ttl" (a Go duration;
//     negative for an already expired token) and "kid" (an unpublished kid
//     yields a token no JWKS key verifies).
//
// Tokens are RFC 9068 JWT access tokens (typ "at+jwt") whose iss is URL.
// Mint signs one directly, without HTTP:
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
//
// It is NOT for production: the keys live in memory only and are
// regenerated at every start, nothing is persisted, the one client has a
// fixed, published secret, and New refuses any address but loopback.
package devissuer
