package extauthz

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"net/url"
	"strings"

	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/grpc/codes"

	"github.com/usher-dev/usher/internal/reasons"
	usherv1 "github.com/usher-dev/usher/proto/usher/v1"
	"github.com/usher-dev/usher/service"
)

// Bounds on what Envoy hands over for a sender-constrained token, checked
// before any parsing.
const (
	// maxProofBytes caps the DPoP header (a proof is one small JWT).
	maxProofBytes = 8 << 10
	// maxCertificateBytes caps source.certificate, URL-encoded PEM.
	maxCertificateBytes = 64 << 10
)

// proofAlgs is the algs attribute of a DPoP challenge: the algorithms the
// engine accepts a proof signed with.
var proofAlgs = strings.Join(service.DPoPAlgorithms, " ")

// credential is the request's authorization: its scheme, as usher.v1
// spells it ("Bearer" or "DPoP"), and the token.
type credential struct {
	scheme, token string
}

func (c credential) dpop() bool { return c.scheme == reasons.DPoP }

// readCredential reads exactly one "Bearer <token>" or "DPoP <token>"
// authorization value.
func readCredential(vals []string, audience string) (credential, *denial) {
	var all []string
	for _, v := range vals {
		all = append(all, strings.Split(v, ",")...) // a token68 holds no comma: a comma joins several values
	}
	invalid := func(c credential, why string) (credential, *denial) {
		return c, &denial{
			code: codes.Unauthenticated, http: typev3.StatusCode_Unauthorized, reason: ReasonInvalidCredentials,
			bearerError: "invalid_request", message: why, dpop: c.dpop(),
			hint: "send exactly one header: authorization: Bearer <access token>, or, for a DPoP-bound token, authorization: DPoP <access token> with one DPoP header holding the proof",
		}
	}
	switch {
	case len(all) == 0:
		return credential{}, &denial{
			code: codes.Unauthenticated, http: typev3.StatusCode_Unauthorized, reason: ReasonMissingCredentials,
			message: "no authorization header: send \"authorization: Bearer <access token>\"",
			hint:    "request an access token with audience " + audience + " from the issuer and send it as a Bearer token (or as DPoP with its proof, when the issuer binds it to a key)",
		}
	case len(all) > 1:
		return invalid(credential{}, fmt.Sprintf("%d authorization values: send exactly one", len(all)))
	}
	scheme, tok, _ := strings.Cut(strings.TrimSpace(all[0]), " ")
	tok = strings.TrimSpace(tok)
	var c credential
	switch {
	case strings.EqualFold(scheme, "bearer"):
		c.scheme = "Bearer"
	case strings.EqualFold(scheme, reasons.DPoP):
		c.scheme = reasons.DPoP
	default:
		return invalid(c, fmt.Sprintf("authorization scheme %q: this API takes Bearer or DPoP tokens", service.Printable(scheme)))
	}
	switch {
	case tok == "":
		return invalid(c, fmt.Sprintf("empty %s token", strings.ToLower(c.scheme)))
	case strings.ContainsAny(tok, " \t"):
		return invalid(c, fmt.Sprintf("the %s token holds white space: send exactly one token after %q", strings.ToLower(c.scheme), c.scheme+" "))
	}
	c.token = tok
	return c, nil
}

// readProof reads the DPoP header: at most one proof. Envoy joins
// repeated headers with ",", and a proof (a JWS in compact form) holds no
// comma, so a comma means several proofs.
func readProof(vals []string) (string, *denial) {
	switch {
	case len(vals) == 0:
		return "", nil
	case len(vals) > 1 || strings.Contains(vals[0], ","):
		return "", proofDenial(fmt.Sprintf("%d DPoP header values: send exactly one proof", len(vals)+strings.Count(strings.Join(vals, ""), ",")))
	case len(vals[0]) > maxProofBytes:
		return "", proofDenial(fmt.Sprintf("the DPoP header is %d bytes, above the limit of %d: a proof is one small JWT", len(vals[0]), maxProofBytes))
	}
	return strings.TrimSpace(vals[0]), nil
}

// proofDenial is an unusable DPoP header: INVALID_PROOF, as the engine
// names a proof it cannot accept.
func proofDenial(why string) *denial {
	r := usherv1.Reason_REASON_INVALID_PROOF
	rule := reasons.Deny(r)
	return &denial{
		code: rule.Code, http: typev3.StatusCode(rule.HTTPStatus), reason: reasons.Name(r),
		bearerError: rule.BearerError, message: why, dpop: true,
		hint: "send one DPoP header with a fresh proof (RFC 9449) signed for this request's method and URI",
	}
}

// targetURI is the htu a proof must name (RFC 9449 §4.3): the request's
// scheme (https when Envoy reports none), host and path in normal form,
// without query or fragment. It is "" when Envoy's host or scheme cannot
// make a URI.
func targetURI(scheme, host, path string) string {
	scheme = strings.ToLower(scheme)
	switch scheme {
	case "":
		scheme = "https"
	case "http", "https":
	default:
		return ""
	}
	if host == "" || strings.ContainsFunc(host, func(r rune) bool { return !isAuthorityChar(r) }) {
		return ""
	}
	return scheme + "://" + host + path
}

// isAuthorityChar: a character of RFC 3986's authority without userinfo
// (reg-name or IP literal, and a port).
func isAuthorityChar(r rune) bool {
	return 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || strings.ContainsRune("-._~%!$&'()*+,;=:[]", r)
}

// certThumbprint is RFC 8705's x5t#S256 of the certificate Envoy reports
// (source.certificate with include_peer_certificate: the URL-encoded PEM of
// the peer's certificate): base64url SHA-256 of the first certificate's
// DER. "" when the connection had no client certificate.
func certThumbprint(encoded string) (string, *denial) {
	if encoded == "" {
		return "", nil
	}
	bad := func(why string) (string, *denial) {
		return "", &denial{
			code: codes.Unauthenticated, http: typev3.StatusCode_Unauthorized, reason: ReasonInvalidClientCertificate,
			bearerError: "invalid_request", message: "Envoy reported a client certificate usher cannot read: " + why,
			hint: "not the caller's token: the proxy's include_peer_certificate value is not a URL-encoded PEM certificate; operator: check the ext_authz filter and Envoy's version",
		}
	}
	if len(encoded) > maxCertificateBytes {
		return bad(fmt.Sprintf("%d bytes, above the limit of %d", len(encoded), maxCertificateBytes))
	}
	// PathUnescape, not QueryUnescape: a "+" of the base64 body may come
	// unencoded, and must not turn into a space.
	raw, err := url.PathUnescape(encoded)
	if err != nil {
		return bad("it is not URL-encoded: " + service.Printable(err.Error()))
	}
	block, _ := pem.Decode([]byte(raw))
	switch {
	case block == nil:
		return bad("it holds no PEM block")
	case block.Type != "CERTIFICATE":
		return bad(fmt.Sprintf("its first PEM block is %q, not CERTIFICATE", service.Printable(block.Type)))
	}
	if _, err := x509.ParseCertificate(block.Bytes); err != nil {
		return bad("its first certificate does not parse: " + service.Printable(err.Error()))
	}
	sum := sha256.Sum256(block.Bytes)
	return base64.RawURLEncoding.EncodeToString(sum[:]), nil
}
