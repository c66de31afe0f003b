// Package config is usher's configuration file (`usher serve --config
// FILE`): YAML in, a typed Config out. The engine's part (issuers, audiences,
// token and cache limits) becomes a service.Config, which the engine
// validates; the server's part (listeners, TLS, limits, tracing, ext_authz)
// is validated here, a section a function. Unknown keys and every problem
// are reported at once, one line each, naming the key and its line.
package config

import (
	"errors"
	"fmt"
	"net"

	"github.com/usher-dev/usher/extauthz"
	"github.com/usher-dev/usher/internal/replaystore"
	"github.com/usher-dev/usher/service"
)

// Defaults of the server's settings.
const (
	DefaultListen      = "127.0.0.1:50051"
	DefaultMaxInFlight = 1024
	DefaultMaxStreams  = 256 // max_concurrent_streams, per connection
	// DefaultMaxOpenStreams is max_streams: streaming calls (health Watch,
	// reflection) open at once across every connection.
	DefaultMaxOpenStreams = 1024
	// DefaultMaxConnections is max_connections, per listener.
	DefaultMaxConnections = 4096
)

// Config is usher's configuration: the engine's and the server's.
type Config struct {
	// Listen is the gRPC address (listen; default 127.0.0.1:50051).
	Listen string
	// MetricsListen is the optional Prometheus /metrics address
	// (metrics_listen). Off loopback it needs tls (metrics are then served
	// over it) or insecure_plaintext, as the other listeners do.
	MetricsListen string
	// Pprof serves net/http/pprof on the metrics listener (pprof).
	Pprof bool
	// PprofOffLoopback allows pprof on a metrics_listen that is not
	// loopback (pprof_off_loopback): pprof has no authentication and shows
	// the process's internals, so this is never implied, not even by tls.
	PprofOffLoopback bool
	// HTTPListen is the optional HTTP/JSON (Connect protocol) address (http_listen).
	HTTPListen string
	// Console serves the web console (token debugger, issuers, where tokens
	// go wrong) under /console/ on http_listen (console; default off). It
	// needs http_listen, and so, off loopback, tls or insecure_plaintext.
	Console bool
	// TLS serves gRPC and HTTP/JSON over TLS, and mTLS with ClientCAFile.
	TLS *TLS
	// InsecurePlaintext allows plaintext on a non-loopback address (e.g.
	// behind a mesh sidecar that encrypts); loopback never needs it.
	InsecurePlaintext bool
	// MaxInFlight bounds concurrent calls; beyond it usher answers
	// RESOURCE_EXHAUSTED at once instead of queuing (default 1024).
	MaxInFlight int
	// MaxConcurrentStreams bounds streams per connection (default 256).
	MaxConcurrentStreams uint32
	// MaxStreams bounds the streaming calls (health Watch, reflection) open
	// at once across every connection; beyond it a new stream gets
	// RESOURCE_EXHAUSTED at once (max_streams; default 1024).
	MaxStreams int
	// MaxConnections bounds the connections each listener (gRPC, HTTP/JSON,
	// metrics) holds at once; beyond it new connections wait in the kernel's
	// accept queue until one closes (max_connections; default 4096).
	MaxConnections int
	// Tracing exports OpenTelemetry spans of every call over OTLP/gRPC.
	Tracing *Tracing
	// ExtAuthz, when set, serves Envoy's external authorization on the gRPC
	// listener.
	ExtAuthz *extauthz.Config
	// ReplayStore is where the jti of DPoP proofs are remembered
	// (dpop.replay_store): "" for memory, per replica; "redis://host:6379/0"
	// (or rediss:// with TLS) shares them between replicas through Redis or
	// Valkey.
	ReplayStore string
	// Engine is the validation engine's configuration.
	Engine service.Config
}

// TLS is the server's certificate and, for mTLS, the clients' CA. The files
// are re-read when they change, without a restart.
type TLS struct {
	CertFile     string `yaml:"cert_file"`
	KeyFile      string `yaml:"key_file"`
	ClientCAFile string `yaml:"client_ca_file"`
}

// Tracing sends spans to an OTLP/gRPC collector. Spans carry the method,
// status and timing; never a token (messages are not recorded).
type Tracing struct {
	// OTLPEndpoint is the collector's host:port, e.g. "127.0.0.1:4317".
	OTLPEndpoint string `yaml:"otlp_endpoint"`
	// Insecure sends without TLS (a collector on loopback or a sidecar).
	Insecure bool `yaml:"insecure"`
	// SampleRatio of calls traced, 0 < r ≤ 1 (default 1), respecting a
	// caller's sampling decision.
	SampleRatio float64 `yaml:"sample_ratio"`
}

// Validate fills in defaults and reports every problem at once, one line
// each, each naming its key.
func (c *Config) Validate() error {
	var errs []error
	errs = append(errs, c.validateListeners()...)
	errs = append(errs, c.validateTLS()...)
	errs = append(errs, c.validateTracing()...)
	errs = append(errs, c.validateLimits()...)
	errs = append(errs, c.validateExtAuthz()...)
	errs = append(errs, c.validateReplayStore()...)
	errs = append(errs, c.Engine.Validate())
	return errors.Join(errs...)
}

func problem(key, format string, args ...any) error {
	return fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...))
}

