package service_test

import (
	"context"
	"crypto"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwk"

	"github.com/usher-dev/usher/internal/testkit"
	"github.com/usher-dev/usher/service"
)

// The request every proof of these tests is made for, unless said otherwise.
const (
	dpopMethod = "GET"
	dpopURI    = "https://api.example.com/invoices"
)

// dpopFixture is an engine trusting a real issuer on 127.0.0.1 (ES256),
// with a clock the test moves, and a client's DPoP key.
type dpopFixture struct {
	ctx    context.Context
	clock  *testkit.Clock
	v      *service.Validator
	iss    *testkit.Issuer
	issKey *testkit.Key
	client *testkit.Key
}

// newDPoPFixture builds the engine; cfg (when not nil) changes its config
// before it is built.
func newDPoPFixture(t testing.TB, client *testkit.Key, cfg func(*service.Config), opts ...service.Option) *dpopFixture {
	t.Helper()
	f := &dpopFixture{ctx: testkit.Context(t), clock: testkit.NewClock(), issKey: testkit.ECKey(t, "iss-1", elliptic.P256()), client: client}
	f.iss = testkit.NewIssuer(t, f.issKey)
	c := &service.Config{Issuers: []service.IssuerConfig{f.iss.Config()}, Audiences: slices.Clone(testkit.Audiences)}
	if cfg != nil {
		cfg(c)
	}
	all := append([]service.Option{service.WithClock(f.clock.Now), service.WithLogger(slog.New(slog.DiscardHandler))}, opts...)
	v, err := service.NewValidator(f.ctx, c, all...)
	if err != nil {
		t.Fatal(err)
	}
	waitTried(f.ctx, t, v)
	f.v = v
	return f
}

// token is a token of the issuer bound to the client's key, changed by kv.
func (f *dpopFixture) token(t testing.TB, kv ...any) string {
	t.Helper()
	return f.issKey.Token(t, testkit.Claims(f.iss.URL(), append([]any{"cnf", f.client.Cnf()}, kv...)...))
}

// proof is the client's proof for the standard request with tok, made now.
func (f *dpopFixture) proof(t testing.TB, tok string, kv ...any) string {
	t.Helper()
	return f.client.Proof(t, tok, dpopMethod, dpopURI, f.clock.Now(), kv...)
}

// request is the standard request with tok and proof, scheme DPoP.
func request(tok, proof string) *service.Request {
	return &service.Request{Token: tok, Audience: "api/users", Scheme: "DPoP", DPoPProof: proof, HTTPMethod: dpopMethod, HTTPURI: dpopURI}
}

// validate runs ValidateRequest; an error fails the test.
func (f *dpopFixture) validate(t testing.TB, r *service.Request) service.Verdict {
	t.Helper()
	got, err := f.v.ValidateRequest(f.ctx, r)
	if err != nil {
		t.Fatalf("ValidateRequest: %v", err)
	}
	return got
}

// checkProof asserts the reason (as checkVerdict does) and the mismatch's
// claim ("" for none).
func checkProof(t testing.TB, got service.Verdict, want service.Reason, claim string) {
	t.Helper()
	checkVerdict(t, got, want)
	switch {
	case claim == "" && got.Mismatch != nil:
		t.Fatalf("mismatch %+v, want none (message %q)", *got.Mismatch, got.Message)
	case claim != "" && (got.Mismatch == nil || got.Mismatch.Claim != claim):
		t.Fatalf("mismatch %+v, want claim %q (message %q)", got.Mismatch, claim, got.Message)
	}
}

// A proof of each key type (ES256, EdDSA, RS256, PS256) makes a bound token
// VALID; the claims (and Inspect) show the binding.
func TestDPoP_ValidProof(t *testing.T) {
	rsa := testkit.RSAKey(t, "")
	for _, client := range []*testkit.Key{
		testkit.ECKey(t, "", elliptic.P256()), testkit.ECKey(t, "", elliptic.P384()), testkit.EdKey(t, ""), rsa,
		{Alg: "PS256", Priv: rsa.Priv},
	} {
		t.Run(client.Alg, func(t *testing.T) {
			f := newDPoPFixture(t, client, nil)
			tok := f.token(t)
			got := f.validate(t, request(tok, f.proof(t, tok)))
			checkVerdict(t, got, service.ReasonValid)
			if got.Claims.Confirmation != (service.Confirmation{JKT: client.Thumbprint()}) {
				t.Fatalf("confirmation %+v", got.Claims.Confirmation)
			}
			if in := f.v.Inspect(f.ctx, tok); in.Claims == nil || in.Claims.Confirmation.JKT != client.Thumbprint() {
				t.Fatalf("inspect claims %+v", in.Claims)
			}
		})
	}
}

// testkit's thumbprint (and so every cnf.jkt of these tests) is RFC 7638's
// as jwx computes it.
func TestDPoP_ThumbprintIsRFC7638(t *testing.T) {
	for _, k := range []*testkit.Key{testkit.ECKey(t, "", elliptic.P256()), testkit.ECKey(t, "", elliptic.P521()), testkit.EdKey(t, ""), testkit.RSAKey(t, "")} {
		key, err := jwk.Import(k.Priv.Public())
		if err != nil {
			t.Fatal(err)
		}
		sum, err := key.Thumbprint(crypto.SHA256)
		if err != nil {
			t.Fatal(err)
		}
		if got := testkit.B64.EncodeToString(sum); got != k.Thumbprint() {
			t.Fatalf("%s: jwx %s, testkit %s", k.Alg, got, k.Thumbprint())
		}
	}
}

