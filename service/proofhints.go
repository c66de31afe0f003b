package service

import (
	"fmt"
	"strings"
	"time"

	"github.com/usher-dev/usher/internal/strictjson"
)

// The messages and hints of sender-constrained tokens (PROOF_MISSING,
// INVALID_PROOF). Every value taken from a proof or a request is bounded
// and escaped (Printable, clip) before it is shown; a proof, a token and a
// key are never shown, only thumbprints and the hash of the token.

// newProofHint says how a DPoP proof is made.
const newProofHint = "make a new proof for each request: a JWS with typ dpop+jwt, signed by the client's DPoP key with its public key as the jwk header, " +
	"and the claims jti (new for each proof), htm (the request's method), htu (the URI the request is sent to, without query and fragment), " +
	"iat (the current time) and ath (base64url SHA-256 of the access token)"

// howToSend says how a DPoP-bound token is sent.
func howToSend(jkt string) string {
	return fmt.Sprintf("send it as `Authorization: DPoP <token>` with a `DPoP: <proof>` header signed by the key whose RFC 7638 thumbprint is %s (cnf.jkt); %s", jkt, newProofHint)
}

func invalidProof(msg, hint, claim string, expected, actual []string) *Violation {
	vi := &Violation{Reason: ReasonInvalidProof, Message: msg, Hint: hint}
	if claim != "" {
		vi.Mismatch = &Mismatch{Claim: claim, Expected: expected, Actual: actual}
	}
	return vi
}

// schemeMissingViolation: a DPoP-bound token sent as Bearer (or with no or
// another scheme): a downgrade, whatever proof came with it.
func schemeMissingViolation(scheme, jkt string) *Violation {
	shown := Printable(strings.TrimSpace(scheme))
	if shown == "" {
		shown = "Bearer"
	}
	return &Violation{
		Reason:   ReasonProofMissing,
		Message:  fmt.Sprintf("the token is DPoP-bound (cnf.jkt) and came with the %s scheme: a bound token is only valid with the DPoP scheme and its proof", shown),
		Hint:     "this token is bound to the client's DPoP key (RFC 9449): " + howToSend(jkt),
		Mismatch: &Mismatch{Claim: "scheme", Expected: []string{"DPoP"}, Actual: []string{shown}},
	}
}

// proofMissingViolation: the DPoP scheme without a DPoP header.
func proofMissingViolation(jkt string) *Violation {
	return &Violation{
		Reason:  ReasonProofMissing,
		Message: "the token is DPoP-bound (cnf.jkt) and came with no DPoP proof",
		Hint:    "the request has no DPoP header: " + howToSend(jkt),
	}
}

// notBoundViolation: the DPoP scheme with a token that has no cnf.jkt.
func notBoundViolation(conf Confirmation) *Violation {
	hint := "this token is a bearer token (its cnf has no jkt), not DPoP-bound: send it as `Authorization: Bearer <token>`; to use DPoP, get a DPoP-bound token by sending a DPoP proof to the issuer's token endpoint"
	if conf.X5TS256 != "" {
		hint = "this token is bound to a client certificate (cnf x5t#S256, RFC 8705), not to a DPoP key: send it as `Authorization: Bearer <token>` over mutual TLS with that certificate"
	}
	return invalidProof("the DPoP scheme was used with a token that is not DPoP-bound (its cnf has no jkt), so it must be sent as Bearer", hint,
		"jkt", []string{"a DPoP-bound token (cnf.jkt)"}, nil)
}

// certificateViolation: the client certificate of a certificate-bound
// token, absent or another one; nil when it is the one.
func certificateViolation(got, want string) *Violation {
	if got == want {
		return nil
	}
	if got == "" {
		return &Violation{
			Reason:   ReasonProofMissing,
			Message:  "the token is bound to a client certificate (cnf x5t#S256) and the request came with none",
			Hint:     "call over mutual TLS with the client certificate the token was issued for (RFC 8705); a proxy that terminates TLS in front of the service must pass the certificate on (Envoy: include_peer_certificate), and the service must give its thumbprint to usher (client_certificate_sha256)",
			Mismatch: &Mismatch{Claim: "x5t#S256", Expected: []string{want}},
		}
	}
	return invalidProof("the client certificate is not the one the token is bound to (cnf x5t#S256)",
		"the token was issued for another client certificate than the one of this connection: call with the certificate the token was issued for, or get a new token over this one (the issuer binds it to the certificate of the token request); client_certificate_sha256 is the base64url SHA-256 of the DER certificate",
		"x5t#S256", []string{want}, []string{clip(got, 64)})
}

