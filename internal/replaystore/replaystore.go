// Package replaystore is the DPoP replay store that usher replicas share:
// Redis or Valkey (dpop.replay_store: redis://host:6379/0, or rediss:// for
// TLS). It implements service.ReplayStore: each proof's key is remembered
// with one atomic SET key 1 NX PX <ms> (Redis 6 or later, any Valkey), so of
// two replicas that see the same proof, exactly one is told it is fresh, and
// the key expires by itself when the proof's iat window closes. Calls are
// not retried (a retried SET NX whose first reply was lost would call a
// fresh proof a replay), so a lost reply costs one UNAVAILABLE, not a
// wrong verdict.
//
// Fail closed. When the store does not answer within the call's timeout
// (DefaultTimeout), Remember returns an error: the engine then gives no
// verdict (ValidateRequest's error wraps service.ErrProofUnchecked) and the
// adapters answer gRPC UNAVAILABLE or HTTP 503. A DPoP-bound token is never
// accepted on the strength of a proof that could not be checked for replay.
// Tokens that are not DPoP-bound never reach the store and are unaffected:
// bearer tokens keep validating while Redis is down, and usher's readiness
// does not depend on it.
//
// A password in the URL (redis://:secret@host:6379/0) is never printed:
// Redacted (and String) show it as "xxxxx", and errors from this package
// never carry it.
package replaystore

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// Defaults of the store's settings.
const (
	// DefaultTimeout bounds one Remember, from taking a connection to the
	// reply: an unreachable store cannot hold a validation longer.
	DefaultTimeout = 250 * time.Millisecond
	// DefaultPrefix starts every key usher writes.
	DefaultPrefix = "usher:dpop:jti:"
	// DefaultPoolSize bounds the connections to the store per replica.
	DefaultPoolSize = 64
)

// Redis is a replay store in Redis or Valkey. Safe for concurrent use.
type Redis struct {
	client  *redis.Client
	secret  secret // the URL's credentials, scrubbed from every error
	shown   string // the URL, redacted
	prefix  string
	timeout time.Duration
	observe func(took time.Duration, err error)
	now     func() time.Time
}

type settings struct {
	timeout  time.Duration
	prefix   string
	poolSize int
	observe  func(time.Duration, error)
	tls      *tls.Config
	now      func() time.Time
}

// Option changes a setting of New.
type Option func(*settings)

// WithTimeout bounds each Remember (default DefaultTimeout). A store
// slower than that is treated as not answering.
func WithTimeout(d time.Duration) Option { return func(s *settings) { s.timeout = d } }

// WithPrefix sets what every key starts with (default DefaultPrefix), to
// keep two usher deployments that share one Redis apart.
func WithPrefix(p string) Option { return func(s *settings) { s.prefix = p } }

// WithPoolSize bounds the open connections (default DefaultPoolSize).
func WithPoolSize(n int) Option { return func(s *settings) { s.poolSize = n } }

// WithObserver has observe told of every Remember that asked the store:
// how long it took, and its error (nil when the store answered). The
// server exports it as metrics; this package imports no metrics library.
func WithObserver(observe func(took time.Duration, err error)) Option {
	return func(s *settings) { s.observe = observe }
}

// WithTLSConfig sets the TLS client configuration of a rediss:// URL (for
// a private CA: RootCAs). The server name is the URL's host unless set.
func WithTLSConfig(c *tls.Config) Option { return func(s *settings) { s.tls = c } }

// WithClock sets the clock Remember compares expiries with (default
// time.Now): the engine's clock.
func WithClock(now func() time.Time) Option { return func(s *settings) { s.now = now } }