// A DPoP-bound token without its proof is PROOF_MISSING: sent as Bearer
// (with or without a proof: a downgrade), with no scheme, through Validate,
// or with the DPoP scheme and no DPoP header. The hint says how to send it.
func TestDPoP_ProofMissing(t *testing.T) {
	f := newDPoPFixture(t, testkit.ECKey(t, "", elliptic.P256()), nil)
	tok := f.token(t)
	jkt := f.client.Thumbprint()
	for _, c := range []struct {
		name   string
		r      *service.Request
		scheme []string // the mismatch's actual scheme; nil: no mismatch
	}{
		{"Bearer without proof", &service.Request{Token: tok, Audience: "api/users", Scheme: "Bearer"}, []string{"Bearer"}},
		{"Bearer with a valid proof", &service.Request{Token: tok, Audience: "api/users", Scheme: "bearer", DPoPProof: f.proof(t, tok), HTTPMethod: dpopMethod, HTTPURI: dpopURI}, []string{"bearer"}},
		{"no scheme", &service.Request{Token: tok, Audience: "api/users"}, []string{"Bearer"}},
		{"DPoP without proof", request(tok, ""), nil},
		{"DPoP with a blank proof", request(tok, "  "), nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := f.validate(t, c.r)
			if c.scheme != nil {
				checkProof(t, got, service.ReasonProofMissing, "scheme")
				checkMismatch(t, got.Mismatch, &service.Mismatch{Claim: "scheme", Expected: []string{"DPoP"}, Actual: c.scheme})
			} else {
				checkProof(t, got, service.ReasonProofMissing, "")
			}
			if !strings.Contains(got.Hint, "Authorization: DPoP <token>") || !strings.Contains(got.Hint, "DPoP: <proof>") || !strings.Contains(got.Hint, jkt) {
				t.Fatalf("hint %q does not say how to send the token", got.Hint)
			}
		})
	}
	checkProof(t, f.v.Validate(f.ctx, tok, "api/users", nil), service.ReasonProofMissing, "scheme")
	checkProof(t, f.v.Validate(f.ctx, "Bearer "+tok, "api/users", nil), service.ReasonProofMissing, "scheme")
}

// A bearer token: a stray proof with the Bearer scheme is ignored (VALID);
// the DPoP scheme is refused, the token not being DPoP-bound.
func TestDPoP_UnboundToken(t *testing.T) {
	f := newDPoPFixture(t, testkit.ECKey(t, "", elliptic.P256()), nil)
	tok := f.issKey.Token(t, testkit.Claims(f.iss.URL()))
	r := request(tok, f.proof(t, tok))
	r.Scheme = "Bearer"
	got := f.validate(t, r)
	checkVerdict(t, got, service.ReasonValid)
	if got.Claims.Confirmation.Bound() {
		t.Fatalf("confirmation %+v", got.Claims.Confirmation)
	}
	for _, scheme := range []string{"DPoP", "dpop", " DPoP "} {
		r.Scheme = scheme
		got = f.validate(t, r)
		checkProof(t, got, service.ReasonInvalidProof, "jkt")
		if !strings.Contains(got.Message, "not DPoP-bound") || !strings.Contains(got.Hint, "Authorization: Bearer <token>") {
			t.Fatalf("message %q, hint %q", got.Message, got.Hint)
		}
	}
}

