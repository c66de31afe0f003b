package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/usher-dev/usher/internal/config"
	"github.com/usher-dev/usher/internal/devissuer"
	"github.com/usher-dev/usher/internal/testkit"
	usherv1 "github.com/usher-dev/usher/proto/usher/v1"
)

// startServeYAML runs `serve` in process with the YAML config yml and
// returns the gRPC address and the bound address of each HTTP listener by
// key (http_listen, metrics).
func startServeYAML(t *testing.T, yml string) (string, map[string]string) {
	t.Helper()
	cfg, err := config.Parse([]byte(yml))
	if err != nil {
		t.Fatal(err)
	}
	addrs := map[string]string{}
	addr := startServe(t, serveOptions{cfg: cfg, log: discardLogger(), listening: func(key, a string) { addrs[key] = a }})
	return addr, addrs
}

func consoleGet(t *testing.T, url string) (*http.Response, string) {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

// TestServe_ConsoleOffByDefault: without console: true, /console/ on
// http_listen is 404 while the HTTP/JSON API answers as before.
func TestServe_ConsoleOffByDefault(t *testing.T) {
	iss := testkit.DevIssuer(t)
	_, addrs := startServeYAML(t, fmt.Sprintf("listen: 127.0.0.1:0\nhttp_listen: 127.0.0.1:0\nissuers:\n  - issuer: %s\n    jwks_uri: %s\n", iss.URL(), iss.JWKSURL()))
	base := "http://" + addrs["http_listen"]
	for _, p := range []string{"/console/", "/console/issuers", "/console/static/console.js", "/console/api/stats"} {
		resp, _ := consoleGet(t, base+p)
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s without console: true: %d, want 404", p, resp.StatusCode)
		}
		if csp := resp.Header.Get("Content-Security-Policy"); csp != "" {
			t.Errorf("GET %s without console: true carries a console header: %q", p, csp)
		}
	}
	if resp, body := consoleGet(t, base+"/healthz"); resp.StatusCode != http.StatusOK || body != "ok\n" {
		t.Errorf("/healthz: %d %q", resp.StatusCode, body)
	}
}

// TestServe_Console: with console: true the console is served on
// http_listen beside the API, and its counts come from the same place as
// the Prometheus metrics: a Users token sent to the Invoices API over gRPC
// shows in both.
func TestServe_Console(t *testing.T) {
	iss := testkit.DevIssuer(t)
	grpcAddr, addrs := startServeYAML(t, fmt.Sprintf(`listen: 127.0.0.1:0
http_listen: 127.0.0.1:0
metrics_listen: 127.0.0.1:0
console: true
issuers:
  - issuer: %s
    jwks_uri: %s
audiences:
  - {audience: api/users, name: Users API}
  - {audience: api/invoices, name: Invoices API}
`, iss.URL(), iss.JWKSURL()))
	base := "http://" + addrs["http_listen"]
	resp, body := consoleGet(t, base+"/console/")
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `<label for="token">Token</label>`) {
		t.Fatalf("GET /console/: %d\n%s", resp.StatusCode, body)
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") {
		t.Errorf("CSP %q", csp)
	}
	if resp, body := consoleGet(t, base+"/console/api/apis"); resp.StatusCode != http.StatusOK || !strings.Contains(body, `"name":"Invoices API"`) {
		t.Errorf("/console/api/apis: %d %s", resp.StatusCode, body)
	}

	users := testkit.Mint(t, iss, devissuer.MintRequest{Audience: []string{"api/users"}, TTL: time.Hour})
	resp, err := http.Post(base+"/usher.v1.TokenService/InspectToken", "application/json", strings.NewReader(`{"token":"`+users+`"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("InspectToken over HTTP/JSON: %d, Cache-Control %q, want no-store", resp.StatusCode, resp.Header.Get("Cache-Control"))
	}
	client := usherv1.NewTokenServiceClient(testkit.Dial(t, grpcAddr))
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	for range 2 {
		v, err := client.ValidateToken(ctx, &usherv1.ValidateTokenRequest{Token: users, ExpectedAudience: "api/invoices"})
		if err != nil || v.GetReason() != usherv1.Reason_REASON_AUDIENCE_MISMATCH {
			t.Fatalf("users token at api/invoices: %v %v", v.GetReason(), err)
		}
	}
	var st struct {
		Mismatches []struct {
			Expected, Actual string
			Count            int
		}
		Reasons []struct {
			Reason string
			Counts []int
		}
	}
	_, body = consoleGet(t, base+"/console/api/stats")
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		t.Fatal(err)
	}
	if len(st.Mismatches) != 1 || st.Mismatches[0].Expected != "api/invoices" || st.Mismatches[0].Actual != "api/users" || st.Mismatches[0].Count != 2 {
		t.Errorf("console stats %s", body)
	}
	_, metricsText := consoleGet(t, "http://"+addrs["metrics"]+"/metrics")
	if want := `usher_audience_mismatches_total{actual="api/users",expected="api/invoices"} 2`; !strings.Contains(metricsText, want) {
		t.Errorf("/metrics lacks %s beside the console's counts", want)
	}
	if strings.Contains(body, users) || strings.Contains(metricsText, users) {
		t.Error("a token in the stats or the metrics")
	}
}

var consoleLineRE = regexp.MustCompile(`(?m)^console: (http://127\.0\.0\.1:(\d+)/console/)$`)

// TestDev_ConsoleLine: usher dev serves the console on its HTTP listener
// and prints its URL, with the port it bound, on a line of its own; a
// non-loopback --http-listen is refused.
func TestDev_ConsoleLine(t *testing.T) {
	_, banner, _, _ := startDevInProcess(t)
	m := consoleLineRE.FindStringSubmatch(banner)
	if m == nil || m[2] == "0" {
		t.Fatalf("no line `console: http://127.0.0.1:PORT/console/` in the banner:\n%s", banner)
	}
	resp, body := consoleGet(t, m[1])
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "Token debugger") || resp.Header.Get("Content-Security-Policy") == "" {
		t.Errorf("GET %s: %d", m[1], resp.StatusCode)
	}
	_, err := runCmd(t, "dev", "--listen", "127.0.0.1:0", "--http-listen", "0.0.0.0:0")
	if err == nil || !strings.Contains(err.Error(), "--http-listen") || !strings.Contains(err.Error(), "loopback") {
		t.Errorf("dev --http-listen 0.0.0.0:0: %v, want a loopback-only error", err)
	}
}
