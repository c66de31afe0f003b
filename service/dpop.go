package service

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/big"
	"slices"
	"strings"
	"time"

	"github.com/usher-dev/usher/internal/strictjson"
)

// Sender-constrained tokens: a token whose cnf has jkt is valid only with a
// DPoP proof (RFC 9449) signed by that key; one whose cnf has x5t#S256 only
// over the client certificate it names (RFC 8705). A token with both needs
// both. The messages and hints are in proofhints.go.

// Limits of a DPoP proof.
const (
	// maxProofBytes caps a proof, checked before anything else: a proof
	// is a header with one public key and five short claims.
	maxProofBytes = 8 << 10
	// maxJTIBytes caps a proof's jti: a jti is a random identifier.
	maxJTIBytes = 256
)

// DPoPAlgorithms are the algorithms a DPoP proof may be signed with: the
// asymmetric JWS algorithms usher verifies (RFC 9449 §4.3 check 5), never
// none or HS*: a proof is checked with the public key it carries.
var DPoPAlgorithms = []string{"ES256", "ES384", "ES512", "EdDSA", "PS256", "PS384", "PS512", "RS256", "RS384", "RS512"}

// privateJWKMembers are the JWK members that hold private or symmetric key
// material (RFC 7518 §6.2.2, §6.3.2, §6.4; RFC 8037 §2): a key that has any
// of them is not a public key.
var privateJWKMembers = []string{"d", "p", "q", "dp", "dq", "qi", "oth", "k"}

// dpopScheme reports whether the authorization scheme is DPoP.
func dpopScheme(scheme string) bool {
	return scheme != "" && strings.EqualFold(strings.TrimSpace(scheme), "DPoP")
}

// pendingReplay is a proof that passed every check but the replay check,
// which the caller runs last.
type pendingReplay struct {
	key     string // hex SHA-256 of the key's thumbprint and the jti
	jti     string
	expires time.Time
}

// checkSender runs the checks of a sender-constrained token (or of a token
// sent with the DPoP scheme) and puts a failure among verdict's violations,
// right after WRONG_TOKEN_TYPE. The replay check runs last, and only when
// every other check passed, the token's included: a refused request's proof
// grants nothing, so it is not recorded, and a bad token costs the replay
// store no call. The error wraps ErrProofUnchecked: the store did not answer.
func (v *Validator) checkSender(ctx context.Context, verdict *Verdict, r *Request, tok string) error {
	vi, pend := v.senderViolation(r, tok, verdict.Claims.Confirmation)
	if vi == nil && pend != nil && len(verdict.Violations) == 0 {
		fresh, err := v.replay.Remember(ctx, pend.key, pend.expires)
		if err != nil {
			return fmt.Errorf("checking the DPoP proof for replay: %w: %w", ErrProofUnchecked, err)
		}
		if !fresh {
			vi = replayedProofViolation(pend.jti, v.iatWindow)
		}
	}
	if vi != nil {
		at := 0
		if len(verdict.Violations) > 0 && verdict.Violations[0].Reason == ReasonWrongTokenType {
			at = 1
		}
		verdict.Violations = slices.Insert(verdict.Violations, at, *vi)
	}
	return nil
}

// senderViolation checks the scheme, the DPoP proof of a token bound to a
// key (cnf.jkt) and the client certificate of one bound to a certificate
// (cnf["x5t#S256"]), in that order; it returns the first failure, or the
// replay check still to run for a good proof.
func (v *Validator) senderViolation(r *Request, tok string, conf Confirmation) (*Violation, *pendingReplay) {
	var pend *pendingReplay
	dpop := dpopScheme(r.Scheme)
	switch {
	case conf.JKT == "" && dpop:
		// RFC 9449 §7.1: the DPoP scheme is for DPoP-bound tokens; a
		// bearer token sent so would make its holder think it is bound.
		return notBoundViolation(conf), nil
	case conf.JKT != "" && !dpop:
		return schemeMissingViolation(r.Scheme, conf.JKT), nil
	case conf.JKT != "" && strings.TrimSpace(r.DPoPProof) == "":
		return proofMissingViolation(conf.JKT), nil
	case conf.JKT != "":
		p, vi := parseProof(r.DPoPProof)
		if vi != nil {
			return vi, nil
		}
		if pend, vi = v.checkProof(p, r, tok, conf.JKT); vi != nil {
			return vi, nil
		}
	}
	// A bearer token with a stray DPoP proof and the Bearer scheme is
	// valid: the proof is ignored (RFC 9449 §7.2 leaves it to the server).
	if conf.X5TS256 != "" {
		if vi := certificateViolation(r.ClientCertificateSHA256, conf.X5TS256); vi != nil {
			return vi, nil
		}
	}
	return nil, pend
}