// Every check of RFC 9449 §4.3 on a proof whose signature verifies: each
// failure is INVALID_PROOF with the claim and its expected and actual
// values; the cases at the limit are VALID.
func TestDPoP_ProofClaims(t *testing.T) {
	f := newDPoPFixture(t, testkit.EdKey(t, ""), nil)
	other := f.client.Like(t, "")
	now := f.clock.Now()
	for _, c := range []struct {
		name     string
		proof    func(tok string) string
		reason   service.Reason
		mismatch *service.Mismatch // nil: only the claim is checked
		claim    string
	}{
		{name: "htm another method", proof: func(tok string) string { return f.proof(t, tok, "htm", "POST") }, reason: service.ReasonInvalidProof,
			mismatch: &service.Mismatch{Claim: "htm", Expected: []string{"GET"}, Actual: []string{"POST"}}},
		{name: "htm lower case", proof: func(tok string) string { return f.proof(t, tok, "htm", "get") }, reason: service.ReasonInvalidProof,
			mismatch: &service.Mismatch{Claim: "htm", Expected: []string{"GET"}, Actual: []string{"get"}}},
		{name: "htm a number", proof: func(tok string) string { return f.proof(t, tok, "htm", 1) }, reason: service.ReasonInvalidProof, claim: "htm"},
		{name: "htm absent", proof: func(tok string) string { return f.proof(t, tok, "htm", testkit.Absent) }, reason: service.ReasonInvalidProof, claim: "htm"},
		{name: "htu another path", proof: func(tok string) string { return f.proof(t, tok, "htu", "https://api.example.com/users") }, reason: service.ReasonInvalidProof,
			mismatch: &service.Mismatch{Claim: "htu", Expected: []string{dpopURI}, Actual: []string{"https://api.example.com/users"}}},
		{name: "htu another host", proof: func(tok string) string { return f.proof(t, tok, "htu", "https://evil.example.com/invoices") }, reason: service.ReasonInvalidProof, claim: "htu"},
		{name: "htu http", proof: func(tok string) string { return f.proof(t, tok, "htu", "http://api.example.com/invoices") }, reason: service.ReasonInvalidProof, claim: "htu"},
		{name: "htu not a URI", proof: func(tok string) string { return f.proof(t, tok, "htu", "/invoices") }, reason: service.ReasonInvalidProof, claim: "htu"},
		{name: "htu absent", proof: func(tok string) string { return f.proof(t, tok, "htu", testkit.Absent) }, reason: service.ReasonInvalidProof, claim: "htu"},
		{name: "htu with query and fragment", proof: func(tok string) string { return f.proof(t, tok, "htu", dpopURI+"?page=2#top") }, reason: service.ReasonValid},
		{name: "htu normalized", proof: func(tok string) string { return f.proof(t, tok, "htu", "HTTPS://API.Example.COM:443/%69nvoices") }, reason: service.ReasonValid},
		{name: "iat 61s old", proof: func(tok string) string { return f.proof(t, tok, "iat", now.Add(-61*time.Second).Unix()) }, reason: service.ReasonInvalidProof,
			mismatch: &service.Mismatch{Claim: "iat", Expected: []string{"within 1m0s of " + now.Format(time.RFC3339)}, Actual: []string{now.Add(-61*time.Second).Format(time.RFC3339) + " (1m1s in the past)"}}},
		{name: "iat 61s ahead", proof: func(tok string) string { return f.proof(t, tok, "iat", now.Add(61*time.Second).Unix()) }, reason: service.ReasonInvalidProof,
			mismatch: &service.Mismatch{Claim: "iat", Expected: []string{"within 1m0s of " + now.Format(time.RFC3339)}, Actual: []string{now.Add(61*time.Second).Format(time.RFC3339) + " (1m1s in the future)"}}},
		{name: "iat 60s old", proof: func(tok string) string { return f.proof(t, tok, "iat", now.Add(-60*time.Second).Unix()) }, reason: service.ReasonValid},
		{name: "iat 60s ahead", proof: func(tok string) string { return f.proof(t, tok, "iat", now.Add(60*time.Second).Unix()) }, reason: service.ReasonValid},
		{name: "iat absent", proof: func(tok string) string { return f.proof(t, tok, "iat", testkit.Absent) }, reason: service.ReasonInvalidProof, claim: "iat"},
		{name: "iat a string", proof: func(tok string) string { return f.proof(t, tok, "iat", "now") }, reason: service.ReasonInvalidProof},
		{name: "jti absent", proof: func(tok string) string { return f.proof(t, tok, "jti", testkit.Absent) }, reason: service.ReasonInvalidProof, claim: "jti"},
		{name: "jti empty", proof: func(tok string) string { return f.proof(t, tok, "jti", "") }, reason: service.ReasonInvalidProof,
			mismatch: &service.Mismatch{Claim: "jti", Expected: []string{"1 to 256 bytes"}}},
		{name: "jti 257 bytes", proof: func(tok string) string { return f.proof(t, tok, "jti", strings.Repeat("j", 257)) }, reason: service.ReasonInvalidProof, claim: "jti"},
		{name: "jti 256 bytes", proof: func(tok string) string { return f.proof(t, tok, "jti", testkit.JTI()+strings.Repeat("j", 224)) }, reason: service.ReasonValid},
		{name: "ath absent", proof: func(tok string) string { return f.proof(t, tok, "ath", testkit.Absent) }, reason: service.ReasonInvalidProof, claim: "ath"},
		{name: "ath of another token", proof: func(tok string) string { return f.proof(t, tok, "ath", testkit.ATH("another token")) }, reason: service.ReasonInvalidProof,
			mismatch: &service.Mismatch{Claim: "ath", Actual: []string{testkit.ATH("another token")}}},
		{name: "another key", proof: func(tok string) string { return other.Proof(t, tok, dpopMethod, dpopURI, now) }, reason: service.ReasonInvalidProof,
			mismatch: &service.Mismatch{Claim: "jkt", Expected: []string{f.client.Thumbprint()}, Actual: []string{other.Thumbprint()}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			tok := f.token(t)
			got := f.validate(t, request(tok, c.proof(tok)))
			claim := c.claim
			if c.mismatch != nil {
				claim = c.mismatch.Claim
			}
			if c.reason == service.ReasonValid {
				checkVerdict(t, got, service.ReasonValid)
				return
			}
			checkVerdict(t, got, c.reason)
			if claim != "" && (got.Mismatch == nil || got.Mismatch.Claim != claim) {
				t.Fatalf("mismatch %+v, want claim %q (%s)", got.Mismatch, claim, got.Message)
			}
			if c.mismatch != nil && c.mismatch.Claim == "ath" {
				c.mismatch.Expected = []string{testkit.ATH(tok)}
			}
			if c.mismatch != nil {
				checkMismatch(t, got.Mismatch, c.mismatch)
			}
		})
	}
}

