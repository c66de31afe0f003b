// Package service is usher's validation engine: token in, verdict out.
//
// The engine takes a token and the audience of the calling API and returns a
// Verdict: valid, or the first failed check in this order: MALFORMED,
// UNSUPPORTED_ALGORITHM, UNTRUSTED_ISSUER, UNKNOWN_KEY or KEYS_UNAVAILABLE,
// INVALID_SIGNATURE, then, on a token whose signature verified,
// WRONG_TOKEN_TYPE, PROOF_MISSING or INVALID_PROOF (a sender-constrained
// token's proof), EXPIRED, NOT_YET_VALID, MISSING_CLAIM, AUDIENCE_MISMATCH,
// INSUFFICIENT_SCOPE. A verdict carries expected and actual values, every
// failed check after the signature, and a hint that names the fix. A bad
// token is a Verdict, never an error; errors are for broken configuration,
// and for a DPoP proof that could not be checked for replay (ValidateRequest
// wraps ErrProofUnchecked: no verdict, fail closed).
//
//	cfg := &service.Config{
//		Issuers:   []service.IssuerConfig{{Issuer: "https://auth.example.com/", Discovery: true}},
//		Audiences: []service.KnownAudience{{Audience: "api/invoices", Name: "Invoices API"}},
//	}
//	v, err := service.NewValidator(ctx, cfg, service.WithLogger(log))
//	verdict := v.Validate(ctx, token, "api/invoices", []string{"invoices.read"})
//	if !verdict.Valid() {
//		log.Info("rejected", "reason", verdict.Reason, "hint", verdict.Hint)
//	}
//
// The engine knows no transport and no file format: Config is plain Go
// (usher's YAML file is read by the binary), metrics go to an Observer, and
// adapters (the gRPC API, HTTP/JSON, Envoy ext_authz) convert its types to
// theirs. One clock (WithClock) drives exp, nbf and iat, the verified-token
// cache, key set staleness, refetch cooldowns and Retry-After.
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
// Opaque (reference) access tokens are answered through the issuer's RFC
// 7662 introspection endpoint (IssuerConfig.Introspection): a token that is
// no JWS is sent only to the issuer it belongs to (token_prefixes, or the
// only issuer with introspection), with client_secret_basic; active: true
// is then checked like a verified JWT's claims (EXPIRED, AUDIENCE_MISMATCH,
// INSUFFICIENT_SCOPE…), active: false is INACTIVE, and an endpoint that
// cannot answer is ISSUER_UNAVAILABLE. Answers are reused for at most
// cache_ttl (active; never past exp) or negative_cache_ttl (inactive), so a
// revocation is seen within cache_ttl.
//
// Sender-constrained tokens (ValidateRequest): a token whose cnf (in its
// payload, or in the introspection answer of an opaque token) has jkt is
// valid only with the DPoP scheme and a DPoP proof (RFC 9449); one whose
// cnf has x5t#S256 only with the client certificate it names (RFC 8705);
// one with both needs both. Without them it is PROOF_MISSING: a bound token
// is never accepted as a bearer token. The proof is checked as RFC 9449
// §4.3 says, in this order: one compact JWS of at most 8 KiB, parsed as
// strictly as a token; typ dpop+jwt; an asymmetric alg (DPoPAlgorithms);
// a public jwk of the alg's key type; its signature by that jwk; jti, htm,
// htu, iat and ath present; htm and htu those of the request (htu after RFC
// 3986 normalization, without query and fragment); iat within
// dpop.iat_window of now; jti of at most 256 bytes; ath the token's hash;
// the jwk's RFC 7638 thumbprint equal to cnf.jkt; then the client
// certificate; and last, only when every other check passed (the token's
// too), the replay check: the proof's key thumbprint and jti, remembered
// by the ReplayStore (in memory by default, bounded) for the window. Each
// failure is INVALID_PROOF with the check in Mismatch. No nonce is asked
// for: usher issues no DPoP nonces. The DPoP scheme with a token that is
// not DPoP-bound is INVALID_PROOF; a stray proof with a bearer token sent as
// Bearer is ignored.
//
// The engine does NOT check a JWT's revocation or jti replay, proofs of
// other cnf members (jwk, x5t), and does not decrypt JWE.
package service
