package service_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"hash"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/usher-dev/usher/service"
)

// testNow is the clock of every validator built by newValidator.
var testNow = time.Unix(1_760_000_000, 0).UTC()

var b64 = base64.RawURLEncoding

// testContext bounds a test: it ends with the test or after 30 s.
func testContext(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// testKey is a signing key and what its JWK publishes.
type testKey struct {
	kid    string
	alg    string // the alg tokens signed with it name: RS256, ES256, ES384, EdDSA
	jwkAlg string // "alg" published in the JWK ("" for none)
	use    string // "use" published in the JWK ("" for none)
	priv   crypto.Signer
}

func newRSAKey(t testing.TB, kid string) *testKey { return newRSAKeyBits(t, kid, 2048) }

func newRSAKeyBits(t testing.TB, kid string, bits int) *testKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		t.Fatal(err)
	}
	return &testKey{kid: kid, alg: "RS256", priv: k}
}

func newECKey(t testing.TB, kid string, curve elliptic.Curve) *testKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(curve, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	alg := map[elliptic.Curve]string{elliptic.P256(): "ES256", elliptic.P384(): "ES384", elliptic.P521(): "ES512"}[curve]
	return &testKey{kid: kid, alg: alg, priv: k}
}

func newEdKey(t testing.TB, kid string) *testKey {
	t.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &testKey{kid: kid, alg: "EdDSA", priv: k}
}

// like returns a fresh key of the same type and alg, under kid.
func (k *testKey) like(t testing.TB, kid string) *testKey {
	t.Helper()
	switch p := k.priv.(type) {
	case *rsa.PrivateKey:
		return newRSAKeyBits(t, kid, p.N.BitLen())
	case *ecdsa.PrivateKey:
		return newECKey(t, kid, p.Curve)
	default:
		return newEdKey(t, kid)
	}
}

// jwk is the public JWK of k.
func (k *testKey) jwk() map[string]any {
	m := map[string]any{}
	switch p := k.priv.Public().(type) {
	case *rsa.PublicKey:
		m["kty"], m["n"], m["e"] = "RSA", b64.EncodeToString(p.N.Bytes()), b64.EncodeToString(big.NewInt(int64(p.E)).Bytes())
	case *ecdsa.PublicKey:
		pt, err := p.Bytes()
		if err != nil {
			panic(err)
		}
		n := (len(pt) - 1) / 2
		m["kty"], m["crv"], m["x"], m["y"] = "EC", p.Curve.Params().Name, b64.EncodeToString(pt[1:1+n]), b64.EncodeToString(pt[1+n:])
	case ed25519.PublicKey:
		m["kty"], m["crv"], m["x"] = "OKP", "Ed25519", b64.EncodeToString(p)
	}
	if k.kid != "" {
		m["kid"] = k.kid
	}
	if k.jwkAlg != "" {
		m["alg"] = k.jwkAlg
	}
	if k.use != "" {
		m["use"] = k.use
	}
	return m
}

// jwks is a JWKS document; each element is a *testKey or a raw JWK map.
func jwks(keys ...any) []byte {
	set := []any{}
	for _, k := range keys {
		if tk, ok := k.(*testKey); ok {
			k = tk.jwk()
		}
		set = append(set, k)
	}
	b, err := json.Marshal(map[string]any{"keys": set})
	if err != nil {
		panic(err)
	}
	return b
}

// token is a token signed by k with the header {"alg","kid","typ":"JWT"}.
func (k *testKey) token(t testing.TB, claims map[string]any) string {
	t.Helper()
	return sign(t, map[string]any{"alg": k.alg, "kid": k.kid, "typ": "JWT"}, claims, k.alg, k.priv)
}

// sign encodes header and payload (a value marshalled to JSON, or []byte used
// as is) and signs "h.p" under alg with key: *rsa.PrivateKey, *ecdsa.PrivateKey,
// ed25519.PrivateKey or []byte (HMAC).
func sign(t testing.TB, header, payload any, alg string, key any) string {
	t.Helper()
	input := segment(t, header) + "." + segment(t, payload)
	return input + "." + b64.EncodeToString(signature(t, alg, key, []byte(input)))
}

func segment(t testing.TB, v any) string {
	t.Helper()
	if b, ok := v.([]byte); ok {
		return b64.EncodeToString(b)
	}
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b64.EncodeToString(b)
}