// The proof's header and signature: typ, alg, jwk and a signature by that
// jwk; each failure is INVALID_PROOF naming the check.
func TestDPoP_ProofHeader(t *testing.T) {
	f := newDPoPFixture(t, testkit.ECKey(t, "", elliptic.P256()), nil)
	tok := f.token(t)
	claims := func() map[string]any { return testkit.ProofClaims(tok, dpopMethod, dpopURI, f.clock.Now()) }
	header := func(kv ...any) map[string]any {
		h := f.client.ProofHeader()
		for i := 0; i < len(kv); i += 2 {
			if kv[i+1] == testkit.Absent {
				delete(h, kv[i].(string))
			} else {
				h[kv[i].(string)] = kv[i+1]
			}
		}
		return h
	}
	es := func(h map[string]any) string { return testkit.Sign(t, h, claims(), "ES256", f.client.Priv) }
	rsa := testkit.RSAKey(t, "")
	withPrivate := func(member string) map[string]any {
		jwk := f.client.JWK()
		jwk[member] = testkit.B64.EncodeToString([]byte("private"))
		return header("jwk", jwk)
	}
	for _, c := range []struct {
		name     string
		proof    string
		mismatch *service.Mismatch
		message  string
	}{
		{"typ JWT", es(header("typ", "JWT")), &service.Mismatch{Claim: "typ", Expected: []string{"dpop+jwt"}, Actual: []string{"JWT"}}, "typ JWT"},
		{"typ absent", es(header("typ", testkit.Absent)), &service.Mismatch{Claim: "typ", Expected: []string{"dpop+jwt"}}, "typ (none)"},
		{"alg none", testkit.Segment(t, header("alg", "none")) + "." + testkit.Segment(t, claims()) + ".", &service.Mismatch{Claim: "alg", Expected: service.DPoPAlgorithms, Actual: []string{"none"}}, "unsigned"},
		{"HS256 with a jwk k", testkit.Sign(t, header("alg", "HS256", "jwk", map[string]any{"kty": "oct", "k": testkit.B64.EncodeToString([]byte("secret"))}), claims(), "HS256", []byte("secret")),
			&service.Mismatch{Claim: "alg", Expected: service.DPoPAlgorithms, Actual: []string{"HS256"}}, "symmetric"},
		{"ES256 with a jwk k", es(header("jwk", map[string]any{"kty": "oct", "k": testkit.B64.EncodeToString([]byte("secret"))})),
			&service.Mismatch{Claim: "jwk", Expected: []string{"a public key"}, Actual: []string{"a key with k"}}, "private"},
		{"alg absent", es(header("alg", testkit.Absent)), &service.Mismatch{Claim: "alg", Expected: service.DPoPAlgorithms}, "no alg"},
		{"private jwk (d)", es(withPrivate("d")), &service.Mismatch{Claim: "jwk", Expected: []string{"a public key"}, Actual: []string{"a key with d"}}, "private"},
		{"jwk absent", es(header("jwk", testkit.Absent)), &service.Mismatch{Claim: "jwk"}, "no jwk"},
		{"jwk a string", es(header("jwk", "key")), &service.Mismatch{Claim: "jwk"}, "not a JSON object"},
		{"jwk not a key", es(header("jwk", map[string]any{"kty": "EC"})), &service.Mismatch{Claim: "jwk"}, "not a usable public key"},
		{"RS256 with an EC jwk", testkit.Sign(t, header("alg", "RS256"), claims(), "RS256", rsa.Priv),
			&service.Mismatch{Claim: "jwk", Expected: []string{"RSA (for RS256)"}, Actual: []string{"EC P-256"}}, "needs an RSA key"},
		{"ES384 with a P-256 jwk", es(header("alg", "ES384")), &service.Mismatch{Claim: "jwk", Expected: []string{"EC P-384 (for ES384)"}, Actual: []string{"EC P-256"}}, "needs an EC P-384 key"},
		{"a jwk that did not sign", testkit.Sign(t, header("jwk", f.client.Like(t, "").JWK()), claims(), "ES256", f.client.Priv), nil, "does not verify"},
		{"signed by another key than its jwk", testkit.Sign(t, header(), claims(), "ES256", f.client.Like(t, "").Priv), nil, "does not verify"},
		{"crit header", es(header("crit", []string{"exp"})), nil, "crit"},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := f.validate(t, request(tok, c.proof))
			claim := ""
			if c.mismatch != nil {
				claim = c.mismatch.Claim
			}
			checkProof(t, got, service.ReasonInvalidProof, claim)
			if c.mismatch != nil && (c.mismatch.Expected != nil || c.mismatch.Actual != nil) {
				checkMismatch(t, got.Mismatch, c.mismatch)
			}
			if !strings.Contains(got.Message, c.message) {
				t.Fatalf("message %q does not say %q", got.Message, c.message)
			}
		})
	}
	// typ is a media type: compared without case, "application/" optional.
	checkVerdict(t, f.validate(t, request(tok, es(header("typ", "application/DPoP+JWT")))), service.ReasonValid)
}

// Hostile proofs: each is INVALID_PROOF with a bounded message, never a
// panic; the token's claims still come back.
func TestDPoP_HostileProofs(t *testing.T) {
	f := newDPoPFixture(t, testkit.EdKey(t, ""), nil)
	tok := f.token(t)
	good := f.proof(t, tok)
	p := segments(good)
	ed := func(header, payload []byte) string {
		return testkit.Sign(t, header, payload, "EdDSA", f.client.Priv)
	}
	stdBase64 := ""
	for stdBase64 == "" { // a proof with a '-' or '_' in it, in standard base64
		if p := f.proof(t, tok); strings.ContainsAny(p, "-_") {
			stdBase64 = strings.NewReplacer("-", "+", "_", "/").Replace(p)
		}
	}
	hdr := mustJSON(t, f.client.ProofHeader())
	body := mustJSON(t, testkit.ProofClaims(tok, dpopMethod, dpopURI, f.clock.Now()))
	for _, c := range []struct{ name, proof string }{
		{"9 KiB", p[0] + "." + strings.Repeat("A", 9<<10) + "." + p[2]},
		{"1 MiB", strings.Repeat("A", 1<<20)},
		{"two segments", p[0] + "." + p[1]},
		{"four segments", good + ".AAAA"},
		{"five segments (JWE)", p[0] + ".AA.AA.AA.AA"},
		{"JSON serialization", `{"payload":"` + p[1] + `","protected":"` + p[0] + `","signature":"` + p[2] + `"}`},
		{"two proofs", good + ", " + good},
		{"two proofs, no space", good + "," + good},
		{"padding", p[0] + "=." + p[1] + "." + p[2]},
		{"standard base64", stdBase64},
		{"empty signature", p[0] + "." + p[1] + "."},
		{"header not JSON", testkit.B64.EncodeToString([]byte("not json")) + "." + p[1] + "." + p[2]},
		{"duplicate header member", ed([]byte(strings.Replace(hdr, "{", `{"typ":"JWT",`, 1)), []byte(body))},
		{"duplicate claim", ed([]byte(hdr), []byte(strings.Replace(body, "{", `{"htm":"POST",`, 1)))},
		{"deep JSON", ed([]byte(hdr), []byte(strings.TrimSuffix(body, "}")+`,"x":`+strings.Repeat("[", 100)+strings.Repeat("]", 100)+"}"))},
		{"control characters", "\x00\x1b[31m" + good},
		{"a token as proof", tok},
		{"random", "r4nd0m"},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := f.validate(t, request(tok, c.proof))
			checkProof(t, got, service.ReasonInvalidProof, claimOf(got.Mismatch))
			if len(got.Message) > 600 || strings.ContainsAny(got.Message, "\x00\x1b") {
				t.Fatalf("message not bounded or not escaped (%d bytes): %q", len(got.Message), got.Message)
			}
		})
	}
}

