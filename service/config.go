package service

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Defaults applied by Config.Validate where a key is absent.
const (
	DefaultListen          = "127.0.0.1:50051"
	DefaultMaxTokenBytes   = 16 << 10
	DefaultLeeway          = 30 * time.Second
	DefaultRefreshInterval = 5 * time.Minute
	DefaultMaxRefresh      = time.Hour
	DefaultUnknownKIDCool  = 5 * time.Second
	DefaultFetchTimeout    = 10 * time.Second
	DefaultMaxStale        = 24 * time.Hour
	DefaultMaxInFlight     = 1024
	DefaultMaxStreams      = 256
)

// DefaultAlgorithms is the allow-list of an issuer that names none: the
// asymmetric JWS algorithms. Symmetric (HS*) algorithms need a shared secret,
// which usher never holds, and "none" is never accepted.
var DefaultAlgorithms = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}

// Config is usher's configuration, as read from YAML by LoadConfig.
type Config struct {
	// Listen is the gRPC address (default 127.0.0.1:50051).
	Listen string `yaml:"listen"`
	// MetricsListen is the optional Prometheus /metrics address.
	MetricsListen string `yaml:"metrics_listen"`
	// Pprof serves net/http/pprof on the metrics listener.
	Pprof bool `yaml:"pprof"`
	// HTTPListen is the optional HTTP/JSON (Connect protocol) address.
	HTTPListen string `yaml:"http_listen"`
	// Tracing exports OpenTelemetry spans of every call over OTLP/gRPC.
	Tracing *TracingConfig `yaml:"tracing"`
	// ExtAuthz, when present, serves Envoy's external authorization on the
	// gRPC listener. It is kept as YAML here and decoded, strictly, by the
	// extauthz package (which builds on this one).
	ExtAuthz yaml.Node `yaml:"ext_authz"`
	// MaxTokenBytes caps the token size, checked before any parsing (default 16 KiB).
	MaxTokenBytes int `yaml:"max_token_bytes"`
	// TLS serves gRPC over TLS, and mTLS with ClientCAFile.
	TLS *TLSConfig `yaml:"tls"`
	// InsecurePlaintext allows plaintext gRPC on a non-loopback address
	// (e.g. behind a mesh sidecar that encrypts); loopback never needs it.
	InsecurePlaintext bool `yaml:"insecure_plaintext"`
	// MaxInFlight bounds concurrent calls; beyond it usher answers
	// RESOURCE_EXHAUSTED at once instead of queuing (default 1024).
	MaxInFlight int `yaml:"max_in_flight"`
	// MaxConcurrentStreams bounds streams per connection (default 256).
	MaxConcurrentStreams uint32 `yaml:"max_concurrent_streams"`
	// CacheMaxEntries bounds the verified-token cache (default 10000; -1 turns it off).
	CacheMaxEntries int `yaml:"cache_max_entries"`
	// CacheMaxBytes bounds the cache's approximate memory (default 64 MiB).
	CacheMaxBytes int64 `yaml:"cache_max_bytes"`
	// Issuers are the trusted issuers.
	Issuers []IssuerConfig `yaml:"issuers"`
	// Audiences is the optional registry of known APIs, used in hints and InspectToken.
	Audiences []AudienceConfig `yaml:"audiences"`
}

// IssuerConfig is one trusted issuer. Exactly one of JWKSURI, Discovery and
// JWKSFile says where its keys come from.
type IssuerConfig struct {
	// Issuer is the exact `iss` value.
	Issuer string `yaml:"issuer"`
	// JWKSURI is the URL of the issuer's JSON Web Key Set.
	JWKSURI string `yaml:"jwks_uri"`
	// Discovery reads jwks_uri from {issuer}/.well-known/openid-configuration.
	Discovery bool `yaml:"discovery"`
	// JWKSFile is a static key set on disk.
	JWKSFile string `yaml:"jwks_file"`
	// Algorithms is the allow-list (default DefaultAlgorithms).
	Algorithms []string `yaml:"algorithms"`
	// TokenType, when set, is the required `typ` header (e.g. "at+jwt").
	TokenType string `yaml:"token_type"`
	// Leeway is the clock skew tolerated on exp, nbf and iat (default 30s).
	Leeway Duration `yaml:"leeway"`
	// RequiredClaims must be present (default ["exp"]).
	RequiredClaims []string `yaml:"required_claims"`
	// AudienceClaims are the claims the audience is read from (default ["aud"]).
	AudienceClaims []string `yaml:"audience_claims"`
	// RefreshInterval is the shortest time between scheduled key set fetches
	// (default 5m); a longer Cache-Control max-age is honoured up to 1h.
	RefreshInterval Duration `yaml:"refresh_interval"`
	// UnknownKIDCooldown is the least time between two refetches caused by
	// tokens with an unknown kid (default 5s).
	UnknownKIDCooldown Duration `yaml:"unknown_kid_cooldown"`
	// FetchTimeout bounds one whole fetch, headers and body (default 10s).
	FetchTimeout Duration `yaml:"fetch_timeout"`
	// MaxStale is how long the last good key set keeps serving while every
	// refresh fails (default 24h); after it, tokens get KEYS_UNAVAILABLE.
	MaxStale Duration `yaml:"max_stale"`
}

