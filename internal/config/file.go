package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/usher-dev/usher/extauthz"
	"github.com/usher-dev/usher/service"
)

// document is the YAML file as written: the engine's keys and the
// server's.
type document struct {
	Listen               string           `yaml:"listen"`
	MetricsListen        string           `yaml:"metrics_listen"`
	Pprof                bool             `yaml:"pprof"`
	PprofOffLoopback     bool             `yaml:"pprof_off_loopback"`
	HTTPListen           string           `yaml:"http_listen"`
	Console              bool             `yaml:"console"`
	Tracing              *Tracing         `yaml:"tracing"`
	ExtAuthz             *extauthz.Config `yaml:"ext_authz"`
	MaxTokenBytes        int              `yaml:"max_token_bytes"`
	TLS                  *TLS             `yaml:"tls"`
	InsecurePlaintext    bool             `yaml:"insecure_plaintext"`
	MaxInFlight          int              `yaml:"max_in_flight"`
	MaxConcurrentStreams uint32           `yaml:"max_concurrent_streams"`
	MaxStreams           int              `yaml:"max_streams"`
	MaxConnections       int              `yaml:"max_connections"`
	CacheMaxEntries      int              `yaml:"cache_max_entries"`
	CacheMaxBytes        int64            `yaml:"cache_max_bytes"`
	Issuers              []issuer         `yaml:"issuers"`
	Audiences            []audience       `yaml:"audiences"`
	DPoP                 dpop             `yaml:"dpop"`
}

// dpop is the dpop section: service.DPoPConfig and the replay store.
type dpop struct {
	IATWindow        duration `yaml:"iat_window"`
	ReplayStore      string   `yaml:"replay_store"`
	ReplayMaxEntries int      `yaml:"replay_max_entries"`
}

// issuer is service.IssuerConfig as written in the file.
type issuer struct {
	Issuer             string   `yaml:"issuer"`
	JWKSURI            string   `yaml:"jwks_uri"`
	Discovery          bool     `yaml:"discovery"`
	JWKSFile           string   `yaml:"jwks_file"`
	Algorithms         []string `yaml:"algorithms"`
	TokenType          string   `yaml:"token_type"`
	Leeway             duration `yaml:"leeway"`
	RequiredClaims     []string `yaml:"required_claims"`
	AudienceClaims     []string `yaml:"audience_claims"`
	RefreshInterval    duration `yaml:"refresh_interval"`
	UnknownKIDCooldown duration `yaml:"unknown_kid_cooldown"`
	FetchTimeout       duration `yaml:"fetch_timeout"`
	MaxStale           duration `yaml:"max_stale"`

	// AllowPrivateNetwork: the discovery document and key set may be on
	// loopback or private addresses (service.IssuerConfig.AllowPrivateNetwork).
	AllowPrivateNetwork bool `yaml:"allow_private_network"`

	Introspection *introspection `yaml:"introspection"`
}

// introspection is service.IntrospectionConfig as written in the file.
type introspection struct {
	Endpoint         string   `yaml:"endpoint"`
	ClientID         string   `yaml:"client_id"`
	ClientSecretFile string   `yaml:"client_secret_file"`
	TokenPrefixes    []string `yaml:"token_prefixes"`
	CacheTTL         duration `yaml:"cache_ttl"`
	NegativeCacheTTL duration `yaml:"negative_cache_ttl"`
	Timeout          duration `yaml:"timeout"`
}

func (in *introspection) config() *service.IntrospectionConfig {
	if in == nil {
		return nil
	}
	return &service.IntrospectionConfig{
		Endpoint: in.Endpoint, ClientID: in.ClientID, ClientSecretFile: in.ClientSecretFile, TokenPrefixes: in.TokenPrefixes,
		CacheTTL: time.Duration(in.CacheTTL), NegativeCacheTTL: time.Duration(in.NegativeCacheTTL), Timeout: time.Duration(in.Timeout),
	}
}

type audience struct {
	Audience string `yaml:"audience"`
	Name     string `yaml:"name"`
}

