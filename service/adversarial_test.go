package service_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha512"
	"encoding/base64"
	"fmt"
	"log/slog"
	"math"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/usher-dev/usher/service"
)

// The token classes of threats.md, spelt more ways than hostile_test.go
// does. Every case checks the verdict and that what usher says about the
// token (message, hint, mismatch) is bounded, valid UTF-8 and free of raw
// control characters.

// advCase is one hostile token and the verdict it must get.
type advCase struct {
	name     string
	token    string
	audience string // default api/users
	scopes   []string
	want     service.Reason
	hint     string // when set, the hint must contain it
	// says, when set, must appear in the message: how a hostile value is
	// shown once sanitised.
	says []string
}

// staticIssuer is an https issuer whose keys come from a file, so that iss
// near misses (:443, percent-encoding) can be spelt against a real URL.
const staticIssuer = "https://auth.usher.test"

func runAdversarial(t *testing.T, ctx context.Context, v *service.Validator, cases []advCase) {
	t.Helper()
	seen := map[string]bool{}
	for _, c := range cases {
		if seen[c.name] {
			t.Fatalf("duplicate case name %q", c.name)
		}
		seen[c.name] = true
		t.Run(c.name, func(t *testing.T) {
			aud := c.audience
			if aud == "" {
				aud = "api/users"
			}
			got := v.Validate(ctx, c.token, aud, c.scopes)
			checkVerdict(t, got, c.want)
			if c.hint != "" && !strings.Contains(got.Hint, c.hint) {
				t.Errorf("hint %q does not contain %q", got.Hint, c.hint)
			}
			for _, s := range c.says {
				if !strings.Contains(got.Message, s) {
					t.Errorf("message %q does not contain %q", got.Message, s)
				}
			}
			checkSanitised(t, c.token, got)
			if in := v.Inspect(ctx, c.token); (in.Signature == service.ReasonValid) != (got.Claims != nil) {
				t.Errorf("Inspect says signature %v, Validate says %v", in.Signature, got.Reason)
			} else {
				checkText(t, "inspect message", in.Message)
				checkText(t, "inspect hint", in.Hint)
			}
		})
	}
}

// checkSanitised: nothing usher says about a token carries a raw control
// character, invalid UTF-8 (a gRPC string field would refuse it), an
// unbounded value, or the token itself.
func checkSanitised(t *testing.T, token string, v service.Verdict) {
	t.Helper()
	checkText(t, "message", v.Message)
	checkText(t, "hint", v.Hint)
	for _, vi := range v.Violations {
		checkText(t, "violation message", vi.Message)
		checkText(t, "violation hint", vi.Hint)
	}
	if len(token) > 100 && (strings.Contains(v.Message, token) || strings.Contains(v.Hint, token)) {
		t.Error("the token is echoed in the message or hint")
	}
	if v.Mismatch != nil && v.Claims == nil {
		// Values from an unverified token: shown to the caller, so bounded.
		for _, a := range v.Mismatch.Actual {
			if !utf8.ValidString(a) {
				t.Errorf("mismatch actual %q is not valid UTF-8", a)
			}
		}
	}
}

func checkText(t *testing.T, what, s string) {
	t.Helper()
	if !utf8.ValidString(s) {
		t.Errorf("%s is not valid UTF-8: %q", what, s)
	}
	if strings.ContainsAny(s, "\x00\r\n\x1b\x7f") {
		t.Errorf("%s holds a raw control character: %q", what, s)
	}
	if len(s) > 2000 {
		t.Errorf("%s is %d bytes long", what, len(s))
	}
}

// advFixture is a validator over a loopback issuer with keys of every type,
// an https issuer over a static key set, and the tokens the cases start from.
type advFixture struct {
	v                   *service.Validator
	iss                 string
	rsa1, rsa2, ec1, ed *testKey
	ec384, ec521        *testKey
	encRSA, encEC       *testKey
	encEd, static       *testKey
	canaryHits          *atomic.Int64
	canaryURL           string
}

func newAdvFixture(t *testing.T, ctx context.Context) *advFixture {
	t.Helper()
	f := &advFixture{
		rsa1:   newRSAKey(t, "rsa-1"),
		rsa2:   newRSAKey(t, "rsa-2"),
		ec1:    newECKey(t, "ec-1", elliptic.P256()),
		ec384:  newECKey(t, "ec-384", elliptic.P384()),
		ec521:  newECKey(t, "ec-521", elliptic.P521()),
		ed:     newEdKey(t, "ed-1"),
		encRSA: newRSAKey(t, "enc-rsa"),
		encEC:  newECKey(t, "enc-ec", elliptic.P256()),
		encEd:  newEdKey(t, "enc-ed"),
		static: newECKey(t, "static-1", elliptic.P256()),
	}
	f.rsa1.jwkAlg = "RS256"
	f.ec1.jwkAlg = "ES256"
	f.encRSA.use, f.encEC.use, f.encEd.use = "enc", "enc", "enc"
	ti := newTestIssuer(t, f.rsa1, f.rsa2, f.ec1, f.ec384, f.ec521, f.ed, f.encRSA, f.encEC, f.encEd)
	f.iss = ti.URL()
	f.canaryHits = &atomic.Int64{}
	canary := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.canaryHits.Add(1)
		w.Write(jwks(f.rsa1))
	}))
	t.Cleanup(canary.Close)
	f.canaryURL = canary.URL
	f.v = newValidator(t, ctx, ti.config(time.Minute), service.IssuerConfig{Issuer: staticIssuer, JWKSFile: writeJWKS(t, f.static)})
	waitTried(ctx, t, f.v)
	return f
}

