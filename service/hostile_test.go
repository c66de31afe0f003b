package service_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"log/slog"
	"math"
	"math/big"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/usher-dev/usher/internal/testkit"
	"github.com/usher-dev/usher/service"
)

// The hostile-token suite: tokens built to be read two ways, to make usher
// trust a key or an algorithm it must not, to fetch a URL, to inject text
// into logs and messages, or to cost time and memory. Each test function is
// one class of attack; every case checks the verdict, and that what usher
// says about the token (message, hint, mismatch, Inspect's answer) is
// bounded, valid UTF-8 and free of raw control characters. No case may make
// usher fetch a URL the token names.

// hostileCase is one hostile token and the verdict it must get.
type hostileCase struct {
	name     string
	token    string
	audience string // default api/users
	scopes   []string
	want     service.Reason
	hint     string // when set, the hint must contain it
	// says, when set, must appear in the message: how a hostile value is
	// shown once sanitised, or which check refused the token.
	says []string
}

// staticIssuer is an https issuer whose keys come from a file, so that iss
// near misses (:443, percent-encoding) can be spelt against a real URL.
const staticIssuer = "https://auth.usher.test"

// hostileFixture is a validator over a loopback issuer with keys of every
// type, a second trusted issuer with its own key, an issuer that requires
// typ at+jwt (over the loopback issuer's keys), an https issuer over a
// static key set, and an attacker's key and server (the canary) that a
// token may name but usher must never use.
type hostileFixture struct {
	v       *service.Validator
	issuers []service.IssuerConfig // what v trusts

	iss      string // the loopback issuer: it publishes the keys below up to encEd
	otherIss string // the second loopback issuer: it publishes other

	rsa1, rsa2, ec1, ec384, ec521, ed *testkit.Key
	encRSA, encEC, encEd              *testkit.Key // published with use:enc
	other                             *testkit.Key // otherIss's only key
	static                            *testkit.Key // staticIssuer's only key
	attacker                          *testkit.Key // not trusted, under kid rsa-1

	canaryURL  string // serves the attacker's key set; must see no request
	canaryHits *atomic.Int64
}

func newHostileFixture(t *testing.T, ctx context.Context) *hostileFixture {
	t.Helper()
	f := &hostileFixture{
		rsa1:     testkit.RSAKey(t, "rsa-1"),
		rsa2:     testkit.RSAKey(t, "rsa-2"),
		ec1:      testkit.ECKey(t, "ec-1", elliptic.P256()),
		ec384:    testkit.ECKey(t, "ec-384", elliptic.P384()),
		ec521:    testkit.ECKey(t, "ec-521", elliptic.P521()),
		ed:       testkit.EdKey(t, "ed-1"),
		encRSA:   testkit.RSAKey(t, "enc-rsa"),
		encEC:    testkit.ECKey(t, "enc-ec", elliptic.P256()),
		encEd:    testkit.EdKey(t, "enc-ed"),
		other:    testkit.ECKey(t, "other-1", elliptic.P256()),
		static:   testkit.ECKey(t, "static-1", elliptic.P256()),
		attacker: testkit.RSAKey(t, "rsa-1"),
	}
	f.rsa1.JWKAlg = "RS256"
	f.ec1.JWKAlg = "ES256"
	f.encRSA.Use, f.encEC.Use, f.encEd.Use = "enc", "enc", "enc"
	main := testkit.NewIssuer(t, f.rsa1, f.rsa2, f.ec1, f.ec384, f.ec521, f.ed, f.encRSA, f.encEC, f.encEd)
	other := testkit.NewIssuer(t, f.other)
	f.iss, f.otherIss = main.URL(), other.URL()

	f.canaryHits = &atomic.Int64{}
	canary := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.canaryHits.Add(1)
		w.Write(testkit.JWKS(f.attacker))
	}))
	canary.Config.ReadHeaderTimeout, canary.Config.WriteTimeout = 5*time.Second, 5*time.Second
	canary.Start()
	t.Cleanup(canary.Close)
	f.canaryURL = canary.URL

	typed := issuerConfig(main, time.Minute)
	typed.Issuer, typed.TokenType = typedIssuer, "at+jwt"
	f.issuers = []service.IssuerConfig{
		issuerConfig(main, time.Minute),
		issuerConfig(other, time.Minute),
		typed,
		{Issuer: staticIssuer, JWKSFile: testkit.WriteJWKS(t, f.static)},
	}
	f.v = newHostileValidator(t, ctx, f.issuers, 0)
	return f
}

// withMaxTokenBytes is the fixture with a validator over the same issuers
// and keys whose max_token_bytes is n.
func (f *hostileFixture) withMaxTokenBytes(t *testing.T, ctx context.Context, n int) *hostileFixture {
	t.Helper()
	g := *f
	g.v = newHostileValidator(t, ctx, f.issuers, n)
	return &g
}

// newHostileValidator is an engine over issuers with the audiences registry,
// the clock at testkit.Now and max_token_bytes maxTokenBytes (0: the
// default), once each issuer's keys were tried.
func newHostileValidator(t *testing.T, ctx context.Context, issuers []service.IssuerConfig, maxTokenBytes int) *service.Validator {
	t.Helper()
	cfg := &service.Config{Issuers: slices.Clone(issuers), Audiences: slices.Clone(testkit.Audiences), MaxTokenBytes: maxTokenBytes}
	v, err := service.NewValidator(ctx, cfg, service.WithClock(testkit.NewClock().Now), service.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	waitTried(ctx, t, v)
	return v
}

// run validates each case as a subtest, then checks that the canary saw no
// request: no URL a token named was fetched.
func (f *hostileFixture) run(t *testing.T, ctx context.Context, cases []hostileCase) {
	t.Helper()
	seen := map[string]bool{}
	for _, c := range cases {
		if seen[c.name] {
			t.Fatalf("duplicate case name %q", c.name)
		}
		seen[c.name] = true
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			aud := c.audience
			if aud == "" {
				aud = "api/users"
			}
			got := f.v.Validate(ctx, c.token, aud, c.scopes)
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
			if in := f.v.Inspect(ctx, c.token); (in.Signature == service.ReasonValid) != (got.Claims != nil) {
				t.Errorf("Inspect says signature %v, Validate says %v", in.Signature, got.Reason)
			} else {
				checkText(t, "inspect message", in.Message)
				checkText(t, "inspect hint", in.Hint)
			}
		})
	}
	if n := f.canaryHits.Load(); n != 0 {
		t.Errorf("a URL named by a token was fetched %d times", n)
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
	if strings.ContainsFunc(s, func(r rune) bool {
		return r < 0x20 || (r >= 0x7f && r <= 0x9f) || r == 0x2028 || r == 0x2029 || (r >= 0x202a && r <= 0x202e) || (r >= 0x2066 && r <= 0x2069)
	}) {
		t.Errorf("%s holds a raw control, line-separator or bidi character: %q", what, s)
	}
	if len(s) > 2000 {
		t.Errorf("%s is %d bytes long", what, len(s))
	}
}

// hdr is a JOSE header from name/value pairs.
func hdr(kv ...any) map[string]any {
	h := map[string]any{}
	for i := 0; i < len(kv); i += 2 {
		h[kv[i].(string)] = kv[i+1]
	}
	return h
}

// good is a valid payload of the loopback issuer.
func (f *hostileFixture) good() map[string]any { return testkit.Claims(f.iss) }

// rs signs header and payload with rsa-1 under RS256.
func (f *hostileFixture) rs(t *testing.T, h map[string]any, payload any) string {
	return testkit.Sign(t, h, payload, "RS256", f.rsa1.Priv)
}

// rsClaims is a token of the loopback issuer signed with rsa-1, its claims
// changed by name/value pairs as testkit.Claims takes them.
func (f *hostileFixture) rsClaims(t *testing.T, kv ...any) string {
	return f.rsa1.Token(t, testkit.Claims(f.iss, kv...))
}

// rsRaw signs a payload given as raw JSON text.
func (f *hostileFixture) rsRaw(t *testing.T, payload string) string {
	return f.rs(t, hdr("alg", "RS256", "kid", "rsa-1"), []byte(payload))
}

