package service

import (
	"log/slog"
	"net/http"
	"time"
)

// Option configures a Validator for tests and embedding; operators use Config.
type Option interface{ apply(*options) }

type options struct {
	now      func() time.Time
	log      *slog.Logger
	http     *http.Client
	observer Observer
}

type optionFunc func(*options)

func (f optionFunc) apply(o *options) { f(o) }

// WithClock sets the engine's clock (default time.Now): exp, nbf and iat,
// the verified-token cache, key set staleness, refetch cooldowns and
// Retry-After all read it.
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

// WithObserver tells o about every validation (for metrics). A nil o
// observes nothing.
func WithObserver(o Observer) Option {
	return optionFunc(func(opts *options) { opts.observer = o })
}