// replayedProofViolation: a proof whose jti was seen within the window.
func replayedProofViolation(jti string, window time.Duration) *Violation {
	return invalidProof(fmt.Sprintf("DPoP proof already used: jti %q was seen within the %s window", Printable(jti), window),
		"make a new proof, with a new jti, for each request, a retried one too; a proof seen twice is what a replayed (stolen) proof looks like",
		"jti", []string{fmt.Sprintf("a jti not seen within the last %s", window)}, []string{Printable(jti)})
}

const proofShapeHint = "send exactly one DPoP header holding one proof: a compact JWS (three base64url segments joined by dots), made for this request; " + newProofHint

func proofShapeFailure(why string) *Violation {
	return invalidProof("malformed DPoP proof: "+why, proofShapeHint, "", nil, nil)
}

func proofMalformedViolation(m *malformed) *Violation {
	why := m.Error()
	if m.part == "token" {
		why = m.why
	}
	return invalidProof("malformed DPoP proof: "+why, proofShapeHint, "", nil, nil)
}

func proofTypViolation(typ string) *Violation {
	shown := Printable(typ)
	if typ == "" {
		shown = "(none)"
	}
	return invalidProof(fmt.Sprintf("DPoP proof typ %s, expected dpop+jwt", shown),
		"a DPoP proof's header says typ \"dpop+jwt\" (RFC 9449 §4.2); an access or ID token is not a proof: "+newProofHint,
		"typ", []string{"dpop+jwt"}, nonEmpty(Printable(typ)))
}

func proofAlgViolation(t *parsedToken) *Violation {
	alg := Printable(t.alg)
	msg := fmt.Sprintf("DPoP proof alg %q is not allowed (allowed: %s)", alg, strings.Join(DPoPAlgorithms, " "))
	switch {
	case !t.hasAlg:
		msg = "DPoP proof header has no alg"
	case strings.EqualFold(t.alg, "none"):
		msg = fmt.Sprintf("DPoP proof alg %q: an unsigned proof proves nothing", alg)
	case strings.HasPrefix(strings.ToUpper(t.alg), "HS"):
		msg = fmt.Sprintf("DPoP proof alg %s is symmetric: a proof is signed with the client's private key and checked with the public key it carries", alg)
	}
	return invalidProof(msg, "sign the proof with the client's asymmetric DPoP key, with one of "+strings.Join(DPoPAlgorithms, " ")+" (RFC 9449 §4.2)",
		"alg", append([]string(nil), DPoPAlgorithms...), nonEmpty(alg))
}

func proofJWKViolation(why string) *Violation {
	return invalidProof("invalid DPoP proof: "+clip(why, 256),
		"put the public key that signs the proof in its header as jwk (RFC 9449 §4.2): an RSA key of 2048 bits or more, or an EC (P-256, P-384, P-521) or Ed25519 key, with its public members only",
		"jwk", nil, nil)
}

func privateJWKViolation(member string) *Violation {
	return invalidProof(fmt.Sprintf("the DPoP proof's jwk holds private or symmetric key material (%q)", member),
		"put only the public key in the proof's jwk header; the private key never leaves the client. It was sent, so treat it as compromised: make a new key, and get a new token bound to it",
		"jwk", []string{"a public key"}, []string{"a key with " + member})
}

func jwkTypeViolation(alg string, spec algSpec, k *verifyKey) *Violation {
	want := strings.TrimSpace(spec.kty + " " + spec.crv)
	got := strings.TrimSpace(k.kty + " " + k.crv)
	msg := fmt.Sprintf("the DPoP proof's alg %s needs an %s key, and its jwk is %s", alg, want, got)
	if k.alg != "" && k.alg != alg {
		msg = fmt.Sprintf("the DPoP proof's jwk says alg %s, the proof %s", Printable(k.alg), alg)
		got += " for " + Printable(k.alg)
	}
	return invalidProof(msg, "sign the proof with the alg of the key in its jwk header (ES256 for an EC P-256 key, EdDSA for Ed25519, RS256 or PS256 for RSA…)",
		"jwk", []string{want + " (for " + alg + ")"}, []string{got})
}

func proofSignatureViolation(alg string) *Violation {
	return invalidProof(fmt.Sprintf("the DPoP proof's %s signature does not verify with the proof's own jwk", alg),
		"the proof was altered, or signed by another key than the one in its jwk header: sign each proof with the private key whose public key is its jwk",
		"", nil, nil)
}

func proofClaimMissingViolation(name string) *Violation {
	why := "RFC 9449 §4.2 requires it"
	if name == "ath" {
		why = "the hash of the access token, required when a proof comes with one (RFC 9449 §4.2)"
	}
	return invalidProof(fmt.Sprintf("the DPoP proof has no %s claim: %s", name, why), newProofHint, name, nil, nil)
}

