// Package extauthz serves envoy.service.auth.v3.Authorization/Check, so that
// an Envoy or Istio mesh puts usher in front of services written in any
// language, with no code in them.
//
//	v, err := service.NewValidator(ctx, cfg, service.WithLogger(log))
//	authz, err := extauthz.New(v, extauthz.Config{Routes: []extauthz.Route{
//		{Host: "users.example.com", Audience: "api/users"},
//		{PathPrefix: "/invoices", Audience: "api/invoices", RequiredScopes: []string{"invoices.read"}},
//	}}, log)
//	authz.Register(grpcServer)
//
// For each request Envoy sends, Check picks the audience of the API behind
// it (the route's usher_audience context extension, else the first matching
// Config.Routes entry; neither is 403 NO_ROUTE, never an allow), reads
// exactly one "authorization: Bearer <token>" or "authorization: DPoP
// <token>" header and asks the engine.
// deploy/envoy/envoy.yaml in this repository shows the Envoy filter, the
// cluster and the per-route context extensions; deploy/envoy/README.md the
// Istio equivalent.
//
//	verdict                                    HTTP  CheckResponse.status  WWW-Authenticate
//	valid                                      OK (claim headers added)
//	no route and no usher_audience             403   PERMISSION_DENIED     (none)
//	ambiguous path (see below)                 400   INVALID_ARGUMENT      (none) (AMBIGUOUS_PATH)
//	no authorization header                    401   UNAUTHENTICATED       Bearer realm="<aud>"
//	several values, another scheme, no token   401   UNAUTHENTICATED       …, error="invalid_request"
//	a client certificate usher cannot read     401   UNAUTHENTICATED       …, error="invalid_request" (INVALID_CLIENT_CERTIFICATE)
//	several DPoP proofs, an oversized one      401   UNAUTHENTICATED       DPoP algs="…", error="invalid_dpop_proof", … (INVALID_PROOF)
//	PROOF_MISSING                              401   UNAUTHENTICATED       DPoP algs="…", error="invalid_token", …
//	INVALID_PROOF                              401   UNAUTHENTICATED       DPoP algs="…", error="invalid_dpop_proof", …
//	any token reason but the two below         401   UNAUTHENTICATED       …, error="invalid_token", error_description="…"
//	INSUFFICIENT_SCOPE                         403   PERMISSION_DENIED     …, error="insufficient_scope", …, scope="<required>"
//	valid, but a claim a header cannot carry   401   UNAUTHENTICATED       …, error="invalid_token", … (UNFORWARDABLE_CLAIM)
//	KEYS_UNAVAILABLE, ISSUER_UNAVAILABLE       503   UNAVAILABLE           Bearer realm="<aud>"
//	a reason this server does not know         503   UNAVAILABLE           Bearer realm="<aud>" (VALIDATION_UNAVAILABLE)
//	the DPoP replay store did not answer       503   UNAVAILABLE           DPoP algs="…" (PROOF_UNCHECKED)
//
// A request sent with the DPoP scheme gets a DPoP challenge (RFC 9449 §7.1:
// DPoP algs="…", then error and error_description as above) for any denial
// after its scheme was read; PROOF_MISSING and INVALID_PROOF get one
// whatever the scheme.
//
// Sender-constrained tokens: for a DPoP-bound token (RFC 9449) the engine
// checks the request's one DPoP header (Envoy joins repeated headers with
// ",", which no proof holds: a comma is several proofs, denied) against the
// request's method and URI: attributes.request.http's scheme (https when
// Envoy reports none), host and path in the normal form routes use, without
// query. For a certificate-bound token (RFC 8705) it compares the
// SHA-256 of the client certificate Envoy reports in
// attributes.source.certificate, which Envoy fills only with
// include_peer_certificate: true in the ext_authz filter (and only when the
// listener asks for client certificates). The proof is never logged.
//
// Routes match the request path in normal form (RFC 3986: percent-encoded
// unreserved characters decoded, repeated slashes merged, dot segments
// removed), never the raw string. A path is denied AMBIGUOUS_PATH when
// servers may read it as different paths: when its normal form maps to
// another route than the path as sent (/users/../invoices), when it holds a
// backslash, a ";" parameter, an encoded "/" or "\", an encoded control
// character, a double percent-encoding or a Unicode look-alike of "/" or
// ".", and, with a usher_audience context extension, whenever it is not in
// normal form (Envoy chose the route on the path as sent).
//
// The mapping of a verdict's reason is usher's one reason table (the same as
// the gRPC interceptors'), so that no front end answers a reason differently.
//
// Every denial carries x-usher-reason (the reason name, e.g.
// AUDIENCE_MISMATCH) and a JSON body {"reason", "message", "hint"};
// Config.Terse keeps both to the reason. On OK, x-usher-subject,
// x-usher-issuer, x-usher-scopes, x-usher-client-id and x-usher-audience go
// upstream, and no other incoming x-usher-* header does. The token is never
// logged; log lines carry service.TokenID.
//
// This package does NOT authorize beyond audience and scopes (no per-method
// or per-subject policy), does NOT see the request body, and does NOT
// remove the authorization header: the upstream still receives the token.
// It trusts Envoy for the host, path and context extensions it reports, so
// Envoy must be the only way to the upstream.
package extauthz
