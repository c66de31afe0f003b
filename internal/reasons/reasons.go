// Package reasons is the one table of what each usher.v1.Reason means to a
// caller: the gRPC code an interceptor answers with, the HTTP status of a
// denial, the RFC 6750 error of the WWW-Authenticate challenge, whether a
// verdict may be cached and whether the call may succeed later. The Go
// interceptors (client/), ext_authz and the adapters read it; the Python and
// Node helpers are tested against its JSON form (examples/reasons.json).
//
// A reason this table does not know (sent by a newer usher) is answered like
// an unavailable usher: fail closed, never let the call through.
package reasons

import (
	"net/http"
	"strconv"
	"strings"

	"google.golang.org/grpc/codes"

	usherv1 "github.com/usher-dev/usher/proto/usher/v1"
)

// RFC 6750 §3.1 error codes of a Bearer challenge.
const (
	InvalidToken      = "invalid_token"
	InsufficientScope = "insufficient_scope"
	// InvalidDPoPProof is RFC 9449 §7.1's error of a DPoP challenge.
	InvalidDPoPProof = "invalid_dpop_proof"
	// DPoP is the scheme of RFC 9449's challenge.
	DPoP = "DPoP"
	// DPoPAlgorithms is the algs parameter of a DPoP challenge: the proof
	// algorithms usher accepts, service.DPoPAlgorithms (a test holds them
	// equal; this package is imported by client/, which must not import
	// the engine).
	DPoPAlgorithms = "ES256 ES384 ES512 EdDSA PS256 PS384 PS512 RS256 RS384 RS512"
)

// Rule is what a verdict's reason means to the caller of a protected API.
type Rule struct {
	// Code is the gRPC status of the protected call (OK: the handler runs).
	Code codes.Code
	// HTTPStatus is the HTTP status of the protected request.
	HTTPStatus int
	// BearerError is the error of the RFC 6750 challenge; "" when the
	// token is not at fault.
	BearerError string
	// Cacheable: the verdict holds for the same token, audience and scopes
	// until the token expires; it depends on nothing that can change under
	// it (key sets, usher's configuration, the clock moving forward).
	Cacheable bool
	// Retryable: not the token's fault; the same call may succeed later.
	Retryable bool
	// Challenge is "DPoP" when the answer must be a DPoP challenge (RFC
	// 9449 §7.1) whatever scheme the request used; "" for the request's
	// own scheme (Bearer, or DPoP when it came so).
	Challenge string
}

var (
	valid       = Rule{Code: codes.OK, HTTPStatus: http.StatusOK, Cacheable: true}
	badToken    = Rule{Code: codes.Unauthenticated, HTTPStatus: http.StatusUnauthorized, BearerError: InvalidToken, Cacheable: true}
	changeable  = Rule{Code: codes.Unauthenticated, HTTPStatus: http.StatusUnauthorized, BearerError: InvalidToken}
	noScope     = Rule{Code: codes.PermissionDenied, HTTPStatus: http.StatusForbidden, BearerError: InsufficientScope, Cacheable: true}
	unavailable = Rule{Code: codes.Unavailable, HTTPStatus: http.StatusServiceUnavailable, Retryable: true}
	// A proof is made for one request: its verdict is never reused.
	noProof  = Rule{Code: codes.Unauthenticated, HTTPStatus: http.StatusUnauthorized, BearerError: InvalidToken, Challenge: DPoP}
	badProof = Rule{Code: codes.Unauthenticated, HTTPStatus: http.StatusUnauthorized, BearerError: InvalidDPoPProof, Challenge: DPoP}
)

// table holds every Reason of usher.v1 but UNSPECIFIED, which is never sent.
var table = map[usherv1.Reason]Rule{
	usherv1.Reason_REASON_VALID:                 valid,
	usherv1.Reason_REASON_MALFORMED:             badToken,
	usherv1.Reason_REASON_UNSUPPORTED_ALGORITHM: badToken,
	usherv1.Reason_REASON_UNTRUSTED_ISSUER:      changeable, // trusted after a config change
	usherv1.Reason_REASON_UNKNOWN_KEY:           changeable, // known after a key rotation
	usherv1.Reason_REASON_INVALID_SIGNATURE:     badToken,
	usherv1.Reason_REASON_WRONG_TOKEN_TYPE:      badToken,
	usherv1.Reason_REASON_EXPIRED:               badToken,
	usherv1.Reason_REASON_NOT_YET_VALID:         changeable, // valid once its time comes
	usherv1.Reason_REASON_MISSING_CLAIM:         badToken,
	usherv1.Reason_REASON_AUDIENCE_MISMATCH:     badToken,
	usherv1.Reason_REASON_INSUFFICIENT_SCOPE:    noScope,
	usherv1.Reason_REASON_KEYS_UNAVAILABLE:      unavailable,
	usherv1.Reason_REASON_INACTIVE:              badToken, // revoked, expired or never issued: it stays so
	usherv1.Reason_REASON_ISSUER_UNAVAILABLE:    unavailable,
	usherv1.Reason_REASON_PROOF_MISSING:         noProof,
	usherv1.Reason_REASON_INVALID_PROOF:         badProof,
}

// Of returns the rule of r, and whether this table knows r.
func Of(r usherv1.Reason) (Rule, bool) {
	rule, ok := table[r]
	return rule, ok
}

// Deny returns the rule for a rejection: r's own when r is a reason to
// reject, and UNAVAILABLE (fail closed) for a reason this table does not
// know, for UNSPECIFIED, and for VALID (a response that says both "not
// valid" and VALID is not to be trusted either way).
func Deny(r usherv1.Reason) Rule {
	if rule, ok := table[r]; ok && rule.Code != codes.OK {
		return rule
	}
	return unavailable
}

// Name is r's name without the REASON_ prefix ("AUDIENCE_MISMATCH"), or
// REASON_<number> for a reason this version does not know.
func Name(r usherv1.Reason) string {
	if n, ok := usherv1.Reason_name[int32(r)]; ok {
		return strings.TrimPrefix(n, "REASON_")
	}
	return "REASON_" + strconv.Itoa(int(r))
}