// claimOf is m's claim, "" for none.
func claimOf(m *service.Mismatch) string {
	if m == nil {
		return ""
	}
	return m.Claim
}

// The proof's violation comes right after WRONG_TOKEN_TYPE and before
// EXPIRED…INSUFFICIENT_SCOPE; a good proof with a refused token is not
// checked for replay (the store is not asked, the proof not recorded).
func TestDPoP_Order(t *testing.T) {
	store := &countingStore{inner: service.NewMemoryReplayStore(100, nil)}
	f := newDPoPFixture(t, testkit.ECKey(t, "", elliptic.P256()), func(c *service.Config) { c.Issuers[0].TokenType = "at+jwt" }, service.WithReplayStore(store))
	atJWT := func(claims map[string]any) string {
		return testkit.Sign(t, map[string]any{"alg": "ES256", "kid": "iss-1", "typ": "at+jwt"}, claims, "ES256", f.issKey.Priv)
	}
	expired := atJWT(testkit.Claims(f.iss.URL(), "cnf", f.client.Cnf(), "exp", testkit.Now.Add(-time.Hour).Unix()))

	got := f.validate(t, request(expired, f.proof(t, expired, "htm", "POST")))
	checkProof(t, got, service.ReasonInvalidProof, "htm")
	if want := []service.Reason{service.ReasonInvalidProof, service.ReasonExpired}; !slices.Equal(reasons(got.Violations), want) {
		t.Fatalf("violations %v, want %v", reasons(got.Violations), want)
	}

	wrongType := f.token(t, "exp", testkit.Now.Add(-time.Hour).Unix(), "scope", "other") // typ JWT
	r := request(wrongType, f.proof(t, wrongType, "htu", "https://api.example.com/other"))
	r.Scopes = []string{"users.read"}
	got = f.validate(t, r)
	want := []service.Reason{service.ReasonWrongTokenType, service.ReasonInvalidProof, service.ReasonExpired, service.ReasonInsufficientScope}
	if !slices.Equal(reasons(got.Violations), want) {
		t.Fatalf("violations %v, want %v", reasons(got.Violations), want)
	}
	checkVerdict(t, got, service.ReasonWrongTokenType)
	checkMismatch(t, got.Violations[1].Mismatch, &service.Mismatch{Claim: "htu", Expected: []string{dpopURI}, Actual: []string{"https://api.example.com/other"}})

	// A good proof with an expired token: EXPIRED alone, no replay check.
	proof := f.proof(t, expired)
	for range 2 {
		got = f.validate(t, request(expired, proof))
		if want := []service.Reason{service.ReasonExpired}; !slices.Equal(reasons(got.Violations), want) {
			t.Fatalf("violations %v, want %v", reasons(got.Violations), want)
		}
	}
	if n := store.calls.Load(); n != 0 {
		t.Fatalf("the replay store was asked %d times about refused requests", n)
	}
	good := atJWT(testkit.Claims(f.iss.URL(), "cnf", f.client.Cnf()))
	checkVerdict(t, f.validate(t, request(good, f.proof(t, good))), service.ReasonValid)
	if n := store.calls.Load(); n != 1 {
		t.Fatalf("the replay store was asked %d times about one valid request", n)
	}
}

// A token answered from the verified-token cache still needs a new proof
// on every call: proofs are never cached, and each is accepted once.
func TestDPoP_CachedTokenNeedsFreshProof(t *testing.T) {
	f := newDPoPFixture(t, testkit.ECKey(t, "", elliptic.P256()), nil)
	tok := f.token(t)
	first := f.proof(t, tok)
	checkVerdict(t, f.validate(t, request(tok, first)), service.ReasonValid)
	hits := f.v.CacheStats().Hits

	got := f.validate(t, request(tok, first))
	checkProof(t, got, service.ReasonInvalidProof, "jti")
	if !strings.Contains(got.Message, "already used") {
		t.Fatalf("message %q", got.Message)
	}
	checkProof(t, f.validate(t, request(tok, "")), service.ReasonProofMissing, "")
	checkProof(t, f.v.Validate(f.ctx, tok, "api/users", nil), service.ReasonProofMissing, "scheme")
	checkProof(t, f.validate(t, request(tok, f.proof(t, tok, "htm", "PUT"))), service.ReasonInvalidProof, "htm")
	for range 3 {
		checkVerdict(t, f.validate(t, request(tok, f.proof(t, tok))), service.ReasonValid)
	}
	if got := f.v.CacheStats().Hits - hits; got != 7 {
		t.Fatalf("%d cache hits, want 7: the token was not answered from the cache", got)
	}
}

