package config_test

import (
	"encoding/json"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/usher-dev/usher/extauthz"
	"github.com/usher-dev/usher/internal/config"
	"github.com/usher-dev/usher/internal/testkit"
	"github.com/usher-dev/usher/service"
)

const fullConfig = `
listen: "127.0.0.1:50052"
metrics_listen: "127.0.0.1:9090"
max_token_bytes: 8192
issuers:
  - issuer: "https://auth.example.com/"
    jwks_uri: "https://auth.example.com/.well-known/jwks.json"
    algorithms: ["RS256", "ES256"]
    token_type: "at+jwt"
    leeway: "45s"
    required_claims: ["exp", "sub"]
    audience_claims: ["aud", "client_id"]
    refresh_interval: "10m"
    unknown_kid_cooldown: "2s"
    fetch_timeout: "3s"
  - issuer: "https://login.example.org"
    discovery: true
  - issuer: "https://static.example.net"
    jwks_file: "keys.json"
audiences:
  - audience: "api/users"
    name: "Users API"
  - audience: "api/invoices"
    name: "Invoices API"
`

// minimal is the smallest valid file: one issuer.
const minimal = "issuers:\n  - issuer: https://a.example\n    jwks_uri: https://a.example/keys\n"

// checkLines holds every line of a configuration error to the form main
// prints: each names its key ("key: what"), none is indented, and none is
// prefixed "usher:" (main adds that once).
func checkLines(t *testing.T, err error) {
	t.Helper()
	for _, line := range strings.Split(err.Error(), "\n") {
		if !strings.Contains(line, ":") || strings.HasPrefix(line, " ") {
			t.Fatalf("error line %q does not name a key", line)
		}
		if strings.HasPrefix(line, "usher") || strings.Contains(line, "usher: ") {
			t.Fatalf("error line %q carries main's prefix", line)
		}
	}
}

// hasLine reports whether some line of err starts with prefix.
func hasLine(err error, prefix string) bool {
	return slices.ContainsFunc(strings.Split(err.Error(), "\n"), func(l string) bool { return strings.HasPrefix(l, prefix) })
}