// TracingConfig sends spans to an OTLP/gRPC collector. Spans carry the
// method, status and timing; never a token (messages are not recorded).
type TracingConfig struct {
	// OTLPEndpoint is the collector's host:port, e.g. "127.0.0.1:4317".
	OTLPEndpoint string `yaml:"otlp_endpoint"`
	// Insecure sends without TLS (a collector on loopback or a sidecar).
	Insecure bool `yaml:"insecure"`
	// SampleRatio of calls traced, 0 < r ≤ 1 (default 1), respecting a
	// caller's sampling decision.
	SampleRatio float64 `yaml:"sample_ratio"`
}

// TLSConfig is the server's certificate and, for mTLS, the clients' CA.
// The files are re-read when they change, without a restart.
type TLSConfig struct {
	CertFile     string `yaml:"cert_file"`
	KeyFile      string `yaml:"key_file"`
	ClientCAFile string `yaml:"client_ca_file"`
}

// AudienceConfig registers a known API.
type AudienceConfig struct {
	// Audience is the value a token's aud carries, e.g. "api/users".
	Audience string `yaml:"audience"`
	// Name is the API's human name, e.g. "Users API".
	Name string `yaml:"name"`
}

// Duration is a time.Duration written in YAML as a Go duration string ("30s").
type Duration time.Duration

// UnmarshalYAML reads a duration string such as "30s" or "5m".
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	// A *yaml.TypeError lets the decoder go on and report every problem.
	if n.Kind != yaml.ScalarNode {
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: want a duration such as \"30s\", found a %s", n.Line, kindName(n.Kind))}}
	}
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: %q is not a duration (write e.g. \"30s\" or \"5m\")", n.Line, n.Value)}}
	}
	*d = Duration(v)
	return nil
}

func kindName(k yaml.Kind) string {
	switch k {
	case yaml.MappingNode:
		return "mapping"
	case yaml.SequenceNode:
		return "list"
	default:
		return "non-scalar"
	}
}

// LoadConfig reads and validates a YAML configuration file. Unknown keys are
// errors (a misspelt key must not silently disable a check). The error names
// the file, the key and the problem.
func LoadConfig(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("usher: config: %w", err)
	}
	cfg, err := ParseConfig(b)
	if err != nil {
		return nil, fmt.Errorf("usher: config %s: %w", path, err)
	}
	return cfg, nil
}

// ParseConfig decodes and validates a YAML configuration.
func ParseConfig(b []byte) (*Config, error) {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var cfg Config
	if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
		return nil, decodeError(b, err)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &cfg, nil
}

// decodeError turns the YAML decoder's "line N: ..." errors into one line
// each that names the key at that line, e.g.
// `issuers[0].leeway: "abc" is not a duration ... (line 4)`.
func decodeError(b []byte, err error) error {
	msgs := []string{strings.TrimPrefix(err.Error(), "yaml: ")}
	var te *yaml.TypeError
	if errors.As(err, &te) {
		msgs = te.Errors
	}
	var root yaml.Node
	tree := yaml.Unmarshal(b, &root) == nil
	errs := make([]error, 0, len(msgs))
	for _, m := range msgs {
		var line int
		if _, err := fmt.Sscanf(m, "line %d:", &line); err == nil && tree {
			if key := keyAtLine(&root, "", line); key != "" {
				what := strings.TrimSpace(m[strings.IndexByte(m, ':')+1:])
				if strings.HasPrefix(what, "field ") && strings.Contains(what, " not found in type ") {
					what = "unknown key (misspelt?)"
				}
				m = fmt.Sprintf("%s: %s (line %d)", key, what, line)
			}
		}
		errs = append(errs, errors.New(m))
	}
	return errors.Join(errs...)
}

