package main

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"flag"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwk"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	usherv1 "github.com/usher-dev/usher/proto/usher/v1"
	"github.com/usher-dev/usher/service"
)

var update = flag.Bool("update", false, "rewrite testdata/guide/*.golden and the README's troubleshooting examples from the current code")

// guideNow is the clock of the troubleshooting guide's usher.
var guideNow = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)

const (
	prodIssuer    = "https://auth.example.com/"
	stagingIssuer = "https://auth.staging.example.com/"
)

// guideKey signs the guide's tokens by hand, so that every byte is chosen.
type guideKey struct {
	kid  string
	priv *rsa.PrivateKey
}

func (k guideKey) sign(t *testing.T, header map[string]any, claims map[string]any) string {
	t.Helper()
	enc := func(v any) string {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return base64.RawURLEncoding.EncodeToString(b)
	}
	input := enc(header) + "." + enc(claims)
	h := sha256.Sum256([]byte(input))
	sig, err := rsa.SignPKCS1v15(rand.Reader, k.priv, crypto.SHA256, h[:])
	if err != nil {
		t.Fatal(err)
	}
	return input + "." + base64.RawURLEncoding.EncodeToString(sig)
}

func (k guideKey) token(t *testing.T, kv ...any) string {
	t.Helper()
	c := map[string]any{
		"iss": prodIssuer, "sub": "svc-billing-ui", "aud": "api/users", "client_id": "billing-ui",
		"scope": "users.read", "iat": guideNow.Add(-10 * time.Minute).Unix(), "exp": guideNow.Add(50 * time.Minute).Unix(),
	}
	for i := 0; i < len(kv); i += 2 {
		if kv[i+1] == nil {
			delete(c, kv[i].(string))
		} else {
			c[kv[i].(string)] = kv[i+1]
		}
	}
	return k.sign(t, map[string]any{"alg": "RS256", "kid": k.kid, "typ": "at+jwt"}, c)
}

func newGuideKey(t *testing.T, kid string) guideKey {
	t.Helper()
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return guideKey{kid: kid, priv: priv}
}

func writeKeySet(t *testing.T, keys ...guideKey) string {
	t.Helper()
	set := jwk.NewSet()
	for _, k := range keys {
		pub, err := jwk.Import(&k.priv.PublicKey)
		if err != nil {
			t.Fatal(err)
		}
		_ = pub.Set(jwk.KeyIDKey, k.kid)
		_ = pub.Set(jwk.AlgorithmKey, "RS256")
		_ = set.AddKey(pub)
	}
	b, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "jwks.json")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// guideCase is one example of the troubleshooting guide: a token, what it
// was sent to, and the name of its block in the README.
type guideCase struct {
	name     string
	token    string
	audience string
	scopes   []string
	inspect  bool
}

