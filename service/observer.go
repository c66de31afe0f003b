package service

import "time"

// Observer is told about the engine's work, for metrics: the engine calls
// it, and the implementation (Prometheus, OpenTelemetry, a test) lives
// outside the engine. Its methods run on the request path: they must be
// fast and safe for concurrent use.
type Observer interface {
	// ObserveVerdict is called once per verdict of Validate or
	// ValidateRequest (not when ValidateRequest gives none: the replay
	// store did not answer).
	ObserveVerdict(VerdictEvent)
}

// VerdictEvent is one validation, with every value that could be chosen by a
// caller or a token already reduced to a bounded set: an observer may use
// them as metric labels as they are.
type VerdictEvent struct {
	// Reason is the verdict's reason.
	Reason Reason
	// Issuer is the configured issuer the token named; "" when it named none
	// that is trusted.
	Issuer string
	// Audience is the expected audience when it is in the audiences
	// registry; "" otherwise.
	Audience string
	// TokenAudience, for AUDIENCE_MISMATCH, is the first of the token's
	// audiences that is in the registry; "" when none is.
	TokenAudience string
	// Took is how long the validation took.
	Took time.Duration
}

// IntrospectionObserver is told about opaque tokens' introspection, for
// metrics. An Observer given to WithObserver that also implements it gets
// these events too; it is a separate interface so that observers written
// before introspection keep compiling and working. Its methods run on the
// request path: they must be fast and safe for concurrent use.
type IntrospectionObserver interface {
	// ObserveIntrospection is called once per call to an issuer's
	// introspection endpoint, when it is over.
	ObserveIntrospection(IntrospectionEvent)
	// ObserveIntrospectionLookup is called once per opaque token routed
	// to an issuer: answered from the cache, or not.
	ObserveIntrospectionLookup(IntrospectionLookup)
}

// IntrospectionOutcome is how one introspection call ended: one of a
// bounded set, usable as a metric label as it is.
type IntrospectionOutcome string

// The outcomes of an introspection call.
const (
	// IntrospectionActive: the issuer says the token is active.
	IntrospectionActive IntrospectionOutcome = "active"
	// IntrospectionInactive: the issuer says the token is not active.
	IntrospectionInactive IntrospectionOutcome = "inactive"
	// IntrospectionUnreachable: no HTTP answer (DNS, connection, TLS, an
	// address the rules refuse).
	IntrospectionUnreachable IntrospectionOutcome = "unreachable"
	// IntrospectionTimeout: no answer within the issuer's timeout.
	IntrospectionTimeout IntrospectionOutcome = "timeout"
	// IntrospectionServerError: HTTP 5xx or 429.
	IntrospectionServerError IntrospectionOutcome = "server_error"
	// IntrospectionUnauthorized: HTTP 401 or 403, or invalid_client: usher's
	// own client credentials were refused.
	IntrospectionUnauthorized IntrospectionOutcome = "unauthorized"
	// IntrospectionBadRequest: HTTP 400 or another unexpected status.
	IntrospectionBadRequest IntrospectionOutcome = "bad_request"
	// IntrospectionUnusable: HTTP 200 with an answer that is not a usable
	// RFC 7662 response (not JSON, too large, active missing or not a
	// boolean, a claim of the wrong type).
	IntrospectionUnusable IntrospectionOutcome = "unusable"
)

// IntrospectionEvent is one call to an issuer's introspection endpoint.
type IntrospectionEvent struct {
	// Issuer is the configured issuer.
	Issuer string
	// Outcome says how the call ended.
	Outcome IntrospectionOutcome
	// Took is how long the call took.
	Took time.Duration
}

// IntrospectionLookup is one opaque token's answer looked up.
type IntrospectionLookup struct {
	// Issuer is the configured issuer the token was routed to.
	Issuer string
	// Hit: the answer came from the introspection cache.
	Hit bool
	// Shed: a miss turned away at once, without a call, because too many
	// calls already wait for the issuer's endpoint (ISSUER_UNAVAILABLE).
	Shed bool
}