// keyAtLine returns the path (e.g. issuers[0].leeway) of the innermost key or
// list item on line, or "" when none is.
func keyAtLine(n *yaml.Node, path string, line int) string {
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			if k := keyAtLine(c, path, line); k != "" {
				return k
			}
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			p := k.Value
			if path != "" {
				p = path + "." + k.Value
			}
			if k.Line == line && v.Line == line {
				return p // a scalar or a flow collection on the key's line
			}
			if inner := keyAtLine(v, p, line); inner != "" {
				return inner
			}
			if k.Line == line {
				return p
			}
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			p := fmt.Sprintf("%s[%d]", path, i)
			if inner := keyAtLine(c, p, line); inner != "" {
				return inner
			}
			if c.Line == line {
				return p
			}
		}
	}
	return ""
}

// Validate fills in defaults and reports every problem at once, one line each,
// each naming the key (e.g. issuers[0].jwks_uri) and what is wrong.
func (c *Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	}
	if c.Listen == "" {
		c.Listen = DefaultListen
	} else if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		bad("listen", "%q is not host:port (e.g. 127.0.0.1:50051)", c.Listen)
	}
	if c.MetricsListen != "" {
		if _, _, err := net.SplitHostPort(c.MetricsListen); err != nil {
			bad("metrics_listen", "%q is not host:port (e.g. 127.0.0.1:9090)", c.MetricsListen)
		}
	}
	for _, l := range []struct{ key, addr string }{{"listen", c.Listen}, {"http_listen", c.HTTPListen}} {
		if l.addr == "" {
			continue
		}
		host, _, err := net.SplitHostPort(l.addr)
		if err != nil {
			if l.key != "listen" {
				bad(l.key, "%q is not host:port (e.g. 127.0.0.1:8080)", l.addr)
			}
			continue
		}
		if c.TLS == nil && !c.InsecurePlaintext && !isLoopbackHost(host) {
			bad(l.key, "%q is not loopback and no tls is configured: tokens would cross the network in clear; configure tls (cert_file, key_file), or set insecure_plaintext: true if something else encrypts (e.g. a mesh sidecar)", l.addr)
		}
	}
	if c.Pprof && c.MetricsListen == "" {
		bad("pprof", "true needs metrics_listen: pprof is served on the metrics listener")
	}
	if c.TLS != nil {
		if c.TLS.CertFile == "" || c.TLS.KeyFile == "" {
			bad("tls", "cert_file and key_file are both required")
		}
		if c.InsecurePlaintext {
			bad("insecure_plaintext", "true together with tls: choose one")
		}
	}
	if t := c.Tracing; t != nil {
		if _, _, err := net.SplitHostPort(t.OTLPEndpoint); err != nil {
			bad("tracing.otlp_endpoint", "%q is not host:port (e.g. 127.0.0.1:4317)", t.OTLPEndpoint)
		}
		switch {
		case t.SampleRatio == 0:
			t.SampleRatio = 1
		case t.SampleRatio < 0 || t.SampleRatio > 1:
			bad("tracing.sample_ratio", "%v is outside (0, 1]", t.SampleRatio)
		}
	}
	if c.MaxInFlight == 0 {
		c.MaxInFlight = DefaultMaxInFlight
	} else if c.MaxInFlight < 1 {
		bad("max_in_flight", "%d: must be positive", c.MaxInFlight)
	}
	switch {
	case c.CacheMaxEntries == 0:
		c.CacheMaxEntries = DefaultCacheEntries
	case c.CacheMaxEntries < -1:
		bad("cache_max_entries", "%d: use a positive bound, or -1 to turn the cache off", c.CacheMaxEntries)
	}
	switch {
	case c.CacheMaxBytes == 0:
		c.CacheMaxBytes = DefaultCacheMaxBytes
	case c.CacheMaxBytes < 1<<20:
		bad("cache_max_bytes", "%d is below 1 MiB", c.CacheMaxBytes)
	}
	if c.MaxConcurrentStreams == 0 {
		c.MaxConcurrentStreams = DefaultMaxStreams
	}
	switch {
	case c.MaxTokenBytes == 0:
		c.MaxTokenBytes = DefaultMaxTokenBytes
	case c.MaxTokenBytes < 256 || c.MaxTokenBytes > 1<<20:
		bad("max_token_bytes", "%d is outside 256..1048576", c.MaxTokenBytes)
	}
	if len(c.Issuers) == 0 {
		bad("issuers", "no issuer configured: usher would reject every token; add at least one issuer with jwks_uri, discovery or jwks_file")
	}
	seen := map[string]int{}
	for i := range c.Issuers {
		is := &c.Issuers[i]
		key := fmt.Sprintf("issuers[%d]", i)
		if j, dup := seen[is.Issuer]; dup && is.Issuer != "" {
			bad(key+".issuer", "%q is configured twice (also issuers[%d])", is.Issuer, j)
		}
		seen[is.Issuer] = i
		errs = append(errs, is.validate(key)...)
	}
	names := map[string]bool{}
	for i, a := range c.Audiences {
		key := fmt.Sprintf("audiences[%d]", i)
		if a.Audience == "" {
			bad(key+".audience", "empty: give the aud value the API answers to, e.g. api/users")
		} else if names[a.Audience] {
			bad(key+".audience", "%q is registered twice", a.Audience)
		}
		names[a.Audience] = true
	}
	return errors.Join(errs...)
}

