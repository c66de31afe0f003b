package service

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/usher-dev/usher/internal/strictjson"
)

// maxTime is 9999-12-31T23:59:59Z: a NumericDate beyond it is not a date.
const maxTime = 253402300799

// parsedToken is a compact JWS taken apart strictly, before any key is used.
// Nothing in it is trusted until the signature over signingInput verifies.
type parsedToken struct {
	raw          string
	signingInput string
	signature    []byte

	header    map[string]any
	alg       string
	hasAlg    bool
	kid       string
	typ       string
	keyHeader []string // jku, x5u, jwk, x5c: present, never used

	payload map[string]any
	claims  tokenClaims

	// opaque: no JWS but an introspection answer, whose members payload
	// and claims hold (no header, no signature).
	opaque bool
}

// tokenClaims are the registered claims, type-checked.
type tokenClaims struct {
	iss, sub, clientID, azp, jti string
	hasIss                       bool
	aud                          []string
	hasAud                       bool
	exp, nbf, iat                float64
	hasExp, hasNbf, hasIat       bool
	scopes                       []string
	hasNonce, hasAtHash          bool
	cnf                          Confirmation // cnf's jkt and x5t#S256; zero when unbound
}

// malformedKind says what kind of defect makes a token malformed: hints
// switch on it, never on a message's text.
type malformedKind int

const (
	// malformedShape: not three base64url segments (empty, wrong count,
	// a byte outside the alphabet, an empty segment, no signature).
	malformedShape malformedKind = iota
	// malformedTooLarge: over max_token_bytes, refused before decoding.
	malformedTooLarge
	// malformedSerialization: the JSON serialization of a JWS.
	malformedSerialization
	// malformedEncrypted: a JWE (five segments, or an enc header).
	malformedEncrypted
	// malformedEncoding: a segment is not canonical base64url.
	malformedEncoding
	// malformedJSON: the header or payload is not one strict JSON object.
	malformedJSON
	// malformedHeaderType: a header parameter of the wrong JSON type.
	malformedHeaderType
	// malformedClaimType: a registered claim of the wrong JSON type.
	malformedClaimType
	// malformedDate: a NumericDate outside 1970..9999.
	malformedDate
	// malformedExtension: crit or b64, JWS extensions usher does not implement.
	malformedExtension
	// malformedScope: a scope holding a character no scope may hold.
	malformedScope
	// malformedOpaque: no JWS at all but an opaque (reference) token.
	malformedOpaque
	// malformedConfirmation: a cnf whose jkt or x5t#S256 is no SHA-256
	// thumbprint.
	malformedConfirmation
	// numMalformedKinds counts the kinds above.
	numMalformedKinds
)

// malformed is why a token is not a well-formed compact JWS; part names the
// segment ("token", "header", "payload", "signature").
type malformed struct {
	kind      malformedKind
	part, why string
}

func (m *malformed) Error() string { return m.part + ": " + m.why }

func bad(kind malformedKind, part, format string, args ...any) *malformed {
	return &malformed{kind: kind, part: part, why: fmt.Sprintf(format, args...)}
}

// cleanToken strips surrounding white space and a leading "Bearer " (any case).
func cleanToken(s string) string {
	s = strings.TrimSpace(s)
	if len(s) > 7 && strings.EqualFold(s[:7], "bearer ") {
		s = strings.TrimSpace(s[7:])
	}
	return s
}

