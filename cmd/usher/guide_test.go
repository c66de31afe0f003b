package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"flag"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/usher-dev/usher/grpcapi"
	"github.com/usher-dev/usher/internal/testkit"
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

// guideToken is a token of prodIssuer signed by k, with the header
// {"alg":"RS256","kid":…,"typ":"at+jwt"} and the guide's claims, changed by
// name/value pairs (a value of testkit.Absent removes the claim).
func guideToken(t *testing.T, k *testkit.Key, kv ...any) string {
	t.Helper()
	c := map[string]any{
		"iss": prodIssuer, "sub": "svc-billing-ui", "aud": "api/users", "client_id": "billing-ui",
		"scope": "users.read", "iat": guideNow.Add(-10 * time.Minute).Unix(), "exp": guideNow.Add(50 * time.Minute).Unix(),
	}
	for i := 0; i < len(kv); i += 2 {
		if kv[i+1] == testkit.Absent {
			delete(c, kv[i].(string))
		} else {
			c[kv[i].(string)] = kv[i+1]
		}
	}
	return testkit.Sign(t, map[string]any{"alg": "RS256", "kid": k.KID, "typ": "at+jwt"}, c, "RS256", k.Priv)
}

// guideKey is an RSA key whose JWK publishes "alg": "RS256".
func guideKey(t *testing.T, kid string) *testkit.Key {
	t.Helper()
	k := testkit.RSAKey(t, kid)
	k.JWKAlg = "RS256"
	return k
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
	prod, staging := guideKey(t, "prod-2026-11"), guideKey(t, "staging-2026-11")
	cfg := &service.Config{
		Issuers: []service.IssuerConfig{
			{Issuer: prodIssuer, JWKSFile: testkit.WriteJWKS(t, prod), TokenType: "at+jwt"},
			{Issuer: stagingIssuer, JWKSFile: testkit.WriteJWKS(t, staging)},
			{Issuer: "https://auth.partner.example/", JWKSURI: "http://127.0.0.1:9/jwks.json", FetchTimeout: 2 * time.Second},
		},
		Audiences: []service.KnownAudience{{Audience: "api/users", Name: "Users API"}, {Audience: "api/invoices", Name: "Invoices API"}},
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
	grpcapi.Register(ctx, gs, v, nil)
	go func() { _ = gs.Serve(lis) }()
	defer gs.Stop()
	c := usherv1.NewTokenServiceClient(testkit.Dial(t, lis.Addr().String()))

	partner := guideKey(t, "p-1")
	cases := []guideCase{
		{name: "audience-mismatch", token: guideToken(t, prod), audience: "api/invoices"},
		{name: "audience-near-miss", token: guideToken(t, prod, "aud", "api/invoices/"), audience: "api/invoices"},
		{name: "id-token", token: testkit.Sign(t, map[string]any{"alg": "RS256", "kid": prod.KID, "typ": "JWT"}, map[string]any{
			"iss": prodIssuer, "sub": "user-7", "aud": "billing-ui", "azp": "billing-ui", "nonce": "n-0S6_WzA2Mj",
			"iat": guideNow.Add(-time.Minute).Unix(), "exp": guideNow.Add(time.Hour).Unix()}, "RS256", prod.Priv), audience: "api/invoices"},
		{name: "expired", token: guideToken(t, prod, "aud", "api/invoices", "exp", guideNow.Add(-3*time.Minute).Unix()), audience: "api/invoices"},
		{name: "not-yet-valid", token: guideToken(t, prod, "aud", "api/invoices", "iat", guideNow.Add(4*time.Minute).Unix()), audience: "api/invoices"},
		{name: "missing-claim", token: guideToken(t, prod, "aud", "api/invoices", "exp", testkit.Absent), audience: "api/invoices"},
		{name: "insufficient-scope", token: guideToken(t, prod, "aud", "api/invoices", "scope", "invoices.read"), audience: "api/invoices", scopes: []string{"invoices.read", "invoices.write"}},
		{name: "unknown-key", token: testkit.Sign(t, map[string]any{"alg": "RS256", "kid": staging.KID, "typ": "at+jwt"}, map[string]any{
			"iss": prodIssuer, "aud": "api/invoices", "iat": guideNow.Add(-time.Minute).Unix(), "exp": guideNow.Add(time.Hour).Unix()}, "RS256", staging.Priv), audience: "api/invoices"},
		{name: "untrusted-issuer", token: guideToken(t, prod, "iss", "https://auth.example.com"), audience: "api/users"},
		{name: "unsupported-algorithm", token: "eyJhbGciOiJub25lIn0." + base64.RawURLEncoding.EncodeToString([]byte(`{"iss":"https://auth.example.com/","aud":"api/users"}`)) + ".", audience: "api/users"},
		{name: "invalid-signature", token: tamperSignature(guideToken(t, prod)), audience: "api/users"},
		{name: "malformed", token: "eyJhbGciOiJSU0EtT0FFUCIsImVuYyI6IkEyNTZHQ00ifQ.OKOawDo13gRp2ojaHV7LFpZcgV7T6DVZKTyKOMTYUmKoTCVJRgckCL9kiMT03JGe.48V1_ALb6US04U3b.5eym8TW_c8SuK0ltJ3rpYIzOeDQz7TALvtu6UG9oMo4vpzs9tX_EFShS8iB7j6jiSdiwkIr3ajwQzaBtQD_A.XFBoMYUZodetZdvTiFvSkQ", audience: "api/users"},
		{name: "keys-unavailable", token: testkit.Sign(t, map[string]any{"alg": "RS256", "kid": "p-1"}, map[string]any{"iss": "https://auth.partner.example/", "aud": "api/users"}, "RS256", partner.Priv), audience: "api/users"},
		{name: "valid", token: guideToken(t, prod), audience: "api/users", scopes: []string{"users.read"}},
		{name: "inspect", token: guideToken(t, prod), inspect: true},
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
