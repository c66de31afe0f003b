package service

import "time"

// Observer is told about the engine's work, for metrics: the engine calls
// it, and the implementation (Prometheus, OpenTelemetry, a test) lives
// outside the engine. Its methods run on the request path: they must be
// fast and safe for concurrent use.
type Observer interface {
	// ObserveVerdict is called once per Validate.
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