// parseCompact checks the compact serialization byte by byte before decoding
// anything: size, alphabet, segment count, canonical base64url, JSON objects
// without duplicate keys, and the types of the registered header parameters
// and claims.
func parseCompact(tok string, maxBytes int) (*parsedToken, *malformed) {
	if tok == "" {
		return nil, bad(malformedShape, "token", "empty")
	}
	if len(tok) > maxBytes {
		return nil, bad(malformedTooLarge, "token", "%d bytes, over the %d-byte limit", len(tok), maxBytes)
	}
	if tok[0] == '{' {
		return nil, bad(malformedSerialization, "token", "JSON serialization (starts with '{'); only the compact form h.p.s is accepted")
	}
	dots := 0
	for i := 0; i < len(tok); i++ {
		c := tok[i]
		switch {
		case c == '.':
			dots++
		case c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '_':
		default:
			if m := opaque(tok); m != nil {
				return nil, m
			}
			return nil, bad(malformedShape, "token", "byte %d is %q, outside the base64url alphabet (A-Z a-z 0-9 - _) and '.'", i, rune(c))
		}
	}
	if m := opaque(tok); m != nil {
		return nil, m
	}
	switch {
	case dots == 4:
		return nil, bad(malformedEncrypted, "token", "5 segments: this looks like an encrypted JWE; usher accepts signed JWS (3 segments)")
	case dots != 2:
		return nil, bad(malformedShape, "token", "3 segments expected, found %d", dots+1)
	}
	d1 := strings.IndexByte(tok, '.')
	d2 := d1 + 1 + strings.IndexByte(tok[d1+1:], '.')
	h64, p64, s64 := tok[:d1], tok[d1+1:d2], tok[d2+1:]
	if h64 == "" {
		return nil, bad(malformedShape, "header", "empty segment")
	}
	if p64 == "" {
		return nil, bad(malformedShape, "payload", "empty segment (a detached payload is not accepted)")
	}
	hb, err := b64(h64)
	if err != nil {
		return nil, bad(malformedEncoding, "header", "%v", err)
	}
	pb, err := b64(p64)
	if err != nil {
		return nil, bad(malformedEncoding, "payload", "%v", err)
	}
	sig, err := b64(s64)
	if err != nil {
		return nil, bad(malformedEncoding, "signature", "%v", err)
	}
	t := &parsedToken{raw: tok, signingInput: tok[:d2], signature: sig}
	if t.header, err = strictjson.ParseObject(hb); err != nil {
		return nil, bad(malformedJSON, "header", "%v", err)
	}
	if m := t.readHeader(); m != nil {
		return nil, m
	}
	// An unsecured JWS (RFC 7515 §A.5, alg "none") has an empty signature:
	// it is well-formed and refused by the algorithm check, which says why.
	if s64 == "" && !strings.EqualFold(t.alg, "none") {
		return nil, bad(malformedShape, "signature", "empty segment: the token is unsigned")
	}
	if t.payload, err = strictjson.ParseObject(pb); err != nil {
		return nil, bad(malformedJSON, "payload", "%v", err)
	}
	if m := t.claims.read(t.payload); m != nil {
		return nil, m
	}
	return t, nil
}

// opaquePrefixes name what some issuers' opaque tokens are by their prefix.
var opaquePrefixes = []struct{ prefix, what string }{
	{"ory_at_", "Ory's prefix of an opaque access token"},
	{"ory_rt_", "Ory's prefix of a refresh token, which is never sent to an API"},
	{"ory_ac_", "Ory's prefix of an authorization code, which is never sent to an API"},
}

// opaque reports a token that is no JWS at all but an opaque (reference)
// token: a b64token (RFC 6750 §2.1) whose first segment is no base64url
// JSON object and that is not five segments (a JWE), such as one random
// string, RFC 6750's own example "mF_9.B5f-4.1JqM" or Ory's
// "ory_at_<key>.<signature>". A JWS mangled in transit (a quote, a space, a
// lost segment, a "Bearer" without its space) is not opaque: nil.
func opaque(tok string) *malformed {
	if !isOpaque(tok) {
		return nil
	}
	dots := strings.Count(strings.TrimRight(tok, "="), ".")
	m := bad(malformedOpaque, "token", "not a JWT: %d characters without a dot, the form of an opaque (reference) token", len(tok))
	if dots > 0 {
		m = bad(malformedOpaque, "token", "not a JWT: %d segments whose first is not a base64url JSON header, the form of an opaque (reference) token", dots+1)
	}
	for _, p := range opaquePrefixes {
		if strings.HasPrefix(tok, p.prefix) {
			m.why += fmt.Sprintf(" (%s is %s)", p.prefix, p.what)
		}
	}
	return m
}

