// Package client lets a Go gRPC service validate every incoming call through
// usher, in two lines, instead of embedding JWT logic:
//
//	authn, err := client.NewAuthenticator(usher, "api/invoices")
//	srv := grpc.NewServer(grpc.ChainUnaryInterceptor(authn.UnaryServerInterceptor()), grpc.ChainStreamInterceptor(authn.StreamServerInterceptor()))
//
// where usher is a *client.Client from client.Dial (round_robin over every
// usher replica, keepalive, retries of UNAVAILABLE) or client.New over a
// connection you own. Handlers read the verified claims with
// ClaimsFromContext, which hands each caller a copy of its own.
//
// The interceptors (go-grpc-middleware/v2 auth, with selector skipping
// health and reflection by exact full method name) read exactly one
// "authorization: Bearer <token>" (or DPoP, below) value, ask usher with the service's own
// audience and the method's required scopes, and answer:
//
//	valid                           handler runs, claims in the context
//	no or unusable credentials,     UNAUTHENTICATED
//	any token reason but those below
//	INSUFFICIENT_SCOPE              PERMISSION_DENIED
//	KEYS_UNAVAILABLE,               UNAVAILABLE: fail closed, never let the call through
//	ISSUER_UNAVAILABLE, usher down,
//	a reason this library does not know
//
// The reasons are mapped through usher's one reason table, which the other
// front ends (Envoy ext_authz, the Python and Node helpers) follow too.
// Every rejection carries a google.rpc.ErrorInfo (reason, domain "usher.v1",
// metadata with expected and actual audience, missing scopes, issuer, kid)
// and an RFC 6750 www-authenticate header, so a caller in any language can
// read why. DetailTerse keeps messages and metadata to the reason for public
// edges.
//
// A verdict cache keyed on (SHA-256 of the token, audience, scopes) makes a
// repeated token cost no network hop; an entry never outlives the token's
// exp nor the configured maximum TTL.
//
// On the calling side, AudienceCredentials attaches the token for the
// audience of the API being called, so the Users API's token never reaches
// the Invoices API by accident.
//
// Sender-constrained tokens (RFC 9449 DPoP, RFC 8705 mTLS) need no change on
// the serving side: the interceptors also take "authorization: DPoP <token>"
// with exactly one "dpop" proof, and send usher the proof, POST and the URI
// it must be made for (https://{:authority}/{package.Service}/{Method},
// http:// without TLS), and on every call over TLS with a client certificate
// that certificate's SHA-256 thumbprint. A bound token sent as Bearer is
// PROOF_MISSING, a bad proof INVALID_PROOF, both answered with a DPoP
// challenge (RFC 9449 §7.1). Calls that carry a proof or a certificate, and
// answers for bound tokens, never go through the verdict cache. A caller
// makes a key, a DPoPSigner over it, DPoPClientCredentialsSources (tokens
// the issuer binds to the key, through a proof at its token endpoint) and
// AudienceCredentials with WithDPoP(signer), which signs a fresh proof for
// each call.
//
// This package does NOT validate tokens itself: it imports neither usher's
// engine nor a JWT library, and a service behind it trusts usher's answer.
// A service implementing go-grpc-middleware's ServiceAuthFuncOverride
// replaces this check for its methods: do not implement it.
package client
