// Package service is usher's validation engine and its gRPC adapter.
//
// The engine takes a token and the audience of the calling API and returns a
// Verdict: valid, or the first failed check in the contract's order
// (MALFORMED, UNSUPPORTED_ALGORITHM, UNTRUSTED_ISSUER, UNKNOWN_KEY or
// KEYS_UNAVAILABLE, INVALID_SIGNATURE, then on a verified token
// WRONG_TOKEN_TYPE, EXPIRED, NOT_YET_VALID, MISSING_CLAIM, AUDIENCE_MISMATCH,
// INSUFFICIENT_SCOPE), with expected and actual values and a hint that names
// the fix. A bad token is a Verdict, never an error.
//
//	cfg, err := service.LoadConfig("usher.yaml")
//	v, err := service.NewValidator(ctx, cfg, service.WithLogger(log))
//	verdict := v.Validate(ctx, token, "api/invoices", []string{"invoices.read"})
//	if !verdict.Valid() {
//		log.Info("rejected", "reason", verdict.Reason, "hint", verdict.Hint)
//	}
//
// Tokens are parsed strictly before any key is used: compact form only,
// canonical base64url, JSON objects without duplicate keys, registered claims
// of the right type, no crit. Keys come only from the configured key sets
// (jwks_uri, OIDC discovery or jwks_file), never from jku, x5u, jwk or x5c
// headers; the key type must match alg. Key sets are fetched in the
// background through github.com/lestrrat-go/httprc/v3 (the cache beneath
// jwx's jwk.Cache), refetched at most once per cooldown for an unknown kid,
// and a failed or empty fetch never replaces the last good set.
//
// The engine does NOT check revocation, jti replay, DPoP or mTLS
// certificate binding (cnf), and does not decrypt JWE.
package service