// opaqueShape reports whether a token goes to introspection: it is not the
// compact JWS shape (three dot-separated base64url segments), not the five
// segments of a JWE, and not evidently a JWS damaged in transit (see
// mangledJWS), which belongs to the issuer its payload names and must not be
// sent to another one's introspection endpoint.
func opaqueShape(tok string) bool {
	if tok == "" || len(tok) >= 6 && strings.EqualFold(tok[:6], "bearer") {
		return false
	}
	dots, plain := 0, true
	for i := 0; i < len(tok); i++ {
		switch c := tok[i]; {
		case c == '.':
			dots++
		case c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '_':
		default:
			plain = false
		}
	}
	if dots == 4 || plain && dots == 2 {
		return false
	}
	return !mangledJWS(tok)
}

// mangledJWS reports whether tok evidently is a JWS damaged in transit (a
// lost or extra segment, quotes, white space, a lone header): its first
// segment, past any leading quotes or white space, is base64url that decodes
// to a JSON object ('{'). A token without a dot must be a whole header, a JSON
// object with an "alg" member: a random opaque token begins with "ey" once in
// 256 and is not mistaken for one.
func mangledJWS(tok string) bool {
	first, _, dotted := strings.Cut(strings.TrimLeft(tok, "\"' \t"), ".")
	if first == "" {
		return false
	}
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(first, "="))
	if err != nil || len(b) == 0 || b[0] != '{' {
		return false
	}
	if dotted {
		return true
	}
	h, err := strictjson.ParseObject(b)
	if err != nil {
		return false
	}
	_, ok := h["alg"]
	return ok
}

// isOpaque reports whether tok has the form of an opaque token (see
// opaque), without saying why.
func isOpaque(tok string) bool {
	first, _, _ := strings.Cut(tok, ".")
	if first == "" || mangledJWS(tok) || len(tok) >= 6 && strings.EqualFold(tok[:6], "bearer") {
		return false
	}
	body := strings.TrimRight(tok, "=")
	if body == "" || strings.Count(body, ".") == 4 {
		return false
	}
	for i := 0; i < len(body); i++ {
		c := body[i]
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || strings.IndexByte("-._~+/", c) >= 0) {
			return false
		}
	}
	return true
}

// b64 decodes canonical unpadded base64url: no padding, no '+/', no
// non-zero trailing bits (the alphabet was checked by the caller).
func b64(s string) ([]byte, error) {
	b, err := base64.RawURLEncoding.Strict().DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("not canonical base64url (%v)", err)
	}
	return b, nil
}

func (t *parsedToken) readHeader() *malformed {
	h := t.header
	if v, ok := h["alg"]; ok {
		s, ok := v.(string)
		if !ok {
			return bad(malformedHeaderType, "header", "alg is %s, not a string", strictjson.TypeName(v))
		}
		t.alg, t.hasAlg = s, true
	}
	if v, ok := h["kid"]; ok {
		s, ok := v.(string)
		if !ok {
			return bad(malformedHeaderType, "header", "kid is %s, not a string", strictjson.TypeName(v))
		}
		t.kid = s
	}
	if v, ok := h["typ"]; ok {
		s, ok := v.(string)
		if !ok {
			return bad(malformedHeaderType, "header", "typ is %s, not a string", strictjson.TypeName(v))
		}
		t.typ = s
	}
	if v, ok := h["crit"]; ok {
		return bad(malformedExtension, "header", "crit %s names extensions usher does not implement; a token that requires them cannot be accepted", compactJSON(v))
	}
	if _, ok := h["b64"]; ok {
		return bad(malformedExtension, "header", "b64 (RFC 7797 unencoded payload) is not accepted")
	}
	if _, ok := h["enc"]; ok {
		return bad(malformedEncrypted, "header", "enc is a JWE header: this is an encrypted token, not a signed one")
	}
	for _, k := range []string{"jku", "x5u", "jwk", "x5c"} {
		if _, ok := h[k]; ok {
			t.keyHeader = append(t.keyHeader, k)
		}
	}
	return nil
}