func signature(t testing.TB, alg string, key any, input []byte) []byte {
	t.Helper()
	hashes := map[byte]crypto.Hash{'2': crypto.SHA256, '3': crypto.SHA384, '5': crypto.SHA512}
	var h crypto.Hash
	if len(alg) == 5 {
		h = hashes[alg[2]]
	}
	digest := func() []byte {
		if h == 0 {
			t.Fatalf("sign: no hash for alg %q", alg)
		}
		d := h.New()
		d.Write(input)
		return d.Sum(nil)
	}
	var sig []byte
	var err error
	switch k := key.(type) {
	case *rsa.PrivateKey:
		if alg[0] == 'P' {
			sig, err = rsa.SignPSS(rand.Reader, k, h, digest(), &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
		} else {
			sig, err = rsa.SignPKCS1v15(nil, k, h, digest())
		}
	case *ecdsa.PrivateKey:
		r, s, err2 := ecdsa.Sign(rand.Reader, k, digest())
		if err2 != nil {
			t.Fatal(err2)
		}
		n := (k.Curve.Params().BitSize + 7) / 8
		sig = make([]byte, 2*n)
		r.FillBytes(sig[:n])
		s.FillBytes(sig[n:])
	case ed25519.PrivateKey:
		sig = ed25519.Sign(k, input)
	case []byte:
		m := hmac.New(map[crypto.Hash]func() hash.Hash{crypto.SHA256: sha256.New, crypto.SHA384: sha512.New384, crypto.SHA512: sha512.New}[h], k)
		m.Write(input)
		sig = m.Sum(nil)
	default:
		t.Fatalf("sign: key of type %T", key)
	}
	if err != nil {
		t.Fatal(err)
	}
	return sig
}

// absent, as a claim value in claims(), removes the claim.
var absent = &struct{}{}

// claims is a valid payload of iss for api/users at testNow, changed by kv pairs.
func claims(iss string, kv ...any) map[string]any {
	m := map[string]any{
		"iss":       iss,
		"sub":       "user-42",
		"aud":       "api/users",
		"exp":       testNow.Add(time.Hour).Unix(),
		"iat":       testNow.Add(-time.Minute).Unix(),
		"scope":     "users.read users.write",
		"client_id": "frontend",
		"jti":       "jti-1",
	}
	for i := 0; i < len(kv); i += 2 {
		if kv[i+1] == absent {
			delete(m, kv[i].(string))
		} else {
			m[kv[i].(string)] = kv[i+1]
		}
	}
	return m
}

// testIssuer is an issuer's JWKS endpoint (and OIDC discovery document) on
// loopback, whose key set and health the test controls.
type testIssuer struct {
	srv      *httptest.Server
	requests atomic.Int64 // GETs of /jwks.json
	failing  atomic.Bool  // answer 503 on /jwks.json

	mu              sync.Mutex
	body            []byte // the JWKS served
	discoveryIssuer string // the discovery document's issuer; "" for the server's URL
}

func newTestIssuer(t testing.TB, keys ...*testKey) *testIssuer {
	t.Helper()
	ti := &testIssuer{}
	ti.publish(keys...)
	ti.srv = httptest.NewServer(http.HandlerFunc(ti.serve))
	t.Cleanup(ti.srv.Close)
	return ti
}

func (ti *testIssuer) serve(w http.ResponseWriter, r *http.Request) {
	ti.mu.Lock()
	body, iss := ti.body, ti.discoveryIssuer
	ti.mu.Unlock()
	switch r.URL.Path {
	case "/jwks.json":
		ti.requests.Add(1)
		if ti.failing.Load() {
			http.Error(w, "unavailable", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(body)
	case "/.well-known/openid-configuration":
		if iss == "" {
			iss = ti.URL()
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"issuer": iss, "jwks_uri": ti.JWKSURI()})
	default:
		http.NotFound(w, r)
	}
}

func (ti *testIssuer) URL() string     { return ti.srv.URL }
func (ti *testIssuer) JWKSURI() string { return ti.srv.URL + "/jwks.json" }

// publish replaces the served key set (a rotation).
func (ti *testIssuer) publish(keys ...*testKey) {
	ks := make([]any, len(keys))
	for i, k := range keys {
		ks[i] = k
	}
	ti.serveRaw(jwks(ks...))
}

func (ti *testIssuer) serveRaw(body []byte) {
	ti.mu.Lock()
	ti.body = body
	ti.mu.Unlock()
}

// config trusts this issuer through its jwks_uri.
func (ti *testIssuer) config(cooldown time.Duration) service.IssuerConfig {
	return service.IssuerConfig{Issuer: ti.URL(), JWKSURI: ti.JWKSURI(), UnknownKIDCooldown: service.Duration(cooldown)}
}

// testAudiences is the audiences registry of every test validator.
var testAudiences = []service.AudienceConfig{{Audience: "api/users", Name: "Users API"}, {Audience: "api/invoices", Name: "Invoices API"}}

// newValidator builds a validator over issuers with the clock at testNow.
func newValidator(t testing.TB, ctx context.Context, issuers ...service.IssuerConfig) *service.Validator {
	t.Helper()
	cfg := &service.Config{Issuers: issuers, Audiences: slices.Clone(testAudiences)}
	v, err := service.NewValidator(ctx, cfg, service.WithClock(func() time.Time { return testNow }), service.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// writeJWKS writes a key set to a temporary file and returns its path.
func writeJWKS(t testing.TB, keys ...any) string {
	t.Helper()
	return writeFile(t, jwks(keys...))
}

// writeFile writes body to a temporary file and returns its path.
func writeFile(t testing.TB, body []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "jwks.json")
	if err := os.WriteFile(path, body, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// closedURL is a loopback http URL where nothing listens.
func closedURL(t testing.TB) string {
	t.Helper()
	srv := httptest.NewServer(http.NotFoundHandler())
	u := srv.URL
	srv.Close()
	return u
}

// poll calls cond until it is true or ctx ends.
func poll(ctx context.Context, t testing.TB, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("%s: not reached before the deadline", what)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// checkMismatch compares a Mismatch field by field (nil and empty slices alike).
func checkMismatch(t testing.TB, got, want *service.Mismatch) {
	t.Helper()
	if got == nil {
		t.Fatalf("mismatch = nil, want %+v", *want)
	}
	if got.Claim != want.Claim || !slices.Equal(got.Expected, want.Expected) || !slices.Equal(got.Actual, want.Actual) {
		t.Fatalf("mismatch = %+v, want %+v", *got, *want)
	}
}

// verified reports whether a verdict with this reason comes from a token whose signature verified.
func verified(r service.Reason) bool {
	return r == service.ReasonValid || (r >= service.ReasonWrongTokenType && r <= service.ReasonInsufficientScope)
}

// checkVerdict asserts the reason, and that claims are present exactly when the signature verified.
func checkVerdict(t testing.TB, v service.Verdict, want service.Reason) {
	t.Helper()
	if v.Reason != want {
		t.Fatalf("reason = %v, want %v (message %q, hint %q)", v.Reason, want, v.Message, v.Hint)
	}
	if got := v.Claims != nil; got != verified(want) {
		t.Fatalf("claims set = %v, want %v for %v", got, verified(want), want)
	}
	if want != service.ReasonValid && (len(v.Violations) > 0) != verified(want) {
		t.Fatalf("violations = %v for %v: every failed check after a verified signature, none before", v.Violations, want)
	}
	if verified(want) && want != service.ReasonValid && v.Violations[0].Reason != want {
		t.Fatalf("violations[0] = %v, want %v", v.Violations[0].Reason, want)
	}
	if want == service.ReasonValid && (v.Hint != "" || len(v.Violations) > 0) {
		t.Fatalf("valid verdict with hint %q, violations %v", v.Hint, v.Violations)
	}
	if want != service.ReasonValid && (v.Message == "" || v.Hint == "") {
		t.Fatalf("rejection without message or hint: %+v", v)
	}
}

func reasons(vs []service.Violation) []service.Reason {
	out := make([]service.Reason, len(vs))
	for i, v := range vs {
		out[i] = v.Reason
	}
	return out
}

// withSig replaces the signature segment of tok.
func withSig(tok string, sig []byte) string {
	return tok[:strings.LastIndexByte(tok, '.')+1] + b64.EncodeToString(sig)
}

func segments(tok string) []string { return strings.Split(tok, ".") }

func mustDecode(t testing.TB, s string) []byte {
	t.Helper()
	b, err := b64.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustJSON(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// forceRefresh validates a token with an unknown kid until the issuer's key
// set was requested again (the refetch is rate-limited by the cooldown).
func forceRefresh(ctx context.Context, t testing.TB, v *service.Validator, ti *testIssuer, k *testKey) {
	t.Helper()
	before := ti.requests.Load()
	tok := sign(t, map[string]any{"alg": k.alg, "kid": "force-refresh"}, claims(ti.URL()), k.alg, k.priv)
	poll(ctx, t, "a refetch of the key set", func() bool {
		checkVerdict(t, v.Validate(ctx, tok, "api/users", nil), service.ReasonUnknownKey)
		return ti.requests.Load() > before
	})
}

func waitTried(ctx context.Context, t testing.TB, v *service.Validator) {
	t.Helper()
	if err := v.WaitTried(ctx); err != nil {
		t.Fatal(err)
	}
}

// syncBuffer is a log sink safe for concurrent writes.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