func proofClaimTypeViolation(name string, v any) *Violation {
	return invalidProof(fmt.Sprintf("the DPoP proof's %s is %s, not a string", name, strictjson.TypeName(v)), newProofHint, name, nil, []string{strictjson.TypeName(v)})
}

// requestViolation: the caller of usher did not say which request the
// proof came with; the proof cannot be checked, and is refused.
func requestViolation(r *Request) *Violation {
	const hint = "not the client's fault: the service that asked usher must pass the method and the URI of the request the proof came with (http_method, http_uri: for gRPC POST and https://{authority}/{package.Service}/{Method})"
	if r.HTTPMethod == "" {
		return invalidProof("the request's method is not known (http_method is empty): the proof's htm cannot be checked", hint, "htm", nil, nil)
	}
	if _, why := normalURI(r.HTTPURI); why != "" {
		return invalidProof(fmt.Sprintf("the request's URI %q is %s: the proof's htu cannot be checked", clip(r.HTTPURI, 256), why), hint, "htu", nil, nil)
	}
	return nil
}

func htmViolation(got, want string) *Violation {
	return invalidProof(fmt.Sprintf("the DPoP proof is for method %s, the request is %s", clip(got, 64), clip(want, 64)),
		"make a new proof for each request, with htm = the request's method exactly as sent (case-sensitive: POST, not post; gRPC calls are POST)",
		"htm", []string{clip(want, 64)}, []string{clip(got, 64)})
}

func htuViolation(got, want string) *Violation {
	base, _, _ := strings.Cut(want, "?")
	base, _, _ = strings.Cut(base, "#")
	msg := fmt.Sprintf("the DPoP proof is for %s, the request was sent to %s", clip(got, 256), clip(base, 256))
	if _, why := normalURI(got); why != "" {
		msg = fmt.Sprintf("the DPoP proof's htu %q is %s", clip(got, 256), why)
	}
	return invalidProof(msg,
		"make a new proof for each request, with htu = the URI the request was sent to (scheme, host and path as the client called them; for gRPC https://{authority}/{package.Service}/{Method}), without query and fragment",
		"htu", []string{clip(base, 256)}, []string{clip(got, 256)})
}

func iatViolation(now, iat time.Time, window time.Duration) *Violation {
	skew := iat.Sub(now).Round(time.Second)
	when := fmt.Sprintf("%s in the past", -skew)
	if skew > 0 {
		when = fmt.Sprintf("%s in the future", skew)
	}
	hint := fmt.Sprintf("make a new proof for each request, with iat = the current time; usher accepts proofs made at most %s before or after its own clock", window)
	if d := skew.Abs() - window; d < skewWindow {
		hint += fmt.Sprintf(". It missed by only %s: the client's clock may be off; check NTP on the client", d)
	}
	return invalidProof(fmt.Sprintf("the DPoP proof's iat is %s, outside the %s window", when, window), hint,
		"iat", []string{fmt.Sprintf("within %s of %s", window, now.UTC().Format(time.RFC3339))},
		[]string{fmt.Sprintf("%s (%s)", iat.UTC().Format(time.RFC3339), when)})
}

func jtiViolation(jti string) *Violation {
	msg := "the DPoP proof's jti is empty"
	if jti != "" {
		msg = fmt.Sprintf("the DPoP proof's jti is %d bytes, over the %d-byte limit", len(jti), maxJTIBytes)
	}
	return invalidProof(msg, "give each proof a new random jti (RFC 9449 §4.2: e.g. 96 bits or more, base64url), at most 256 bytes",
		"jti", []string{fmt.Sprintf("1 to %d bytes", maxJTIBytes)}, nonEmpty(Printable(jti)))
}

func athViolation(got, want string) *Violation {
	return invalidProof("the DPoP proof's ath is not the hash of the access token it came with",
		"the proof was made for another access token (one refreshed since?): put ath = base64url(SHA-256(the access token sent)) in a new proof",
		"ath", []string{want}, []string{clip(got, 64)})
}

func jktViolation(got, want string) *Violation {
	return invalidProof(fmt.Sprintf("the DPoP proof is signed by key %s, and the token is bound to key %s (cnf.jkt)", got, want),
		"sign the proofs with the key the token was issued for (its RFC 7638 thumbprint is the token's cnf.jkt), or get a new token with a proof of this key; a bound token used with another key is what a stolen token looks like",
		"jkt", []string{want}, []string{got})
}