func (c *tokenClaims) read(p map[string]any) *malformed {
	str := func(name string, dst *string) (bool, *malformed) {
		v, ok := p[name]
		if !ok {
			return false, nil
		}
		s, ok := v.(string)
		if !ok {
			return false, bad(malformedClaimType, "payload", "%s is %s, not a string", name, strictjson.TypeName(v))
		}
		*dst = s
		return true, nil
	}
	date := func(name string, dst *float64) (bool, *malformed) {
		v, ok := p[name]
		if !ok {
			return false, nil
		}
		f, ok := v.(float64)
		if !ok {
			return false, bad(malformedClaimType, "payload", "%s is %s, not a NumericDate (seconds since 1970)", name, strictjson.TypeName(v))
		}
		if f < 0 || f > maxTime || math.IsNaN(f) {
			return false, bad(malformedDate, "payload", "%s is %v, not a date between 1970 and 9999", name, f)
		}
		*dst = f
		return true, nil
	}
	var m *malformed
	if c.hasIss, m = str("iss", &c.iss); m != nil {
		return m
	}
	for _, f := range []struct {
		name string
		dst  *string
	}{{"sub", &c.sub}, {"client_id", &c.clientID}, {"azp", &c.azp}, {"jti", &c.jti}} {
		if _, m = str(f.name, f.dst); m != nil {
			return m
		}
	}
	if c.hasExp, m = date("exp", &c.exp); m != nil {
		return m
	}
	if c.hasNbf, m = date("nbf", &c.nbf); m != nil {
		return m
	}
	if c.hasIat, m = date("iat", &c.iat); m != nil {
		return m
	}
	if v, ok := p["aud"]; ok {
		c.hasAud = true
		if c.aud, m = stringOrStrings("aud", v); m != nil {
			return m
		}
	}
	if c.scopes, m = readScopes(p); m != nil {
		return m
	}
	if c.cnf, m = readConfirmation(p); m != nil {
		return m
	}
	_, c.hasNonce = p["nonce"]
	_, c.hasAtHash = p["at_hash"]
	return nil
}

// readConfirmation reads cnf (RFC 7800 §3.1) strictly: a JSON object whose
// jkt (RFC 9449 §6.1) and x5t#S256 (RFC 8705 §3.1) are base64url SHA-256
// thumbprints. A token whose binding cannot be read is refused, never taken
// for a bearer token. Other confirmation methods (jwk, x5t, kid…) are not
// read: usher checks no proof for them.
func readConfirmation(p map[string]any) (Confirmation, *malformed) {
	v, ok := p["cnf"]
	if !ok {
		return Confirmation{}, nil
	}
	cnf, ok := v.(map[string]any)
	if !ok {
		return Confirmation{}, bad(malformedClaimType, "payload", "cnf is %s, not a JSON object (RFC 7800 §3.1)", strictjson.TypeName(v))
	}
	jkt, m := thumbprintMember(cnf, "jkt")
	if m != nil {
		return Confirmation{}, m
	}
	x5t, m := thumbprintMember(cnf, "x5t#S256")
	if m != nil {
		return Confirmation{}, m
	}
	return Confirmation{JKT: jkt, X5TS256: x5t}, nil
}

// thumbprintMember reads cnf's member name, a SHA-256 thumbprint; "" when
// absent.
func thumbprintMember(cnf map[string]any, name string) (string, *malformed) {
	v, ok := cnf[name]
	if !ok {
		return "", nil
	}
	s, ok := v.(string)
	if !ok {
		return "", bad(malformedClaimType, "payload", "cnf.%s is %s, not a string", name, strictjson.TypeName(v))
	}
	if !isSHA256Thumbprint(s) {
		return "", bad(malformedConfirmation, "payload", "cnf.%s %q is not a base64url SHA-256 thumbprint (43 characters)", name, clip(s, 64))
	}
	return s, nil
}

// isSHA256Thumbprint reports whether s is the canonical unpadded base64url
// of 32 bytes. (The decoder skips line breaks: the alphabet is checked
// first.)
func isSHA256Thumbprint(s string) bool {
	if len(s) != 43 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	b, err := b64(s)
	return err == nil && len(b) == sha256.Size
}