// validateListeners: host:port addresses; plaintext off loopback only by
// name (insecure_plaintext), metrics included; pprof only with a metrics
// listener, and off loopback only by its own name (pprof_off_loopback).
func (c *Config) validateListeners() []error {
	var errs []error
	if c.Listen == "" {
		c.Listen = DefaultListen
	}
	metricsOffLoopback := false
	for _, l := range []struct{ key, addr, example, exposed string }{
		{"listen", c.Listen, "127.0.0.1:50051", "tokens would cross the network in clear"},
		{"metrics_listen", c.MetricsListen, "127.0.0.1:9090", "/metrics (and pprof, when on) would be served in clear to anyone who reaches it"},
		{"http_listen", c.HTTPListen, "127.0.0.1:8080", "tokens would cross the network in clear"},
	} {
		if l.addr == "" {
			continue
		}
		host, _, err := net.SplitHostPort(l.addr)
		switch {
		case err != nil:
			errs = append(errs, problem(l.key, "%q is not host:port (e.g. %s)", l.addr, l.example))
			continue
		case IsLoopback(host):
			continue
		case l.key == "metrics_listen":
			metricsOffLoopback = true
		}
		if c.TLS == nil && !c.InsecurePlaintext {
			errs = append(errs, problem(l.key, "%q is not loopback and no tls is configured: %s; listen on loopback (e.g. %s), configure tls (cert_file, key_file), or set insecure_plaintext: true if something else protects the traffic (e.g. a mesh sidecar)", l.addr, l.exposed, l.example))
		}
	}
	switch {
	case c.Pprof && c.MetricsListen == "":
		errs = append(errs, problem("pprof", "true needs metrics_listen: pprof is served on the metrics listener"))
	case c.Pprof && metricsOffLoopback && !c.PprofOffLoopback:
		errs = append(errs, problem("pprof", "true on metrics_listen %q, which is not loopback: pprof has no authentication and shows the process's internals (profiles, goroutine stacks, the command line) to anyone who reaches it; keep metrics_listen on loopback (e.g. 127.0.0.1:9090) and reach pprof through a port-forward, or set pprof_off_loopback: true if only trusted hosts can reach that address", c.MetricsListen))
	case !c.Pprof && c.PprofOffLoopback:
		errs = append(errs, problem("pprof_off_loopback", "true, but pprof is not: remove this key, or set pprof: true"))
	}
	if c.Console && c.HTTPListen == "" {
		errs = append(errs, problem("console", "true needs http_listen: the console is served under /console/ on the HTTP/JSON listener; add e.g. http_listen: 127.0.0.1:8080, or remove console"))
	}
	return errs
}

func (c *Config) validateTLS() []error {
	if c.TLS == nil {
		return nil
	}
	var errs []error
	if c.TLS.CertFile == "" || c.TLS.KeyFile == "" {
		errs = append(errs, problem("tls", "cert_file and key_file are both required"))
	}
	if c.InsecurePlaintext {
		errs = append(errs, problem("insecure_plaintext", "true together with tls: choose one"))
	}
	return errs
}

func (c *Config) validateTracing() []error {
	t := c.Tracing
	if t == nil {
		return nil
	}
	var errs []error
	if _, _, err := net.SplitHostPort(t.OTLPEndpoint); err != nil {
		errs = append(errs, problem("tracing.otlp_endpoint", "%q is not host:port (e.g. 127.0.0.1:4317)", t.OTLPEndpoint))
	}
	switch {
	case t.SampleRatio == 0:
		t.SampleRatio = 1
	case !(t.SampleRatio > 0 && t.SampleRatio <= 1): // NaN too
		errs = append(errs, problem("tracing.sample_ratio", "%v is outside (0, 1]", t.SampleRatio))
	}
	return errs
}

func (c *Config) validateLimits() []error {
	var errs []error
	if c.MaxInFlight == 0 {
		c.MaxInFlight = DefaultMaxInFlight
	} else if c.MaxInFlight < 1 {
		errs = append(errs, problem("max_in_flight", "%d: must be positive", c.MaxInFlight))
	}
	if c.MaxConcurrentStreams == 0 {
		c.MaxConcurrentStreams = DefaultMaxStreams
	}
	errs = append(errs, positive("max_streams", &c.MaxStreams, DefaultMaxOpenStreams)...)
	errs = append(errs, positive("max_connections", &c.MaxConnections, DefaultMaxConnections)...)
	return errs
}

// positive sets *v to def when unset (0) and refuses a negative value.
func positive(key string, v *int, def int) []error {
	switch {
	case *v == 0:
		*v = def
	case *v < 0:
		return []error{problem(key, "%d: must be positive (or leave it out for the default %d)", *v, def)}
	}
	return nil
}

// validateExtAuthz validates the ext_authz section, its keys named from the
// file's root (ext_authz.routes[1].audience).
func (c *Config) validateExtAuthz() []error {
	if c.ExtAuthz == nil {
		return nil
	}
	err := c.ExtAuthz.Validate()
	if err == nil {
		return nil
	}
	var errs []error
	for _, e := range unwrapAll(err) {
		errs = append(errs, fmt.Errorf("ext_authz.%w", e))
	}
	return errs
}

// validateReplayStore: empty (memory, per replica) or a redis:// or
// rediss:// URL with a host. The message shows the URL redacted: a
// password in it is never printed.
func (c *Config) validateReplayStore() []error {
	if c.ReplayStore == "" {
		return nil
	}
	if err := replaystore.CheckURL(c.ReplayStore); err != nil {
		return []error{problem("dpop.replay_store", "%s; or leave replay_store out to keep the jti replay cache in memory, per replica (with several replicas a proof can then be replayed once at each)", err)}
	}
	return nil
}

func unwrapAll(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// IsLoopback reports whether host (a name or an address, without a port) is
// loopback: "localhost", 127.0.0.0/8 or ::1.
func IsLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