// rawHeader signs a valid payload under a header given as raw JSON text.
func (f *hostileFixture) rawHeader(t *testing.T, h string) string {
	return testkit.Sign(t, []byte(h), f.good(), "RS256", f.rsa1.Priv)
}

// The compact serialization (RFC 7515, section 7.1) byte by byte: anything a
// proxy, a URL encoder or a copy-paste can do to it is refused, not repaired.
func TestHostile_Serialization(t *testing.T) {
	ctx := testkit.Context(t)
	f := newHostileFixture(t, ctx)
	valid := f.rsClaims(t)
	p := segments(valid)
	join := func(sep1, sep2 string) string { return p[0] + sep1 + p[1] + sep2 + p[2] }
	var cases []hostileCase
	add := func(want service.Reason, name, tok string) {
		cases = append(cases, hostileCase{name: name, token: tok, want: want})
	}
	add(service.ReasonValid, "control", valid)

	// The JSON serializations (RFC 7515, section 7.2) carry the same parts.
	add(service.ReasonMalformed, "general JSON serialization",
		fmt.Sprintf(`{"payload":%q,"signatures":[{"protected":%q,"signature":%q}]}`, p[1], p[0], p[2]))
	add(service.ReasonMalformed, "flattened JSON serialization",
		fmt.Sprintf(`{"payload":%q,"protected":%q,"header":{"iss":"x"},"signature":%q}`, p[1], p[0], p[2]))

	// Segment counts and empty segments.
	add(service.ReasonMalformed, "h.p", p[0]+"."+p[1])
	add(service.ReasonMalformed, "h.p.s.", valid+".")
	add(service.ReasonMalformed, ".p.s", "."+p[1]+"."+p[2])
	add(service.ReasonMalformed, "h..s", p[0]+".."+p[2])
	add(service.ReasonMalformed, "h.p. with RS256", p[0]+"."+p[1]+".")
	add(service.ReasonMalformed, "h.p..", p[0]+"."+p[1]+"..")
	add(service.ReasonMalformed, "4 segments", valid+"."+p[2])
	add(service.ReasonMalformed, "6 segments", valid+"."+p[1]+"."+p[2]+"."+p[2])
	add(service.ReasonMalformed, "..", "..")
	add(service.ReasonMalformed, "....", "....")
	add(service.ReasonMalformed, "dots just under the size limit", strings.Repeat(".", service.DefaultMaxTokenBytes-1))
	add(service.ReasonMalformed, "empty", "")
	add(service.ReasonMalformed, "white space only", " \t\r\n")
	add(service.ReasonMalformed, "Bearer only", "Bearer ")
	add(service.ReasonMalformed, "quoted", `"`+valid+`"`)

	// White space and invisible characters inside a token: only white space
	// around it is stripped.
	add(service.ReasonMalformed, "space inside", p[0]+"."+p[1][:10]+" "+p[1][10:]+"."+p[2])
	add(service.ReasonMalformed, "newline inside", p[0]+".\n"+p[1]+"."+p[2])
	add(service.ReasonMalformed, "newline in the signature", p[0]+"."+p[1]+"."+p[2][:20]+"\n"+p[2][20:])
	add(service.ReasonMalformed, "tab inside", p[0]+".\t"+p[1]+"."+p[2])
	add(service.ReasonMalformed, "CRLF inside", p[0]+"\r\n."+p[1]+"."+p[2])
	add(service.ReasonMalformed, "NUL appended", valid+"\x00")
	add(service.ReasonMalformed, "NUL inside", p[0]+"."+p[1]+"\x00."+p[2])
	add(service.ReasonMalformed, "zero-width space before", "\u200b"+valid)
	add(service.ReasonMalformed, "zero-width space inside", p[0]+"."+p[1][:8]+"\u200b"+p[1][8:]+"."+p[2])
	add(service.ReasonMalformed, "byte order mark before", "\ufeff"+valid)
	add(service.ReasonMalformed, "Bearer and a no-break space", "Bearer\u00a0"+valid)

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

	// Base64 variants of the same bytes: only unpadded, canonical base64url
	// (RFC 7515, section 2) is read.
	add(service.ReasonMalformed, "one padding =", p[0]+"."+p[1]+"."+p[2]+"=")
	add(service.ReasonMalformed, "padding ==", p[0]+"."+p[1]+"."+p[2]+"==")
	add(service.ReasonMalformed, "padding on the header", base64.URLEncoding.EncodeToString(mustDecode(t, p[0]))+"."+p[1]+"."+p[2])
	stdSig := base64.RawStdEncoding.EncodeToString(mustDecode(t, p[2]))
	if !strings.ContainsAny(stdSig, "+/") {
		t.Fatal("standard-alphabet signature has no + or /")
	}
	add(service.ReasonMalformed, "standard alphabet signature", p[0]+"."+p[1]+"."+stdSig)
	add(service.ReasonMalformed, "standard alphabet payload", p[0]+"."+base64.RawStdEncoding.EncodeToString(mustDecode(t, p[1]))+"x+/"+"."+p[2])
	add(service.ReasonMalformed, "non-canonical trailing bits in the header", nonCanonicalIfPossible(t, p[0])+"."+p[1]+"."+p[2])
	add(service.ReasonMalformed, "non-canonical trailing bits in the payload", p[0]+"."+nonCanonical(t, p[1])+"."+p[2])
	add(service.ReasonMalformed, "non-canonical trailing bits in the signature", p[0]+"."+p[1]+"."+nonCanonical(t, p[2]))

	// Nesting: a payload that is itself a token.
	for name, h := range map[string]map[string]any{
		"cty JWT":             hdr("alg", "RS256", "kid", "rsa-1", "cty", "JWT"),
		"cty jwt":             hdr("alg", "RS256", "kid", "rsa-1", "cty", "jwt"),
		"cty application/jwt": hdr("alg", "RS256", "kid", "rsa-1", "cty", "application/jwt"),
		"no cty":              hdr("alg", "RS256", "kid", "rsa-1"),
	} {
		add(service.ReasonMalformed, "nested JWS, "+name, f.rs(t, h, []byte(valid)))
	}
	add(service.ReasonMalformed, "nested JWS as a JSON string", f.rs(t, hdr("alg", "RS256", "kid", "rsa-1", "cty", "JWT"), valid))
	add(service.ReasonMalformed, "nested JWE", f.rs(t, hdr("alg", "RS256", "kid", "rsa-1", "cty", "JWT"), []byte(testkit.Segment(t, hdr("alg", "RSA-OAEP", "enc", "A256GCM"))+".YQ.YQ.YQ.YQ")))
	add(service.ReasonMalformed, "nested JWS twice", f.rs(t, hdr("alg", "RS256", "kid", "rsa-1", "cty", "JWT"), []byte(f.rs(t, hdr("alg", "RS256", "kid", "rsa-1", "cty", "JWT"), []byte(valid)))))

	// JWE in several shapes: refused before anything is decrypted.
	for name, h := range map[string]map[string]any{
		"RSA-OAEP":                hdr("alg", "RSA-OAEP", "enc", "A256GCM"),
		"dir":                     hdr("alg", "dir", "enc", "A256GCM"),
		"PBES2 huge p2c":          hdr("alg", "PBES2-HS512+A256KW", "enc", "A256GCM", "p2c", math.MaxInt32, "p2s", "c2FsdA"),
		"PBES2 huge p2c with zip": hdr("alg", "PBES2-HS256+A128KW", "enc", "A128GCM", "p2c", 2_000_000_000, "p2s", "c2FsdA", "zip", "DEF"),
		"zip DEF":                 hdr("alg", "RSA-OAEP-256", "enc", "A128CBC-HS256", "zip", "DEF"),
		"ECDH-ES with an epk":     hdr("alg", "ECDH-ES", "enc", "A256GCM", "epk", map[string]any{"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}),
	} {
		add(service.ReasonMalformed, "JWE "+name, testkit.Segment(t, h)+".YQ.YQ.YQ.YQ")
		add(service.ReasonMalformed, "JWE "+name+", empty parts", testkit.Segment(t, h)+"....")
	}
	add(service.ReasonMalformed, "JWE header in 3 segments", testkit.Segment(t, hdr("alg", "RSA-OAEP", "enc", "A256GCM"))+".YQ.YQ")
	add(service.ReasonMalformed, "enc header in a JWS", f.rs(t, hdr("alg", "RS256", "kid", "rsa-1", "enc", "A256GCM"), f.good()))

	// The Bearer prefix (RFC 6750, section 2.1) and surrounding white space.
	for _, wrap := range []string{"Bearer %s", "bearer %s", "BEARER %s", "BeArEr %s", "  Bearer   %s \n", "\t%s\r\n", " %s "} {
		add(service.ReasonValid, fmt.Sprintf("wrapped %q", wrap), fmt.Sprintf(wrap, valid))
	}
	add(service.ReasonMalformed, "Bearer without a space", "Bearer"+valid)
	add(service.ReasonMalformed, "Basic scheme", "Basic "+valid)
	add(service.ReasonMalformed, "Bearer twice", "Bearer Bearer "+valid)

	f.run(t, ctx, cases)
}

// nonCanonical re-encodes a base64url segment with non-zero unused trailing
// bits: lenient decoders read the same bytes, a strict one refuses it.
func nonCanonical(t testing.TB, seg string) string {
	t.Helper()
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	if len(seg)%4 == 0 {
		t.Fatalf("segment %q has no unused bits", seg)
	}
	last := strings.IndexByte(alphabet, seg[len(seg)-1])
	out := seg[:len(seg)-1] + string(alphabet[last|1])
	a, err1 := base64.RawURLEncoding.DecodeString(seg)
	b, err2 := base64.RawURLEncoding.DecodeString(out)
	if err1 != nil || err2 != nil || string(a) != string(b) {
		t.Fatalf("nonCanonical(%q) = %q does not decode to the same bytes", seg, out)
	}
	return out
}

// nonCanonicalIfPossible is nonCanonical for a segment with unused bits, or
// the segment with a '=' otherwise.
func nonCanonicalIfPossible(t *testing.T, seg string) string {
	if len(seg)%4 == 0 {
		return seg + "="
	}
	return nonCanonical(t, seg)
}

// The header and the payload are each one strict JSON object: valid UTF-8,
// no lone surrogate escapes, and no duplicate names at any depth (RFC 7515,
// section 4; RFC 7519, section 4), so that no two parsers read a token two
// ways.
func TestHostile_JSON(t *testing.T) {
	ctx := testkit.Context(t)
	f := newHostileFixture(t, ctx)
	var cases []hostileCase
	add := func(want service.Reason, name, tok string) {
		cases = append(cases, hostileCase{name: name, token: tok, want: want})
	}
	for _, shape := range []string{`"x"`, `[]`, `null`, `{}{}`, `{"alg":"RS256","kid":"rsa-1"}x`, ``, `{"alg":"RS256","kid":"rsa-1",}`, `1`} {
		add(service.ReasonMalformed, "header "+shape, f.rawHeader(t, shape))
		add(service.ReasonMalformed, "payload "+shape, f.rsRaw(t, shape))
	}
	goodJSON := mustJSON(t, f.good())
	withClaim := func(raw string) string { return strings.TrimSuffix(goodJSON, "}") + "," + raw + "}" }
	add(service.ReasonMalformed, "invalid UTF-8 in the payload", f.rsRaw(t, withClaim("\"name\":\"\xff\xfe\"")))
	add(service.ReasonMalformed, "invalid UTF-8 in the header", f.rawHeader(t, "{\"alg\":\"RS256\",\"kid\":\"rsa-1\",\"x\":\"\xc3\"}"))
	add(service.ReasonMalformed, "lone high surrogate", f.rsRaw(t, withClaim(`"name":"\ud800"`)))
	add(service.ReasonMalformed, "lone low surrogate", f.rsRaw(t, withClaim(`"name":"\udc00"`)))
	add(service.ReasonMalformed, "high surrogate before a letter", f.rsRaw(t, withClaim(`"name":"\ud800\u0041"`)))
	add(service.ReasonMalformed, "lone surrogate in a key", f.rsRaw(t, withClaim(`"\ud800":1`)))
	add(service.ReasonValid, "surrogate pair", f.rsRaw(t, withClaim(`"name":"\ud83d\ude00"`)))
	add(service.ReasonValid, "escaped backslash before u", f.rsRaw(t, withClaim(`"name":"\\ud800"`)))
	add(service.ReasonMalformed, "duplicate aud", f.rsRaw(t, withClaim(`"aud":"api/invoices"`)))
	add(service.ReasonMalformed, "duplicate iss", f.rsRaw(t, withClaim(`"iss":"https://evil.example"`)))
	add(service.ReasonMalformed, "duplicate aud by escape", f.rsRaw(t, withClaim(`"\u0061ud":"api/invoices"`)))
	add(service.ReasonMalformed, "duplicate nested key", f.rsRaw(t, withClaim(`"x":{"a":1,"a":2}`)))
	add(service.ReasonMalformed, "alg duplicated", f.rawHeader(t, `{"alg":"none","alg":"RS256","kid":"rsa-1"}`))
	add(service.ReasonMalformed, "alg duplicated the other way", f.rawHeader(t, `{"alg":"RS256","alg":"none","kid":"rsa-1"}`))
	add(service.ReasonMalformed, "alg duplicated by an escape", f.rawHeader(t, `{"\u0061lg":"none","alg":"RS256","kid":"rsa-1"}`))
	add(service.ReasonMalformed, "alg duplicated, both RS256", f.rawHeader(t, `{"alg":"RS256","alg":"RS256","kid":"rsa-1"}`))
	add(service.ReasonMalformed, "kid duplicated", f.rawHeader(t, `{"alg":"RS256","kid":"nope","kid":"rsa-1"}`))

	f.run(t, ctx, cases)
}

// Header parameters: alg, kid, typ, crit and b64 in every spelling and JSON
// type. An unverified kid is shown to the caller sanitised, and never names
// a file, a URL or a key of another issuer.
func TestHostile_HeaderFields(t *testing.T) {
	ctx := testkit.Context(t)
	f := newHostileFixture(t, ctx)
	good := f.good()
	var cases []hostileCase
	add := func(want service.Reason, name, tok string, says ...string) {
		cases = append(cases, hostileCase{name: name, token: tok, want: want, says: says})
	}

	// alg none (RFC 7518, section 3.6), absent, and spellings of real algorithms.
	for _, none := range []string{"none", "None", "NONE", "nOnE"} {
		add(service.ReasonUnsupportedAlgorithm, "alg "+none+" with a real signature", f.rs(t, hdr("alg", none, "kid", "rsa-1"), good))
		add(service.ReasonUnsupportedAlgorithm, "alg "+none+" unsigned", testkit.Segment(t, hdr("alg", none))+"."+testkit.Segment(t, good)+".")
	}
	add(service.ReasonUnsupportedAlgorithm, "alg absent", f.rs(t, hdr("kid", "rsa-1"), good))
	add(service.ReasonUnsupportedAlgorithm, "alg empty", f.rs(t, hdr("alg", "", "kid", "rsa-1"), good))
	add(service.ReasonUnsupportedAlgorithm, "alg unknown", f.rs(t, hdr("alg", "RS1", "kid", "rsa-1"), good))
	for _, alg := range []string{"NoNe", "nONE", "none ", " none", "none\x00", "\u006eone\u200b", "rs256", "Rs256", "RS256 ", "RS 256", "ES256K", "Ed25519", "Ed448", "EdDSA ", "RSA-OAEP", "dir", "HS256 ", "RS256\r\nX-Injected: 1", strings.Repeat("A", 10<<10)} {
		name := fmt.Sprintf("alg %q", alg)
		if len(alg) > 100 {
			name = fmt.Sprintf("alg of %d bytes", len(alg))
		}
		add(service.ReasonUnsupportedAlgorithm, name, f.rs(t, hdr("alg", alg, "kid", "rsa-1"), good))
	}
	for name, alg := range map[string]any{"a number": 256, "null": nil, "an array": []string{"RS256"}, "an object": map[string]any{"name": "RS256"}, "true": true, "0": 0} {
		add(service.ReasonMalformed, "alg "+name, f.rs(t, hdr("alg", alg, "kid", "rsa-1"), good))
	}

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
		{"C1 NEL and CSI", "rsa-1\u0085\u009b31mforged", []string{"rsa-1"}},
		{"bidi override", "\u202e1-asr\u202c", []string{"1-asr"}},
		{"bidi isolate", "\u2067rsa-1\u2069", []string{"rsa-1"}},
		{"10 KB", strings.Repeat("k", 10<<10), []string{"kkkk"}},
		{"4 KB of CRLF", strings.Repeat("\r\n", 2<<10), nil},
		{"multi-byte at the cut", strings.Repeat("a", 63) + "é" + strings.Repeat("b", 10), []string{"aaaa"}},
	} {
		add(service.ReasonUnknownKey, "kid "+c.name, f.rs(t, hdr("alg", "RS256", "kid", c.kid), good), c.says...)
	}
	add(service.ReasonUnknownKey, "kid absent with several RSA keys", f.rs(t, hdr("alg", "RS256"), good))
	add(service.ReasonUnknownKey, "kid empty with several RSA keys", f.rs(t, hdr("alg", "RS256", "kid", ""), good))
	add(service.ReasonValid, "kid absent with one Ed25519 key", testkit.Sign(t, hdr("alg", "EdDSA"), good, "EdDSA", f.ed.Priv))
	cases = append(cases, hostileCase{name: "kid of another issuer", want: service.ReasonUnknownKey, hint: f.otherIss,
		token: testkit.Sign(t, hdr("alg", "ES256", "kid", "other-1"), good, "ES256", f.other.Priv)})
	add(service.ReasonMalformed, "kid of 20 KB (over the size limit)", f.rs(t, hdr("alg", "RS256", "kid", strings.Repeat("k", 20<<10)), good),
		fmt.Sprintf("over the %d-byte limit", service.DefaultMaxTokenBytes))
	for name, kid := range map[string]any{"a number": 1, "an array": []string{"rsa-1"}, "null": nil, "an object": map[string]any{"kid": "rsa-1"}, "true": true} {
		add(service.ReasonMalformed, "kid "+name, f.rs(t, hdr("alg", "RS256", "kid", kid), good))
	}

	// Keys published for encryption never verify a token.
	add(service.ReasonUnknownKey, "use:enc RSA key", f.encRSA.Token(t, good))
	add(service.ReasonUnknownKey, "use:enc EC key", f.encEC.Token(t, good))
	add(service.ReasonUnknownKey, "use:enc Ed25519 key", f.encEd.Token(t, good))
	add(service.ReasonUnknownKey, "use:enc key, PS256", testkit.Sign(t, hdr("alg", "PS256", "kid", "enc-rsa"), good, "PS256", f.encRSA.Priv))

	// crit and b64 (RFC 7797): extensions usher does not implement.
	now := testkit.Now.Unix()
	add(service.ReasonMalformed, "crit unknown", f.rs(t, hdr("alg", "RS256", "kid", "rsa-1", "crit", []string{"exp"}, "exp", now), good))
	add(service.ReasonMalformed, "crit empty", f.rs(t, hdr("alg", "RS256", "kid", "rsa-1", "crit", []string{}), good))
	add(service.ReasonMalformed, "crit naming an absent header", f.rs(t, hdr("alg", "RS256", "kid", "rsa-1", "crit", []string{"foo"}), good))
	add(service.ReasonMalformed, "crit a string", f.rs(t, hdr("alg", "RS256", "kid", "rsa-1", "crit", "exp"), good))
	add(service.ReasonMalformed, "crit null", f.rs(t, hdr("alg", "RS256", "kid", "rsa-1", "crit", nil), good))
	add(service.ReasonMalformed, "b64 false", f.rs(t, hdr("alg", "RS256", "kid", "rsa-1", "b64", false, "crit", []string{"b64"}), good))
	add(service.ReasonMalformed, "b64 false without crit", f.rs(t, hdr("alg", "RS256", "kid", "rsa-1", "b64", false), good))
	add(service.ReasonMalformed, "crit b64 with b64 true", f.rs(t, hdr("alg", "RS256", "kid", "rsa-1", "crit", []string{"b64"}, "b64", true), good))
	add(service.ReasonMalformed, "b64 true alone", f.rs(t, hdr("alg", "RS256", "kid", "rsa-1", "b64", true), good))

	// typ, with an issuer that requires at+jwt (RFC 9068, section 2.1).
	add(service.ReasonMalformed, "typ a number", f.rs(t, hdr("alg", "RS256", "kid", "rsa-1", "typ", 1), good))
	typedTok := func(typ any) string {
		h := hdr("alg", "RS256", "kid", "rsa-1")
		if typ != nil {
			h["typ"] = typ
		}
		return f.rs(t, h, testkit.Claims(typedIssuer))
	}
	add(service.ReasonWrongTokenType, "typ missing", typedTok(nil))
	add(service.ReasonWrongTokenType, "typ JWT", typedTok("JWT"))
	add(service.ReasonWrongTokenType, "typ dpop+jwt", typedTok("dpop+jwt"))
	add(service.ReasonWrongTokenType, "typ empty", typedTok(""))
	add(service.ReasonValid, "typ at+jwt", typedTok("at+jwt"))
	add(service.ReasonValid, "typ application/at+jwt", typedTok("application/at+jwt"))
	add(service.ReasonValid, "typ AT+JWT", typedTok("AT+JWT"))

	f.run(t, ctx, cases)
}

// Algorithm and key confusion: a token verifies only under a key its issuer
// publishes, with an algorithm that key allows (RFC 8725, sections 2.1 and
// 3.1). HMAC keyed with a public key, an algorithm of another key type, and
// keys or key URLs carried in the header (jku, x5u, jwk, x5c) are refused.
func TestHostile_KeyConfusion(t *testing.T) {
	ctx := testkit.Context(t)
	f := newHostileFixture(t, ctx)
	good := f.good()
	var cases []hostileCase
	add := func(want service.Reason, name, tok string) {
		cases = append(cases, hostileCase{name: name, token: tok, want: want})
	}

	// HMAC keyed with the RSA public key in every encoding.
	pub := &f.rsa1.Priv.(*rsa.PrivateKey).PublicKey
	pkixDER, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	pemKey := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pkixDER})
	jwkJSON, err := json.Marshal(f.rsa1.JWK())
	if err != nil {
		t.Fatal(err)
	}
	for name, secret := range map[string][]byte{
		"DER":                 pkixDER,
		"PKCS1 DER":           x509.MarshalPKCS1PublicKey(pub),
		"PEM":                 pemKey,
		"PEM without newline": []byte(strings.TrimSuffix(string(pemKey), "\n")),
		"modulus":             pub.N.Bytes(),
		"JWK JSON":            jwkJSON,
	} {
		for _, alg := range []string{"HS256", "HS384", "HS512"} {
			add(service.ReasonUnsupportedAlgorithm, alg+" keyed with the RSA public key "+name,
				testkit.Sign(t, hdr("alg", alg, "kid", "rsa-1"), good, alg, secret))
		}
	}
	add(service.ReasonUnsupportedAlgorithm, "HS256 without kid", testkit.Sign(t, hdr("alg", "HS256"), good, "HS256", pkixDER))

	// alg and key type or JWK alg disagree.
	add(service.ReasonUnsupportedAlgorithm, "ES256 with an RSA kid", testkit.Sign(t, hdr("alg", "ES256", "kid", "rsa-1"), good, "ES256", f.ec1.Priv))
	add(service.ReasonUnsupportedAlgorithm, "ES256 with an RSA kid without alg", testkit.Sign(t, hdr("alg", "ES256", "kid", "rsa-2"), good, "ES256", f.ec1.Priv))
	add(service.ReasonUnsupportedAlgorithm, "RS256 with an EC kid", testkit.Sign(t, hdr("alg", "RS256", "kid", "ec-1"), good, "RS256", f.rsa1.Priv))
	add(service.ReasonUnsupportedAlgorithm, "EdDSA with an RSA kid", testkit.Sign(t, hdr("alg", "EdDSA", "kid", "rsa-2"), good, "EdDSA", f.ed.Priv))
	add(service.ReasonUnsupportedAlgorithm, "RS256 with an Ed25519 kid", testkit.Sign(t, hdr("alg", "RS256", "kid", "ed-1"), good, "RS256", f.rsa1.Priv))
	add(service.ReasonUnsupportedAlgorithm, "PS256 on an RS256 key", testkit.Sign(t, hdr("alg", "PS256", "kid", "rsa-1"), good, "PS256", f.rsa1.Priv))
	add(service.ReasonUnsupportedAlgorithm, "RS512 on an RS256 key", testkit.Sign(t, hdr("alg", "RS512", "kid", "rsa-1"), good, "RS512", f.rsa1.Priv))
	add(service.ReasonUnsupportedAlgorithm, "ES256 on a P-384 key", testkit.Sign(t, hdr("alg", "ES256", "kid", "ec-384"), good, "ES256", f.ec384.Priv))
	add(service.ReasonUnsupportedAlgorithm, "ES384 on an ES256 key", testkit.Sign(t, hdr("alg", "ES384", "kid", "ec-1"), good, "ES384", f.ec1.Priv))
	add(service.ReasonValid, "PS256 on an RSA key without alg", testkit.Sign(t, hdr("alg", "PS256", "kid", "rsa-2"), good, "PS256", f.rsa2.Priv))
	add(service.ReasonValid, "RS512 on an RSA key without alg", testkit.Sign(t, hdr("alg", "RS512", "kid", "rsa-2"), good, "RS512", f.rsa2.Priv))
	add(service.ReasonValid, "ES384 on P-384", testkit.Sign(t, hdr("alg", "ES384", "kid", "ec-384"), good, "ES384", f.ec384.Priv))
	add(service.ReasonValid, "ES256 on P-256", f.ec1.Token(t, good))
	add(service.ReasonValid, "EdDSA", f.ed.Token(t, good))

	// Keys named by the token are never used: an attacker's key under the
	// trusted kid rsa-1, offered by URL (the canary), inline or in a chain.
	attackerPub := &f.attacker.Priv.(*rsa.PrivateKey).PublicKey
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "attacker"}, NotBefore: testkit.Now.Add(-time.Hour), NotAfter: testkit.Now.Add(time.Hour)}
	cert, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, attackerPub, f.attacker.Priv)
	if err != nil {
		t.Fatal(err)
	}
	x5c := []string{base64.StdEncoding.EncodeToString(cert)}
	attackerJWK := f.attacker.JWK()
	for name, h := range map[string]map[string]any{
		"jku":      hdr("alg", "RS256", "kid", "rsa-1", "jku", f.canaryURL+"/jwks.json"),
		"x5u":      hdr("alg", "RS256", "kid", "rsa-1", "x5u", f.canaryURL+"/cert.pem"),
		"jwk":      hdr("alg", "RS256", "kid", "rsa-1", "jwk", attackerJWK),
		"x5c":      hdr("alg", "RS256", "kid", "rsa-1", "x5c", x5c),
		"all four": hdr("alg", "RS256", "kid", "rsa-1", "jku", f.canaryURL+"/jwks.json", "x5u", f.canaryURL+"/c", "jwk", attackerJWK, "x5c", x5c),
	} {
		cases = append(cases, hostileCase{name: name + " with an attacker's key", want: service.ReasonInvalidSignature, hint: "header is ignored",
			token: testkit.Sign(t, h, good, "RS256", f.attacker.Priv)})
	}
	add(service.ReasonUnknownKey, "jku, own kid with an attacker's key",
		testkit.Sign(t, hdr("alg", "RS256", "kid", "attacker", "jku", f.canaryURL+"/jwks.json"), good, "RS256", f.attacker.Priv))
	secret := []byte("attacker-secret-attacker-secret!")
	add(service.ReasonUnsupportedAlgorithm, "embedded oct jwk with HS256",
		testkit.Sign(t, hdr("alg", "HS256", "jwk", map[string]any{"kty": "oct", "k": testkit.B64.EncodeToString(secret)}), good, "HS256", secret))

	f.run(t, ctx, cases)
}

