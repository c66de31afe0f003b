package service

import (
	"sync/atomic"
	"time"
)

// Reason is the outcome of a validation. Its values are those of usher.v1.Reason.
type Reason int32

// The reasons. The checks run in the order MALFORMED, UNSUPPORTED_ALGORITHM,
// UNTRUSTED_ISSUER, UNKNOWN_KEY or KEYS_UNAVAILABLE, INVALID_SIGNATURE, then,
// on a token whose signature verified, WRONG_TOKEN_TYPE, PROOF_MISSING or
// INVALID_PROOF, EXPIRED, NOT_YET_VALID, MISSING_CLAIM, AUDIENCE_MISMATCH,
// INSUFFICIENT_SCOPE.
const (
	ReasonUnspecified          Reason = 0
	ReasonValid                Reason = 1
	ReasonMalformed            Reason = 2
	ReasonUnsupportedAlgorithm Reason = 3
	ReasonUntrustedIssuer      Reason = 4
	ReasonUnknownKey           Reason = 5
	ReasonInvalidSignature     Reason = 6
	ReasonWrongTokenType       Reason = 7
	ReasonExpired              Reason = 8
	ReasonNotYetValid          Reason = 9
	ReasonMissingClaim         Reason = 10
	ReasonAudienceMismatch     Reason = 11
	ReasonInsufficientScope    Reason = 12
	ReasonKeysUnavailable      Reason = 13
	ReasonInactive             Reason = 14
	ReasonIssuerUnavailable    Reason = 15
	ReasonProofMissing         Reason = 16
	ReasonInvalidProof         Reason = 17
)

var reasonNames = [...]string{
	"UNSPECIFIED", "VALID", "MALFORMED", "UNSUPPORTED_ALGORITHM", "UNTRUSTED_ISSUER", "UNKNOWN_KEY",
	"INVALID_SIGNATURE", "WRONG_TOKEN_TYPE", "EXPIRED", "NOT_YET_VALID", "MISSING_CLAIM",
	"AUDIENCE_MISMATCH", "INSUFFICIENT_SCOPE", "KEYS_UNAVAILABLE", "INACTIVE", "ISSUER_UNAVAILABLE",
	"PROOF_MISSING", "INVALID_PROOF",
}

// String is the reason's name without the REASON_ prefix, e.g. "AUDIENCE_MISMATCH".
func (r Reason) String() string {
	if r < 0 || int(r) >= len(reasonNames) {
		return "UNSPECIFIED"
	}
	return reasonNames[r]
}

// Verdict is the answer about one token. A bad token is a Verdict, never an error.
type Verdict struct {
	// Reason is ReasonValid, or the first check that failed.
	Reason Reason
	// Message is one sentence for a log line.
	Message string
	// Hint says what to do about it; empty when valid.
	Hint string
	// Mismatch holds expected and actual values for a reason about a claim.
	Mismatch *Mismatch
	// Claims is set whenever the signature verified.
	Claims *Claims
	// Violations lists every failed check after the signature, in order;
	// Violations[0] is the Reason.
	Violations []Violation
}

// Valid reports whether every check passed.
func (v *Verdict) Valid() bool { return v.Reason == ReasonValid }

// Mismatch names a claim and its expected and actual values.
type Mismatch struct {
	Claim    string
	Expected []string
	Actual   []string
}

// Violation is one failed check after the signature.
type Violation struct {
	Reason   Reason
	Message  string
	Hint     string
	Mismatch *Mismatch
}

// Claims are the claims of a token and the header fields that matter.
// Times are zero when the claim is absent. A verdict's Claims may be shared
// with other verdicts of the same token: read them, do not change them.
type Claims struct {
	Issuer    string
	Subject   string
	Audience  []string
	Scopes    []string
	ClientID  string // client_id, or azp
	ExpiresAt time.Time
	IssuedAt  time.Time
	NotBefore time.Time
	JWTID     string
	KeyID     string
	Algorithm string
	TokenType string
	// TokenFormat is "jwt", or "opaque" for a token validated through
	// introspection.
	TokenFormat string
	// Confirmation is the token's cnf claim: the key or certificate it is
	// bound to; zero for a bearer token.
	Confirmation Confirmation
	// Raw holds every payload claim as decoded from JSON.
	Raw map[string]any

	// memo keeps an adapter's conversion of claims served again from the
	// verified-token cache (see MemoClaims).
	memo atomic.Pointer[any]
}

// Confirmation is a token's cnf claim (RFC 7800): a token with either
// member is sender-constrained, and valid only with its proof.
type Confirmation struct {
	// JKT is cnf.jkt, the RFC 7638 SHA-256 thumbprint of the DPoP key
	// (RFC 9449), base64url.
	JKT string
	// X5TS256 is cnf["x5t#S256"], the SHA-256 thumbprint of the client
	// certificate (RFC 8705), base64url.
	X5TS256 string
}

// Bound reports whether the token is sender-constrained.
func (c Confirmation) Bound() bool { return c.JKT != "" || c.X5TS256 != "" }

// MemoClaims returns convert(c), converting at most once per type T: claims
// served again from the verified-token cache are the same *Claims, so an
// adapter that turns them into its wire type (the gRPC adapter, into
// usherv1.Claims) pays for it once per token, not once per call. The result
// is shared by every caller and must be treated as read-only. c holds one
// memo: an adapter converting to another type converts every time.
func MemoClaims[T any](c *Claims, convert func(*Claims) T) T {
	if p := c.memo.Load(); p != nil {
		if t, ok := (*p).(T); ok {
			return t
		}
		return convert(c)
	}
	t := convert(c)
	var v any = t
	c.memo.CompareAndSwap(nil, &v)
	return t
}

// KnownAudience is an entry of the audiences registry.
type KnownAudience struct {
	Audience string
	Name     string
}

// Inspection is what InspectToken reports: the token decoded whether or not
// it verifies, with the signature's status.
type Inspection struct {
	// Header is the decoded protected header; nil when the token is malformed.
	Header map[string]any
	// Claims are decoded even when the signature did not verify; nil when
	// the token is malformed.
	Claims *Claims
	// Signature is ReasonValid when a trusted key verifies it, else why not.
	Signature Reason
	// Audiences are the registered audiences that would accept the token
	// (empty unless the signature verified).
	Audiences []KnownAudience
	Message   string
	Hint      string
}

// IssuerStatus is what usher believes about one issuer now.
type IssuerStatus struct {
	Issuer      string
	JWKSURI     string
	KeyIDs      []string
	Algorithms  []string
	LastRefresh time.Time
	LastError   string
	NextRefresh time.Time
	// Stale: the key set held is older than max_stale (every refresh since
	// failed), so its keys no longer verify anything.
	Stale bool
	// Fetches and Failures count key set fetches since this validator started.
	Fetches, Failures uint64
	// Introspection: the issuer's opaque tokens are answered through its
	// introspection endpoint.
	Introspection bool
	// IntrospectionEndpoint is that endpoint, from the configuration or the
	// discovery document; "" while it is not known.
	IntrospectionEndpoint string
	// IntrospectionError is the last introspection call's failure (empty
	// after an answer), or why the endpoint is not known.
	IntrospectionError string
	// OpaqueOnly: usher holds no key set for the issuer and answers only
	// its opaque tokens (its configuration gives none, or its discovery
	// document names no jwks_uri).
	OpaqueOnly bool
}
