package service

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Defaults applied by Config.Validate where a field is zero.
const (
	DefaultMaxTokenBytes            = 16 << 10
	DefaultLeeway                   = 30 * time.Second
	DefaultRefreshInterval          = 5 * time.Minute
	DefaultUnknownKIDCool           = 5 * time.Second
	DefaultFetchTimeout             = 10 * time.Second
	DefaultMaxStale                 = 24 * time.Hour
	DefaultCacheEntries             = 10_000
	DefaultIntrospectionCacheTTL    = 60 * time.Second
	DefaultIntrospectionNegativeTTL = 5 * time.Second
	DefaultIntrospectionTimeout     = 2 * time.Second
	DefaultCacheMaxBytes            = 64 << 20
	DefaultDPoPIATWindow            = 60 * time.Second
	DefaultReplayMaxEntries         = 100_000
)

// DefaultAlgorithms is the allow-list of an issuer that names none: the
// asymmetric JWS algorithms. Symmetric (HS*) algorithms need a shared secret,
// which usher never holds, and "none" is never accepted.
var DefaultAlgorithms = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}

// Config is what the engine needs: the trusted issuers, the audiences
// registry and the engine's limits. Operators write it in usher's YAML file
// (read by the binary); code that embeds the engine fills it in directly.
// Validate names each problem by its configuration key (issuers[0].jwks_uri).
type Config struct {
	// MaxTokenBytes caps the token size, checked before any parsing
	// (max_token_bytes; default 16 KiB).
	MaxTokenBytes int
	// CacheMaxEntries bounds the verified-token cache, and the cache of
	// introspection answers each on its own (cache_max_entries; default
	// 10000; -1 turns both off).
	CacheMaxEntries int
	// CacheMaxBytes bounds each cache's approximate memory
	// (cache_max_bytes; default 64 MiB).
	CacheMaxBytes int64
	// Issuers are the trusted issuers.
	Issuers []IssuerConfig
	// Audiences is the optional registry of known APIs, used in hints,
	// InspectToken and bounded metric labels.
	Audiences []KnownAudience
	// DPoP sets how proofs of DPoP-bound tokens are checked (dpop).
	DPoP DPoPConfig
}

// DPoPConfig is the dpop section: RFC 9449 proofs. Where proofs' jti are
// remembered (dpop.replay_store) is the server's concern: the engine takes
// a ReplayStore through WithReplayStore, and keeps one in memory otherwise.
type DPoPConfig struct {
	// IATWindow is how far a proof's iat may lie from now, either way, and
	// how long its jti is remembered (iat_window; default 60s).
	IATWindow time.Duration
	// ReplayMaxEntries bounds the in-memory replay cache (default 100000).
	ReplayMaxEntries int
}

// IssuerConfig is one trusted issuer. Exactly one of JWKSURI, Discovery and
// JWKSFile says where its keys come from. Zero durations take the defaults.
type IssuerConfig struct {
	// Issuer is the exact `iss` value.
	Issuer string
	// JWKSURI is the URL of the issuer's JSON Web Key Set.
	JWKSURI string
	// Discovery reads jwks_uri from {issuer}/.well-known/openid-configuration.
	Discovery bool
	// JWKSFile is a static key set on disk.
	JWKSFile string
	// AllowPrivateNetwork lets this issuer's discovery document and key set
	// be fetched from loopback and private addresses (RFC 1918, unique local,
	// carrier-grade NAT…) that a host name or the discovery document leads
	// to. Without it they are fetched from public addresses only, unless the
	// issuer is on loopback or its issuer or jwks_uri URL writes the address
	// out. Link-local and cloud metadata addresses are never fetched.
	AllowPrivateNetwork bool
	// Introspection, when set, answers this issuer's opaque access tokens
	// through its RFC 7662 introspection endpoint, beside or instead of a key
	// set.
	Introspection *IntrospectionConfig
	// Algorithms is the allow-list (default DefaultAlgorithms).
	Algorithms []string
	// TokenType, when set, is the required `typ` header (e.g. "at+jwt").
	TokenType string
	// Leeway is the clock skew tolerated on exp, nbf and iat (default 30s).
	Leeway time.Duration
	// RequiredClaims must be present (default ["exp"]).
	RequiredClaims []string
	// AudienceClaims are the claims the audience is read from (default ["aud"]).
	AudienceClaims []string
	// RefreshInterval is the shortest time between scheduled key set fetches
	// (default 5m); a longer Cache-Control max-age is honoured up to 1h.
	RefreshInterval time.Duration
	// UnknownKIDCooldown is the least time between two refetches caused by
	// tokens with an unknown kid (default 5s).
	UnknownKIDCooldown time.Duration
	// FetchTimeout bounds one whole fetch, headers and body (default 10s).
	FetchTimeout time.Duration
	// MaxStale is how long the last good key set keeps serving while every
	// refresh fails (default 24h); after it, tokens get KEYS_UNAVAILABLE.
	MaxStale time.Duration
}