func (is *IssuerConfig) validate(key string) []error {
	var errs []error
	bad := func(k, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s.%s: %s", key, k, fmt.Sprintf(format, args...)))
	}
	if is.Issuer == "" {
		bad("issuer", "empty: give the exact iss value of the issuer's tokens")
	} else if strings.TrimSpace(is.Issuer) != is.Issuer {
		bad("issuer", "%q has surrounding white space; iss is compared byte for byte", is.Issuer)
	}
	sources := 0
	if is.JWKSURI != "" {
		sources++
		if err := checkFetchURL(is.JWKSURI); err != nil {
			bad("jwks_uri", "%v", err)
		}
	}
	if is.Discovery {
		sources++
		if is.Issuer != "" {
			if err := checkFetchURL(is.Issuer); err != nil {
				bad("discovery", "the issuer is not a URL discovery can use: %v", err)
			}
		}
	}
	if is.JWKSFile != "" {
		sources++
	}
	if sources != 1 {
		bad("jwks_uri", "give exactly one of jwks_uri, discovery: true or jwks_file (found %d)", sources)
	}
	if len(is.Algorithms) == 0 {
		is.Algorithms = slices.Clone(DefaultAlgorithms)
	}
	for _, a := range is.Algorithms {
		switch {
		case strings.EqualFold(a, "none"):
			bad("algorithms", "\"none\" is never accepted: unsigned tokens prove nothing")
		case strings.HasPrefix(strings.ToUpper(a), "HS"):
			bad("algorithms", "%q is symmetric: it needs the issuer's shared secret, which usher does not hold; use RS256, ES256 or EdDSA", a)
		case !slices.Contains(DefaultAlgorithms, a):
			bad("algorithms", "%q is not a JWS algorithm usher verifies (known: %s)", a, strings.Join(DefaultAlgorithms, ", "))
		}
	}
	if is.Leeway == 0 {
		is.Leeway = Duration(DefaultLeeway)
	} else if is.Leeway < 0 || time.Duration(is.Leeway) > 10*time.Minute {
		bad("leeway", "%s is outside 0..10m", time.Duration(is.Leeway))
	}
	if is.RequiredClaims == nil {
		is.RequiredClaims = []string{"exp"}
	}
	if len(is.AudienceClaims) == 0 {
		is.AudienceClaims = []string{"aud"}
	}
	for _, c := range is.AudienceClaims {
		if c == "" {
			bad("audience_claims", "empty claim name")
		}
	}
	if is.RefreshInterval == 0 {
		is.RefreshInterval = Duration(DefaultRefreshInterval)
	} else if time.Duration(is.RefreshInterval) < time.Second {
		bad("refresh_interval", "%s is below 1s", time.Duration(is.RefreshInterval))
	}
	if is.UnknownKIDCooldown == 0 {
		is.UnknownKIDCooldown = Duration(DefaultUnknownKIDCool)
	} else if is.UnknownKIDCooldown < 0 {
		bad("unknown_kid_cooldown", "negative")
	}
	if is.FetchTimeout == 0 {
		is.FetchTimeout = Duration(DefaultFetchTimeout)
	} else if is.FetchTimeout < 0 {
		bad("fetch_timeout", "negative")
	}
	if is.MaxStale == 0 {
		is.MaxStale = Duration(DefaultMaxStale)
	} else if is.MaxStale < is.RefreshInterval {
		bad("max_stale", "%s is shorter than refresh_interval %s: the key set would go stale between two scheduled fetches", time.Duration(is.MaxStale), time.Duration(is.RefreshInterval))
	}
	return errs
}

// checkFetchURL accepts https URLs, and http only for loopback hosts.
func checkFetchURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" {
		return fmt.Errorf("%q is not an absolute URL", s)
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		if isLoopbackHost(u.Hostname()) {
			return nil
		}
		return fmt.Errorf("%q uses plain http: keys fetched without TLS can be replaced in transit; use https (http is allowed for loopback only)", s)
	default:
		return fmt.Errorf("%q: scheme %q is not http(s)", s, u.Scheme)
	}
}

func isLoopbackHost(h string) bool {
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}