func (d *document) config() *Config {
	c := &Config{
		Listen: d.Listen, MetricsListen: d.MetricsListen, Pprof: d.Pprof, PprofOffLoopback: d.PprofOffLoopback, HTTPListen: d.HTTPListen,
		Console: d.Console, TLS: d.TLS, InsecurePlaintext: d.InsecurePlaintext,
		MaxInFlight: d.MaxInFlight, MaxConcurrentStreams: d.MaxConcurrentStreams,
		MaxStreams: d.MaxStreams, MaxConnections: d.MaxConnections,
		Tracing: d.Tracing, ExtAuthz: d.ExtAuthz, ReplayStore: d.DPoP.ReplayStore,
		Engine: service.Config{MaxTokenBytes: d.MaxTokenBytes, CacheMaxEntries: d.CacheMaxEntries, CacheMaxBytes: d.CacheMaxBytes,
			DPoP: service.DPoPConfig{IATWindow: time.Duration(d.DPoP.IATWindow), ReplayMaxEntries: d.DPoP.ReplayMaxEntries}},
	}
	for _, is := range d.Issuers {
		c.Engine.Issuers = append(c.Engine.Issuers, service.IssuerConfig{
			Issuer: is.Issuer, JWKSURI: is.JWKSURI, Discovery: is.Discovery, JWKSFile: is.JWKSFile, AllowPrivateNetwork: is.AllowPrivateNetwork,
			Algorithms: is.Algorithms, TokenType: is.TokenType, Leeway: time.Duration(is.Leeway),
			RequiredClaims: is.RequiredClaims, AudienceClaims: is.AudienceClaims,
			RefreshInterval: time.Duration(is.RefreshInterval), UnknownKIDCooldown: time.Duration(is.UnknownKIDCooldown),
			FetchTimeout: time.Duration(is.FetchTimeout), MaxStale: time.Duration(is.MaxStale),
			Introspection: is.Introspection.config(),
		})
	}
	for _, a := range d.Audiences {
		c.Engine.Audiences = append(c.Engine.Audiences, service.KnownAudience(a))
	}
	return c
}

// Load reads and validates a configuration file. The error names the file,
// then one problem a line, each naming its key.
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	c, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

// Parse decodes and validates a YAML configuration. Unknown keys are errors:
// a misspelt key must not silently disable a check; so is a second YAML
// document, which would be ignored.
func Parse(b []byte) (*Config, error) {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var d document
	if err := dec.Decode(&d); err != nil && !errors.Is(err, io.EOF) {
		var te *yaml.TypeError
		if !errors.As(err, &te) { // a syntax error: nothing after it can be read
			return nil, decodeError(b, err)
		}
		return nil, errors.Join(decodeError(b, err), secondDocument(dec))
	}
	if err := secondDocument(dec); err != nil {
		return nil, err
	}
	if d.ExtAuthz == nil && hasKey(b, "ext_authz") {
		d.ExtAuthz = &extauthz.Config{} // "ext_authz:" with nothing under it: validated, not ignored
	}
	c := d.config()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// secondDocument refuses what follows the first YAML document: a "---"
// starts another one, which usher would never read, even an empty one.
func secondDocument(dec *yaml.Decoder) error {
	var next yaml.Node
	err := dec.Decode(&next)
	switch {
	case err == nil:
		return fmt.Errorf("line %d: a second YAML document starts here (---): usher reads only the first, so everything from this line on would be ignored; remove the --- line and keep every setting in one document", next.Line)
	case !errors.Is(err, io.EOF):
		return fmt.Errorf("a second YAML document follows the first (after a ---) and is not valid YAML (%s): usher reads only the first; remove the --- line and keep every setting in one document", strings.TrimPrefix(err.Error(), "yaml: "))
	}
	return nil
}

// duration is a time.Duration written as a Go duration string ("30s").
type duration time.Duration

// UnmarshalYAML reads a duration string such as "30s" or "5m".
func (d *duration) UnmarshalYAML(n *yaml.Node) error {
	// A *yaml.TypeError lets the decoder go on and report every problem.
	if n.Kind != yaml.ScalarNode {
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: want a duration such as \"30s\", found a %s", n.Line, kindName(n.Kind))}}
	}
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: %q is not a duration (write e.g. \"30s\" or \"5m\")", n.Line, n.Value)}}
	}
	*d = duration(v)
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

// hasKey reports whether the document's top-level mapping has key.
func hasKey(b []byte, key string) bool {
	var root yaml.Node
	if yaml.Unmarshal(b, &root) != nil || len(root.Content) == 0 || root.Content[0].Kind != yaml.MappingNode {
		return false
	}
	m := root.Content[0].Content
	for i := 0; i+1 < len(m); i += 2 {
		if m[i].Value == key {
			return true
		}
	}
	return false
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
