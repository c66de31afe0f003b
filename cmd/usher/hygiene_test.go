package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/usher-dev/usher/internal/testkit"
	usherv1 "github.com/usher-dev/usher/proto/usher/v1"
	"github.com/usher-dev/usher/service"
)

var (
	grpcAddrRE    = regexp.MustCompile(`msg="usher listening" addr=(\S+)`)
	metricsAddrRE = regexp.MustCompile(`msg="metrics listening" addr=(\S+)`)
)

// waitLog polls the log until re matches, and returns its first group.
func waitLog(t *testing.T, ctx context.Context, logs func() string, re *regexp.Regexp) string {
	t.Helper()
	for {
		if m := re.FindStringSubmatch(logs()); m != nil {
			return m[1]
		}
		select {
		case <-ctx.Done():
			t.Fatalf("no log line matching %s before the deadline; log:\n%s", re, logs())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// TestServe_SecretsStayOutOfLogsAndMetrics runs `usher serve` at debug level
// with /metrics, validates and inspects tokens of every kind over gRPC, and
// checks that no token, no part of one that proves anything (payload,
// signature) and no key material shows up in the log or in /metrics, while
// the log does name each rejected token by its id.
func TestServe_SecretsStayOutOfLogsAndMetrics(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	key := testkit.RSAKey(t, "hyg-1")
	key.JWKAlg, key.Use = "RS256", "sig"
	attacker := testkit.RSAKey(t, "hyg-1")
	modulus := key.JWK()["n"].(string)
	issuer := testkit.NewIssuer(t, key)
	iss := issuer.URL()

	conf := fmt.Sprintf(`listen: "127.0.0.1:0"
metrics_listen: "127.0.0.1:0"
issuers:
  - issuer: %q
    jwks_uri: %q
audiences:
  - audience: api/users
    name: Users API
`, iss, issuer.JWKSURI())
	path := filepath.Join(t.TempDir(), "usher.yaml")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}

	var stdout, stderr testkit.SyncBuffer
	sctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- run(sctx, []string{"serve", "--config", path, "--log-level", "debug"}, strings.NewReader(""), &stdout, &stderr)
	}()
	defer func() {
		stop()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("serve returned %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Error("serve did not stop within 15s")
		}
	}()
	addr := waitLog(t, ctx, stderr.String, grpcAddrRE)
	metricsAddr := waitLog(t, ctx, stderr.String, metricsAddrRE)
	c, hc := dialUsher(t, addr)
	waitServing(t, hc)

	now := time.Now()
	claims := func(sub, aud string) map[string]any {
		return map[string]any{"iss": iss, "sub": sub, "aud": aud, "scope": "users.read", "iat": now.Unix(), "exp": now.Add(time.Hour).Unix(), "jti": sub}
	}
	header := map[string]any{"alg": "RS256", "kid": key.KID, "typ": "at+jwt"}
	sign := func(k *testkit.Key, claims map[string]any) string {
		return testkit.Sign(t, header, claims, "RS256", k.Priv)
	}
	valid := sign(key, claims("valid", "api/users"))
	wrongAud := sign(key, claims("wrong-aud", "api/invoices"))
	forged := sign(attacker, claims("forged", "api/users"))
	malformed := sign(key, claims("malformed", "api/users")) + ".x"

	call := func(tok string, want usherv1.Reason) {
		t.Helper()
		cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
		defer ccancel()
		resp, err := c.ValidateToken(cctx, &usherv1.ValidateTokenRequest{Token: "Bearer " + tok, ExpectedAudience: "api/users"})
		if err != nil {
			t.Fatalf("ValidateToken: %v", err)
		}
		if resp.GetReason() != want {
			t.Fatalf("reason %v, want %v: %s", resp.GetReason(), want, resp.GetMessage())
		}
	}
	call(valid, usherv1.Reason_REASON_VALID)
	call(wrongAud, usherv1.Reason_REASON_AUDIENCE_MISMATCH)
	call(forged, usherv1.Reason_REASON_INVALID_SIGNATURE)
	call(malformed, usherv1.Reason_REASON_MALFORMED)
	for _, tok := range []string{valid, forged, malformed} {
		ictx, icancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := c.InspectToken(ictx, &usherv1.InspectTokenRequest{Token: tok})
		icancel()
		if err != nil {
			t.Fatalf("InspectToken: %v", err)
		}
	}

	mctx, mcancel := context.WithTimeout(ctx, 10*time.Second)
	defer mcancel()
	req, err := http.NewRequestWithContext(mctx, http.MethodGet, "http://"+metricsAddr+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %d %v", resp.StatusCode, err)
	}
	metrics := string(body)
	if !strings.Contains(metrics, "grpc_server_handled_total") || !strings.Contains(metrics, "ValidateToken") {
		t.Fatalf("/metrics does not count the calls made:\n%.2000s", metrics)
	}

	logs := stderr.String() + stdout.String()
	if !strings.Contains(logs, "key set loaded") {
		t.Fatalf("the log does not show the key set being loaded:\n%s", logs)
	}
	secrets := map[string]string{"the JWK modulus n": modulus}
	for name, tok := range map[string]string{"valid": valid, "wrong-audience": wrongAud, "forged": forged, "malformed": malformed} {
		seg := strings.Split(tok, ".")
		secrets[name+" token"] = tok
		secrets[name+" payload segment"] = seg[1]
		secrets[name+" signature segment"] = seg[2]
	}
	for name, s := range secrets {
		if strings.Contains(logs, s) {
			t.Errorf("the %s appears in the log", name)
		}
		if strings.Contains(metrics, s) {
			t.Errorf("the %s appears in /metrics", name)
		}
	}
	for name, tok := range map[string]string{"wrong-audience": wrongAud, "forged": forged, "malformed": malformed} {
		id := service.TokenID(tok)
		if !regexp.MustCompile(`^[0-9a-f]{12}$`).MatchString(id) {
			t.Fatalf("TokenID = %q, want 12 hex digits", id)
		}
		if !strings.Contains(logs, "token="+id) {
			t.Errorf("the log does not name the rejected %s token by its id %s:\n%s", name, id, logs)
		}
	}
}