// IntrospectionConfig is how usher asks an issuer about its opaque access
// tokens (RFC 7662), authenticating with client_secret_basic.
type IntrospectionConfig struct {
	// Endpoint is the introspection endpoint; with discovery it may be left
	// empty and is read from the document's introspection_endpoint.
	Endpoint string
	// ClientID is usher's own client at the issuer.
	ClientID string
	// ClientSecretFile holds usher's client secret (never inline in the
	// configuration); it is read when the validator is built, so a reload
	// reads it again.
	ClientSecretFile string
	// TokenPrefixes route opaque tokens that start with one of them to this
	// issuer (e.g. "ory_at_").
	TokenPrefixes []string
	// CacheTTL is the longest an active answer is reused, never past the
	// token's exp (default 60s): revocation is seen within it.
	CacheTTL time.Duration
	// NegativeCacheTTL is the longest an inactive answer is reused (default 5s).
	NegativeCacheTTL time.Duration
	// Timeout bounds one introspection call (default 2s).
	Timeout time.Duration
}

// problems collects configuration errors, each prefixed with its key.
type problems []error

func (p *problems) add(key, format string, args ...any) {
	*p = append(*p, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
}

// Validate fills in defaults and reports every problem at once (joined with
// errors.Join), one line each, each naming the key (e.g.
// issuers[0].jwks_uri) and what is wrong.
func (c *Config) Validate() error {
	var p problems
	c.validateLimits(&p)
	if len(c.Issuers) == 0 {
		p.add("issuers", "no issuer configured: usher would reject every token; add at least one issuer with jwks_uri, discovery or jwks_file")
	}
	seen := map[string]int{}
	for i := range c.Issuers {
		is := &c.Issuers[i]
		key := fmt.Sprintf("issuers[%d]", i)
		if j, dup := seen[is.Issuer]; dup && is.Issuer != "" {
			p.add(key+".issuer", "%q is configured twice (also issuers[%d])", is.Issuer, j)
		}
		seen[is.Issuer] = i
		is.validate(key, &p)
	}
	c.validatePrefixes(&p)
	c.DPoP.validate(&p)
	names := map[string]bool{}
	for i, a := range c.Audiences {
		key := fmt.Sprintf("audiences[%d]", i)
		if a.Audience == "" {
			p.add(key+".audience", "empty: give the aud value the API answers to, e.g. api/users")
		} else if names[a.Audience] {
			p.add(key+".audience", "%q is registered twice", a.Audience)
		}
		names[a.Audience] = true
	}
	return errors.Join(p...)
}

// validatePrefixes: an opaque token's prefix names one issuer at most, so a
// token is never sent to an issuer it may not belong to.
func (c *Config) validatePrefixes(p *problems) {
	type owner struct {
		prefix, at string
		issuer     int
	}
	var all []owner
	for i, is := range c.Issuers {
		if is.Introspection == nil {
			continue
		}
		for j, pre := range is.Introspection.TokenPrefixes {
			at := fmt.Sprintf("issuers[%d].introspection.token_prefixes[%d]", i, j)
			for _, o := range all {
				if o.issuer != i && pre != "" && o.prefix != "" && (strings.HasPrefix(pre, o.prefix) || strings.HasPrefix(o.prefix, pre)) {
					p.add(at, "%q overlaps %q of %s: a token with both prefixes would have two issuers", pre, o.prefix, o.at)
				}
			}
			all = append(all, owner{pre, at, i})
		}
	}
}

func (c *Config) validateLimits(p *problems) {
	switch {
	case c.MaxTokenBytes == 0:
		c.MaxTokenBytes = DefaultMaxTokenBytes
	case c.MaxTokenBytes < 256 || c.MaxTokenBytes > 1<<20:
		p.add("max_token_bytes", "%d is outside 256..1048576", c.MaxTokenBytes)
	}
	switch {
	case c.CacheMaxEntries == 0:
		c.CacheMaxEntries = DefaultCacheEntries
	case c.CacheMaxEntries < -1:
		p.add("cache_max_entries", "%d: use a positive bound, or -1 to turn the cache off", c.CacheMaxEntries)
	}
	switch {
	case c.CacheMaxBytes == 0:
		c.CacheMaxBytes = DefaultCacheMaxBytes
	case c.CacheMaxBytes < 1<<20:
		p.add("cache_max_bytes", "%d is below 1 MiB", c.CacheMaxBytes)
	}
}

func (is *IssuerConfig) validate(key string, p *problems) {
	bad := func(k, format string, args ...any) { p.add(key+"."+k, format, args...) }
	if is.Issuer == "" {
		bad("issuer", "empty: give the exact iss value of the issuer's tokens")
	} else if strings.TrimSpace(is.Issuer) != is.Issuer {
		bad("issuer", "%q has surrounding white space; iss is compared byte for byte", is.Issuer)
	}
	is.validateKeySource(bad)
	is.validateAlgorithms(bad)
	is.validateClaims(bad)
	is.validateTimes(bad)
}

// validateKeySource: exactly one of jwks_uri, discovery and jwks_file.
func (is *IssuerConfig) validateKeySource(bad func(k, format string, args ...any)) {
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
	if sources > 1 || sources == 0 && is.Introspection == nil {
		bad("jwks_uri", "give exactly one of jwks_uri, discovery: true or jwks_file (found %d), or introspection for an issuer of opaque tokens only", sources)
	}
	if is.Introspection != nil {
		is.Introspection.validate(is.Discovery, func(k, format string, args ...any) { bad("introspection."+k, format, args...) })
	}
}

func (ic *IntrospectionConfig) validate(discovery bool, bad func(k, format string, args ...any)) {
	switch {
	case ic.Endpoint != "":
		if err := checkFetchURLFor(ic.Endpoint, "introspection"); err != nil {
			bad("endpoint", "%v", err)
		}
	case !discovery:
		bad("endpoint", "empty: give the endpoint, or use discovery: true to read introspection_endpoint from the issuer")
	}
	if ic.ClientID == "" {
		bad("client_id", "empty: give usher's client id at the issuer (the introspection endpoint authenticates its callers)")
	}
	if ic.ClientSecretFile == "" {
		bad("client_secret_file", "empty: give a file that holds usher's client secret (secrets are never written in the configuration)")
	}
	for i, p := range ic.TokenPrefixes {
		if p == "" || strings.ContainsAny(p, " \t\r\n.") {
			bad(fmt.Sprintf("token_prefixes[%d]", i), "%q is not a token prefix (non-empty, no white space or dot), e.g. ory_at_", p)
		}
	}
	for _, d := range []struct {
		key string
		v   *time.Duration
		def time.Duration
	}{{"cache_ttl", &ic.CacheTTL, DefaultIntrospectionCacheTTL}, {"negative_cache_ttl", &ic.NegativeCacheTTL, DefaultIntrospectionNegativeTTL}, {"timeout", &ic.Timeout, DefaultIntrospectionTimeout}} {
		switch {
		case *d.v == 0:
			*d.v = d.def
		case *d.v < 0:
			bad(d.key, "negative")
		}
	}
	if ic.Timeout > time.Minute {
		bad("timeout", "%s is over 1m: callers would wait that long", ic.Timeout)
	}
}

func (is *IssuerConfig) validateAlgorithms(bad func(k, format string, args ...any)) {
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
}

func (is *IssuerConfig) validateClaims(bad func(k, format string, args ...any)) {
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
}

func (is *IssuerConfig) validateTimes(bad func(k, format string, args ...any)) {
	if is.Leeway == 0 {
		is.Leeway = DefaultLeeway
	} else if is.Leeway < 0 || is.Leeway > 10*time.Minute {
		bad("leeway", "%s is outside 0..10m", is.Leeway)
	}
	if is.RefreshInterval == 0 {
		is.RefreshInterval = DefaultRefreshInterval
	} else if is.RefreshInterval < time.Second {
		bad("refresh_interval", "%s is below 1s", is.RefreshInterval)
	}
	if is.UnknownKIDCooldown == 0 {
		is.UnknownKIDCooldown = DefaultUnknownKIDCool
	} else if is.UnknownKIDCooldown < 0 {
		bad("unknown_kid_cooldown", "negative")
	}
	if is.FetchTimeout == 0 {
		is.FetchTimeout = DefaultFetchTimeout
	} else if is.FetchTimeout < 0 {
		bad("fetch_timeout", "negative")
	}
	if is.MaxStale == 0 {
		is.MaxStale = DefaultMaxStale
	} else if is.MaxStale < is.RefreshInterval {
		bad("max_stale", "%s is shorter than refresh_interval %s: the key set would go stale between two scheduled fetches", is.MaxStale, is.RefreshInterval)
	}
}

func (d *DPoPConfig) validate(p *problems) {
	switch {
	case d.IATWindow == 0:
		d.IATWindow = DefaultDPoPIATWindow
	case d.IATWindow < time.Second || d.IATWindow > 10*time.Minute:
		p.add("dpop.iat_window", "%s is outside 1s..10m: a proof is made for one request, and its jti is remembered this long", d.IATWindow)
	}
	switch {
	case d.ReplayMaxEntries == 0:
		d.ReplayMaxEntries = DefaultReplayMaxEntries
	case d.ReplayMaxEntries < 0:
		p.add("dpop.replay_max_entries", "%d: give a positive bound", d.ReplayMaxEntries)
	}
}