// A proof is accepted once within its window; the same jti under another
// key is another proof. Once the window has passed, the proof is refused
// for its iat (and the store has dropped it).
func TestDPoP_Replay(t *testing.T) {
	clock := testkit.NewClock()
	store := service.NewMemoryReplayStore(100, clock.Now)
	f := newDPoPFixture(t, testkit.ECKey(t, "", elliptic.P256()), nil, service.WithClock(clock.Now), service.WithReplayStore(store))
	f.clock = clock

	tok := f.token(t)
	proof := f.proof(t, tok, "jti", "same-jti")
	checkVerdict(t, f.validate(t, request(tok, proof)), service.ReasonValid)
	f.clock.Advance(30 * time.Second)
	got := f.validate(t, request(tok, proof))
	checkProof(t, got, service.ReasonInvalidProof, "jti")
	checkMismatch(t, got.Mismatch, &service.Mismatch{Claim: "jti", Expected: []string{"a jti not seen within the last 1m0s"}, Actual: []string{"same-jti"}})

	// Another client, its own token, the same jti: not a replay.
	otherKey := testkit.EdKey(t, "")
	otherTok := f.issKey.Token(t, testkit.Claims(f.iss.URL(), "cnf", otherKey.Cnf()))
	otherProof := otherKey.Proof(t, otherTok, dpopMethod, dpopURI, clock.Now(), "jti", "same-jti")
	checkVerdict(t, f.validate(t, request(otherTok, otherProof)), service.ReasonValid)
	if store.Len() != 2 {
		t.Fatalf("%d entries, want 2", store.Len())
	}

	// Past the window the proof is refused for its iat, and its entry goes.
	f.clock.Advance(31 * time.Second)
	checkProof(t, f.validate(t, request(tok, proof)), service.ReasonInvalidProof, "iat")
	checkVerdict(t, f.validate(t, request(tok, f.proof(t, tok))), service.ReasonValid)
	if store.Len() != 2 { // the first proof's entry dropped, the new one kept
		t.Fatalf("%d entries after the window, want 2", store.Len())
	}
}

// The memory store: entries expire by the clock and are evicted before a
// new one is refused; full of live entries it refuses (an error) and does
// not grow; of concurrent calls with one key exactly one is fresh.
func TestMemoryReplayStore(t *testing.T) {
	ctx := testkit.Context(t)
	clock := testkit.NewClock()
	m := service.NewMemoryReplayStore(3, clock.Now)
	remember := func(key string, ttl time.Duration) (bool, error) {
		return m.Remember(ctx, key, clock.Now().Add(ttl))
	}
	for _, k := range []string{"a", "b", "c"} {
		if fresh, err := remember(k, time.Minute); !fresh || err != nil {
			t.Fatalf("%s: fresh %v, %v", k, fresh, err)
		}
	}
	if fresh, err := remember("a", time.Minute); fresh || err != nil {
		t.Fatalf("a again: fresh %v, %v", fresh, err)
	}
	fresh, err := remember("d", time.Minute)
	if fresh || err == nil || !strings.Contains(err.Error(), "replay_max_entries") {
		t.Fatalf("full: fresh %v, err %v", fresh, err)
	}
	if m.Len() != 3 {
		t.Fatalf("%d entries, want 3: the store grew", m.Len())
	}
	clock.Advance(time.Minute) // a, b, c expire (an entry lives until, not at, its expiry)
	if fresh, err := remember("d", 2*time.Minute); !fresh || err != nil {
		t.Fatalf("d after the window: fresh %v, %v", fresh, err)
	}
	if m.Len() != 1 {
		t.Fatalf("%d entries, want 1: expired entries were not evicted", m.Len())
	}
	if fresh, err := remember("a", time.Minute); !fresh || err != nil {
		t.Fatalf("a after its expiry: fresh %v, %v", fresh, err)
	}
	if fresh, _ := m.Remember(ctx, "late", clock.Now()); !fresh || m.Len() != 2 {
		t.Fatalf("an expired key: fresh %v, %d entries (want true, 2: not kept)", fresh, m.Len())
	}

	var wg sync.WaitGroup
	var freshCount atomic.Int32
	for range 64 {
		wg.Go(func() {
			if fresh, err := remember("race", time.Minute); err != nil {
				t.Error(err)
			} else if fresh {
				freshCount.Add(1)
			}
		})
	}
	wg.Wait()
	if n := freshCount.Load(); n != 1 {
		t.Fatalf("%d of 64 concurrent calls were fresh, want 1", n)
	}
}