// TestTroubleshootingGuide renders `usher validate` (and `usher inspect`)
// for one example of every reason through a real usher, compares each to
// its golden file, and checks that the README shows exactly that output.
// Run with -update after changing a message or a hint.
func TestTroubleshootingGuide(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	prod, staging := newGuideKey(t, "prod-2026-11"), newGuideKey(t, "staging-2026-11")
	cfg := &service.Config{
		Issuers: []service.IssuerConfig{
			{Issuer: prodIssuer, JWKSFile: writeKeySet(t, prod), TokenType: "at+jwt"},
			{Issuer: stagingIssuer, JWKSFile: writeKeySet(t, staging)},
			{Issuer: "https://auth.partner.example/", JWKSURI: "http://127.0.0.1:9/jwks.json", FetchTimeout: service.Duration(2 * time.Second)},
		},
		Audiences: []service.AudienceConfig{{Audience: "api/users", Name: "Users API"}, {Audience: "api/invoices", Name: "Invoices API"}},
	}
	v, err := service.NewValidator(ctx, cfg, service.WithClock(func() time.Time { return guideNow }), service.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	if err := v.WaitTried(ctx); err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	service.Register(ctx, gs, v, nil)
	go func() { _ = gs.Serve(lis) }()
	defer gs.Stop()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := usherv1.NewTokenServiceClient(conn)

	partner := newGuideKey(t, "p-1")
	cases := []guideCase{
		{name: "audience-mismatch", token: prod.token(t), audience: "api/invoices"},
		{name: "audience-near-miss", token: prod.token(t, "aud", "api/invoices/"), audience: "api/invoices"},
		{name: "id-token", token: prod.sign(t, map[string]any{"alg": "RS256", "kid": prod.kid, "typ": "JWT"}, map[string]any{
			"iss": prodIssuer, "sub": "user-7", "aud": "billing-ui", "azp": "billing-ui", "nonce": "n-0S6_WzA2Mj",
			"iat": guideNow.Add(-time.Minute).Unix(), "exp": guideNow.Add(time.Hour).Unix()}), audience: "api/invoices"},
		{name: "expired", token: prod.token(t, "aud", "api/invoices", "exp", guideNow.Add(-3*time.Minute).Unix()), audience: "api/invoices"},
		{name: "not-yet-valid", token: prod.token(t, "aud", "api/invoices", "iat", guideNow.Add(4*time.Minute).Unix()), audience: "api/invoices"},
		{name: "missing-claim", token: prod.token(t, "aud", "api/invoices", "exp", nil), audience: "api/invoices"},
		{name: "insufficient-scope", token: prod.token(t, "aud", "api/invoices", "scope", "invoices.read"), audience: "api/invoices", scopes: []string{"invoices.read", "invoices.write"}},
		{name: "unknown-key", token: staging.sign(t, map[string]any{"alg": "RS256", "kid": staging.kid, "typ": "at+jwt"}, map[string]any{
			"iss": prodIssuer, "aud": "api/invoices", "iat": guideNow.Add(-time.Minute).Unix(), "exp": guideNow.Add(time.Hour).Unix()}), audience: "api/invoices"},
		{name: "untrusted-issuer", token: prod.token(t, "iss", "https://auth.example.com"), audience: "api/users"},
		{name: "unsupported-algorithm", token: "eyJhbGciOiJub25lIn0." + base64.RawURLEncoding.EncodeToString([]byte(`{"iss":"https://auth.example.com/","aud":"api/users"}`)) + ".", audience: "api/users"},
		{name: "invalid-signature", token: tamperSignature(prod.token(t)), audience: "api/users"},
		{name: "malformed", token: "eyJhbGciOiJSU0EtT0FFUCIsImVuYyI6IkEyNTZHQ00ifQ.OKOawDo13gRp2ojaHV7LFpZcgV7T6DVZKTyKOMTYUmKoTCVJRgckCL9kiMT03JGe.48V1_ALb6US04U3b.5eym8TW_c8SuK0ltJ3rpYIzOeDQz7TALvtu6UG9oMo4vpzs9tX_EFShS8iB7j6jiSdiwkIr3ajwQzaBtQD_A.XFBoMYUZodetZdvTiFvSkQ", audience: "api/users"},
		{name: "keys-unavailable", token: partner.sign(t, map[string]any{"alg": "RS256", "kid": "p-1"}, map[string]any{"iss": "https://auth.partner.example/", "aud": "api/users"}), audience: "api/users"},
		{name: "valid", token: prod.token(t), audience: "api/users", scopes: []string{"users.read"}},
		{name: "inspect", token: prod.token(t), inspect: true},
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, gc := range cases {
		var out bytes.Buffer
		if gc.inspect {
			resp, err := c.InspectToken(ctx, &usherv1.InspectTokenRequest{Token: gc.token})
			if err != nil {
				t.Fatal(err)
			}
			printInspection(&out, resp, guideNow, false)
		} else {
			resp, err := c.ValidateToken(ctx, &usherv1.ValidateTokenRequest{Token: gc.token, ExpectedAudience: gc.audience, RequiredScopes: gc.scopes})
			if err != nil {
				t.Fatal(err)
			}
			printVerdict(&out, resp, guideNow, false)
		}
		got := out.String()
		golden := filepath.Join("testdata", "guide", gc.name+".golden")
		if *update {
			if err := os.MkdirAll(filepath.Dir(golden), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
				t.Fatal(err)
			}
			readme = replaceGuideBlock(t, readme, gc.name, got)
			continue
		}
		want, err := os.ReadFile(golden)
		if err != nil {
			t.Fatalf("%s: %v (run go test ./cmd/usher -run TestTroubleshootingGuide -update)", gc.name, err)
		}
		if got != string(want) {
			t.Errorf("%s: output differs from %s (run with -update if the change is intended):\n--- got\n%s--- want\n%s", gc.name, golden, got, want)
		}
		if block := guideBlock(readme, gc.name); block != got {
			t.Errorf("README.md's %q example is not what the code prints (run with -update):\n--- code\n%s--- README\n%s", gc.name, got, block)
		}
	}
	if *update {
		if err := os.WriteFile("../../README.md", readme, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// tamperSignature changes one signature byte, keeping base64url canonical.
func tamperSignature(tok string) string {
	i := strings.LastIndexByte(tok, '.') + 10
	c := byte('A')
	if tok[i] == 'A' {
		c = 'B'
	}
	return tok[:i] + string(c) + tok[i+1:]
}

func guideRE(name string) *regexp.Regexp {
	return regexp.MustCompile("(?s)(<!-- guide:" + regexp.QuoteMeta(name) + " -->\n```text\n)(.*?)(```\n)")
}

func guideBlock(readme []byte, name string) string {
	m := guideRE(name).FindSubmatch(readme)
	if m == nil {
		return "(no <!-- guide:" + name + " --> block)\n"
	}
	return string(m[2])
}

func replaceGuideBlock(t *testing.T, readme []byte, name, body string) []byte {
	t.Helper()
	re := guideRE(name)
	if !re.Match(readme) {
		t.Fatalf("README.md has no <!-- guide:%s --> block followed by a ```text fence", name)
	}
	return re.ReplaceAllFunc(readme, func(m []byte) []byte {
		sub := re.FindSubmatch(m)
		return []byte(string(sub[1]) + body + string(sub[3]))
	})
}