func hdr(kv ...any) map[string]any {
	h := map[string]any{}
	for i := 0; i < len(kv); i += 2 {
		h[kv[i].(string)] = kv[i+1]
	}
	return h
}

func (f *advFixture) rs(t *testing.T, h map[string]any, payload any) string {
	return sign(t, h, payload, "RS256", f.rsa1.priv)
}

func (f *advFixture) rsClaims(t *testing.T, kv ...any) string {
	return f.rsa1.token(t, claims(f.iss, kv...))
}

// rsRawClaims signs a payload given as raw JSON text.
func (f *advFixture) rsRawClaims(t *testing.T, payload string) string {
	return f.rs(t, hdr("alg", "RS256", "kid", "rsa-1"), []byte(payload))
}

func TestAdversarial_Serialization(t *testing.T) {
	ctx := testContext(t)
	f := newAdvFixture(t, ctx)
	valid := f.rsa1.token(t, claims(f.iss))
	p := segments(valid)
	join := func(sep1, sep2 string) string { return p[0] + sep1 + p[1] + sep2 + p[2] }
	var cases []advCase
	add := func(want service.Reason, name, tok string) {
		cases = append(cases, advCase{name: name, token: tok, want: want})
	}
	add(service.ReasonValid, "control", valid)

	// '?' where a URL query would start, or where a decoder replaced a byte.
	add(service.ReasonMalformed, "? appended", valid+"?")
	add(service.ReasonMalformed, "? prepended", "?"+valid)
	add(service.ReasonMalformed, "? query appended", valid+"?access_token=1")
	add(service.ReasonMalformed, "? before the first dot", join("?.", "."))
	add(service.ReasonMalformed, "? before the second dot", join(".", "?."))
	add(service.ReasonMalformed, "? in place of a byte", p[0]+"."+p[1][:5]+"?"+p[1][6:]+"."+p[2])
	add(service.ReasonMalformed, "# fragment appended", valid+"#frag")

	// Percent-encoded separators, as a URL-encoding proxy leaves them.
	add(service.ReasonMalformed, "%2E for both dots", join("%2E", "%2E"))
	add(service.ReasonMalformed, "%2E for the first dot", join("%2E", "."))
	add(service.ReasonMalformed, "%2E for the second dot", join(".", "%2E"))
	add(service.ReasonMalformed, "%2e lower case", join("%2e", "%2e"))
	add(service.ReasonMalformed, "%252E double-encoded", join("%252E", "%252E"))
	add(service.ReasonMalformed, "%2D for a dash", strings.ReplaceAll(valid, "-", "%2D")+".%2D")
	add(service.ReasonMalformed, "&#46; HTML entity", join("&#46;", "&#46;"))

	// Unicode look-alikes of '.'.
	for name, dot := range map[string]string{
		"U+2024 one dot leader":      "\u2024",
		"U+FF0E fullwidth full stop": "\uff0e",
		"U+3002 ideographic stop":    "\u3002",
		"U+FE52 small full stop":     "\ufe52",
		"U+00B7 middle dot":          "\u00b7",
		"U+2E33 raised dot":          "\u2e33",
	} {
		add(service.ReasonMalformed, name+" for both dots", join(dot, dot))
		add(service.ReasonMalformed, name+" for the first dot", join(dot, "."))
		add(service.ReasonMalformed, name+" for the second dot", join(".", dot))
	}
	add(service.ReasonMalformed, "combining mark after a dot", join(".\u0338", "."))

	// Invisible characters that are not white space, so not stripped.
	add(service.ReasonMalformed, "zero-width space before", "\u200b"+valid)
	add(service.ReasonMalformed, "zero-width space inside", p[0]+"."+p[1][:8]+"\u200b"+p[1][8:]+"."+p[2])
	add(service.ReasonMalformed, "byte order mark before", "\ufeff"+valid)
	add(service.ReasonMalformed, "Bearer and a no-break space", "Bearer\u00a0"+valid)
	add(service.ReasonMalformed, "tab inside", p[0]+".\t"+p[1]+"."+p[2])
	add(service.ReasonMalformed, "NUL appended", valid+"\x00")
	add(service.ReasonMalformed, "NUL inside", p[0]+"."+p[1]+"\x00."+p[2])
	add(service.ReasonMalformed, "CRLF inside", p[0]+"\r\n."+p[1]+"."+p[2])

	// Segment counts and empty segments.
	add(service.ReasonMalformed, "4 segments", valid+"."+p[2])
	add(service.ReasonMalformed, "6 segments", valid+"."+p[1]+"."+p[2]+"."+p[2])
	add(service.ReasonMalformed, "....", "....")
	add(service.ReasonMalformed, "h.p..", p[0]+"."+p[1]+"..")
	add(service.ReasonMalformed, "dots just under the size limit", strings.Repeat(".", service.DefaultMaxTokenBytes-1))
	add(service.ReasonMalformed, "a million dots", strings.Repeat(".", 1_000_000))
	add(service.ReasonMalformed, "a million dots between real segments", p[0]+strings.Repeat(".", 1_000_000)+p[1]+"."+p[2])

	// Base64 variants of the same bytes.
	add(service.ReasonMalformed, "one padding =", p[0]+"."+p[1]+"."+p[2]+"=")
	add(service.ReasonMalformed, "padding on the header", base64.URLEncoding.EncodeToString(mustDecode(t, p[0]))+"."+p[1]+"."+p[2])
	add(service.ReasonMalformed, "standard alphabet payload", p[0]+"."+base64.RawStdEncoding.EncodeToString(mustDecode(t, p[1]))+"x+/"+"."+p[2])
	add(service.ReasonMalformed, "non-canonical trailing bits in the header", nonCanonicalIfPossible(t, p[0])+"."+p[1]+"."+p[2])

	// Nesting: a payload that is itself a token.
	for name, h := range map[string]map[string]any{
		"cty JWT":             hdr("alg", "RS256", "kid", "rsa-1", "cty", "JWT"),
		"cty jwt":             hdr("alg", "RS256", "kid", "rsa-1", "cty", "jwt"),
		"cty application/jwt": hdr("alg", "RS256", "kid", "rsa-1", "cty", "application/jwt"),
		"no cty":              hdr("alg", "RS256", "kid", "rsa-1"),
	} {
		add(service.ReasonMalformed, "nested JWS, "+name, f.rs(t, h, []byte(valid)))
	}
	add(service.ReasonMalformed, "nested JWE", f.rs(t, hdr("alg", "RS256", "kid", "rsa-1", "cty", "JWT"), []byte(segment(t, hdr("alg", "RSA-OAEP", "enc", "A256GCM"))+".YQ.YQ.YQ.YQ")))
	add(service.ReasonMalformed, "nested JWS twice", f.rs(t, hdr("alg", "RS256", "kid", "rsa-1", "cty", "JWT"), []byte(f.rs(t, hdr("alg", "RS256", "kid", "rsa-1", "cty", "JWT"), []byte(valid)))))

	// JWE in several shapes: refused before anything is decrypted.
	jweHeaders := map[string]map[string]any{
		"dir":                 hdr("alg", "dir", "enc", "A256GCM"),
		"PBES2 huge p2c":      hdr("alg", "PBES2-HS512+A256KW", "enc", "A256GCM", "p2c", math.MaxInt32, "p2s", "c2FsdA"),
		"zip DEF":             hdr("alg", "RSA-OAEP-256", "enc", "A128CBC-HS256", "zip", "DEF"),
		"ECDH-ES with an epk": hdr("alg", "ECDH-ES", "enc", "A256GCM", "epk", map[string]any{"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}),
	}
	for name, h := range jweHeaders {
		add(service.ReasonMalformed, "JWE "+name, segment(t, h)+".YQ.YQ.YQ.YQ")
		add(service.ReasonMalformed, "JWE "+name+", empty parts", segment(t, h)+"....")
	}
	add(service.ReasonMalformed, "JWE header in 3 segments", segment(t, hdr("alg", "RSA-OAEP", "enc", "A256GCM"))+".YQ.YQ")

	runAdversarial(t, ctx, f.v, cases)
	if n := f.canaryHits.Load(); n != 0 {
		t.Errorf("the canary saw %d requests", n)
	}
}

// nonCanonicalIfPossible is nonCanonical for a segment with unused bits, or
// the segment with a '=' otherwise.
func nonCanonicalIfPossible(t *testing.T, seg string) string {
	if len(seg)%4 == 0 {
		return seg + "="
	}
	return nonCanonical(t, seg)
}

func TestAdversarial_HeaderFields(t *testing.T) {
	ctx := testContext(t)
	f := newAdvFixture(t, ctx)
	good := claims(f.iss)
	rawHeader := func(h string) string { return sign(t, []byte(h), good, "RS256", f.rsa1.priv) }
	var cases []advCase
	add := func(want service.Reason, name, tok string, says ...string) {
		cases = append(cases, advCase{name: name, token: tok, want: want, says: says})
	}

	// alg spellings.
	for _, alg := range []string{"NoNe", "nONE", "none ", " none", "none\x00", "\u006eone\u200b", "rs256", "Rs256", "RS256 ", "RS 256", "ES256K", "Ed25519", "Ed448", "EdDSA ", "RSA-OAEP", "dir", "HS256 ", "RS256\r\nX-Injected: 1", strings.Repeat("A", 10<<10)} {
		name := fmt.Sprintf("alg %q", alg)
		if len(alg) > 100 {
			name = fmt.Sprintf("alg of %d bytes", len(alg))
		}
		add(service.ReasonUnsupportedAlgorithm, name, f.rs(t, hdr("alg", alg, "kid", "rsa-1"), good))
	}
	for name, alg := range map[string]any{"an array": []string{"RS256"}, "an object": map[string]any{"name": "RS256"}, "true": true, "0": 0} {
		add(service.ReasonMalformed, "alg "+name, f.rs(t, hdr("alg", alg, "kid", "rsa-1"), good))
	}
	add(service.ReasonMalformed, "alg duplicated by an escape", rawHeader(`{"\u0061lg":"none","alg":"RS256","kid":"rsa-1"}`))
	add(service.ReasonMalformed, "alg duplicated, both RS256", rawHeader(`{"alg":"RS256","alg":"RS256","kid":"rsa-1"}`))

	// kid: injection payloads and sizes. None names a key; none is fetched;
	// each is shown sanitised.
	for _, c := range []struct {
		name, kid string
		says      []string
	}{
		{"../../x", "../../x", []string{"../../x"}},
		{"../ to /etc/passwd", "../../../../../../etc/passwd", []string{"etc/passwd"}},
		{"Windows path", `..\..\..\keys\rsa-1`, []string{`keys`}},
		{"file URL", "file:///etc/passwd", []string{"file:///etc/passwd"}},
		{"http URL of the canary", f.canaryURL + "/jwks.json", []string{"/jwks.json"}},
		{"SQL quote", "x' OR '1'='1", []string{"OR"}},
		{"SQL comment", "rsa-1'--", []string{"rsa-1"}},
		{"SQL stacked", "1; DROP TABLE keys; --", []string{"DROP TABLE"}},
		{"jndi ldap", "${jndi:ldap://127.0.0.1:1/a}", []string{"jndi"}},
		{"jndi nested", "${${lower:j}ndi:${lower:l}dap://127.0.0.1:1/a}", []string{"lower"}},
		{"template", "{{7*7}}", []string{"{{7*7}}"}},
		{"HTML", "<script>alert(1)</script>", []string{"script"}},
		{"NUL at the end", "rsa-1\x00", []string{"rsa-1"}},
		{"NUL in the middle", "rsa\x00-1", []string{"rsa", "-1"}},
		{"NUL alone", "\x00", nil},
		{"CRLF header injection", "rsa-1\r\nX-Injected: 1", []string{"rsa-1", "X-Injected: 1"}},
		{"LF log injection", "rsa-1\nlevel=ERROR msg=forged", []string{"rsa-1", "level=ERROR msg=forged"}},
		{"CR", "rsa-1\rforged", []string{"rsa-1", "forged"}},
		{"ANSI escape", "\x1b[31mrsa-1\x1b[0m", []string{"rsa-1"}},
		{"DEL", "rsa-1\x7f", []string{"rsa-1"}},
		{"U+2028 line separator", "rsa-1\u2028forged", []string{"rsa-1"}},
		{"10 KB", strings.Repeat("k", 10<<10), []string{"kkkk"}},
		{"4 KB of CRLF", strings.Repeat("\r\n", 2<<10), nil},
		{"multi-byte at the cut", strings.Repeat("a", 63) + "é" + strings.Repeat("b", 10), []string{"aaaa"}},
	} {
		add(service.ReasonUnknownKey, "kid "+c.name, f.rs(t, hdr("alg", "RS256", "kid", c.kid), good), c.says...)
	}
	add(service.ReasonMalformed, "kid of 20 KB (over the size limit)", f.rs(t, hdr("alg", "RS256", "kid", strings.Repeat("k", 20<<10)), good))
	add(service.ReasonMalformed, "kid an object", f.rs(t, hdr("alg", "RS256", "kid", map[string]any{"kid": "rsa-1"}), good))
	add(service.ReasonMalformed, "kid true", f.rs(t, hdr("alg", "RS256", "kid", true), good))

	// Keys published for encryption never verify a token.
	add(service.ReasonUnknownKey, "use:enc RSA key", f.encRSA.token(t, good))
	add(service.ReasonUnknownKey, "use:enc EC key", f.encEC.token(t, good))
	add(service.ReasonUnknownKey, "use:enc Ed25519 key", f.encEd.token(t, good))
	add(service.ReasonUnknownKey, "use:enc key, PS256", sign(t, hdr("alg", "PS256", "kid", "enc-rsa"), good, "PS256", f.encRSA.priv))

	// crit spellings.
	add(service.ReasonMalformed, "crit a string", f.rs(t, hdr("alg", "RS256", "kid", "rsa-1", "crit", "exp"), good))
	add(service.ReasonMalformed, "crit null", f.rs(t, hdr("alg", "RS256", "kid", "rsa-1", "crit", nil), good))
	add(service.ReasonMalformed, "crit b64 with b64 true", f.rs(t, hdr("alg", "RS256", "kid", "rsa-1", "crit", []string{"b64"}, "b64", true), good))
	add(service.ReasonMalformed, "b64 true alone", f.rs(t, hdr("alg", "RS256", "kid", "rsa-1", "b64", true), good))

	runAdversarial(t, ctx, f.v, cases)
	if n := f.canaryHits.Load(); n != 0 {
		t.Errorf("a URL taken from a kid was fetched %d times", n)
	}
}

func TestAdversarial_Claims(t *testing.T) {
	ctx := testContext(t)
	f := newAdvFixture(t, ctx)
	now := testNow.Unix()
	var cases []advCase
	add := func(want service.Reason, name, tok, hint string) {
		cases = append(cases, advCase{name: name, token: tok, want: want, hint: hint})
	}
	addAud := func(want service.Reason, name, tok, aud, hint string) {
		cases = append(cases, advCase{name: name, token: tok, audience: aud, want: want, hint: hint})
	}
	staticTok := func(iss string) string {
		return f.static.token(t, claims(iss))
	}
	add(service.ReasonValid, "static issuer control", staticTok(staticIssuer), "")

	// iss near misses of an https issuer: compared byte for byte.
	for _, c := range []struct{ name, iss, hint string }{
		{":443", "https://auth.usher.test:443", "port"},
		{":443 and a slash", "https://auth.usher.test:443/", ""},
		{":80", "https://auth.usher.test:80", "port"},
		{"http", "http://auth.usher.test", "scheme"},
		{"trailing slash", "https://auth.usher.test/", "trailing slash"},
		{"upper case", "HTTPS://AUTH.USHER.TEST", "letter case"},
		{"percent-encoded dot", "https://auth%2Eusher.test", "percent-encoding"},
		{"percent-encoded letter", "https://%61uth.usher.test", "percent-encoding"},
		{"percent-encoded slash", "https:%2F%2Fauth.usher.test", "percent-encoding"},
		{"%00 appended", "https://auth.usher.test%00", ""},
		{"NUL appended", "https://auth.usher.test\x00", ""},
		{"NUL prepended", "\x00https://auth.usher.test", ""},
		{"NUL in the host", "https://auth\x00.usher.test", ""},
		{"FQDN dot", "https://auth.usher.test.", ""},
		{"userinfo", "https://auth.usher.test@evil.test", ""},
		{"fragment", "https://evil.test#auth.usher.test", ""},
		{"query", "https://auth.usher.test?", ""},
		{"white space", " https://auth.usher.test ", "white space"},
		{"fullwidth", "https://ａｕｔｈ.usher.test", "look-alike"},
		{"CRLF", "https://auth.usher.test\r\nX: 1", ""},
	} {
		add(service.ReasonUntrustedIssuer, "iss "+c.name, staticTok(c.iss), c.hint)
	}

	// exp below one second, or otherwise odd numbers that still are dates.
	for name, raw := range map[string]string{
		"0.4": "0.4", "0.5": "0.5", "0.999999": "0.999999", "1e-9": "1e-9", "5e-324": "5e-324",
		"-0": "-0", "0.0": "0.0", "0e10": "0e10", "1": "1", "now-leeway-1.5": strconv.FormatFloat(float64(now)-31.5, 'f', 1, 64),
	} {
		add(service.ReasonExpired, "exp "+name, f.rsRawClaims(t, replaceExp(t, f.iss, raw)), "")
	}
	add(service.ReasonValid, "exp now-leeway+0.5", f.rsRawClaims(t, replaceExp(t, f.iss, strconv.FormatFloat(float64(now)-29.5, 'f', 1, 64))), "")
	for name, raw := range map[string]string{"-0.4": "-0.4", "-1e-9": "-1e-9", "1e19": "1e19", `"0.4"`: `"0.4"`, "[0.4]": "[0.4]", "NaN": "NaN", "Infinity": "Infinity", "0x10": "0x10", "+1": "+1", ".5": ".5", "01": "01"} {
		add(service.ReasonMalformed, "exp "+name, f.rsRawClaims(t, replaceExp(t, f.iss, raw)), "")
	}
	add(service.ReasonNotYetValid, "nbf now+leeway+0.5", f.rsClaims(t, "nbf", float64(now)+30.5), "")

	// aud near misses: bytes compared exactly; the hint names the difference.
	for _, c := range []struct{ name, aud, hint string }{
		{"fullwidth letters", "ａｐｉ/ｕｓｅｒｓ", "look-alike"},
		{"fullwidth solidus", "api／users", "look-alike"},
		{"fullwidth, one letter", "api/uｓers", "look-alike"},
		{"Cyrillic a", "\u0430pi/users", ""},
		{"zero-width space", "api/\u200busers", ""},
		{"NUL appended", "api/users\x00", ""},
		{"percent-encoded slash", "api%2Fusers", "percent-encoding"},
		{"tab appended", "api/users\t", "white space"},
		{"capital A", "Api/users", "letter case"},
		{"two slashes", "api//users", ""},
	} {
		add(service.ReasonAudienceMismatch, "aud "+c.name, f.rsClaims(t, "aud", c.aud), c.hint)
		add(service.ReasonAudienceMismatch, "aud in an array "+c.name, f.rsClaims(t, "aud", []string{"x", c.aud}), c.hint)
	}
	// NFC and NFD, both ways round.
	addAud(service.ReasonAudienceMismatch, "aud NFD, expected NFC", f.rsClaims(t, "aud", "api/cafe\u0301"), "api/caf\u00e9", "normalization")
	addAud(service.ReasonAudienceMismatch, "aud NFC, expected NFD", f.rsClaims(t, "aud", "api/caf\u00e9"), "api/cafe\u0301", "normalization")
	addAud(service.ReasonAudienceMismatch, "aud NFD in an array", f.rsClaims(t, "aud", []string{"api/users", "api/cafe\u0301"}), "api/caf\u00e9", "normalization")
	addAud(service.ReasonAudienceMismatch, "aud Hangul jamo vs syllable", f.rsClaims(t, "aud", "api/\u1112\u1161\u11ab"), "api/\ud55c", "normalization")
	addAud(service.ReasonAudienceMismatch, "aud ligature ﬁ", f.rsClaims(t, "aud", "api/\ufb01les"), "api/files", "look-alike")
	addAud(service.ReasonValid, "aud exact NFD", f.rsClaims(t, "aud", "api/cafe\u0301"), "api/cafe\u0301", "")

	// Claim values a client may have asked for (requested audiences and
	// scopes) are shown without their control characters.
	for name, scope := range map[string]string{
		"CRLF": "users.read\r\nlevel=ERROR", "NUL": "users.read\x00", "ESC": "\x1b[2Jusers.read", "10 KB": strings.Repeat("s", 10<<10),
	} {
		cases = append(cases, advCase{name: "granted scope with " + name, token: f.rsClaims(t, "scope", scope), scopes: []string{"users.write"}, want: service.ReasonInsufficientScope})
	}

	runAdversarial(t, ctx, f.v, cases)
}

// replaceExp is a valid payload of iss whose exp is the raw JSON text raw.
func replaceExp(t *testing.T, iss, raw string) string {
	t.Helper()
	c := claims(iss)
	delete(c, "exp")
	return strings.TrimSuffix(mustJSON(t, c), "}") + `,"exp":` + raw + `}`
}

func TestAdversarial_Signatures(t *testing.T) {
	ctx := testContext(t)
	f := newAdvFixture(t, ctx)
	good := claims(f.iss)
	var cases []advCase
	add := func(want service.Reason, name, tok string) {
		cases = append(cases, advCase{name: name, token: tok, want: want})
	}
	fill := func(x *big.Int, size int) []byte { return x.FillBytes(make([]byte, size)) }
	one := big.NewInt(1)

	// ECDSA: every pairing of r and s in {0, 1, n-1, n}, on each curve, and
	// values past n; none is a signature of anything.
	for _, k := range []*testKey{f.ec1, f.ec384, f.ec521} {
		priv := k.priv.(*ecdsa.PrivateKey)
		size := (priv.Curve.Params().BitSize + 7) / 8
		n := priv.Curve.Params().N
		tok := k.token(t, good)
		add(service.ReasonValid, k.alg+" control", tok)
		sig := mustDecode(t, segments(tok)[2])
		r, s := new(big.Int).SetBytes(sig[:size]), new(big.Int).SetBytes(sig[size:])
		special := map[string]*big.Int{"0": big.NewInt(0), "1": one, "n-1": new(big.Int).Sub(n, one), "n": n}
		for rn, rv := range special {
			for sn, sv := range special {
				add(service.ReasonInvalidSignature, fmt.Sprintf("%s r=%s s=%s", k.alg, rn, sn), withSig(tok, append(fill(rv, size), fill(sv, size)...)))
			}
			add(service.ReasonInvalidSignature, fmt.Sprintf("%s r=%s, real s", k.alg, rn), withSig(tok, append(fill(rv, size), fill(s, size)...)))
			add(service.ReasonInvalidSignature, fmt.Sprintf("%s real r, s=%s", k.alg, rn), withSig(tok, append(fill(r, size), fill(rv, size)...)))
		}
		// r+n and s+n: the same residues, not reduced; they fit the fixed
		// width only where the field is wider than n (P-521).
		if rn := new(big.Int).Add(r, n); rn.BitLen() <= 8*size {
			add(service.ReasonInvalidSignature, k.alg+" r+n", withSig(tok, append(fill(rn, size), fill(s, size)...)))
		}
		if sn := new(big.Int).Add(s, n); sn.BitLen() <= 8*size {
			add(service.ReasonInvalidSignature, k.alg+" s+n", withSig(tok, append(fill(r, size), fill(sn, size)...)))
		}
		add(service.ReasonInvalidSignature, k.alg+" s and r swapped", withSig(tok, append(fill(s, size), fill(r, size)...)))
		allFF := new(big.Int).Sub(new(big.Int).Lsh(one, uint(8*size)), one)
		add(service.ReasonInvalidSignature, k.alg+" r=s=2^k-1", withSig(tok, append(fill(allFF, size), fill(allFF, size)...)))
		add(service.ReasonInvalidSignature, fmt.Sprintf("%s of %d bytes", k.alg, 2*size-1), withSig(tok, sig[1:]))
		add(service.ReasonInvalidSignature, fmt.Sprintf("%s of %d bytes", k.alg, 2*size+1), withSig(tok, append([]byte{0}, sig...)))
		add(service.ReasonInvalidSignature, fmt.Sprintf("%s of %d bytes, zero at the end", k.alg, 2*size+1), withSig(tok, append(sig[:len(sig):len(sig)], 0)))
		der, err := ecdsa.SignASN1(nil, priv, digestFor(k.alg, segments(tok)[0]+"."+segments(tok)[1]))
		if err != nil {
			t.Fatal(err)
		}
		add(service.ReasonInvalidSignature, k.alg+" DER-encoded", withSig(tok, der))
		add(service.ReasonInvalidSignature, k.alg+" of a single byte", withSig(tok, []byte{0}))
	}

	// RSA: the integers that are never valid PKCS #1 v1.5 or PSS signatures.
	for _, alg := range []string{"RS256", "PS256", "RS512"} {
		tok := sign(t, hdr("alg", alg, "kid", "rsa-2"), good, alg, f.rsa2.priv)
		add(service.ReasonValid, alg+" control", tok)
		pub := &f.rsa2.priv.(*rsa.PrivateKey).PublicKey
		n, size := pub.N, pub.Size()
		sig := mustDecode(t, segments(tok)[2])
		for name, x := range map[string]*big.Int{
			"0": big.NewInt(0), "1": one, "2": big.NewInt(2), "n-1": new(big.Int).Sub(n, one), "n": n, "n+1": new(big.Int).Add(n, one),
			"2^k-1": new(big.Int).Sub(new(big.Int).Lsh(one, uint(8*size)), one),
			"sig+n": new(big.Int).Add(new(big.Int).SetBytes(sig), n),
		} {
			b := x.Bytes()
			if len(b) <= size {
				b = fill(x, size)
			}
			add(service.ReasonInvalidSignature, alg+" signature "+name, withSig(tok, b))
		}
		add(service.ReasonInvalidSignature, alg+" signature with a leading zero byte", withSig(tok, append([]byte{0}, sig...)))
		add(service.ReasonInvalidSignature, alg+" signature without its first byte", withSig(tok, sig[1:]))
		add(service.ReasonInvalidSignature, alg+" signature of one byte", withSig(tok, []byte{1}))
	}
	// The right key, the other RSA padding.
	psSig := mustDecode(t, segments(sign(t, hdr("alg", "PS256", "kid", "rsa-2"), good, "PS256", f.rsa2.priv))[2])
	add(service.ReasonInvalidSignature, "PSS signature under RS256", withSig(sign(t, hdr("alg", "RS256", "kid", "rsa-2"), good, "RS256", f.rsa2.priv), psSig))
	rsSig := mustDecode(t, segments(sign(t, hdr("alg", "RS256", "kid", "rsa-2"), good, "RS256", f.rsa2.priv))[2])
	add(service.ReasonInvalidSignature, "PKCS1 signature under PS256", withSig(sign(t, hdr("alg", "PS256", "kid", "rsa-2"), good, "PS256", f.rsa2.priv), rsSig))

	// Ed25519.
	edTok := f.ed.token(t, good)
	edSig := mustDecode(t, segments(edTok)[2])
	add(service.ReasonInvalidSignature, "Ed25519 of 65 bytes", withSig(edTok, append([]byte{0}, edSig...)))
	add(service.ReasonInvalidSignature, "Ed25519 R of zeros", withSig(edTok, append(make([]byte, 32), edSig[32:]...)))
	add(service.ReasonInvalidSignature, "Ed25519 S of 0xff", withSig(edTok, append(edSig[:32:32], []byte(strings.Repeat("\xff", 32))...)))
	add(service.ReasonInvalidSignature, "Ed25519 identity point R, S=0", withSig(edTok, append(append([]byte{1}, make([]byte, 31)...), make([]byte, 32)...)))

	runAdversarial(t, ctx, f.v, cases)
}

// digestFor is the hash of input that alg (ES256, ES384, ES512) signs.
func digestFor(alg, input string) []byte {
	switch alg {
	case "ES384":
		d := sha512.Sum384([]byte(input))
		return d[:]
	case "ES512":
		d := sha512.Sum512([]byte(input))
		return d[:]
	}
	return sha256Sum(input)
}

// Size and depth bombs get MALFORMED in bounded time, both at the default
// max_token_bytes and at the largest one the config allows.
func TestAdversarial_SizeAndDepth(t *testing.T) {
	ctx := testContext(t)
	k := newEdKey(t, "ed-1")
	const iss = "https://size.usher.test"
	newV := func(maxBytes int) *service.Validator {
		cfg := &service.Config{MaxTokenBytes: maxBytes, Issuers: []service.IssuerConfig{{Issuer: iss, JWKSFile: writeJWKS(t, k)}}}
		v, err := service.NewValidator(ctx, cfg, service.WithClock(func() time.Time { return testNow }), service.WithLogger(slog.New(slog.DiscardHandler)))
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	small, large := newV(0), newV(1<<20)
	ed := func(payload string) string {
		return sign(t, hdr("alg", "EdDSA", "kid", "ed-1"), []byte(payload), "EdDSA", k.priv)
	}
	goodJSON := strings.TrimSuffix(mustJSON(t, claims(iss)), "}")
	deepArrays := ed(goodJSON + `,"x":` + strings.Repeat("[", 20_000) + strings.Repeat("]", 20_000) + `}`)
	deepObjects := ed(goodJSON + `,"x":` + strings.Repeat(`{"a":`, 20_000) + "1" + strings.Repeat("}", 20_000) + `}`)
	deepHeader := sign(t, []byte(`{"alg":"EdDSA","kid":"ed-1","x":`+strings.Repeat("[", 20_000)+strings.Repeat("]", 20_000)+`}`), claims(iss), "EdDSA", k.priv)
	deep33 := ed(goodJSON + `,"x":` + strings.Repeat("[", 33) + strings.Repeat("]", 33) + `}`)
	unclosed := ed(goodJSON + `,"x":` + strings.Repeat("[", 20_000) + `}`)
	aud := make([]string, 200_000)
	for i := range aud {
		aud[i] = "a" + strconv.Itoa(i)
	}
	bigAud := k.token(t, claims(iss, "aud", aud))
	jwe := segment(t, hdr("alg", "PBES2-HS256+A128KW", "enc", "A128GCM", "p2c", math.MaxInt32, "p2s", "c2FsdA", "zip", "DEF")) + "." + strings.Repeat("A", 900_000) + ".YQ.YQ.YQ"

	for _, c := range []struct {
		name  string
		v     *service.Validator
		token string
	}{
		{"20,000-deep arrays", small, deepArrays},
		{"20,000-deep arrays, 1 MiB limit", large, deepArrays},
		{"20,000-deep objects", small, deepObjects},
		{"20,000-deep objects, 1 MiB limit", large, deepObjects},
		{"20,000-deep header, 1 MiB limit", large, deepHeader},
		{"33-deep", small, deep33},
		{"20,000 unclosed arrays, 1 MiB limit", large, unclosed},
		{"200,000-entry aud", small, bigAud},
		{"200,000-entry aud, 1 MiB limit (over it)", large, bigAud},
		{"a million dots, 1 MiB limit", large, strings.Repeat(".", 1_000_000)},
		{"JWE with PBES2 p2c 2^31-1 and zip, 1 MiB limit", large, jwe},
		{"1 MiB + 1 byte", large, strings.Repeat("A", 1<<20+1)},
	} {
		t.Run(c.name, func(t *testing.T) {
			best := time.Hour
			for range 3 {
				start := time.Now()
				got := c.v.Validate(ctx, c.token, "api/users", nil)
				best = min(best, time.Since(start))
				checkVerdict(t, got, service.ReasonMalformed)
				checkSanitised(t, c.token, got)
			}
			// The parse of a megabyte is linear and cut short at the first
			// problem: well under the time of one RSA signature per KB.
			if best > 50*time.Millisecond {
				t.Errorf("rejected in %v at best", best)
			}
		})
	}
}
