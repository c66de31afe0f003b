package devissuer

import (
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"

	"github.com/usher-dev/usher/internal/strictjson"
	"github.com/usher-dev/usher/service"
)

// DPoPAlgorithms are the proof algorithms the token endpoint accepts (RFC
// 9449 §5.1: dpop_signing_alg_values_supported): asymmetric only, as a
// proof is checked with the public key it carries.
var DPoPAlgorithms = service.DPoPAlgorithms

// Bounds of the proofs the token endpoint checks.
const (
	dpopWindow     = 60 * time.Second // |now - iat| at most this
	maxProofBytes  = 8 << 10
	maxDPoPJTIs    = 10_000 // jti remembered at once
	minDPoPRSABits = 2048
)

// privateMembers are the JWK members of private (or symmetric) key
// material: a proof's jwk must have none of them (RFC 9449 §4.3).
var privateMembers = []string{"d", "p", "q", "dp", "dq", "qi", "oth", "k"}

// jtiSet remembers the proofs seen at the token endpoint within the iat
// window, keyed on the SHA-256 of the key's thumbprint and the jti, so that
// each proof obtains one token (RFC 9449 §11.1).
type jtiSet struct {
	mu   sync.Mutex
	seen map[[sha256.Size]byte]time.Time // until when it is remembered
}

// add records key until expires and says whether it was new; when the set
// is full even after dropping the expired entries, it refuses (fail closed).
func (s *jtiSet) add(now time.Time, key [sha256.Size]byte, expires time.Time) (fresh bool, full bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.seen == nil {
		s.seen = map[[sha256.Size]byte]time.Time{}
	}
	if until, ok := s.seen[key]; ok && now.Before(until) {
		return false, false
	}
	if len(s.seen) >= maxDPoPJTIs {
		for k, until := range s.seen {
			if !now.Before(until) {
				delete(s.seen, k)
			}
		}
		if len(s.seen) >= maxDPoPJTIs {
			return false, true
		}
	}
	s.seen[key] = expires
	return true, false
}

// dpopProblem is why a token request's proof is refused: the
// error_description of a 400 invalid_dpop_proof.
type dpopProblem string

// checkDPoP verifies the DPoP proof of a token request (RFC 9449 §4.3, no
// ath at the token endpoint) and returns the RFC 7638 thumbprint of its
// key. It returns "", "" when the request has no DPoP header.
func (i *Issuer) checkDPoP(r *http.Request) (jkt string, problem dpopProblem) {
	values := r.Header.Values("DPoP")
	switch {
	case len(values) == 0:
		return "", ""
	case len(values) > 1:
		return "", dpopProblem(fmt.Sprintf("%d DPoP headers: send exactly one proof", len(values)))
	case len(values[0]) > maxProofBytes:
		return "", dpopProblem(fmt.Sprintf("the DPoP header is %d bytes, over the %d KiB bound: send one compact proof JWT", len(values[0]), maxProofBytes>>10))
	}
	proof := strings.TrimSpace(values[0])
	key, alg, problem := proofKey(proof)
	if problem != "" {
		return "", problem
	}
	payload, err := jws.Verify([]byte(proof), jws.WithKey(alg, key))
	if err != nil {
		return "", dpopProblem(fmt.Sprintf("the proof's signature does not verify with the jwk in its header (alg %s): sign the proof with the private half of that key", alg))
	}
	claims, problem := i.proofClaims(r, payload)
	if problem != "" {
		return "", problem
	}
	tp, err := key.Thumbprint(crypto.SHA256)
	if err != nil {
		return "", dpopProblem("the jwk has no RFC 7638 thumbprint: " + err.Error())
	}
	jkt = base64.RawURLEncoding.EncodeToString(tp)
	now := i.now()
	fresh, full := i.jtis.add(now, sha256.Sum256([]byte(jkt+"\x00"+claims.jti)), claims.iat.Add(dpopWindow))
	switch {
	case full:
		return "", dpopProblem(fmt.Sprintf("the dev issuer remembers at most %d proofs a minute and holds as many: retry in a minute", maxDPoPJTIs))
	case !fresh:
		return "", dpopProblem(fmt.Sprintf("jti %q was used before by this key: a proof is good for one request; make a fresh one (new jti) per request", clip(claims.jti)))
	}
	return jkt, ""
}