// dpopProof is a proof whose signature verified with its own jwk.
type dpopProof struct {
	t   *parsedToken
	jkt string // the RFC 7638 SHA-256 thumbprint of its jwk
}

// parseProof checks a proof up to its signature (RFC 9449 §4.3 checks 1
// to 7): one compact JWS of bounded size, parsed strictly (canonical
// base64url, JSON objects without duplicate keys, registered claims of the
// right type, no crit), typ dpop+jwt, an asymmetric alg, a public jwk of
// the alg's key type, and a signature that verifies with that jwk.
func parseProof(raw string) (*dpopProof, *Violation) {
	s := strings.TrimSpace(raw)
	if vi := proofShapeViolation(s); vi != nil {
		return nil, vi
	}
	t, m := parseCompact(s, maxProofBytes)
	if m != nil {
		return nil, proofMalformedViolation(m)
	}
	if !sameMediaType(t.typ, "dpop+jwt") {
		return nil, proofTypViolation(t.typ)
	}
	spec, known := algSpecs[t.alg]
	if !t.hasAlg || !known || !slices.Contains(DPoPAlgorithms, t.alg) {
		return nil, proofAlgViolation(t)
	}
	key, vi := proofKey(t, spec)
	if vi != nil {
		return nil, vi
	}
	if !key.verify(spec, t.signingInput, t.signature) {
		return nil, proofSignatureViolation(t.alg)
	}
	return &dpopProof{t: t, jkt: thumbprint(key)}, nil
}

// proofShapeViolation checks the proof's shape byte by byte before
// anything is decoded: its size, one value (no list of several), the
// compact form, three base64url segments.
func proofShapeViolation(s string) *Violation {
	if s == "" {
		return proofShapeFailure("empty")
	}
	if len(s) > maxProofBytes {
		return proofShapeFailure(fmt.Sprintf("%d bytes, over the %d-byte limit", len(s), maxProofBytes))
	}
	if s[0] == '{' {
		return proofShapeFailure("JSON serialization (starts with '{'); only the compact form h.p.s is accepted")
	}
	dots := 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '.':
			dots++
		case c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '_':
		case c == ',':
			return proofShapeFailure("the DPoP header holds several values (a ','): exactly one proof is allowed (RFC 9449 §4.3)")
		default:
			return proofShapeFailure(fmt.Sprintf("byte %d is %q, outside the base64url alphabet (A-Z a-z 0-9 - _) and '.'", i, rune(c)))
		}
	}
	if dots != 2 {
		return proofShapeFailure(fmt.Sprintf("3 segments expected, found %d", dots+1))
	}
	return nil
}

// proofKey is the proof's jwk header as a key that can verify its alg: a
// JSON object without private members, a public key usher verifies with
// (the checks of an issuer's keys: RSA of 2048 bits or more, a supported
// curve, no ROCA fingerprint), of the key type the alg needs.
func proofKey(t *parsedToken, spec algSpec) (*verifyKey, *Violation) {
	raw, ok := t.header["jwk"]
	if !ok {
		return nil, proofJWKViolation("the proof's header has no jwk")
	}
	members, ok := raw.(map[string]any)
	if !ok {
		return nil, proofJWKViolation(fmt.Sprintf("the proof's jwk is %s, not a JSON object", strictjson.TypeName(raw)))
	}
	for _, name := range privateJWKMembers {
		if _, ok := members[name]; ok {
			return nil, privateJWKViolation(name)
		}
	}
	b, err := json.Marshal(members)
	if err != nil { // values from strictjson always marshal; fail closed anyway
		return nil, proofJWKViolation("the proof's jwk cannot be read")
	}
	key, why := usableKey(b)
	if why != "" {
		return nil, proofJWKViolation("the proof's jwk is not a usable public key: " + why)
	}
	if key.kty != spec.kty || spec.crv != "" && key.crv != spec.crv || key.alg != "" && key.alg != t.alg {
		return nil, jwkTypeViolation(t.alg, spec, key)
	}
	return key, nil
}

