package service_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

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

func TestParseConfig_Good(t *testing.T) {
	cfg, err := service.ParseConfig([]byte(fullConfig))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Listen != "127.0.0.1:50052" || cfg.MetricsListen != "127.0.0.1:9090" || cfg.MaxTokenBytes != 8192 || len(cfg.Issuers) != 3 {
		t.Fatalf("config %+v", cfg)
	}
	a := cfg.Issuers[0]
	if a.Issuer != "https://auth.example.com/" || a.JWKSURI != "https://auth.example.com/.well-known/jwks.json" ||
		!slices.Equal(a.Algorithms, []string{"RS256", "ES256"}) || a.TokenType != "at+jwt" ||
		time.Duration(a.Leeway) != 45*time.Second || !slices.Equal(a.RequiredClaims, []string{"exp", "sub"}) ||
		!slices.Equal(a.AudienceClaims, []string{"aud", "client_id"}) || time.Duration(a.RefreshInterval) != 10*time.Minute ||
		time.Duration(a.UnknownKIDCooldown) != 2*time.Second || time.Duration(a.FetchTimeout) != 3*time.Second {
		t.Fatalf("issuers[0] = %+v", a)
	}
	b := cfg.Issuers[1]
	if !b.Discovery || b.JWKSURI != "" || !slices.Equal(b.Algorithms, service.DefaultAlgorithms) ||
		time.Duration(b.Leeway) != service.DefaultLeeway || !slices.Equal(b.RequiredClaims, []string{"exp"}) ||
		!slices.Equal(b.AudienceClaims, []string{"aud"}) || time.Duration(b.UnknownKIDCooldown) != service.DefaultUnknownKIDCool ||
		time.Duration(b.RefreshInterval) != service.DefaultRefreshInterval || time.Duration(b.FetchTimeout) != service.DefaultFetchTimeout {
		t.Fatalf("issuers[1] defaults = %+v", b)
	}
	if cfg.Issuers[2].JWKSFile != "keys.json" {
		t.Fatalf("issuers[2] = %+v", cfg.Issuers[2])
	}
	if !slices.Equal(cfg.Audiences, []service.AudienceConfig{{Audience: "api/users", Name: "Users API"}, {Audience: "api/invoices", Name: "Invoices API"}}) {
		t.Fatalf("audiences %+v", cfg.Audiences)
	}
	for _, a := range service.DefaultAlgorithms {
		if strings.EqualFold(a, "none") || strings.HasPrefix(a, "HS") {
			t.Fatalf("default algorithms include %s", a)
		}
	}

	min, err := service.ParseConfig([]byte("issuers:\n  - issuer: https://a.example\n    jwks_uri: https://a.example/keys\n"))
	if err != nil {
		t.Fatal(err)
	}
	if min.Listen != service.DefaultListen || min.MaxTokenBytes != service.DefaultMaxTokenBytes {
		t.Fatalf("defaults %+v", min)
	}
	if _, err := service.ParseConfig([]byte("issuers:\n  - issuer: http://localhost:8080\n    jwks_uri: http://[::1]:8080/keys\n")); err != nil {
		t.Fatalf("http on loopback refused: %v", err)
	}
}