// Claims: iss and aud are compared byte for byte (RFC 7519, sections 4.1.1
// and 4.1.3), with a hint naming a near miss; dates are NumericDates
// (RFC 7519, section 2) with the default leeway of 30 s; an ID token is not
// an access token.
func TestHostile_Claims(t *testing.T) {
	ctx := testkit.Context(t)
	f := newHostileFixture(t, ctx)
	now := testkit.Now.Unix()
	var cases []hostileCase
	add := func(want service.Reason, name, tok string) {
		cases = append(cases, hostileCase{name: name, token: tok, want: want})
	}
	addHint := func(want service.Reason, name, tok, hint string) {
		cases = append(cases, hostileCase{name: name, token: tok, want: want, hint: hint})
	}
	addAud := func(want service.Reason, name, tok, aud, hint string, scopes ...string) {
		cases = append(cases, hostileCase{name: name, token: tok, audience: aud, scopes: scopes, want: want, hint: hint})
	}
	staticTok := func(iss string) string { return f.static.Token(t, testkit.Claims(iss)) }

	// iss near misses of an https issuer.
	add(service.ReasonValid, "static issuer control", staticTok(staticIssuer))
	// Values of a verified token are shown escaped too: a terminal or a log
	// viewer must not be steered by them.
	add(service.ReasonAudienceMismatch, "aud with a bidi override", f.rsClaims(t, "aud", "\u202esresu/ipa"))
	add(service.ReasonAudienceMismatch, "aud with C1 controls", f.rsClaims(t, "aud", "api/users\u009b2J\u0085"))
	add(service.ReasonUntrustedIssuer, "iss with a bidi isolate", f.rsClaims(t, "iss", "\u2067https://evil.example\u2069"))
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
		addHint(service.ReasonUntrustedIssuer, "iss "+c.name, staticTok(c.iss), c.hint)
	}
	// iss near misses of the loopback http issuer, and iss of the wrong type.
	iss := f.iss
	port, err := strconv.Atoi(iss[strings.LastIndexByte(iss, ':')+1:])
	if err != nil {
		t.Fatal(err)
	}
	for name, bad := range map[string]string{
		"scheme in upper case":  "HTTP://" + strings.TrimPrefix(iss, "http://"),
		"https for http":        "https://" + strings.TrimPrefix(iss, "http://"),
		"another port":          "http://127.0.0.1:" + strconv.Itoa(port+1),
		"percent-encoded colon": "http://127.0.0.1%3A" + strconv.Itoa(port),
		"empty":                 "",
	} {
		add(service.ReasonUntrustedIssuer, "iss "+name, f.rsClaims(t, "iss", bad))
	}
	add(service.ReasonUntrustedIssuer, "iss absent", f.rsClaims(t, "iss", testkit.Absent))
	add(service.ReasonMalformed, "iss a number", f.rsClaims(t, "iss", 1))
	add(service.ReasonMalformed, "iss null", f.rsClaims(t, "iss", nil))
	add(service.ReasonMalformed, "iss an array", f.rsClaims(t, "iss", []string{iss}))

	// exp, nbf and iat around the leeway, below one second, and in JSON
	// that is not a NumericDate.
	add(service.ReasonExpired, "exp now-leeway-1", f.rsClaims(t, "exp", now-31))
	add(service.ReasonValid, "exp now-leeway+1", f.rsClaims(t, "exp", now-29))
	add(service.ReasonValid, "exp now-leeway+0.5", f.rsRaw(t, replaceExp(t, iss, strconv.FormatFloat(float64(now)-29.5, 'f', 1, 64))))
	add(service.ReasonExpired, "exp 0", f.rsClaims(t, "exp", 0))
	for name, raw := range map[string]string{
		"0.4": "0.4", "0.5": "0.5", "0.999999": "0.999999", "1e-9": "1e-9", "5e-324": "5e-324",
		"-0": "-0", "0.0": "0.0", "0e10": "0e10", "1": "1", "now-leeway-1.5": strconv.FormatFloat(float64(now)-31.5, 'f', 1, 64),
	} {
		add(service.ReasonExpired, "exp "+name, f.rsRaw(t, replaceExp(t, iss, raw)))
	}
	add(service.ReasonMissingClaim, "exp absent", f.rsClaims(t, "exp", testkit.Absent))
	add(service.ReasonMalformed, "exp a string", f.rsClaims(t, "exp", strconv.FormatInt(now+3600, 10)))
	add(service.ReasonMalformed, "exp a date", f.rsClaims(t, "exp", "2099-01-01T00:00:00Z"))
	add(service.ReasonMalformed, "exp -1", f.rsClaims(t, "exp", -1))
	add(service.ReasonMalformed, "exp null", f.rsClaims(t, "exp", nil))
	add(service.ReasonMalformed, "exp true", f.rsClaims(t, "exp", true))
	for name, raw := range map[string]string{
		"1e300": "1e300", "1e400": "1e400", "-0.4": "-0.4", "-1e-9": "-1e-9", "1e19": "1e19", `"0.4"`: `"0.4"`, "[0.4]": "[0.4]",
		"NaN": "NaN", "Infinity": "Infinity", "0x10": "0x10", "+1": "+1", ".5": ".5", "01": "01",
	} {
		add(service.ReasonMalformed, "exp "+name, f.rsRaw(t, replaceExp(t, iss, raw)))
	}
	add(service.ReasonNotYetValid, "nbf now+leeway+1", f.rsClaims(t, "nbf", now+31))
	add(service.ReasonNotYetValid, "nbf now+leeway+0.5", f.rsClaims(t, "nbf", float64(now)+30.5))
	add(service.ReasonValid, "nbf now+leeway-1", f.rsClaims(t, "nbf", now+29))
	add(service.ReasonNotYetValid, "iat now+leeway+1", f.rsClaims(t, "iat", now+31))
	add(service.ReasonValid, "iat now+leeway-1", f.rsClaims(t, "iat", now+29))
	add(service.ReasonMalformed, "nbf a string", f.rsClaims(t, "nbf", "0"))
	add(service.ReasonMalformed, "iat a string", f.rsClaims(t, "iat", "0"))

	// aud: a string or an array of strings; bytes compared exactly, and the
	// hint names the difference.
	addAud(service.ReasonValid, "aud array", f.rsClaims(t, "aud", []string{"x", "api/users"}), "api/users", "")
	for name, aud := range map[string]any{
		`["x","y"]`: []string{"x", "y"}, `""`: "", `[]`: []string{}, "absent": testkit.Absent, "API/USERS": "API/USERS",
		`"api/users "`: "api/users ", `"api/users/"`: "api/users/", "fullwidth api": "ａｐｉ/users",
	} {
		add(service.ReasonAudienceMismatch, "aud "+name, f.rsClaims(t, "aud", aud))
	}
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
		addHint(service.ReasonAudienceMismatch, "aud "+c.name, f.rsClaims(t, "aud", c.aud), c.hint)
		addHint(service.ReasonAudienceMismatch, "aud in an array "+c.name, f.rsClaims(t, "aud", []string{"x", c.aud}), c.hint)
	}
	// Unicode normalization (NFC and NFD), both ways round.
	addAud(service.ReasonAudienceMismatch, "aud NFD, expected NFC", f.rsClaims(t, "aud", "api/cafe\u0301"), "api/caf\u00e9", "normalization")
	// The expected audience comes from the calling service, not the token,
	// but it is shown bounded and escaped all the same.
	addAud(service.ReasonAudienceMismatch, "expected audience with ESC and 10 KB", f.rsClaims(t), "\x1b[2Japi/"+strings.Repeat("x", 10<<10), "")
	addAud(service.ReasonAudienceMismatch, "aud NFC, expected NFD", f.rsClaims(t, "aud", "api/caf\u00e9"), "api/cafe\u0301", "normalization")
	addAud(service.ReasonAudienceMismatch, "aud NFD in an array", f.rsClaims(t, "aud", []string{"api/users", "api/cafe\u0301"}), "api/caf\u00e9", "normalization")
	addAud(service.ReasonAudienceMismatch, "aud Hangul jamo vs syllable", f.rsClaims(t, "aud", "api/\u1112\u1161\u11ab"), "api/\ud55c", "normalization")
	addAud(service.ReasonAudienceMismatch, "aud ligature ﬁ", f.rsClaims(t, "aud", "api/\ufb01les"), "api/files", "look-alike")
	addAud(service.ReasonValid, "aud exact NFD", f.rsClaims(t, "aud", "api/cafe\u0301"), "api/cafe\u0301", "")
	for name, aud := range map[string]any{`1`: 1, `{}`: map[string]any{}, `[["api/users"]]`: [][]string{{"api/users"}}, `["api/users",1]`: []any{"api/users", 1}, `null`: nil, `true`: true} {
		add(service.ReasonMalformed, "aud "+name, f.rsClaims(t, "aud", aud))
	}

	// An ID token used as an access token.
	idClaims := func(iss string) map[string]any {
		return testkit.Claims(iss, "aud", "client-123", "azp", "client-123", "nonce", "n-1", "at_hash", "h", "scope", testkit.Absent, "client_id", testkit.Absent)
	}
	addHint(service.ReasonWrongTokenType, "ID token at an at+jwt issuer", f.rs(t, hdr("alg", "RS256", "kid", "rsa-1", "typ", "JWT"), idClaims(typedIssuer)), "ID token")
	addHint(service.ReasonAudienceMismatch, "ID token as an access token", f.rs(t, hdr("alg", "RS256", "kid", "rsa-1", "typ", "JWT"), idClaims(iss)), "ID token")

	f.run(t, ctx, cases)
}