func TestParse_Good(t *testing.T) {
	cfg, err := config.Parse([]byte(fullConfig))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Listen != "127.0.0.1:50052" || cfg.MetricsListen != "127.0.0.1:9090" || cfg.Engine.MaxTokenBytes != 8192 || len(cfg.Engine.Issuers) != 3 {
		t.Fatalf("config %+v", cfg)
	}
	a := cfg.Engine.Issuers[0]
	if a.Issuer != "https://auth.example.com/" || a.JWKSURI != "https://auth.example.com/.well-known/jwks.json" ||
		!slices.Equal(a.Algorithms, []string{"RS256", "ES256"}) || a.TokenType != "at+jwt" ||
		a.Leeway != 45*time.Second || !slices.Equal(a.RequiredClaims, []string{"exp", "sub"}) ||
		!slices.Equal(a.AudienceClaims, []string{"aud", "client_id"}) || a.RefreshInterval != 10*time.Minute ||
		a.UnknownKIDCooldown != 2*time.Second || a.FetchTimeout != 3*time.Second {
		t.Fatalf("issuers[0] = %+v", a)
	}
	b := cfg.Engine.Issuers[1]
	if !b.Discovery || b.JWKSURI != "" || !slices.Equal(b.Algorithms, service.DefaultAlgorithms) ||
		b.Leeway != service.DefaultLeeway || !slices.Equal(b.RequiredClaims, []string{"exp"}) ||
		!slices.Equal(b.AudienceClaims, []string{"aud"}) || b.UnknownKIDCooldown != service.DefaultUnknownKIDCool ||
		b.RefreshInterval != service.DefaultRefreshInterval || b.FetchTimeout != service.DefaultFetchTimeout ||
		b.MaxStale != service.DefaultMaxStale {
		t.Fatalf("issuers[1] defaults = %+v", b)
	}
	if cfg.Engine.Issuers[2].JWKSFile != "keys.json" {
		t.Fatalf("issuers[2] = %+v", cfg.Engine.Issuers[2])
	}
	if !slices.Equal(cfg.Engine.Audiences, []service.KnownAudience{{Audience: "api/users", Name: "Users API"}, {Audience: "api/invoices", Name: "Invoices API"}}) {
		t.Fatalf("audiences %+v", cfg.Engine.Audiences)
	}
	for _, a := range service.DefaultAlgorithms {
		if strings.EqualFold(a, "none") || strings.HasPrefix(a, "HS") {
			t.Fatalf("default algorithms include %s", a)
		}
	}

	min, err := config.Parse([]byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	if min.Listen != config.DefaultListen || min.Engine.MaxTokenBytes != service.DefaultMaxTokenBytes {
		t.Fatalf("defaults %+v", min)
	}
	if _, err := config.Parse([]byte("issuers:\n  - issuer: http://localhost:8080\n    jwks_uri: http://[::1]:8080/keys\n")); err != nil {
		t.Fatalf("http on loopback refused: %v", err)
	}
}

// TestParse_ServerSections reads every key of the server's own sections.
func TestParse_ServerSections(t *testing.T) {
	cfg, err := config.Parse([]byte(minimal + `
listen: 0.0.0.0:50051
metrics_listen: 0.0.0.0:9090
pprof: true
pprof_off_loopback: true
http_listen: "[::]:8080"
tls:
  cert_file: /etc/usher/cert.pem
  key_file: /etc/usher/key.pem
  client_ca_file: /etc/usher/ca.pem
max_in_flight: 7
max_concurrent_streams: 9
max_streams: 11
max_connections: 13
cache_max_entries: -1
cache_max_bytes: 2097152
tracing:
  otlp_endpoint: collector.internal:4317
  insecure: true
  sample_ratio: 0.25
`))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Listen != "0.0.0.0:50051" || cfg.MetricsListen != "0.0.0.0:9090" || !cfg.Pprof || !cfg.PprofOffLoopback || cfg.HTTPListen != "[::]:8080" ||
		cfg.InsecurePlaintext || cfg.MaxInFlight != 7 || cfg.MaxConcurrentStreams != 9 || cfg.MaxStreams != 11 || cfg.MaxConnections != 13 {
		t.Fatalf("server settings %+v", cfg)
	}
	if want := (config.TLS{CertFile: "/etc/usher/cert.pem", KeyFile: "/etc/usher/key.pem", ClientCAFile: "/etc/usher/ca.pem"}); cfg.TLS == nil || *cfg.TLS != want {
		t.Fatalf("tls %+v, want %+v", cfg.TLS, want)
	}
	if want := (config.Tracing{OTLPEndpoint: "collector.internal:4317", Insecure: true, SampleRatio: 0.25}); cfg.Tracing == nil || *cfg.Tracing != want {
		t.Fatalf("tracing %+v, want %+v", cfg.Tracing, want)
	}
	if cfg.Engine.CacheMaxEntries != -1 || cfg.Engine.CacheMaxBytes != 2<<20 {
		t.Fatalf("engine limits %+v", cfg.Engine)
	}
	if cfg.ExtAuthz != nil {
		t.Fatalf("ext_authz %+v without the section", cfg.ExtAuthz)
	}
}

// TestParse_Defaults: what a file leaves out, Validate fills in.
func TestParse_Defaults(t *testing.T) {
	cfg, err := config.Parse([]byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	// The documented defaults (the README's configuration reference; the field docs).
	if config.DefaultListen != "127.0.0.1:50051" || config.DefaultMaxInFlight != 1024 || config.DefaultMaxStreams != 256 {
		t.Fatalf("defaults %q %d %d", config.DefaultListen, config.DefaultMaxInFlight, config.DefaultMaxStreams)
	}
	if cfg.Listen != config.DefaultListen || cfg.MaxInFlight != config.DefaultMaxInFlight || cfg.MaxConcurrentStreams != config.DefaultMaxStreams {
		t.Fatalf("server defaults: listen %q, max_in_flight %d, max_concurrent_streams %d", cfg.Listen, cfg.MaxInFlight, cfg.MaxConcurrentStreams)
	}
	if config.DefaultMaxOpenStreams != 1024 || config.DefaultMaxConnections != 4096 ||
		cfg.MaxStreams != config.DefaultMaxOpenStreams || cfg.MaxConnections != config.DefaultMaxConnections {
		t.Fatalf("max_streams %d (default %d), max_connections %d (default %d)", cfg.MaxStreams, config.DefaultMaxOpenStreams, cfg.MaxConnections, config.DefaultMaxConnections)
	}
	if cfg.MetricsListen != "" || cfg.HTTPListen != "" || cfg.Pprof || cfg.PprofOffLoopback || cfg.TLS != nil || cfg.InsecurePlaintext || cfg.Tracing != nil || cfg.ExtAuthz != nil {
		t.Fatalf("optional sections set: %+v", cfg)
	}
	e := cfg.Engine
	if e.MaxTokenBytes != service.DefaultMaxTokenBytes || e.CacheMaxEntries != service.DefaultCacheEntries || e.CacheMaxBytes != service.DefaultCacheMaxBytes {
		t.Fatalf("engine limits %+v", e)
	}
	is := e.Issuers[0]
	if !slices.Equal(is.Algorithms, service.DefaultAlgorithms) || is.Leeway != service.DefaultLeeway ||
		!slices.Equal(is.RequiredClaims, []string{"exp"}) || !slices.Equal(is.AudienceClaims, []string{"aud"}) ||
		is.RefreshInterval != service.DefaultRefreshInterval || is.UnknownKIDCooldown != service.DefaultUnknownKIDCool ||
		is.FetchTimeout != service.DefaultFetchTimeout || is.MaxStale != service.DefaultMaxStale || is.TokenType != "" {
		t.Fatalf("issuer defaults %+v", is)
	}

	for _, c := range []struct {
		yaml string
		want float64
	}{
		{"tracing:\n  otlp_endpoint: 127.0.0.1:4317\n", 1},
		{"tracing:\n  otlp_endpoint: 127.0.0.1:4317\n  sample_ratio: 0\n", 1},
		{"tracing:\n  otlp_endpoint: 127.0.0.1:4317\n  sample_ratio: 1\n", 1},
		{"tracing:\n  otlp_endpoint: 127.0.0.1:4317\n  sample_ratio: 0.001\n", 0.001},
	} {
		cfg, err := config.Parse([]byte(minimal + c.yaml))
		if err != nil {
			t.Fatalf("%q: %v", c.yaml, err)
		}
		if cfg.Tracing == nil || cfg.Tracing.SampleRatio != c.want || cfg.Tracing.Insecure {
			t.Fatalf("%q: tracing %+v, want sample_ratio %v", c.yaml, cfg.Tracing, c.want)
		}
	}
}

// TestParse_Accepted: settings each section's validation lets through.
func TestParse_Accepted(t *testing.T) {
	for _, c := range []struct{ name, yaml string }{
		{"listen on localhost", "listen: localhost:50051\n"},
		{"listen on ::1", "listen: \"[::1]:50051\"\n"},
		{"listen on 127.0.0.0/8", "listen: 127.1.2.3:50051\nhttp_listen: 127.0.0.1:8080\n"},
		{"plaintext off loopback by name", "listen: 0.0.0.0:50051\nhttp_listen: 10.0.0.1:8080\ninsecure_plaintext: true\n"},
		{"tls off loopback", "listen: 0.0.0.0:50051\nhttp_listen: 0.0.0.0:8443\ntls:\n  cert_file: c.pem\n  key_file: k.pem\n"},
		{"metrics off loopback with tls", "metrics_listen: 0.0.0.0:9090\ntls:\n  cert_file: c.pem\n  key_file: k.pem\n"},
		{"metrics off loopback by name", "metrics_listen: 10.0.0.1:9090\ninsecure_plaintext: true\n"},
		{"pprof with metrics_listen", "metrics_listen: 127.0.0.1:9090\npprof: true\n"},
		{"pprof on localhost", "metrics_listen: localhost:9090\npprof: true\n"},
		{"pprof off loopback by name", "metrics_listen: 0.0.0.0:9090\ninsecure_plaintext: true\npprof: true\npprof_off_loopback: true\n"},
		{"max_in_flight 1", "max_in_flight: 1\n"},
		{"cache off", "cache_max_entries: -1\n"},
		{"context extensions only", "ext_authz:\n  context_extensions_only: true\n"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if _, err := config.Parse([]byte(minimal + c.yaml)); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestParse_Bad(t *testing.T) {
	const src = minimal
	const tls = "tls:\n  cert_file: c.pem\n  key_file: k.pem\n"
	for _, c := range []struct {
		name, yaml string
		key        string   // a line of the error starts with "key: " ("" when no key can be named)
		want       []string // every one must appear in the error
	}{
		{"unknown key", "issuers:\n  - issuer: https://a.example\n    jwks_url: https://a.example/keys\n", "issuers[0].jwks_url", []string{"unknown key"}},
		{"unknown top-level key", src + "listen_addr: x\n", "listen_addr", []string{"unknown key"}},
		{"missing source", "issuers:\n  - issuer: https://a.example\n", "issuers[0].jwks_uri", []string{"exactly one", "found 0"}},
		{"two sources", src + "    discovery: true\n", "issuers[0].jwks_uri", []string{"exactly one", "found 2"}},
		{"three sources", src + "    discovery: true\n    jwks_file: k.json\n", "issuers[0].jwks_uri", []string{"found 3"}},
		{"alg none", src + "    algorithms: [RS256, none]\n", "issuers[0].algorithms", []string{`"none"`}},
		{"alg NONE", src + "    algorithms: [NONE]\n", "issuers[0].algorithms", []string{"none"}},
		{"HS256", src + "    algorithms: [HS256]\n", "issuers[0].algorithms", []string{"HS256", "symmetric"}},
		{"unknown alg", src + "    algorithms: [RS1]\n", "issuers[0].algorithms", []string{"RS1"}},
		{"bad duration", src + "    leeway: 30\n", "issuers[0].leeway", []string{`"30" is not a duration`}},
		{"duration a list", src + "    fetch_timeout: [1s]\n", "issuers[0].fetch_timeout", []string{"duration"}},
		{"leeway too large", src + "    leeway: 1h\n", "issuers[0].leeway", []string{"outside"}},
		{"negative cooldown", src + "    unknown_kid_cooldown: -1s\n", "issuers[0].unknown_kid_cooldown", []string{"negative"}},
		{"negative fetch_timeout", src + "    fetch_timeout: -1s\n", "issuers[0].fetch_timeout", []string{"negative"}},
		{"refresh too short", src + "    refresh_interval: 10ms\n", "issuers[0].refresh_interval", nil},
		{"max_stale below refresh", src + "    refresh_interval: 10m\n    max_stale: 1m\n", "issuers[0].max_stale", []string{"refresh_interval"}},
		{"http non-loopback jwks_uri", "issuers:\n  - issuer: https://a.example\n    jwks_uri: http://a.example/keys\n", "issuers[0].jwks_uri", []string{"plain http"}},
		{"jwks_uri not a URL", "issuers:\n  - issuer: https://a.example\n    jwks_uri: keys.json\n", "issuers[0].jwks_uri", []string{"not an absolute URL"}},
		{"ftp jwks_uri", "issuers:\n  - issuer: https://a.example\n    jwks_uri: ftp://a.example/keys\n", "issuers[0].jwks_uri", []string{"scheme"}},
		{"discovery on http", "issuers:\n  - issuer: http://a.example\n    discovery: true\n", "issuers[0].discovery", []string{"plain http"}},
		{"second issuer", src + "  - issuer: https://b.example\n    jwks_uri: http://b.example/keys\n", "issuers[1].jwks_uri", nil},
		{"empty issuer", "issuers:\n  - jwks_uri: https://a.example/keys\n", "issuers[0].issuer", []string{"empty"}},
		{"issuer with white space", "issuers:\n  - issuer: \"https://a.example \"\n    jwks_uri: https://a.example/keys\n", "issuers[0].issuer", []string{"white space"}},
		{"issuer twice", src + src[len("issuers:\n"):], "issuers[1].issuer", []string{"twice"}},
		{"no issuers", "listen: 127.0.0.1:1\n", "issuers", []string{"no issuer"}},
		{"empty file", "", "issuers", []string{"no issuer"}},
		{"bad listen", src + "listen: 50051\n", "listen", []string{"host:port"}},
		{"bad metrics_listen", src + "metrics_listen: nope\n", "metrics_listen", nil},
		{"max_token_bytes too small", src + "max_token_bytes: 10\n", "max_token_bytes", nil},
		{"max_token_bytes a string", src + "max_token_bytes: lots\n", "max_token_bytes", nil},
		{"discovery not a bool", "issuers:\n  - issuer: https://a.example\n    discovery: maybe\n", "issuers[0].discovery", nil},
		{"issuers a mapping", "issuers: {}\n", "issuers", nil},
		{"empty audience", src + "audiences:\n  - name: Users API\n", "audiences[0].audience", []string{"empty"}},
		{"audience twice", src + "audiences:\n  - audience: a\n  - audience: a\n", "audiences[1].audience", []string{"twice"}},
		{"empty audience claim", src + "    audience_claims: [\"\"]\n", "issuers[0].audience_claims", nil},
		{"cache_max_entries below -1", src + "cache_max_entries: -2\n", "cache_max_entries", nil},
		{"cache_max_bytes below 1 MiB", src + "cache_max_bytes: 1000\n", "cache_max_bytes", []string{"1 MiB"}},
		{"not YAML", "issuers: [\n", "", []string{"line"}},

		// listeners
		{"listen off loopback without tls", src + "listen: 0.0.0.0:50051\n", "listen", []string{"not loopback", "tls", "insecure_plaintext"}},
		{"listen on all interfaces by empty host", src + "listen: \":50051\"\n", "listen", []string{"not loopback"}},
		{"listen on a name", src + "listen: usher.internal:50051\n", "listen", []string{"not loopback"}},
		{"http_listen off loopback without tls", src + "http_listen: 10.0.0.1:8080\n", "http_listen", []string{"not loopback"}},
		{"bad http_listen", src + "http_listen: 8080\n", "http_listen", []string{"host:port"}},
		{"pprof without metrics_listen", src + "pprof: true\n", "pprof", []string{"metrics_listen"}},
		{"metrics off loopback without tls", src + "metrics_listen: 0.0.0.0:9090\n", "metrics_listen", []string{"not loopback", "/metrics", "tls", "insecure_plaintext"}},
		{"metrics on all interfaces by empty host", src + "metrics_listen: \":9090\"\n", "metrics_listen", []string{"not loopback"}},
		{"pprof off loopback without tls", src + "metrics_listen: 0.0.0.0:9090\npprof: true\n", "pprof", []string{"pprof_off_loopback"}},
		{"pprof off loopback with tls", src + tls + "metrics_listen: 0.0.0.0:9090\npprof: true\n", "pprof", []string{"no authentication", "pprof_off_loopback: true"}},
		{"pprof off loopback with insecure_plaintext", src + "metrics_listen: 10.0.0.1:9090\ninsecure_plaintext: true\npprof: true\n", "pprof", []string{"pprof_off_loopback"}},
		{"pprof_off_loopback without pprof", src + "metrics_listen: 0.0.0.0:9090\ninsecure_plaintext: true\npprof_off_loopback: true\n", "pprof_off_loopback", []string{"pprof: true"}},
		{"listen a list", src + "listen: [a]\n", "listen", nil},
		// tls
		{"tls without key_file", src + "tls:\n  cert_file: c.pem\n", "tls", []string{"cert_file and key_file"}},
		{"tls without cert_file", src + "tls:\n  key_file: k.pem\n", "tls", []string{"cert_file and key_file"}},
		{"tls empty", src + "tls: {}\n", "tls", []string{"cert_file and key_file"}},
		{"tls and insecure_plaintext", src + tls + "insecure_plaintext: true\n", "insecure_plaintext", []string{"choose one"}},
		{"unknown key in tls", src + "tls:\n  cert: c.pem\n  key_file: k.pem\n", "tls.cert", []string{"unknown key"}},
		// tracing
		{"tracing without endpoint", src + "tracing:\n  insecure: true\n", "tracing.otlp_endpoint", []string{"host:port"}},
		{"tracing endpoint a URL", src + "tracing:\n  otlp_endpoint: http://collector:4317\n", "tracing.otlp_endpoint", []string{"host:port"}},
		{"sample_ratio above 1", src + "tracing:\n  otlp_endpoint: 127.0.0.1:4317\n  sample_ratio: 1.5\n", "tracing.sample_ratio", []string{"outside"}},
		{"sample_ratio negative", src + "tracing:\n  otlp_endpoint: 127.0.0.1:4317\n  sample_ratio: -0.1\n", "tracing.sample_ratio", []string{"outside"}},
		{"sample_ratio not a number", src + "tracing:\n  otlp_endpoint: 127.0.0.1:4317\n  sample_ratio: .nan\n", "tracing.sample_ratio", []string{"outside"}},
		{"sample_ratio infinite", src + "tracing:\n  otlp_endpoint: 127.0.0.1:4317\n  sample_ratio: .inf\n", "tracing.sample_ratio", []string{"outside"}},
		{"unknown key in tracing", src + "tracing:\n  endpoint: 127.0.0.1:4317\n", "tracing.endpoint", []string{"unknown key"}},
		// limits
		{"max_in_flight negative", src + "max_in_flight: -1\n", "max_in_flight", []string{"positive"}},
		{"max_concurrent_streams negative", src + "max_concurrent_streams: -1\n", "max_concurrent_streams", nil},
		{"max_streams negative", src + "max_streams: -1\n", "max_streams", []string{"positive", "default 1024"}},
		{"max_connections negative", src + "max_connections: -5\n", "max_connections", []string{"positive", "default 4096"}},
		{"max_connections not a number", src + "max_connections: many\n", "max_connections", nil},
		// ext_authz
		{"ext_authz empty", src + "ext_authz:\n", "ext_authz.routes", []string{"no route"}},
		{"ext_authz null", src + "ext_authz: null\n", "ext_authz.routes", []string{"no route"}},
		{"ext_authz empty mapping", src + "ext_authz: {}\n", "ext_authz.routes", []string{"no route"}},
		{"ext_authz a list", src + "ext_authz: [a]\n", "ext_authz", nil},
		{"unknown key in a route", src + "ext_authz:\n  routes:\n    - host: a.example\n      audiance: api/users\n", "ext_authz.routes[0].audiance", []string{"unknown key"}},
		{"unknown key in ext_authz", src + "ext_authz:\n  context_extensions_only: true\n  header_prefx: x-a-\n", "ext_authz.header_prefx", []string{"unknown key"}},
		{"route without audience", src + "ext_authz:\n  routes:\n    - host: a.example\n", "ext_authz.routes[0].audience", []string{"empty"}},
		{"second route's path_prefix", src + "ext_authz:\n  routes:\n    - path_prefix: /a\n      audience: api/a\n    - path_prefix: b\n      audience: api/b\n", "ext_authz.routes[1].path_prefix", nil},
		{"shadowed route", src + "ext_authz:\n  routes:\n    - audience: api/a\n    - path_prefix: /b\n      audience: api/b\n", "ext_authz.routes[1]", []string{"never matches"}},
		{"routes and context extensions", src + "ext_authz:\n  context_extensions_only: true\n  routes:\n    - audience: api/a\n", "ext_authz.context_extensions_only", nil},
		{"bad header_prefix", src + "ext_authz:\n  context_extensions_only: true\n  header_prefix: x-envoy-\n", "ext_authz.header_prefix", nil},
		{"bad scope", src + "ext_authz:\n  routes:\n    - audience: api/a\n      required_scopes: [\"a b\"]\n", "ext_authz.routes[0].required_scopes[0]", nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := config.Parse([]byte(c.yaml))
			if err == nil {
				t.Fatal("accepted")
			}
			if cfg != nil {
				t.Fatalf("a config and an error (%v)", err)
			}
			if c.key != "" && !hasLine(err, c.key+": ") {
				t.Fatalf("error %q has no line naming %s", err, c.key)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Fatalf("error %q does not contain %q", err, w)
				}
			}
			checkLines(t, err)
		})
	}
}

// TestParse_OneDocument: what follows a second "---" would never be read,
// so a second YAML document is refused, empty or not, naming its line.
func TestParse_OneDocument(t *testing.T) {
	for _, ok := range []string{
		"---\n" + minimal,
		"# usher\n---\n" + minimal + "...\n",
		minimal + "...\n# the end\n",
	} {
		if _, err := config.Parse([]byte(ok)); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, c := range []struct{ name, yaml, want string }{
		{"a second document", minimal + "---\nlisten: 0.0.0.0:50051\n", "line 4: a second YAML document starts here (---)"},
		{"an empty second document", minimal + "---\n", "line 4: a second YAML document starts here"},
		{"a second document holding a comment", minimal + "--- \n# listen: 0.0.0.0:50051\n", "line 4: a second YAML document"},
		{"after an end marker", minimal + "...\n---\npprof: true\n", "line 5: a second YAML document"},
		{"an explicit first, a second", "---\n" + minimal + "---\n" + minimal, "line 5: a second YAML document"},
		{"an empty first, a second", "---\n---\n" + minimal, "line 2: a second YAML document"},
		{"a second document that is not YAML", minimal + "---\nissuers: [\n", "a second YAML document follows the first (after a ---) and is not valid YAML"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := config.Parse([]byte(c.yaml))
			if err == nil || cfg != nil {
				t.Fatalf("accepted: %+v", cfg)
			}
			if !hasLine(err, c.want) {
				t.Fatalf("error %q has no line starting %q", err, c.want)
			}
			if !strings.Contains(err.Error(), "remove the --- line") {
				t.Fatalf("error %q does not say what to do", err)
			}
			checkLines(t, err)
		})
	}

	// With a problem in the first document too: both are reported.
	_, err := config.Parse([]byte(minimal + "lisen: x\n---\nlisten: y\n"))
	if err == nil {
		t.Fatal("accepted")
	}
	checkPrefixes(t, err, []string{"lisen: unknown key", "line 5: a second YAML document"})
}

func TestParse_EveryProblemReported(t *testing.T) {
	_, err := config.Parse([]byte("issuers:\n  - issuer: https://a.example\n    jwks_uri: https://a.example/k\n    leeway: abc\n    fetch_timeout: x\n    foo: 1\nbar: 2\n"))
	if err == nil {
		t.Fatal("accepted")
	}
	want := []string{"issuers[0].leeway: ", "issuers[0].fetch_timeout: ", "issuers[0].foo: ", "bar: "}
	checkPrefixes(t, err, want)

	_, err = config.Parse([]byte("issuers:\n  - issuer: https://a.example\n    jwks_uri: http://a.example/k\n    algorithms: [none, HS256]\n    leeway: 1h\n"))
	if err == nil || strings.Count(err.Error(), "\n") != 3 {
		t.Fatalf("error %q: want four problems, one a line", err)
	}

	// Every section's problems, in the order of the sections, the engine's last.
	_, err = config.Parse([]byte(`
listen: 0.0.0.0:50051
pprof: true
tracing:
  otlp_endpoint: nowhere
  sample_ratio: 2
max_in_flight: -3
ext_authz:
  routes:
    - host: a.example
issuers:
  - issuer: https://a.example
    jwks_uri: http://a.example/k
`))
	if err == nil {
		t.Fatal("accepted")
	}
	checkPrefixes(t, err, []string{"listen: ", "pprof: ", "tracing.otlp_endpoint: ", "tracing.sample_ratio: ", "max_in_flight: ", "ext_authz.routes[0].audience: ", "issuers[0].jwks_uri: "})

	_, err = config.Parse([]byte(minimal + "tls:\n  cert_file: c.pem\ninsecure_plaintext: true\n"))
	if err == nil {
		t.Fatal("accepted")
	}
	checkPrefixes(t, err, []string{"tls: ", "insecure_plaintext: "})
}

// checkPrefixes: err has exactly one line per prefix, in order.
func checkPrefixes(t *testing.T, err error, want []string) {
	t.Helper()
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != len(want) {
		t.Fatalf("error %q: want %d lines", err, len(want))
	}
	for i, w := range want {
		if !strings.HasPrefix(lines[i], w) {
			t.Fatalf("line %d = %q, want prefix %q", i, lines[i], w)
		}
	}
}

func TestParse_ExtAuthz(t *testing.T) {
	cfg, err := config.Parse([]byte(minimal + `
ext_authz:
  routes:
    - host: users.example.com
      audience: api/users
    - path_prefix: /invoices
      audience: api/invoices
      required_scopes: [invoices.read, invoices.list]
  header_prefix: X-Auth-
  realm: example
  terse: true
`))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ExtAuthz == nil {
		t.Fatal("ext_authz section dropped")
	}
	want := []extauthz.Route{
		{Host: "users.example.com", Audience: "api/users"},
		{PathPrefix: "/invoices", Audience: "api/invoices", RequiredScopes: []string{"invoices.read", "invoices.list"}},
	}
	if !reflect.DeepEqual(cfg.ExtAuthz.Routes, want) {
		t.Fatalf("routes %+v, want %+v", cfg.ExtAuthz.Routes, want)
	}
	// Validated: the header prefix is lower-cased.
	if cfg.ExtAuthz.HeaderPrefix != "x-auth-" || cfg.ExtAuthz.Realm != "example" || !cfg.ExtAuthz.Terse || cfg.ExtAuthz.ContextExtensionsOnly {
		t.Fatalf("ext_authz %+v", cfg.ExtAuthz)
	}

	cfg, err = config.Parse([]byte(minimal + "ext_authz:\n  context_extensions_only: true\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ExtAuthz == nil || !cfg.ExtAuthz.ContextExtensionsOnly || len(cfg.ExtAuthz.Routes) != 0 ||
		cfg.ExtAuthz.HeaderPrefix != extauthz.DefaultHeaderPrefix || cfg.ExtAuthz.Terse {
		t.Fatalf("ext_authz %+v", cfg.ExtAuthz)
	}

	cfg, err = config.Parse([]byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ExtAuthz != nil {
		t.Fatalf("ext_authz %+v without the section", cfg.ExtAuthz)
	}

	// An empty section is a mistake to report, not a section to ignore, and
	// it is reported the way a section with content is.
	for _, empty := range []string{"ext_authz:\n", "ext_authz: ~\n", "ext_authz: {}\n", "ext_authz:\n# routes to come\n"} {
		_, err := config.Parse([]byte(minimal + empty))
		if err == nil {
			t.Fatalf("%q accepted", empty)
		}
		checkPrefixes(t, err, []string{"ext_authz.routes: no route configured"})
	}
}

func TestLoad(t *testing.T) {
	path := testkit.WriteFile(t, "usher.yaml", []byte(fullConfig))
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Listen != "127.0.0.1:50052" || len(cfg.Engine.Issuers) != 3 || cfg.MaxInFlight != config.DefaultMaxInFlight {
		t.Fatalf("loaded %+v", cfg)
	}

	bad := testkit.WriteFile(t, "bad.yaml", []byte("issuers:\n  - issuer: https://a.example\n"))
	_, err = config.Load(bad)
	if err == nil || !strings.Contains(err.Error(), "issuers[0].jwks_uri") {
		t.Fatalf("error %v does not name the key", err)
	}
	if !strings.HasPrefix(err.Error(), "config "+bad+": ") {
		t.Fatalf("error %q does not start with config and the file", err)
	}
	if strings.Contains(err.Error(), "usher: ") {
		t.Fatalf("error %q carries main's prefix", err)
	}

	// Several problems: the file is named once, then one problem a line.
	worse := testkit.WriteFile(t, "worse.yaml", []byte("pprof: true\nissuers:\n  - issuer: https://a.example\n"))
	_, err = config.Load(worse)
	if err == nil {
		t.Fatal("accepted")
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "config "+worse+": pprof: ") || !strings.HasPrefix(lines[1], "issuers[0].jwks_uri: ") ||
		strings.Count(err.Error(), worse) != 1 {
		t.Fatalf("error %q", err)
	}
	checkLines(t, err)

	// A decoding problem is named the same way.
	misspelt := testkit.WriteFile(t, "misspelt.yaml", []byte("issuers:\n  - issuer: https://a.example\n    jwks_url: https://a.example/k\n"))
	_, err = config.Load(misspelt)
	if err == nil || !strings.HasPrefix(err.Error(), "config "+misspelt+": issuers[0].jwks_url: unknown key") {
		t.Fatalf("error %v", err)
	}

	missing := filepath.Join(filepath.Dir(bad), "missing.yaml")
	_, err = config.Load(missing)
	if err == nil || !strings.Contains(err.Error(), missing) || !strings.HasPrefix(err.Error(), "config") || strings.Contains(err.Error(), "usher: ") {
		t.Fatalf("error %v for a missing file", err)
	}
}

// TestValidate_Programmatic: a configuration built in Go (as usher dev
// builds one) gets the same defaults and the same checks as a file.
func TestValidate_Programmatic(t *testing.T) {
	cfg := &config.Config{
		Engine: service.Config{
			Issuers:   []service.IssuerConfig{{Issuer: "http://127.0.0.1:8081", Discovery: true, TokenType: "at+jwt"}},
			Audiences: slices.Clone(testkit.Audiences),
		},
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if cfg.Listen != config.DefaultListen || cfg.MaxInFlight != config.DefaultMaxInFlight || cfg.MaxConcurrentStreams != config.DefaultMaxStreams {
		t.Fatalf("server defaults %+v", cfg)
	}
	if cfg.Engine.MaxTokenBytes != service.DefaultMaxTokenBytes || cfg.Engine.CacheMaxEntries != service.DefaultCacheEntries ||
		cfg.Engine.CacheMaxBytes != service.DefaultCacheMaxBytes {
		t.Fatalf("engine defaults %+v", cfg.Engine)
	}
	is := cfg.Engine.Issuers[0]
	if !slices.Equal(is.Algorithms, service.DefaultAlgorithms) || is.Leeway != service.DefaultLeeway || is.TokenType != "at+jwt" ||
		is.FetchTimeout != service.DefaultFetchTimeout || is.MaxStale != service.DefaultMaxStale || !slices.Equal(is.AudienceClaims, []string{"aud"}) {
		t.Fatalf("issuer defaults %+v", is)
	}
	before, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("validating again: %v", err)
	}
	if after, _ := json.Marshal(cfg); string(after) != string(before) {
		t.Fatalf("validating again changed the config:\n%s\n%s", before, after)
	}

	// Set values are kept, and programmatic sections are checked as the file's are.
	kept := &config.Config{Listen: "[::1]:1", MaxInFlight: 3, MaxConcurrentStreams: 5, MaxStreams: 6, MaxConnections: 7, Tracing: &config.Tracing{OTLPEndpoint: "127.0.0.1:4317", SampleRatio: 0.5},
		Engine: service.Config{Issuers: []service.IssuerConfig{{Issuer: "https://a.example", JWKSFile: "k.json"}}}}
	if err := kept.Validate(); err != nil {
		t.Fatal(err)
	}
	if kept.Listen != "[::1]:1" || kept.MaxInFlight != 3 || kept.MaxConcurrentStreams != 5 || kept.MaxStreams != 6 || kept.MaxConnections != 7 || kept.Tracing.SampleRatio != 0.5 {
		t.Fatalf("set values changed: %+v", kept)
	}

	bad := &config.Config{
		Listen:   "0.0.0.0:50051",
		ExtAuthz: &extauthz.Config{Routes: []extauthz.Route{{Host: "a.example"}}},
		Engine:   service.Config{Issuers: []service.IssuerConfig{{Issuer: "https://a.example", JWKSURI: "http://a.example/k"}}},
	}
	err = bad.Validate()
	if err == nil {
		t.Fatal("accepted")
	}
	checkPrefixes(t, err, []string{"listen: ", "ext_authz.routes[0].audience: ", "issuers[0].jwks_uri: "})
	checkLines(t, err)

	if err := (&config.Config{}).Validate(); err == nil || !hasLine(err, "issuers: ") {
		t.Fatalf("a config without issuers: %v", err)
	}
}

func TestIsLoopback(t *testing.T) {
	for host, want := range map[string]bool{
		"localhost": true, "127.0.0.1": true, "127.255.0.9": true, "::1": true,
		"": false, "0.0.0.0": false, "::": false, "10.0.0.1": false, "localhost.example.com": false,
		"[::1]": false, "example.com": false,
	} {
		if got := config.IsLoopback(host); got != want {
			t.Errorf("IsLoopback(%q) = %v, want %v", host, got, want)
		}
	}
}