func TestParseConfig_Bad(t *testing.T) {
	const src = "issuers:\n  - issuer: https://a.example\n    jwks_uri: https://a.example/keys\n"
	for _, c := range []struct {
		name, yaml string
		want       []string // every one must appear in the error
	}{
		{"unknown key", "issuers:\n  - issuer: https://a.example\n    jwks_url: https://a.example/keys\n", []string{"issuers[0].jwks_url", "unknown key"}},
		{"unknown top-level key", src + "listen_addr: x\n", []string{"listen_addr", "unknown key"}},
		{"missing source", "issuers:\n  - issuer: https://a.example\n", []string{"issuers[0].jwks_uri", "exactly one", "found 0"}},
		{"two sources", src + "    discovery: true\n", []string{"issuers[0].jwks_uri", "exactly one", "found 2"}},
		{"three sources", src + "    discovery: true\n    jwks_file: k.json\n", []string{"issuers[0].jwks_uri", "found 3"}},
		{"alg none", src + "    algorithms: [RS256, none]\n", []string{"issuers[0].algorithms", `"none"`}},
		{"alg NONE", src + "    algorithms: [NONE]\n", []string{"issuers[0].algorithms", "none"}},
		{"HS256", src + "    algorithms: [HS256]\n", []string{"issuers[0].algorithms", "HS256", "symmetric"}},
		{"unknown alg", src + "    algorithms: [RS1]\n", []string{"issuers[0].algorithms", "RS1"}},
		{"bad duration", src + "    leeway: 30\n", []string{"issuers[0].leeway", `"30" is not a duration`}},
		{"duration a list", src + "    fetch_timeout: [1s]\n", []string{"issuers[0].fetch_timeout", "duration"}},
		{"leeway too large", src + "    leeway: 1h\n", []string{"issuers[0].leeway", "outside"}},
		{"negative cooldown", src + "    unknown_kid_cooldown: -1s\n", []string{"issuers[0].unknown_kid_cooldown", "negative"}},
		{"refresh too short", src + "    refresh_interval: 10ms\n", []string{"issuers[0].refresh_interval"}},
		{"http non-loopback jwks_uri", "issuers:\n  - issuer: https://a.example\n    jwks_uri: http://a.example/keys\n", []string{"issuers[0].jwks_uri", "plain http"}},
		{"jwks_uri not a URL", "issuers:\n  - issuer: https://a.example\n    jwks_uri: keys.json\n", []string{"issuers[0].jwks_uri", "not an absolute URL"}},
		{"ftp jwks_uri", "issuers:\n  - issuer: https://a.example\n    jwks_uri: ftp://a.example/keys\n", []string{"issuers[0].jwks_uri", "scheme"}},
		{"discovery on http", "issuers:\n  - issuer: http://a.example\n    discovery: true\n", []string{"issuers[0].discovery", "plain http"}},
		{"second issuer", src + "  - issuer: https://b.example\n    jwks_uri: http://b.example/keys\n", []string{"issuers[1].jwks_uri"}},
		{"empty issuer", "issuers:\n  - jwks_uri: https://a.example/keys\n", []string{"issuers[0].issuer", "empty"}},
		{"issuer with white space", "issuers:\n  - issuer: \"https://a.example \"\n    jwks_uri: https://a.example/keys\n", []string{"issuers[0].issuer", "white space"}},
		{"issuer twice", src + src[len("issuers:\n"):], []string{"issuers[1].issuer", "twice"}},
		{"no issuers", "listen: 127.0.0.1:1\n", []string{"issuers", "no issuer"}},
		{"empty file", "", []string{"issuers", "no issuer"}},
		{"bad listen", src + "listen: 50051\n", []string{"listen", "host:port"}},
		{"bad metrics_listen", src + "metrics_listen: nope\n", []string{"metrics_listen"}},
		{"max_token_bytes too small", src + "max_token_bytes: 10\n", []string{"max_token_bytes"}},
		{"max_token_bytes a string", src + "max_token_bytes: lots\n", []string{"max_token_bytes"}},
		{"discovery not a bool", "issuers:\n  - issuer: https://a.example\n    discovery: maybe\n", []string{"issuers[0].discovery"}},
		{"issuers a mapping", "issuers: {}\n", []string{"issuers"}},
		{"empty audience", src + "audiences:\n  - name: Users API\n", []string{"audiences[0].audience", "empty"}},
		{"audience twice", src + "audiences:\n  - audience: a\n  - audience: a\n", []string{"audiences[1].audience", "twice"}},
		{"empty audience claim", src + "    audience_claims: [\"\"]\n", []string{"issuers[0].audience_claims"}},
		{"not YAML", "issuers: [\n", []string{"line"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := service.ParseConfig([]byte(c.yaml))
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Fatalf("error %q does not contain %q", err, w)
				}
			}
			for _, line := range strings.Split(err.Error(), "\n") {
				if !strings.Contains(line, ":") || strings.HasPrefix(line, " ") {
					t.Fatalf("error line %q does not name a key", line)
				}
			}
		})
	}
}

func TestParseConfig_EveryProblemReported(t *testing.T) {
	_, err := service.ParseConfig([]byte("issuers:\n  - issuer: https://a.example\n    jwks_uri: https://a.example/k\n    leeway: abc\n    fetch_timeout: x\n    foo: 1\nbar: 2\n"))
	if err == nil {
		t.Fatal("accepted")
	}
	want := []string{"issuers[0].leeway: ", "issuers[0].fetch_timeout: ", "issuers[0].foo: ", "bar: "}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != len(want) {
		t.Fatalf("error %q: want %d lines", err, len(want))
	}
	for i, w := range want {
		if !strings.HasPrefix(lines[i], w) {
			t.Fatalf("line %d = %q, want prefix %q", i, lines[i], w)
		}
	}

	_, err = service.ParseConfig([]byte("issuers:\n  - issuer: https://a.example\n    jwks_uri: http://a.example/k\n    algorithms: [none, HS256]\n    leeway: 1h\n"))
	if err == nil || strings.Count(err.Error(), "\n") != 3 {
		t.Fatalf("error %q: want four problems, one a line", err)
	}
}

func TestLoadConfig(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "usher.yaml")
	if err := os.WriteFile(path, []byte(fullConfig), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := service.LoadConfig(path); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("issuers:\n  - issuer: https://a.example\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := service.LoadConfig(bad)
	if err == nil || !strings.Contains(err.Error(), bad) || !strings.Contains(err.Error(), "issuers[0].jwks_uri") {
		t.Fatalf("error %v does not name the file and the key", err)
	}
	if _, err := service.LoadConfig(filepath.Join(dir, "missing.yaml")); err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Fatalf("error %v for a missing file", err)
	}
}

func TestNewValidator_RejectsBadConfig(t *testing.T) {
	ctx := testContext(t)
	if _, err := service.NewValidator(ctx, nil); err == nil {
		t.Fatal("nil config accepted")
	}
	_, err := service.NewValidator(ctx, &service.Config{Issuers: []service.IssuerConfig{{Issuer: "https://a.example", JWKSURI: "http://a.example/k"}}})
	if err == nil || !strings.Contains(err.Error(), "issuers[0].jwks_uri") {
		t.Fatalf("error %v", err)
	}
}
