package grpcapi

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	usherv1 "github.com/usher-dev/usher/proto/usher/v1"
	"github.com/usher-dev/usher/service"
)

// Limits on the sender-constraint fields of ValidateTokenRequest, checked
// before the engine runs: a caller that sends more is refused with
// INVALID_ARGUMENT naming the field, not handed to a parser.
const (
	// MaxProofBytes caps dpop_proof. A proof is a small JWT (a header with
	// a public key, a few claims, a signature): under 2 KiB with an RSA
	// 4096 key.
	MaxProofBytes = 8 << 10
	// MaxURIBytes caps http_uri.
	MaxURIBytes = 8 << 10
	// MaxMethodBytes caps http_method.
	MaxMethodBytes = 64
	// certThumbprintLen is the length of an unpadded base64url SHA-256.
	certThumbprintLen = 43
)

// sizedFieldsBytes is the room MaxRecvMsgSize leaves for everything but the
// token: the proof and URI at their limits, and the audience, scopes and
// other fields.
const sizedFieldsBytes = MaxProofBytes + MaxURIBytes + 16<<10

// engineRequest checks the request's fields and converts it for the
// engine; the error is an INVALID_ARGUMENT status. A value: the engine
// keeps no pointer to it, so it stays on the caller's stack.
func engineRequest(req *usherv1.ValidateTokenRequest) (service.Request, error) {
	if err := checkProofFields(req); err != nil {
		return service.Request{}, err
	}
	return service.Request{
		Token:                   req.GetToken(),
		Audience:                req.GetExpectedAudience(),
		Scopes:                  req.GetRequiredScopes(),
		Scheme:                  req.GetScheme(),
		DPoPProof:               req.GetDpopProof(),
		HTTPMethod:              req.GetHttpMethod(),
		HTTPURI:                 req.GetHttpUri(),
		ClientCertificateSHA256: req.GetClientCertificateSha256(),
	}, nil
}

// checkProofFields refuses sender-constraint fields no client could mean:
// an unknown scheme, sizes far beyond any real proof or URI, a certificate
// thumbprint that is not one.
func checkProofFields(req *usherv1.ValidateTokenRequest) error {
	bad := func(format string, args ...any) error {
		return status.Error(codes.InvalidArgument, fmt.Sprintf(format, args...))
	}
	switch s := req.GetScheme(); {
	case s == "", strings.EqualFold(s, "Bearer"), strings.EqualFold(s, "DPoP"):
	case len(s) > 32:
		return bad("scheme is %d bytes: send \"Bearer\", \"DPoP\" or nothing (Bearer), the scheme of the request's authorization header", len(s))
	default:
		return bad("scheme %q is not one usher knows: send \"Bearer\", \"DPoP\" or nothing (Bearer), the scheme of the request's authorization header", service.Printable(s))
	}
	if n := len(req.GetDpopProof()); n > MaxProofBytes {
		return bad("dpop_proof is %d bytes, above the limit of %d: a DPoP proof is one small JWT; send the request's DPoP header as it came, once", n, MaxProofBytes)
	}
	if n := len(req.GetHttpUri()); n > MaxURIBytes {
		return bad("http_uri is %d bytes, above the limit of %d: send the target URI without query and fragment (https://host/path)", n, MaxURIBytes)
	}
	if n := len(req.GetHttpMethod()); n > MaxMethodBytes {
		return bad("http_method is %d bytes, above the limit of %d: send the request's method (GET, POST, …)", n, MaxMethodBytes)
	}
	if x := req.GetClientCertificateSha256(); x != "" && !isThumbprint(x) {
		return bad("client_certificate_sha256 is %s: send the unpadded base64url (43 characters) SHA-256 of the client certificate's DER, as RFC 8705's x5t#S256; leave it empty when the caller used no client certificate", thumbprintShape(x))
	}
	return nil
}

// isThumbprint: an unpadded base64url SHA-256 in canonical form (the 2
// bits the last character leaves are zero, as every encoder writes them).
func isThumbprint(s string) bool {
	b, err := base64.RawURLEncoding.Strict().DecodeString(s)
	return err == nil && len(b) == sha256.Size
}

// thumbprintShape says what a client_certificate_sha256 that is not a
// thumbprint looks like, for the usual mistakes.
func thumbprintShape(s string) string {
	if b, err := base64.StdEncoding.DecodeString(s); err == nil && len(b) == sha256.Size {
		return "standard base64 (+, / or = padding)"
	}
	if b, err := hex.DecodeString(s); err == nil && len(b) == sha256.Size {
		return "hex"
	}
	if len(s) == certThumbprintLen {
		return "43 characters but not canonical base64url"
	}
	return fmt.Sprintf("%d bytes long", len(s))
}

// unchecked is the status of a validation the engine could not finish:
// UNAVAILABLE, never a verdict, so that every interceptor fails closed. The
// cause (it names the store's address) goes to usher's log, not to callers.
func unchecked(err error) error {
	if errors.Is(err, service.ErrProofUnchecked) {
		return status.Error(codes.Unavailable, "usher could not check the DPoP proof against its replay store, so it gives no verdict: "+
			"this is not the token's or the proof's fault, and bearer tokens and calls without a proof are unaffected. "+
			"Retry with backoff; operator: check that dpop.replay_store (Redis or Valkey) is up and reachable from usher, its latency, and usher's log")
	}
	return status.Error(codes.Unavailable, "usher could not validate the token: not the token's fault; retry with backoff, and check usher's log")
}

// cause is what went wrong, printable and short, for usher's log: the text
// after ErrProofUnchecked's, which says nothing the message does not.
func cause(err error) string {
	s := err.Error()
	if _, after, ok := strings.Cut(s, service.ErrProofUnchecked.Error()+": "); ok && after != "" {
		s = after
	}
	return service.Printable(s)
}