// Scopes: space-separated names compared exactly (RFC 6749, section 3.3);
// a scope holding a control character, white space other than SP, or an
// invisible character is refused, since it could read as two scopes.
func TestHostile_Scopes(t *testing.T) {
	ctx := testkit.Context(t)
	f := newHostileFixture(t, ctx)
	var cases []hostileCase
	addAud := func(want service.Reason, name, tok, aud, hint string, scopes ...string) {
		cases = append(cases, hostileCase{name: name, token: tok, audience: aud, scopes: scopes, want: want, hint: hint})
	}
	addAud(service.ReasonValid, "both scopes", f.rsClaims(t), "api/users", "", "users.read", "users.write")
	addAud(service.ReasonInsufficientScope, "writer is not write", f.rsClaims(t, "scope", "users.writer"), "api/users", "", "users.write")
	addAud(service.ReasonInsufficientScope, "scope prefix", f.rsClaims(t, "scope", "users.write"), "api/users", "", "users.writer")
	addAud(service.ReasonInsufficientScope, "scope case", f.rsClaims(t, "scope", "Users.Read"), "api/users", "", "users.read")
	addAud(service.ReasonInsufficientScope, "no scope claim", f.rsClaims(t, "scope", testkit.Absent), "api/users", "", "users.read")
	addAud(service.ReasonInsufficientScope, "one of two scopes", f.rsClaims(t, "scope", "users.read"), "api/users", "", "users.read", "users.write")
	addAud(service.ReasonMalformed, "scope an array", f.rsClaims(t, "scope", []string{"users.read"}), "api/users", "", "users.read")
	addAud(service.ReasonMalformed, "scope a number", f.rsClaims(t, "scope", 1), "api/users", "")
	addAud(service.ReasonValid, "scp array", f.rsClaims(t, "scope", testkit.Absent, "scp", []string{"users.read", "users.write"}), "api/users", "", "users.write")
	addAud(service.ReasonValid, "scp string", f.rsClaims(t, "scope", testkit.Absent, "scp", "users.read users.write"), "api/users", "", "users.write")
	addAud(service.ReasonMalformed, "scp a number", f.rsClaims(t, "scope", testkit.Absent, "scp", 7), "api/users", "")
	// Granted scopes are bounded when shown; a scope holding a control
	// character, white space other than SP, or an invisible character is
	// refused (RFC 6749, section 3.3), and the message escapes it.
	addAud(service.ReasonInsufficientScope, "granted scope of 10 KB", f.rsClaims(t, "scope", strings.Repeat("s", 10<<10)), "", "", "users.write")
	for name, scope := range map[string]string{
		"CRLF": "users.read\r\nlevel=ERROR", "NUL": "users.read\x00", "ESC": "\x1b[2Jusers.read", "DEL": "users.read\x7f",
		"C1 NEL": "users.read\u0085admin", "C1 CSI": "\u009b2Jusers.read", "TAB": "users.read\tadmin", "LF": "users.read\nadmin",
		"NBSP": "users.read\u00a0admin", "U+3000": "files:read:x\u3000admin", "U+2028": "users.read\u2028admin",
		"zero-width space": "users.read\u200badmin", "bidi override": "users.read\u202eadmin",
	} {
		cases = append(cases, hostileCase{name: "scope with " + name, token: f.rsClaims(t, "scope", scope), scopes: []string{"admin"},
			want: service.ReasonMalformed, hint: "scope", says: []string{"scope ", " holds U+"}})
		cases = append(cases, hostileCase{name: "scp element with " + name, token: f.rsClaims(t, "scope", testkit.Absent, "scp", []string{"users.read", scope}), scopes: []string{"admin"},
			want: service.ReasonMalformed, says: []string{"scp[1] ", " holds U+"}})
	}

	f.run(t, ctx, cases)
}

