package main

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/usher-dev/usher/internal/config"
	"github.com/usher-dev/usher/internal/testkit"
	usherv1 "github.com/usher-dev/usher/proto/usher/v1"
)

// keySourceConfig trusts an issuer through jwksURI and registers the
// audiences.
func keySourceConfig(issuer, jwksURI string, audiences ...string) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "listen: 127.0.0.1:0\nissuers:\n  - issuer: %q\n    jwks_uri: %q\naudiences:\n", issuer, jwksURI)
	for _, a := range audiences {
		fmt.Fprintf(&b, "  - audience: %s\n    name: %s\n", a, a)
	}
	return []byte(b.String())
}

// TestServe_ReloadDuringKeyOutageKeepsKeys: an issuer's key set goes down
// (503) after a good fetch; a reload whose issuer keeps its key source
// (here with an audience added) keeps the last good set, so its token stays
// VALID and the log says reloaded; a reload that changes the key source to
// one that yields no keys is refused, naming the issuer, and the running
// config keeps serving.
func TestServe_ReloadDuringKeyOutageKeepsKeys(t *testing.T) {
	ctx := testkit.Context(t)
	k := testkit.EdKey(t, "ed-1")
	ti := testkit.NewIssuer(t, k)
	path := filepath.Join(t.TempDir(), "usher.yaml")
	writeFile(t, path, keySourceConfig(ti.URL(), ti.JWKSURI(), "api/users"))
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	var logs testkit.SyncBuffer
	reload := make(chan struct{}, 1)
	addr := startServe(t, serveOptions{cfg: cfg, path: path, log: textLogger(&logs), reload: reload})
	c, hc := dialUsher(t, addr)
	waitServing(t, hc)
	tok := k.Token(t, testkit.Claims(ti.URL(), "exp", time.Now().Add(time.Hour).Unix(), "iat", time.Now().Unix()))
	verdict := func() usherv1.Reason {
		t.Helper()
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		resp, err := c.ValidateToken(cctx, &usherv1.ValidateTokenRequest{Token: tok, ExpectedAudience: "api/users"})
		if err != nil {
			t.Fatal(err)
		}
		return resp.GetReason()
	}
	if got := verdict(); got != usherv1.Reason_REASON_VALID {
		t.Fatalf("before the outage: %v", got)
	}
	ti.Handle(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
	})

	reloadAndWait := func(conf []byte, want string) {
		t.Helper()
		n := strings.Count(logs.String(), want)
		writeFile(t, path, conf)
		reload <- struct{}{}
		testkit.Eventually(ctx, t, "the log saying "+want, func() bool { return strings.Count(logs.String(), want) > n })
	}
	reloadAndWait(keySourceConfig(ti.URL(), ti.JWKSURI(), "api/users", "api/invoices"), "config reloaded")
	if got := verdict(); got != usherv1.Reason_REASON_VALID {
		t.Errorf("after a reload during the key set's outage (same key source): %v, want VALID (the last good set is good for max_stale)\n%s", got, logs.String())
	}
	if !strings.Contains(logs.String(), "key set kept from the running config") {
		t.Errorf("the log does not say the key set was kept:\n%s", logs.String())
	}

	moved := ti.URL() + "/moved/jwks.json" // 404: a new source without keys
	reloadAndWait(keySourceConfig(ti.URL(), moved, "api/users"), "reload refused")
	line := lastLine(logs.String(), "reload refused")
	for _, want := range []string{ti.URL(), "ed-1", moved, "HTTP 404"} {
		if !strings.Contains(line, want) {
			t.Errorf("the refusal does not name %q:\n%s", want, line)
		}
	}
	if got := verdict(); got != usherv1.Reason_REASON_VALID {
		t.Errorf("after a refused reload: %v, want VALID from the running config", got)
	}
}

// lastLine is the last line of logs that contains s.
func lastLine(logs, s string) string {
	lines := strings.Split(logs, "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.Contains(lines[i], s) {
			return lines[i]
		}
	}
	return ""
}
