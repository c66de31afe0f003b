package service

import (
	"log/slog"
	"net/http"
	"time"
)

// Option configures a Validator for tests and embedding; operators use Config.
type Option interface{ apply(*options) }

type options struct {
	now     func() time.Time
	log     *slog.Logger
	http    *http.Client
	metrics *Metrics
}

type optionFunc func(*options)

func (f optionFunc) apply(o *options) { f(o) }

// WithClock sets the clock used for exp, nbf and iat (default time.Now).
func WithClock(now func() time.Time) Option {
	return optionFunc(func(o *options) { o.now = now })
}

// WithLogger sets the logger (default: discard).
func WithLogger(l *slog.Logger) Option {
	return optionFunc(func(o *options) { o.log = l })
}

// WithHTTPClient sets the client for discovery and key set fetches. The
// default has a deadline on the whole fetch and refuses redirects to another
// host or from https to http.
func WithHTTPClient(c *http.Client) Option {
	return optionFunc(func(o *options) { o.http = c })
}

// WithMetrics records verdicts, latency and audience mismatches in m (made
// once with NewMetrics and shared by the validators a reload creates).
func WithMetrics(m *Metrics) Option {
	return optionFunc(func(o *options) { o.metrics = m })
}
