package config_test

import (
	"bytes"
	"encoding/json"
	"net"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/usher-dev/usher/internal/config"
	"github.com/usher-dev/usher/service"
)

// FuzzParseConfig: any YAML is either refused with an error, or becomes a
// configuration that holds every rule Validate enforces, and validating it
// again changes nothing.
func FuzzParseConfig(f *testing.F) {
	for _, s := range []string{
		"issuers:\n  - issuer: https://a.example\n    jwks_uri: https://a.example/keys\n",
		"issuers:\n  - issuer: https://a.example\n    discovery: true\n    algorithms: [ES256, EdDSA]\n    leeway: 10m\n",
		"issuers:\n  - issuer: x\n    jwks_file: keys.json\naudiences:\n  - audience: api/users\n    name: Users API\n",
		"issuers:\n  - issuer: https://a.example\n    jwks_uri: http://a.example/keys\n    algorithms: [none, HS256]\n",
		"listen: \"0.0.0.0:1\"\nissuers: []\n",
		"{}",
		"",
		// The server's sections.
		"issuers:\n  - issuer: x\n    jwks_file: k\ntracing:\n  otlp_endpoint: 127.0.0.1:4317\n  sample_ratio: 0.5\nmetrics_listen: 0.0.0.0:9090\npprof: true\nhttp_listen: localhost:8080\n",
		"issuers:\n  - issuer: x\n    jwks_file: k\next_authz:\n  routes:\n    - host: a.example\n      path_prefix: /a\n      audience: api/a\n      required_scopes: [a.read]\n  header_prefix: X-A-\n  realm: r\n",
		"issuers:\n  - issuer: x\n    jwks_file: k\next_authz:\n  context_extensions_only: true\n",
		"issuers:\n  - issuer: x\n    jwks_file: k\next_authz:\n",
		"issuers:\n  - issuer: x\n    jwks_file: k\nmetrics_listen: 0.0.0.0:9090\ninsecure_plaintext: true\npprof: true\npprof_off_loopback: true\n",
		"---\nissuers:\n  - issuer: x\n    jwks_file: k\n---\nlisten: 0.0.0.0:1\n",
		"issuers:\n  - issuer: x\n    jwks_file: k\n...\n---\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		cfg, err := config.Parse(b)
		if err != nil {
			if cfg != nil {
				t.Fatalf("a config and an error (%v)", err)
			}
			if err.Error() == "" {
				t.Fatal("an empty error")
			}
			return
		}
		checkConfigRules(t, cfg)
		if n := yamlDocuments(b); n > 1 {
			t.Fatalf("a file of %d YAML documents accepted:\n%s", n, b)
		}
		before, err := json.Marshal(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := cfg.Validate(); err != nil {
			t.Fatalf("Parse returned a config that Validate refuses: %v\n%s", err, b)
		}
		after, err := json.Marshal(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(before, after) {
			t.Fatalf("validating a valid config again changed it:\n%s\n%s", before, after)
		}
	})
}

// yamlDocuments counts the YAML documents in b (up to the first that does
// not parse).
func yamlDocuments(b []byte) int {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	n := 0
	for {
		var doc yaml.Node
		if dec.Decode(&doc) != nil {
			return n
		}
		n++
	}
}

// loopbackHost: "localhost", or an IP address in 127.0.0.0/8 or ::1.
func loopbackHost(h string) bool {
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && (ip.Equal(net.IPv6loopback) || ip.To4() != nil && ip.To4()[0] == 127)
}

// fetchable: an absolute https URL, or http to a loopback host.
func fetchable(s string) bool {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" {
		return false
	}
	return u.Scheme == "https" || u.Scheme == "http" && loopbackHost(u.Hostname())
}

