package service

import (
	"context"
	"errors"
	"time"
)

// Request is one validation with everything a sender-constrained token
// needs: the scheme it came with, the DPoP proof and the request it was
// made for, and the client certificate of the caller's TLS connection.
// Validate(ctx, token, audience, scopes) is Request{Token, Audience,
// Scopes} with no proof: a bound token sent so is PROOF_MISSING.
type Request struct {
	// Token is the access token; a leading "Bearer " (any case) and white
	// space are stripped.
	Token string
	// Audience is the audience of the caller's own API.
	Audience string
	// Scopes must all be granted.
	Scopes []string
	// Scheme is the authorization scheme: "Bearer" (when empty) or "DPoP",
	// compared without regard to case.
	Scheme string
	// DPoPProof is the request's DPoP header: one proof JWT.
	DPoPProof string
	// HTTPMethod is the method of the request the proof was made for.
	HTTPMethod string
	// HTTPURI is the target URI of that request, without query and fragment.
	HTTPURI string
	// ClientCertificateSHA256 is the base64url SHA-256 of the DER client
	// certificate of the caller's TLS connection (RFC 8705 §3.1).
	ClientCertificateSHA256 string
}

// ReplayStore remembers the jti of DPoP proofs, so that each proof is
// accepted once. Implementations must be safe for concurrent use.
type ReplayStore interface {
	// Remember records key until expires and reports whether it was new.
	// An error means the store cannot tell: the proof is not accepted.
	Remember(ctx context.Context, key string, expires time.Time) (fresh bool, err error)
}

// ErrProofUnchecked is wrapped by ValidateRequest's error when a proof could
// not be checked for replay (the replay store did not answer): no verdict
// is given, and the caller must fail closed (UNAVAILABLE, 503).
var ErrProofUnchecked = errors.New("the DPoP replay store did not answer")

// ValidateRequest validates r.Token as Validate does, and a
// sender-constrained token's proof with it. The error is nil whenever a
// verdict is given; it wraps ErrProofUnchecked when the proof could not be
// checked for replay.
func (v *Validator) ValidateRequest(ctx context.Context, r *Request) (Verdict, error) {
	if r == nil {
		r = &noProof
	}
	return v.validateObserved(ctx, r.Token, r.Audience, r.Scopes, r)
}
