// Package devissuer is a development OAuth 2.0 issuer for `usher dev`, tests
// and examples: OIDC discovery, a JWKS with three keys (RS256, ES256, EdDSA)
// and a client-credentials token endpoint that takes the audience as
// "audience" or RFC 8707 "resource", served over HTTP on loopback.
//
//	iss, err := devissuer.New(ctx, "127.0.0.1:0")
//	tok, err := iss.Mint(devissuer.MintRequest{Audience: []string{"api/users"}, Scopes: []string{"users.read"}})
//	// trust it: service.IssuerConfig{Issuer: iss.URL(), Discovery: true}
//
// It is NOT for production: keys live in memory and are regenerated at every
// start, the one client has a fixed, published secret, and it refuses any
// address but loopback.
package devissuer