// checkConfigRules restates the rules of a valid config independently of
// how Validate checks them.
func checkConfigRules(t *testing.T, cfg *config.Config) {
	t.Helper()
	checkServerRules(t, cfg)
	e := cfg.Engine
	if len(e.Issuers) == 0 {
		t.Fatal("a valid config without issuers")
	}
	if e.MaxTokenBytes < 256 || e.MaxTokenBytes > 1<<20 {
		t.Fatalf("max_token_bytes %d", e.MaxTokenBytes)
	}
	if e.CacheMaxEntries != -1 && e.CacheMaxEntries < 1 || e.CacheMaxBytes < 1<<20 {
		t.Fatalf("cache_max_entries %d, cache_max_bytes %d", e.CacheMaxEntries, e.CacheMaxBytes)
	}
	seen := map[string]bool{}
	for i, is := range e.Issuers {
		if is.Issuer == "" || strings.TrimSpace(is.Issuer) != is.Issuer {
			t.Fatalf("issuers[%d].issuer %q", i, is.Issuer)
		}
		if seen[is.Issuer] {
			t.Fatalf("issuer %q twice", is.Issuer)
		}
		seen[is.Issuer] = true
		sources := 0
		if is.JWKSURI != "" {
			sources++
			if !fetchable(is.JWKSURI) {
				t.Fatalf("issuers[%d].jwks_uri %q accepted", i, is.JWKSURI)
			}
		}
		if is.Discovery {
			sources++
			if !fetchable(is.Issuer) {
				t.Fatalf("issuers[%d] discovery on %q accepted", i, is.Issuer)
			}
		}
		if is.JWKSFile != "" {
			sources++
		}
		if sources > 1 || sources == 0 && is.Introspection == nil {
			t.Fatalf("issuers[%d] has %d key sources and introspection %v", i, sources, is.Introspection != nil)
		}
		if len(is.Algorithms) == 0 {
			t.Fatalf("issuers[%d] has no algorithms", i)
		}
		for _, a := range is.Algorithms {
			if strings.EqualFold(a, "none") || strings.HasPrefix(strings.ToUpper(a), "HS") || !slices.Contains(service.DefaultAlgorithms, a) {
				t.Fatalf("issuers[%d] allows %q", i, a)
			}
		}
		if is.Leeway <= 0 || is.Leeway > 10*time.Minute {
			t.Fatalf("issuers[%d].leeway %v", i, is.Leeway)
		}
		if is.RequiredClaims == nil {
			t.Fatalf("issuers[%d].required_claims nil", i)
		}
		if len(is.AudienceClaims) == 0 || slices.Contains(is.AudienceClaims, "") {
			t.Fatalf("issuers[%d].audience_claims %q", i, is.AudienceClaims)
		}
		if is.RefreshInterval < time.Second || is.UnknownKIDCooldown <= 0 || is.FetchTimeout <= 0 || is.MaxStale < is.RefreshInterval {
			t.Fatalf("issuers[%d] timings %+v", i, is)
		}
	}
	auds := map[string]bool{}
	for i, a := range e.Audiences {
		if a.Audience == "" || auds[a.Audience] {
			t.Fatalf("audiences[%d] %q empty or repeated", i, a.Audience)
		}
		auds[a.Audience] = true
	}
}

// checkServerRules restates the rules of the server's sections.
func checkServerRules(t *testing.T, cfg *config.Config) {
	t.Helper()
	if cfg.Listen == "" {
		t.Fatal("no listen address")
	}
	for _, l := range []struct{ key, addr string }{{"listen", cfg.Listen}, {"http_listen", cfg.HTTPListen}, {"metrics_listen", cfg.MetricsListen}} {
		if l.addr == "" {
			continue
		}
		host, _, err := net.SplitHostPort(l.addr)
		if err != nil {
			t.Fatalf("%s %q is not host:port", l.key, l.addr)
		}
		if cfg.TLS == nil && !cfg.InsecurePlaintext && !loopbackHost(host) {
			t.Fatalf("%s %q off loopback in plaintext, not by name", l.key, l.addr)
		}
		if l.key == "metrics_listen" && cfg.Pprof && !cfg.PprofOffLoopback && !loopbackHost(host) {
			t.Fatalf("pprof on %q off loopback, not by name", l.addr)
		}
	}
	if cfg.Pprof && cfg.MetricsListen == "" {
		t.Fatal("pprof without metrics_listen")
	}
	if cfg.TLS != nil && (cfg.TLS.CertFile == "" || cfg.TLS.KeyFile == "" || cfg.InsecurePlaintext) {
		t.Fatalf("tls %+v, insecure_plaintext %v", cfg.TLS, cfg.InsecurePlaintext)
	}
	if tr := cfg.Tracing; tr != nil {
		if _, _, err := net.SplitHostPort(tr.OTLPEndpoint); err != nil {
			t.Fatalf("tracing.otlp_endpoint %q", tr.OTLPEndpoint)
		}
		if !(tr.SampleRatio > 0 && tr.SampleRatio <= 1) {
			t.Fatalf("tracing.sample_ratio %v", tr.SampleRatio)
		}
	}
	if cfg.MaxInFlight < 1 || cfg.MaxConcurrentStreams < 1 || cfg.MaxStreams < 1 || cfg.MaxConnections < 1 {
		t.Fatalf("max_in_flight %d, max_concurrent_streams %d, max_streams %d, max_connections %d", cfg.MaxInFlight, cfg.MaxConcurrentStreams, cfg.MaxStreams, cfg.MaxConnections)
	}
	if x := cfg.ExtAuthz; x != nil {
		if (len(x.Routes) > 0) == x.ContextExtensionsOnly {
			t.Fatalf("ext_authz: %d routes, context_extensions_only %v", len(x.Routes), x.ContextExtensionsOnly)
		}
		for i, r := range x.Routes {
			if r.Audience == "" || strings.TrimSpace(r.Audience) != r.Audience {
				t.Fatalf("ext_authz.routes[%d].audience %q", i, r.Audience)
			}
			if r.PathPrefix != "" && !strings.HasPrefix(r.PathPrefix, "/") {
				t.Fatalf("ext_authz.routes[%d].path_prefix %q", i, r.PathPrefix)
			}
			for _, s := range r.RequiredScopes {
				if s == "" || strings.ContainsAny(s, " \t\r\n") {
					t.Fatalf("ext_authz.routes[%d] scope %q", i, s)
				}
			}
		}
		if p := x.HeaderPrefix; p == "" || p != strings.ToLower(p) || !strings.HasSuffix(p, "-") || strings.HasPrefix(p, "x-envoy-") {
			t.Fatalf("ext_authz.header_prefix %q", p)
		}
	}
}
