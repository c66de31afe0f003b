package service

import (
	"log/slog"
	"net/http"
	"time"
)

// Option configures a Validator for tests and embedding; operators use Config.
type Option interface{ apply(*options) }

type options struct {
	now        func() time.Time
	log        *slog.Logger
	http       *http.Client
	observer   Observer
	keyWait    time.Duration
	keyWaiters int
	previous   *Validator
	replay     ReplayStore
}

type optionFunc func(*options)

func (f optionFunc) apply(o *options) { f(o) }

// WithClock sets the engine's clock (default time.Now): exp, nbf and iat,
// the verified-token cache, the reuse of introspection answers, key set
// staleness, refetch cooldowns and Retry-After all read it.
func WithClock(now func() time.Time) Option {
	return optionFunc(func(o *options) { o.now = now })
}

// WithLogger sets the logger (default: discard).
func WithLogger(l *slog.Logger) Option {
	return optionFunc(func(o *options) { o.log = l })
}

// WithHTTPClient sets the client for discovery, key set fetches and
// introspection calls (which never follow a redirect). The default has a
// deadline on the whole fetch (or call), refuses redirects to another
// host or from https to http, and checks every address it dials or asks a
// proxy for (after DNS). A client given here keeps only the checks made on
// the URL (scheme, addresses written in it, private networks of discovery
// documents): its own dialer decides the rest.
func WithHTTPClient(c *http.Client) Option {
	return optionFunc(func(o *options) { o.http = c })
}

// WithObserver tells o about every validation (for metrics). A nil o
// observes nothing.
func WithObserver(o Observer) Option {
	return optionFunc(func(opts *options) { opts.observer = o })
}

// WithKeyWait bounds how a call waits for a key set fetch that its token
// caused or joined (an unknown kid, no key set yet, a stale one): it waits
// at most wait (default 500ms; less when its deadline is nearer), and at most
// waiters calls of one issuer wait at a time (default 128); the others get
// their verdict at once from the keys held (KEYS_UNAVAILABLE or UNKNOWN_KEY).
// The fetch goes on in the background, bounded by fetch_timeout. The wait is
// measured on the wall clock, not WithClock's. Zero or negative values keep
// the default. waiters also bounds, per issuer, the calls that wait for its
// introspection endpoint (each for at most the issuer's introspection
// timeout) and the introspection calls in flight: the others get
// ISSUER_UNAVAILABLE at once.
func WithKeyWait(wait time.Duration, waiters int) Option {
	return optionFunc(func(o *options) {
		if wait > 0 {
			o.keyWait = wait
		}
		if waiters > 0 {
			o.keyWaiters = waiters
		}
	})
}

// WithPrevious starts the new validator with old's key sets (with their
// fetch time, Retry-After and last error) for every issuer whose key source
// did not change, so that a configuration reload during an issuer's outage
// keeps its last good set until max_stale. The key source is the same when
// the issuer's configuration differs at most in algorithms, token_type,
// leeway, required_claims, audience_claims, refresh_interval,
// unknown_kid_cooldown, fetch_timeout and max_stale (a changed issuer,
// jwks_uri, discovery or jwks_file is a new source; a jwks_file is always
// read again). Those issuers count as tried at once, and their key sets are
// still fetched in the background. A nil old carries nothing.
func WithPrevious(old *Validator) Option {
	return optionFunc(func(o *options) { o.previous = old })
}

// WithReplayStore sets where the jti of DPoP proofs are remembered (default:
// in memory, per Validator, bounded by dpop.ReplayMaxEntries). A store
// shared between replicas (Redis) refuses a proof replayed at another one.
func WithReplayStore(s ReplayStore) Option {
	return optionFunc(func(o *options) { o.replay = s })
}