// New connects lazily to the store at rawURL (redis:// or rediss://, as
// CheckURL accepts): nothing is dialled until the first call, so a store
// that is down does not stop usher from starting (see Ping).
func New(rawURL string, opts ...Option) (*Redis, error) {
	st := settings{timeout: DefaultTimeout, prefix: DefaultPrefix, poolSize: DefaultPoolSize, now: time.Now}
	for _, o := range opts {
		o(&st)
	}
	if st.timeout <= 0 || st.poolSize <= 0 {
		return nil, fmt.Errorf("replay store: timeout (%v) and pool size (%d) must be positive", st.timeout, st.poolSize)
	}
	ro, sec, err := parse(rawURL)
	if err != nil {
		return nil, err
	}
	if ro.TLSConfig != nil && st.tls != nil {
		c := st.tls.Clone()
		if c.ServerName == "" {
			c.ServerName = ro.TLSConfig.ServerName
		}
		ro.TLSConfig = c
	}
	if ro.TLSConfig != nil && ro.TLSConfig.RootCAs == nil {
		// Loads the system's roots now rather than within the first call's
		// timeout, which loading them can exceed.
		_, _ = x509.SystemCertPool()
	}
	// Every wait is bounded by the call's own deadline (ContextTimeoutEnabled)
	// and by timeout: dialling, waiting for a pooled connection, reading.
	ro.ContextTimeoutEnabled = true
	ro.DialTimeout, ro.ReadTimeout, ro.WriteTimeout, ro.PoolTimeout = st.timeout, st.timeout, st.timeout, st.timeout
	ro.PoolSize, ro.MaxActiveConns = st.poolSize, st.poolSize
	ro.DialerRetries = 1 // one dial per call: the timeout is too short for more
	// No retries: a SET NX whose reply was lost has been applied, and its
	// retry would answer "seen" for a fresh proof.
	ro.MaxRetries = -1
	// Fewer commands on connect, none that Redis 7.0 does not know.
	ro.DisableIdentity = true
	ro.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
	return &Redis{
		client: redis.NewClient(ro), secret: sec, shown: Redact(rawURL),
		prefix: st.prefix, timeout: st.timeout, observe: st.observe, now: st.now,
	}, nil
}

// Remember implements service.ReplayStore: it records key until expires
// and reports whether no replica had recorded it before. An error means
// the store did not answer in time (or expires is not in the future): the
// proof must not be accepted.
func (r *Redis) Remember(ctx context.Context, key string, expires time.Time) (bool, error) {
	ttl := expires.Sub(r.now())
	if ttl <= 0 {
		return false, fmt.Errorf("replay store: the proof's expiry %s is not after now (%s): nothing to remember", expires.UTC().Format(time.RFC3339Nano), r.now().UTC().Format(time.RFC3339Nano))
	}
	// PX (relative) rather than PXAT: the key lives ttl whatever Redis's
	// wall clock says, so a Redis host whose clock is ahead cannot shorten
	// the replay window. Rounded up: never shorter than asked.
	ms := (ttl + time.Millisecond - 1) / time.Millisecond
	cctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	start := time.Now()
	err := r.client.Do(cctx, "set", r.Key(key), "1", "nx", "px", int64(ms)).Err()
	took := time.Since(start)
	fresh := err == nil
	if errors.Is(err, redis.Nil) { // NX: the key was there
		err = nil
	}
	if err != nil {
		err = r.wrap("SET NX", err)
	}
	// A caller that gave up (its own context ended) is not the store's fault.
	if r.observe != nil && (err == nil || ctx.Err() == nil) {
		r.observe(took, err)
	}
	return fresh, err
}

// Key is the Redis key under which key is remembered: the prefix and the
// base64url SHA-256 of key, so that every entry has the same small size
// whatever the proof's jti.
func (r *Redis) Key(key string) string {
	sum := sha256.Sum256([]byte(key))
	return r.prefix + base64.RawURLEncoding.EncodeToString(sum[:])
}

// Ping asks the store once, within the call timeout: to say at start
// whether it answers. usher starts and serves either way.
func (r *Redis) Ping(ctx context.Context) error {
	cctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	if err := r.client.Ping(cctx).Err(); err != nil {
		return r.wrap("PING", err)
	}
	return nil
}

// Redacted is the store's URL with its password (if any) as "xxxxx".
func (r *Redis) Redacted() string { return r.shown }

// String is Redacted, so that the store prints safely with %v and in logs.
func (r *Redis) String() string { return r.shown }

// Close closes the connections. Calls after Close fail (fail closed).
func (r *Redis) Close() error { return r.client.Close() }

// SetLogger sends go-redis's own log lines (a failed dial, which Remember's
// errors report too) to log at debug level instead of the standard
// logger's stderr. go-redis has one logger per process: call it once, at
// start, before any store is used.
func SetLogger(log *slog.Logger) { redis.SetLogger(debugLog{log}) }

type debugLog struct{ log *slog.Logger }

func (d debugLog) Printf(ctx context.Context, format string, v ...any) {
	d.log.DebugContext(ctx, "go-redis: "+strings.TrimPrefix(fmt.Sprintf(format, v...), "redis: "))
}

// wrap names the store (redacted) and the command, and removes the URL's
// credentials from err's text, should the client ever have put them there.
func (r *Redis) wrap(cmd string, err error) error {
	if r.secret.in(err.Error()) {
		return fmt.Errorf("replay store %s: %s: %s", r.shown, cmd, r.secret.scrub(err.Error()))
	}
	return fmt.Errorf("replay store %s: %s: %w", r.shown, cmd, err)
}