// replaceExp is a valid payload of iss whose exp is the raw JSON text raw.
func replaceExp(t *testing.T, iss, raw string) string {
	t.Helper()
	c := testkit.Claims(iss)
	delete(c, "exp")
	return strings.TrimSuffix(mustJSON(t, c), "}") + `,"exp":` + raw + `}`
}

// Signatures: integers that are never valid signatures, signatures of the
// right size with the wrong encoding, and signatures of other input. None
// verifies.
func TestHostile_Signatures(t *testing.T) {
	ctx := testkit.Context(t)
	f := newHostileFixture(t, ctx)
	good := f.good()
	var cases []hostileCase
	add := func(want service.Reason, name, tok string) {
		cases = append(cases, hostileCase{name: name, token: tok, want: want})
	}
	fill := func(x *big.Int, size int) []byte { return x.FillBytes(make([]byte, size)) }
	one := big.NewInt(1)

	// ECDSA: every pairing of r and s in {0, 1, n-1, n}, on each curve, and
	// values past n; none is a signature of anything.
	for _, k := range []*testkit.Key{f.ec1, f.ec384, f.ec521} {
		priv := k.Priv.(*ecdsa.PrivateKey)
		size := (priv.Curve.Params().BitSize + 7) / 8
		n := priv.Curve.Params().N
		tok := k.Token(t, good)
		add(service.ReasonValid, k.Alg+" control", tok)
		sig := mustDecode(t, segments(tok)[2])
		r, s := new(big.Int).SetBytes(sig[:size]), new(big.Int).SetBytes(sig[size:])
		special := map[string]*big.Int{"0": big.NewInt(0), "1": one, "n-1": new(big.Int).Sub(n, one), "n": n}
		for rn, rv := range special {
			for sn, sv := range special {
				add(service.ReasonInvalidSignature, fmt.Sprintf("%s r=%s s=%s", k.Alg, rn, sn), testkit.WithSig(tok, append(fill(rv, size), fill(sv, size)...)))
			}
			add(service.ReasonInvalidSignature, fmt.Sprintf("%s r=%s, real s", k.Alg, rn), testkit.WithSig(tok, append(fill(rv, size), fill(s, size)...)))
			add(service.ReasonInvalidSignature, fmt.Sprintf("%s real r, s=%s", k.Alg, rn), testkit.WithSig(tok, append(fill(r, size), fill(rv, size)...)))
		}
		// r+n and s+n: the same residues, not reduced; they fit the fixed
		// width only where the field is wider than n (P-521).
		if rn := new(big.Int).Add(r, n); rn.BitLen() <= 8*size {
			add(service.ReasonInvalidSignature, k.Alg+" r+n", testkit.WithSig(tok, append(fill(rn, size), fill(s, size)...)))
		}
		if sn := new(big.Int).Add(s, n); sn.BitLen() <= 8*size {
			add(service.ReasonInvalidSignature, k.Alg+" s+n", testkit.WithSig(tok, append(fill(r, size), fill(sn, size)...)))
		}
		add(service.ReasonInvalidSignature, k.Alg+" s and r swapped", testkit.WithSig(tok, append(fill(s, size), fill(r, size)...)))
		allFF := new(big.Int).Sub(new(big.Int).Lsh(one, uint(8*size)), one)
		add(service.ReasonInvalidSignature, k.Alg+" r=s=2^k-1", testkit.WithSig(tok, append(fill(allFF, size), fill(allFF, size)...)))
		add(service.ReasonInvalidSignature, fmt.Sprintf("%s of %d bytes", k.Alg, 2*size-1), testkit.WithSig(tok, sig[1:]))
		add(service.ReasonInvalidSignature, fmt.Sprintf("%s of %d bytes", k.Alg, 2*size+1), testkit.WithSig(tok, append([]byte{0}, sig...)))
		add(service.ReasonInvalidSignature, fmt.Sprintf("%s of %d bytes, zero at the end", k.Alg, 2*size+1), testkit.WithSig(tok, append(sig[:len(sig):len(sig)], 0)))
		// RFC 7518, section 3.4: R and S concatenated, not ASN.1 DER.
		der, err := ecdsa.SignASN1(rand.Reader, priv, digestFor(k.Alg, segments(tok)[0]+"."+segments(tok)[1]))
		if err != nil {
			t.Fatal(err)
		}
		add(service.ReasonInvalidSignature, k.Alg+" DER-encoded", testkit.WithSig(tok, der))
		add(service.ReasonInvalidSignature, k.Alg+" of a single byte", testkit.WithSig(tok, []byte{0}))
	}

	// RSA: the integers that are never valid PKCS #1 v1.5 or PSS signatures.
	for _, alg := range []string{"RS256", "PS256", "RS512"} {
		tok := testkit.Sign(t, hdr("alg", alg, "kid", "rsa-2"), good, alg, f.rsa2.Priv)
		add(service.ReasonValid, alg+" control", tok)
		pub := &f.rsa2.Priv.(*rsa.PrivateKey).PublicKey
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
			add(service.ReasonInvalidSignature, alg+" signature "+name, testkit.WithSig(tok, b))
		}
		add(service.ReasonInvalidSignature, alg+" signature with a leading zero byte", testkit.WithSig(tok, append([]byte{0}, sig...)))
		add(service.ReasonInvalidSignature, alg+" signature without its first byte", testkit.WithSig(tok, sig[1:]))
		add(service.ReasonInvalidSignature, alg+" signature of one byte", testkit.WithSig(tok, []byte{1}))
	}
	// An RSA signature whose padding is wrong: a random m raised to d.
	valid := f.rsClaims(t)
	p := segments(valid)
	priv1 := f.rsa1.Priv.(*rsa.PrivateKey)
	m, err := rand.Int(rand.Reader, new(big.Int).Rsh(priv1.N, 8))
	if err != nil {
		t.Fatal(err)
	}
	add(service.ReasonInvalidSignature, "RS256 signature with bad padding", testkit.WithSig(valid, fill(new(big.Int).Exp(m, priv1.D, priv1.N), priv1.Size())))
	// The right key, the other RSA padding.
	psSig := mustDecode(t, segments(testkit.Sign(t, hdr("alg", "PS256", "kid", "rsa-2"), good, "PS256", f.rsa2.Priv))[2])
	add(service.ReasonInvalidSignature, "PSS signature under RS256", testkit.WithSig(testkit.Sign(t, hdr("alg", "RS256", "kid", "rsa-2"), good, "RS256", f.rsa2.Priv), psSig))
	rsSig := mustDecode(t, segments(testkit.Sign(t, hdr("alg", "RS256", "kid", "rsa-2"), good, "RS256", f.rsa2.Priv))[2])
	add(service.ReasonInvalidSignature, "PKCS1 signature under PS256", testkit.WithSig(testkit.Sign(t, hdr("alg", "PS256", "kid", "rsa-2"), good, "PS256", f.rsa2.Priv), rsSig))

	// A real signature over other bytes.
	add(service.ReasonInvalidSignature, "tampered payload", p[0]+"."+testkit.Segment(t, testkit.Claims(f.iss, "sub", "admin"))+"."+p[2])
	add(service.ReasonInvalidSignature, "tampered header", testkit.Segment(t, hdr("alg", "RS256", "kid", "rsa-1", "typ", "at+jwt"))+"."+p[1]+"."+p[2])
	add(service.ReasonInvalidSignature, "signature of another token", testkit.WithSig(f.rsClaims(t, "sub", "admin"), mustDecode(t, p[2])))

	// Ed25519 (RFC 8032, section 5.1.7: S must be below L).
	edTok := f.ed.Token(t, good)
	edSig := mustDecode(t, segments(edTok)[2])
	add(service.ReasonInvalidSignature, "Ed25519 of 64 zero bytes", testkit.WithSig(edTok, make([]byte, ed25519.SignatureSize)))
	add(service.ReasonInvalidSignature, "Ed25519 with S+L", testkit.WithSig(edTok, addL(edSig)))
	add(service.ReasonInvalidSignature, "Ed25519 of 63 bytes", testkit.WithSig(edTok, edSig[:63]))
	add(service.ReasonInvalidSignature, "Ed25519 of 65 bytes", testkit.WithSig(edTok, append([]byte{0}, edSig...)))
	add(service.ReasonInvalidSignature, "Ed25519 R of zeros", testkit.WithSig(edTok, append(make([]byte, 32), edSig[32:]...)))
	add(service.ReasonInvalidSignature, "Ed25519 S of 0xff", testkit.WithSig(edTok, append(edSig[:32:32], []byte(strings.Repeat("\xff", 32))...)))
	add(service.ReasonInvalidSignature, "Ed25519 identity point R, S=0", testkit.WithSig(edTok, append(append([]byte{1}, make([]byte, 31)...), make([]byte, 32)...)))

	f.run(t, ctx, cases)
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
	d := sha256.Sum256([]byte(input))
	return d[:]
}

