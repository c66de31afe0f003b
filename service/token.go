package service

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
)

// maxJSONDepth bounds nesting in the header and the payload.
const maxJSONDepth = 32

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
}

// malformed is why a token is not a well-formed compact JWS; part names the
// segment ("token", "header", "payload", "signature").
type malformed struct {
	part, why string
}

func (m *malformed) Error() string { return m.part + ": " + m.why }

func bad(part, format string, args ...any) *malformed {
	return &malformed{part: part, why: fmt.Sprintf(format, args...)}
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
		return nil, bad("token", "empty")
	}
	if len(tok) > maxBytes {
		return nil, bad("token", "%d bytes, over the %d-byte limit", len(tok), maxBytes)
	}
	if tok[0] == '{' {
		return nil, bad("token", "JSON serialization (starts with '{'); only the compact form h.p.s is accepted")
	}
	dots := 0
	for i := 0; i < len(tok); i++ {
		c := tok[i]
		switch {
		case c == '.':
			dots++
		case c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '_':
		default:
			return nil, bad("token", "byte %d is %q, outside the base64url alphabet (A-Z a-z 0-9 - _) and '.'", i, rune(c))
		}
	}
	switch {
	case dots == 4:
		return nil, bad("token", "5 segments: this looks like an encrypted JWE; usher accepts signed JWS (3 segments)")
	case dots != 2:
		return nil, bad("token", "3 segments expected, found %d", dots+1)
	}
	d1 := strings.IndexByte(tok, '.')
	d2 := d1 + 1 + strings.IndexByte(tok[d1+1:], '.')
	h64, p64, s64 := tok[:d1], tok[d1+1:d2], tok[d2+1:]
	if h64 == "" {
		return nil, bad("header", "empty segment")
	}
	if p64 == "" {
		return nil, bad("payload", "empty segment (a detached payload is not accepted)")
	}
	hb, err := b64(h64)
	if err != nil {
		return nil, bad("header", "%v", err)
	}
	pb, err := b64(p64)
	if err != nil {
		return nil, bad("payload", "%v", err)
	}
	sig, err := b64(s64)
	if err != nil {
		return nil, bad("signature", "%v", err)
	}
	t := &parsedToken{raw: tok, signingInput: tok[:d2], signature: sig}
	if t.header, err = decodeObject(hb); err != nil {
		return nil, bad("header", "%v", err)
	}
	if m := t.readHeader(); m != nil {
		return nil, m
	}
	// An unsecured JWS (RFC 7515 §A.5, alg "none") has an empty signature:
	// it is well-formed and refused by the algorithm check, which says why.
	if s64 == "" && !strings.EqualFold(t.alg, "none") {
		return nil, bad("signature", "empty segment: the token is unsigned")
	}
	if t.payload, err = decodeObject(pb); err != nil {
		return nil, bad("payload", "%v", err)
	}
	if m := t.claims.read(t.payload); m != nil {
		return nil, m
	}
	return t, nil
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
			return bad("header", "alg is %s, not a string", jsonType(v))
		}
		t.alg, t.hasAlg = s, true
	}
	if v, ok := h["kid"]; ok {
		s, ok := v.(string)
		if !ok {
			return bad("header", "kid is %s, not a string", jsonType(v))
		}
		t.kid = s
	}
	if v, ok := h["typ"]; ok {
		s, ok := v.(string)
		if !ok {
			return bad("header", "typ is %s, not a string", jsonType(v))
		}
		t.typ = s
	}
	if v, ok := h["crit"]; ok {
		return bad("header", "crit %s names extensions usher does not implement; a token that requires them cannot be accepted", compactJSON(v))
	}
	if _, ok := h["b64"]; ok {
		return bad("header", "b64 (RFC 7797 unencoded payload) is not accepted")
	}
	if _, ok := h["enc"]; ok {
		return bad("header", "enc is a JWE header: this is an encrypted token, not a signed one")
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
			return false, bad("payload", "%s is %s, not a string", name, jsonType(v))
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
			return false, bad("payload", "%s is %s, not a NumericDate (seconds since 1970)", name, jsonType(v))
		}
		if f < 0 || f > maxTime || math.IsNaN(f) {
			return false, bad("payload", "%s is %v, not a date between 1970 and 9999", name, f)
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
	if v, ok := p["scope"]; ok {
		s, ok := v.(string)
		if !ok {
			return bad("payload", "scope is %s, not a space-separated string (RFC 9068 §2.2.3)", jsonType(v))
		}
		c.scopes = strings.Fields(s)
	}
	if v, ok := p["scp"]; ok {
		scp, m := stringOrStrings("scp", v)
		if m != nil {
			return m
		}
		for _, s := range scp {
			c.scopes = append(c.scopes, strings.Fields(s)...)
		}
	}
	_, c.hasNonce = p["nonce"]
	_, c.hasAtHash = p["at_hash"]
	return nil
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
				return nil, bad("payload", "%s[%d] is %s, not a string", name, i, jsonType(e))
			}
			out = append(out, s)
		}
		return out, nil
	default:
		return nil, bad("payload", "%s is %s, not a string or an array of strings", name, jsonType(v))
	}
}

var errDuplicateKey = errors.New("duplicate key")

// decodeObject decodes one JSON object strictly (see parseJSONObject).
func decodeObject(b []byte) (map[string]any, error) { return parseJSONObject(b) }

func hex4(b []byte, at int) (rune, bool) {
	if at+4 > len(b) {
		return 0, false
	}
	var r rune
	for _, c := range b[at : at+4] {
		r <<= 4
		switch {
		case c >= '0' && c <= '9':
			r |= rune(c - '0')
		case c >= 'a' && c <= 'f':
			r |= rune(c - 'a' + 10)
		case c >= 'A' && c <= 'F':
			r |= rune(c - 'A' + 10)
		default:
			return 0, false
		}
	}
	return r, true
}

func jsonType(v any) string {
	switch v := v.(type) {
	case nil:
		return "null"
	case string:
		return "a string"
	case float64:
		return "a number"
	case bool:
		return "a boolean"
	case []any:
		return "an array"
	case map[string]any:
		return "an object"
	default:
		return fmt.Sprintf("%T", v)
	}
}

func compactJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil || len(b) > 80 {
		return "(...)"
	}
	return string(b)
}