// The default store is bounded by dpop.replay_max_entries: full of live
// proofs it fails closed (ErrProofUnchecked, no verdict), and accepts
// proofs again once the window has passed.
func TestDPoP_DefaultStoreBounded(t *testing.T) {
	f := newDPoPFixture(t, testkit.ECKey(t, "", elliptic.P256()), func(c *service.Config) { c.DPoP.ReplayMaxEntries = 2 })
	tok := f.token(t)
	for range 2 {
		checkVerdict(t, f.validate(t, request(tok, f.proof(t, tok))), service.ReasonValid)
	}
	got, err := f.v.ValidateRequest(f.ctx, request(tok, f.proof(t, tok)))
	if !errors.Is(err, service.ErrProofUnchecked) || got.Reason != service.ReasonUnspecified || got.Claims != nil {
		t.Fatalf("full store: %v, %v", got.Reason, err)
	}
	if !strings.Contains(err.Error(), "replay_max_entries") {
		t.Fatalf("the error does not say why: %v", err)
	}
	// A bearer token never asks the store.
	checkVerdict(t, f.v.Validate(f.ctx, f.issKey.Token(t, testkit.Claims(f.iss.URL())), "api/users", nil), service.ReasonValid)
	f.clock.Advance(61 * time.Second)
	checkVerdict(t, f.validate(t, request(tok, f.proof(t, tok))), service.ReasonValid)
}

// A store that does not answer: no verdict, an error wrapping
// ErrProofUnchecked and the store's error; observers see no verdict.
func TestDPoP_FailingStore(t *testing.T) {
	down := errors.New("connection refused")
	obs := &verdictCounter{}
	f := newDPoPFixture(t, testkit.EdKey(t, ""), nil, service.WithReplayStore(failingStore{down}), service.WithObserver(obs))
	tok := f.token(t)
	got, err := f.v.ValidateRequest(f.ctx, request(tok, f.proof(t, tok)))
	if !errors.Is(err, service.ErrProofUnchecked) || !errors.Is(err, down) {
		t.Fatalf("err %v", err)
	}
	if got.Reason != service.ReasonUnspecified || got.Claims != nil || got.Violations != nil {
		t.Fatalf("a verdict with the error: %+v", got)
	}
	if n := obs.n.Load(); n != 0 {
		t.Fatalf("%d verdicts observed, want 0", n)
	}
	// A bad proof needs no store: a verdict.
	checkProof(t, f.validate(t, request(tok, f.proof(t, tok, "htm", "POST"))), service.ReasonInvalidProof, "htm")
	checkVerdict(t, f.v.Validate(f.ctx, f.issKey.Token(t, testkit.Claims(f.iss.URL())), "api/users", nil), service.ReasonValid)
	if n := obs.n.Load(); n != 2 {
		t.Fatalf("%d verdicts observed, want 2", n)
	}
}

// An opaque token whose introspection answer has cnf.jkt is DPoP-bound.
// An answer whose cnf has the wrong type is unusable (ISSUER_UNAVAILABLE),
// as an answer with an exp of the wrong type is.
func TestDPoP_OpaqueToken(t *testing.T) {
	s := testkit.NewIntrospectionServer(t)
	f := newDPoPFixture(t, testkit.ECKey(t, "", elliptic.P256()), func(c *service.Config) { c.Issuers = []service.IssuerConfig{s.Config(t)} })
	tok := "opaque-" + testkit.JTI()
	s.Activate(tok, testkit.Claims(s.URL(), "cnf", f.client.Cnf()))
	checkProof(t, f.v.Validate(f.ctx, tok, "api/users", nil), service.ReasonProofMissing, "scheme")
	got := f.validate(t, request(tok, f.proof(t, tok)))
	checkVerdict(t, got, service.ReasonValid)
	if got.Claims.TokenFormat != "opaque" || got.Claims.Confirmation.JKT != f.client.Thumbprint() {
		t.Fatalf("claims %+v", got.Claims)
	}
	checkProof(t, f.validate(t, request(tok, f.proof(t, "another token"))), service.ReasonInvalidProof, "ath")

	for _, cnf := range []any{"jkt", map[string]any{"jkt": 42}, map[string]any{"jkt": "short"}} {
		bad := "opaque-" + testkit.JTI()
		s.Activate(bad, testkit.Claims(s.URL(), "cnf", cnf))
		got := f.validate(t, request(bad, f.proof(t, bad)))
		checkVerdict(t, got, service.ReasonIssuerUnavailable)
		if !strings.Contains(got.Message, "cnf") {
			t.Fatalf("message %q does not name cnf", got.Message)
		}
	}
}

// cnf is read strictly: a cnf or a member of the wrong type, or a
// thumbprint that is not one, is MALFORMED; other members are ignored.
func TestDPoP_CnfParsing(t *testing.T) {
	f := newDPoPFixture(t, testkit.ECKey(t, "", elliptic.P256()), nil)
	jkt := f.client.Thumbprint()
	for _, c := range []struct {
		name string
		cnf  any
		want service.Reason
	}{
		{"a string", jkt, service.ReasonMalformed},
		{"an array", []any{jkt}, service.ReasonMalformed},
		{"null", nil, service.ReasonMalformed},
		{"jkt a number", map[string]any{"jkt": 1}, service.ReasonMalformed},
		{"jkt null", map[string]any{"jkt": nil}, service.ReasonMalformed},
		{"jkt empty", map[string]any{"jkt": ""}, service.ReasonMalformed},
		{"jkt 42 characters", map[string]any{"jkt": jkt[:42]}, service.ReasonMalformed},
		{"jkt padded", map[string]any{"jkt": jkt + "="}, service.ReasonMalformed},
		{"jkt standard base64", map[string]any{"jkt": "+" + jkt[1:]}, service.ReasonMalformed},
		{"jkt with a line break", map[string]any{"jkt": jkt[:20] + "\n" + jkt[21:]}, service.ReasonMalformed},
		{"x5t#S256 a number", map[string]any{"x5t#S256": 1}, service.ReasonMalformed},
		{"x5t#S256 hex", map[string]any{"x5t#S256": strings.Repeat("ab", 32)}, service.ReasonMalformed},
		{"only jwk", map[string]any{"jwk": f.client.JWK()}, service.ReasonValid},
		{"empty", map[string]any{}, service.ReasonValid},
	} {
		t.Run(c.name, func(t *testing.T) {
			tok := f.issKey.Token(t, testkit.Claims(f.iss.URL(), "cnf", c.cnf))
			got := f.v.Validate(f.ctx, tok, "api/users", nil)
			checkVerdict(t, got, c.want)
			if c.want == service.ReasonMalformed && !strings.Contains(got.Message, "cnf") {
				t.Fatalf("message %q does not name cnf", got.Message)
			}
		})
	}
}