// addL returns the Ed25519 signature with L added to its S half (little
// endian): the same point equation, a non-canonical encoding.
func addL(sig []byte) []byte {
	l, _ := new(big.Int).SetString("7237005577332262213973186563042994240857116359379907606001950938285454250989", 10)
	le := func(b []byte) []byte { out := slices.Clone(b); slices.Reverse(out); return out }
	sv := new(big.Int).SetBytes(le(sig[32:]))
	sv.Add(sv, l)
	out := slices.Clone(sig)
	copy(out[32:], le(sv.FillBytes(make([]byte, 32))))
	return out
}

// Size and depth bombs are MALFORMED, both at the default max_token_bytes and
// at the largest one the config allows, and the message says which check
// refused them: the byte limit, checked before anything is decoded, or the
// JSON parser's depth and value-count limits, which stop it at the first
// level or value too many. How fast that is, BenchmarkHostile measures.
func TestHostile_SizeAndDepth(t *testing.T) {
	ctx := testkit.Context(t)
	f := newHostileFixture(t, ctx)
	f1MiB := f.withMaxTokenBytes(t, ctx, 1<<20)
	overLimit := func(n int) []string { return []string{fmt.Sprintf("over the %d-byte limit", n)} }
	overDefault, over1MiB := overLimit(service.DefaultMaxTokenBytes), overLimit(1<<20)
	tooDeep := []string{"nested deeper than 32 levels"}
	tooMany := []string{"more than 4096 JSON values"}

	ed := func(payload string) string {
		return testkit.Sign(t, hdr("alg", "EdDSA", "kid", "ed-1"), []byte(payload), "EdDSA", f.ed.Priv)
	}
	goodJSON := strings.TrimSuffix(mustJSON(t, f.good()), "}")
	deepArrays := ed(goodJSON + `,"x":` + strings.Repeat("[", 20_000) + strings.Repeat("]", 20_000) + `}`)
	deepObjects := ed(goodJSON + `,"x":` + strings.Repeat(`{"a":`, 20_000) + "1" + strings.Repeat("}", 20_000) + `}`)
	deepHeader := testkit.Sign(t, []byte(`{"alg":"EdDSA","kid":"ed-1","x":`+strings.Repeat("[", 20_000)+strings.Repeat("]", 20_000)+`}`), f.good(), "EdDSA", f.ed.Priv)
	unclosed := ed(goodJSON + `,"x":` + strings.Repeat("[", 20_000) + `}`)
	aud := make([]string, 200_000)
	for i := range aud {
		aud[i] = "a" + strconv.Itoa(i)
	}
	bigAud := f.ed.Token(t, testkit.Claims(f.iss, "aud", aud))
	emptyAud := f.ed.Token(t, testkit.Claims(f.iss, "aud", make([]string, 200_000)))
	if len(emptyAud) > 1<<20 {
		t.Fatalf("the 200,000-entry aud of empty strings is %d bytes, over 1 MiB", len(emptyAud))
	}
	jwe := testkit.Segment(t, hdr("alg", "PBES2-HS256+A128KW", "enc", "A128GCM", "p2c", math.MaxInt32, "p2s", "c2FsdA", "zip", "DEF")) + "." + strings.Repeat("A", 900_000) + ".YQ.YQ.YQ"
	millionDots := strings.Repeat(".", 1_000_000)
	valid := f.rsClaims(t)
	p := segments(valid)

	// At the default limit every bomb is refused by its size.
	f.run(t, ctx, []hostileCase{
		{name: "20,000-deep arrays", token: deepArrays, want: service.ReasonMalformed, says: overDefault},
		{name: "20,000-deep objects", token: deepObjects, want: service.ReasonMalformed, says: overDefault},
		{name: "33-deep", token: ed(goodJSON + `,"x":` + strings.Repeat("[", 33) + strings.Repeat("]", 33) + `}`), want: service.ReasonMalformed, says: tooDeep},
		{name: "40-deep", token: f.rsRaw(t, goodJSON+`,"x":`+strings.Repeat("[", 40)+strings.Repeat("]", 40)+`}`), want: service.ReasonMalformed, says: tooDeep},
		{name: "5-deep", token: f.rsRaw(t, goodJSON+`,"x":{"a":[[{"b":[1]}]]}}`), want: service.ReasonValid},
		{name: "200,000-entry aud", token: bigAud, want: service.ReasonMalformed, says: overDefault},
		{name: "a million dots", token: millionDots, want: service.ReasonMalformed, says: overDefault},
		{name: "a million dots between real segments", token: p[0] + millionDots + p[1] + "." + p[2], want: service.ReasonMalformed, says: overDefault},
		{name: "1 MiB payload", token: testkit.Segment(t, hdr("alg", "EdDSA")) + "." + strings.Repeat("A", 1<<20) + ".AAAA", want: service.ReasonMalformed, says: overDefault},
		{name: "1 MiB of spaces around", token: strings.Repeat(" ", 1<<19) + "x" + strings.Repeat(" ", 1<<19), want: service.ReasonMalformed, says: overDefault},
	})
	// At 1 MiB the parser meets them, and stops at its limits.
	f1MiB.run(t, ctx, []hostileCase{
		{name: "20,000-deep arrays, 1 MiB limit", token: deepArrays, want: service.ReasonMalformed, says: tooDeep},
		{name: "20,000-deep objects, 1 MiB limit", token: deepObjects, want: service.ReasonMalformed, says: tooDeep},
		{name: "20,000-deep header, 1 MiB limit", token: deepHeader, want: service.ReasonMalformed, says: tooDeep},
		{name: "20,000 unclosed arrays, 1 MiB limit", token: unclosed, want: service.ReasonMalformed, says: tooDeep},
		{name: "200,000-entry aud, 1 MiB limit (over it)", token: bigAud, want: service.ReasonMalformed, says: over1MiB},
		{name: "200,000 empty strings in aud, 1 MiB limit", token: emptyAud, want: service.ReasonMalformed, says: tooMany},
		{name: "a million dots, 1 MiB limit", token: millionDots, want: service.ReasonMalformed, says: []string{"3 segments expected"}},
		{name: "JWE with PBES2 p2c 2^31-1 and zip, 1 MiB limit", token: jwe, want: service.ReasonMalformed, says: []string{"JWE"}},
		{name: "1 MiB + 1 byte", token: strings.Repeat("A", 1<<20+1), want: service.ReasonMalformed, says: over1MiB},
	})
}