// proofKey checks the protected header of a proof (typ, alg, a public jwk)
// and returns its key and algorithm.
func proofKey(proof string) (jwk.Key, jwa.SignatureAlgorithm, dpopProblem) {
	parts := strings.Split(proof, ".")
	if len(parts) != 3 {
		return nil, jwa.EmptySignatureAlgorithm(), dpopProblem(fmt.Sprintf("the DPoP header is not a compact JWT (%d dot-separated parts, want 3)", len(parts)))
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil {
		return nil, jwa.EmptySignatureAlgorithm(), "the proof's header is not base64url without padding"
	}
	hdr, err := strictjson.ParseObject(raw)
	if err != nil {
		return nil, jwa.EmptySignatureAlgorithm(), dpopProblem("the proof's header is not one JSON object: " + err.Error())
	}
	if typ, _ := hdr["typ"].(string); typ != "dpop+jwt" {
		return nil, jwa.EmptySignatureAlgorithm(), dpopProblem(fmt.Sprintf("typ is %s, want \"dpop+jwt\": a DPoP proof says what it is (RFC 9449 §4.2)", shown(hdr["typ"])))
	}
	name, _ := hdr["alg"].(string)
	alg, known := jwa.LookupSignatureAlgorithm(name)
	if !known || !slices.Contains(DPoPAlgorithms, name) {
		return nil, alg, dpopProblem(fmt.Sprintf("alg is %s: a proof is signed with an asymmetric key, one of %s", shown(hdr["alg"]), strings.Join(DPoPAlgorithms, " ")))
	}
	members, ok := hdr["jwk"].(map[string]any)
	if !ok {
		return nil, alg, dpopProblem(fmt.Sprintf("jwk is %s: the proof's header carries the public key that signed it as a JSON object", shown(hdr["jwk"])))
	}
	for _, m := range privateMembers {
		if _, ok := members[m]; ok {
			return nil, alg, dpopProblem(fmt.Sprintf("the jwk has the private member %q: put only the public key in the proof, and treat that private key as leaked", m))
		}
	}
	b, _ := json.Marshal(members)
	key, err := jwk.ParseKey(b)
	if err != nil {
		return nil, alg, dpopProblem("the jwk is not a public key: " + err.Error())
	}
	var rk rsa.PublicKey
	if jwk.Export(key, &rk) == nil && rk.N != nil && rk.N.BitLen() < minDPoPRSABits {
		return nil, alg, dpopProblem(fmt.Sprintf("the RSA key has %d bits, fewer than %d: use a larger key, or EC P-256 (ES256)", rk.N.BitLen(), minDPoPRSABits))
	}
	return key, alg, ""
}

// proofPayload is what the token endpoint reads from a proof's payload.
type proofPayload struct {
	jti string
	iat time.Time
}

// proofClaims checks htm, htu, iat and jti of a verified proof's payload.
func (i *Issuer) proofClaims(r *http.Request, payload []byte) (proofPayload, dpopProblem) {
	m, err := strictjson.ParseObject(payload)
	if err != nil {
		return proofPayload{}, dpopProblem("the proof's payload is not one JSON object: " + err.Error())
	}
	if htm, _ := m["htm"].(string); htm != r.Method {
		return proofPayload{}, dpopProblem(fmt.Sprintf("htm is %s, want %q: the method of this request", shown(m["htm"]), r.Method))
	}
	htu, _ := m["htu"].(string)
	if !sameURI(htu, i.TokenURL()) && !sameURI(htu, "http://"+r.Host+r.URL.Path) {
		return proofPayload{}, dpopProblem(fmt.Sprintf("htu is %s, want %q: the token endpoint's URL, without query or fragment", shown(m["htu"]), i.TokenURL()))
	}
	jti, _ := m["jti"].(string)
	if jti == "" {
		return proofPayload{}, dpopProblem(fmt.Sprintf("jti is %s: give each proof a unique id, e.g. 16 random bytes in base64url", shown(m["jti"])))
	}
	secs, ok := m["iat"].(float64)
	if !ok || secs != math.Trunc(secs) || math.Abs(secs) > 1e12 {
		return proofPayload{}, dpopProblem(fmt.Sprintf("iat is %s, want the time the proof was made in seconds since the epoch", shown(m["iat"])))
	}
	iat, now := time.Unix(int64(secs), 0), i.now()
	if skew := now.Sub(iat); skew > dpopWindow || skew < -dpopWindow {
		return proofPayload{}, dpopProblem(fmt.Sprintf("iat %s is %s from the issuer's clock %s, outside ±%s: make a fresh proof per request, and check the clocks",
			iat.UTC().Format(time.RFC3339), skew.Round(time.Second), now.UTC().Format(time.RFC3339), dpopWindow))
	}
	return proofPayload{jti: jti, iat: iat}, ""
}

// sameURI compares two URIs as RFC 9449 §4.3 asks: syntax-based
// normalization (RFC 3986 §6.2.2: case of scheme and host, default port,
// empty path), without query and fragment.
func sameURI(a, b string) bool {
	na, okA := normalURI(a)
	nb, okB := normalURI(b)
	return okA && okB && na == nb
}

func normalURI(s string) (string, bool) {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return "", false
	}
	host, port := strings.ToLower(u.Hostname()), u.Port()
	if (u.Scheme == "http" && port == "80") || (u.Scheme == "https" && port == "443") {
		port = ""
	}
	if port != "" {
		host += ":" + port
	}
	path := u.EscapedPath()
	if path == "" {
		path = "/"
	}
	return u.Scheme + "://" + host + path, true
}

// shown is a proof's value as it appears in an error: JSON, clipped,
// "missing" when absent.
func shown(v any) string {
	if v == nil {
		return "missing"
	}
	b, err := json.Marshal(v)
	if err != nil {
		return strictjson.TypeName(v)
	}
	return clip(string(b))
}

// clip keeps the first 64 runes of s, so that an error description stays
// short whatever a proof holds.
func clip(s string) string {
	if r := []rune(s); len(r) > 64 {
		return string(r[:64]) + "…"
	}
	return s
}