// A certificate-bound token (cnf x5t#S256) needs the client certificate it
// names; a token bound to both a key and a certificate needs both.
func TestDPoP_CertificateBound(t *testing.T) {
	f := newDPoPFixture(t, testkit.ECKey(t, "", elliptic.P256()), nil)
	ca := testkit.NewCA(t)
	certPEM, _ := ca.Issue(t, 7, x509.ExtKeyUsageClientAuth)
	cert := testkit.CertThumbprint(pemDER(t, certPEM))
	otherPEM, _ := ca.Issue(t, 8, x509.ExtKeyUsageClientAuth)
	other := testkit.CertThumbprint(pemDER(t, otherPEM))
	tok := f.issKey.Token(t, testkit.Claims(f.iss.URL(), "cnf", map[string]any{"x5t#S256": cert}))
	bearer := func(cert string) *service.Request {
		return &service.Request{Token: tok, Audience: "api/users", ClientCertificateSHA256: cert}
	}
	got := f.validate(t, bearer(cert))
	checkVerdict(t, got, service.ReasonValid)
	if got.Claims.Confirmation != (service.Confirmation{X5TS256: cert}) {
		t.Fatalf("confirmation %+v", got.Claims.Confirmation)
	}
	got = f.validate(t, bearer(""))
	checkProof(t, got, service.ReasonProofMissing, "x5t#S256")
	if !strings.Contains(got.Hint, "mutual TLS") {
		t.Fatalf("hint %q", got.Hint)
	}
	got = f.validate(t, bearer(other))
	checkProof(t, got, service.ReasonInvalidProof, "x5t#S256")
	checkMismatch(t, got.Mismatch, &service.Mismatch{Claim: "x5t#S256", Expected: []string{cert}, Actual: []string{other}})
	// The DPoP scheme: the token is not DPoP-bound.
	r := bearer(cert)
	r.Scheme = "DPoP"
	checkProof(t, f.validate(t, r), service.ReasonInvalidProof, "jkt")

	both := f.issKey.Token(t, testkit.Claims(f.iss.URL(), "cnf", map[string]any{"jkt": f.client.Thumbprint(), "x5t#S256": cert}))
	r = request(both, f.proof(t, both))
	r.ClientCertificateSHA256 = cert
	checkVerdict(t, f.validate(t, r), service.ReasonValid)
	r = request(both, f.proof(t, both))
	r.ClientCertificateSHA256 = other
	checkProof(t, f.validate(t, r), service.ReasonInvalidProof, "x5t#S256")
	r = request(both, "")
	r.ClientCertificateSHA256 = cert
	checkProof(t, f.validate(t, r), service.ReasonProofMissing, "")
	r = request(both, f.proof(t, both))
	checkProof(t, f.validate(t, r), service.ReasonProofMissing, "x5t#S256")
}

// A request whose method or URI the caller did not give: the proof cannot
// be checked, and is refused (not the client's fault, says the hint).
func TestDPoP_RequestWithoutMethodOrURI(t *testing.T) {
	f := newDPoPFixture(t, testkit.ECKey(t, "", elliptic.P256()), nil)
	tok := f.token(t)
	for _, c := range []struct {
		name, method, uri, claim string
	}{
		{"no method", "", dpopURI, "htm"},
		{"no URI", dpopMethod, "", "htu"},
		{"a path only", dpopMethod, "/invoices", "htu"},
		{"another scheme", dpopMethod, "ftp://api.example.com/invoices", "htu"},
	} {
		r := request(tok, f.proof(t, tok))
		r.HTTPMethod, r.HTTPURI = c.method, c.uri
		got := f.validate(t, r)
		checkProof(t, got, service.ReasonInvalidProof, c.claim)
		if !strings.Contains(got.Hint, "not the client's fault") {
			t.Fatalf("%s: hint %q", c.name, got.Hint)
		}
	}
	// The request's URI may carry a query: it is not compared.
	r := request(tok, f.proof(t, tok))
	r.HTTPURI = dpopURI + "?page=3"
	checkVerdict(t, f.validate(t, r), service.ReasonValid)
}

// countingStore counts the calls to a store.
type countingStore struct {
	inner service.ReplayStore
	calls atomic.Int64
}

func (s *countingStore) Remember(ctx context.Context, key string, expires time.Time) (bool, error) {
	s.calls.Add(1)
	return s.inner.Remember(ctx, key, expires)
}

// failingStore never answers.
type failingStore struct{ err error }

func (s failingStore) Remember(context.Context, string, time.Time) (bool, error) { return false, s.err }

// verdictCounter counts observed verdicts.
type verdictCounter struct{ n atomic.Int64 }

func (o *verdictCounter) ObserveVerdict(service.VerdictEvent) { o.n.Add(1) }

func pemDER(t testing.TB, p []byte) []byte {
	t.Helper()
	b, _ := pem.Decode(p)
	if b == nil {
		t.Fatal("not PEM")
	}
	return b.Bytes
}