// checkProof checks the claims of a proof whose signature verified (RFC
// 9449 §4.3 checks 3, 8, 9, 11, 12): jti, htm, htu, iat and ath present
// and of the right type, htm and htu those of the request, iat within the
// window, ath the hash of the token, and the proof's key the one the token
// is bound to. nonce is not checked: usher issues no DPoP nonces (check 10
// applies only to a server that does). It returns the replay check to run.
func (v *Validator) checkProof(p *dpopProof, r *Request, tok, jkt string) (*pendingReplay, *Violation) {
	pl := p.t.payload
	var htm, htu, ath string
	for _, c := range []struct {
		name string
		dst  *string
	}{{"jti", nil}, {"htm", &htm}, {"htu", &htu}, {"iat", nil}, {"ath", &ath}} {
		val, ok := pl[c.name]
		switch {
		case !ok:
			return nil, proofClaimMissingViolation(c.name)
		case c.dst != nil:
			s, isString := val.(string)
			if !isString {
				return nil, proofClaimTypeViolation(c.name, val)
			}
			*c.dst = s
		}
	}
	if vi := requestViolation(r); vi != nil {
		return nil, vi
	}
	if htm != r.HTTPMethod {
		return nil, htmViolation(htm, r.HTTPMethod)
	}
	if got, _ := normalURI(htu); got == "" || got != mustNormalURI(r.HTTPURI) {
		return nil, htuViolation(htu, r.HTTPURI)
	}
	now := v.now()
	iat := numericDate(p.t.claims.iat)
	if skew := iat.Sub(now); skew > v.iatWindow || skew < -v.iatWindow {
		return nil, iatViolation(now, iat, v.iatWindow)
	}
	jti := p.t.claims.jti
	if jti == "" || len(jti) > maxJTIBytes {
		return nil, jtiViolation(jti)
	}
	if want := tokenHash(tok); ath != want {
		return nil, athViolation(ath, want)
	}
	if p.jkt != jkt {
		return nil, jktViolation(p.jkt, jkt)
	}
	// The proof is acceptable while |now - iat| <= window, that is until
	// iat + window on this clock: remembering it that long refuses every
	// replay here. It is also kept a window past now, so that a replica
	// whose clock lags (a shared store) still finds it while it accepts the
	// proof; that costs at most one window more of memory.
	return &pendingReplay{key: replayKey(jkt, jti), jti: jti, expires: later(iat, now).Add(v.iatWindow)}, nil
}

// mustNormalURI is the request's URI normalized; requestViolation has
// checked that it is usable.
func mustNormalURI(s string) string {
	n, _ := normalURI(s)
	return n
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// tokenHash is a proof's ath for tok: base64url SHA-256 of its ASCII.
func tokenHash(tok string) string {
	sum := sha256.Sum256([]byte(tok))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// replayKey is the replay store's key of a proof: the hex SHA-256 of the
// key's thumbprint and the jti, so that one key's jti never blocks another
// key's proofs. The thumbprint has a fixed length: the two cannot run into
// each other.
func replayKey(jkt, jti string) string {
	h := sha256.New()
	h.Write([]byte(jkt))
	h.Write([]byte(jti))
	return hex.EncodeToString(h.Sum(nil))
}

// thumbprint is the RFC 7638 SHA-256 thumbprint of a public key, base64url:
// the hash of its required members, in lexicographic order, with no white
// space, computed from the parsed key so that the encoding in the proof
// (leading zeros, member order) does not matter.
func thumbprint(k *verifyKey) string {
	enc := base64.RawURLEncoding.EncodeToString
	var doc string
	switch k.kty {
	case "RSA":
		e := big.NewInt(int64(k.rsa.E)).Bytes()
		doc = `{"e":"` + enc(e) + `","kty":"RSA","n":"` + enc(k.rsa.N.Bytes()) + `"}`
	case "EC":
		pt, err := k.ec.Bytes() // 0x04 || x || y, each of the curve's size
		if err != nil {
			return ""
		}
		n := (len(pt) - 1) / 2
		doc = `{"crv":"` + k.crv + `","kty":"EC","x":"` + enc(pt[1:1+n]) + `","y":"` + enc(pt[1+n:]) + `"}`
	case "OKP":
		doc = `{"crv":"` + k.crv + `","kty":"OKP","x":"` + enc(k.ed) + `"}`
	default:
		return ""
	}
	sum := sha256.Sum256([]byte(doc))
	return enc(sum[:])
}