// readScopes reads scope, a string of scopes separated by SP (RFC 6749
// §3.3, RFC 9068 §2.2.3), then scp, such a string or an array whose every
// element is one scope; each scope is kept once, in the order first seen.
func readScopes(p map[string]any) ([]string, *malformed) {
	var out []string
	var m *malformed
	if v, ok := p["scope"]; ok {
		s, ok := v.(string)
		if !ok {
			return nil, bad(malformedClaimType, "payload", "scope is %s, not a space-separated string (RFC 9068 §2.2.3)", strictjson.TypeName(v))
		}
		if out, m = appendScopes(out, "scope", s); m != nil {
			return nil, m
		}
	}
	switch v := p["scp"].(type) {
	case nil:
		if _, ok := p["scp"]; ok {
			return nil, bad(malformedClaimType, "payload", "scp is null, not a string or an array of strings")
		}
	case string:
		if out, m = appendScopes(out, "scp", v); m != nil {
			return nil, m
		}
	case []any:
		for i, e := range v {
			s, ok := e.(string)
			if !ok {
				return nil, bad(malformedClaimType, "payload", "scp[%d] is %s, not a string", i, strictjson.TypeName(e))
			}
			if m := checkScope(fmt.Sprintf("scp[%d]", i), s); m != nil {
				return nil, m
			}
			if s != "" {
				out = append(out, s)
			}
		}
	default:
		return nil, bad(malformedClaimType, "payload", "scp is %s, not a string or an array of strings", strictjson.TypeName(v))
	}
	return uniqueScopes(out), nil
}

// appendScopes splits s on SP alone (extra spaces are tolerated) and
// appends each scope.
func appendScopes(out []string, claim, s string) ([]string, *malformed) {
	if m := checkScope(claim, s); m != nil {
		return nil, m
	}
	for sc := range strings.SplitSeq(s, " ") {
		if sc != "" {
			out = append(out, sc)
		}
	}
	return out, nil
}

// checkScope refuses a character that would make one scope read as two, or
// look like another: control characters (C0, DEL, C1), white space other
// than SP (no-break, ideographic, line and paragraph separators…) and
// invisible format characters (zero-width, bidi controls). RFC 6749 §3.3
// allows only visible ASCII but '"' and '\'; usher also accepts those two
// and visible non-ASCII characters, which some issuers emit. SP separates
// the scopes of a string; in an element of an scp array it is part of the
// one scope (which a header-forwarding adapter then refuses to forward).
func checkScope(claim, s string) *malformed {
	i := strings.IndexFunc(s, func(r rune) bool {
		return r != ' ' && (unicode.IsControl(r) || unicode.IsSpace(r) || unicode.Is(unicode.Cf, r))
	})
	if i < 0 {
		return nil
	}
	r, _ := utf8.DecodeRuneInString(s[i:])
	kind := "an invisible format character"
	switch {
	case unicode.IsControl(r):
		kind = "a control character"
	case unicode.IsSpace(r):
		kind = "white space other than the space that separates scopes"
	}
	return bad(malformedScope, "payload", "%s %q holds %U, %s", claim, truncate(s, 128), r, kind)
}

// uniqueScopes keeps the first of equal scopes (a token may carry the same
// scopes in scope and scp).
func uniqueScopes(s []string) []string {
	if len(s) < 2 {
		return s
	}
	seen := make(map[string]bool, len(s))
	out := s[:0]
	for _, sc := range s {
		if !seen[sc] {
			seen[sc] = true
			out = append(out, sc)
		}
	}
	return out
}

func stringOrStrings(name string, v any) ([]string, *malformed) {
	switch v := v.(type) {
	case string:
		return []string{v}, nil
	case []any:
		out := make([]string, 0, len(v))
		for i, e := range v {
			s, ok := e.(string)
			if !ok {
				return nil, bad(malformedClaimType, "payload", "%s[%d] is %s, not a string", name, i, strictjson.TypeName(e))
			}
			out = append(out, s)
		}
		return out, nil
	default:
		return nil, bad(malformedClaimType, "payload", "%s is %s, not a string or an array of strings", name, strictjson.TypeName(v))
	}
}

func compactJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil || len(b) > 80 {
		return "(...)"
	}
	return string(b)
}

// TokenID identifies a token in logs: the first 12 hex digits of the SHA-256
// of the token as validated (without a "Bearer " prefix or surrounding white
// space). The token itself is never logged.
func TokenID(token string) string {
	sum := sha256.Sum256([]byte(cleanToken(token)))
	return hex.EncodeToString(sum[:6])
}
