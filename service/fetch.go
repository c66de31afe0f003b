package service

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lestrrat-go/httprc/v3"
	"golang.org/x/sync/singleflight"
)

// Limits on fetching.
const (
	maxScheduledWait = time.Hour
	maxStartBackoff  = 30 * time.Second
	maxRetryAfter    = 10 * time.Minute
)

// Bulkheads: how a call waits for a key set fetch its token caused or joined
// (an unknown kid, no set yet, a stale set). A slow or unreachable issuer must
// not hold calls, and the in-flight slots they take, for the whole fetch.
const (
	// defaultKeyWait is the longest a call waits for a fetch in flight; then
	// it gets its verdict from the keys held while the fetch goes on in the
	// background (bounded by fetch_timeout).
	defaultKeyWait = 500 * time.Millisecond
	// defaultKeyWaiters is how many calls of one issuer may wait at a time;
	// the others get their verdict at once. An eighth of the default
	// max_in_flight: one issuer can never hold most of the server's slots.
	defaultKeyWaiters = 128
	// shedLogEvery spaces the warnings that callers were turned away.
	shedLogEvery = time.Minute
)

// issuerKeys holds one issuer's keys and fetches them: through httprc (the
// cache under jwx's jwk.Cache) with usher's own transformer, so that a bad
// fetch never replaces a good set, and the parsed keys are swapped atomically.
type issuerKeys struct {
	cfg    IssuerConfig
	now    func() time.Time // the engine's clock
	log    *slog.Logger
	http   *http.Client
	bg     context.Context // owns the fetches
	set    atomic.Pointer[keySet]
	static bool // jwks_file: loaded once

	// intro answers the issuer's opaque tokens (nil without introspection).
	intro *introspector
	// keyless: the issuer has no key set, only introspection (by
	// configuration, or because its discovery document names no jwks_uri).
	keyless atomic.Bool

	ctrl       httprc.Controller
	res        atomic.Pointer[httprc.ResourceBase[*keySet]]
	fetches    singleflight.Group
	lastForced atomic.Int64                  // unix nanoseconds of the last token-driven refresh
	forced     atomic.Pointer[chan struct{}] // closed when that refresh is done
	notBefore  atomic.Int64                  // unix nanoseconds: the issuer asked (Retry-After) for no fetch before then

	triedOnce sync.Once
	tried     chan struct{} // closed after the first fetch attempt

	goodFetches atomic.Uint64
	badFetches  atomic.Uint64

	keyWait    time.Duration // the longest a call waits for a fetch
	keyWaiters int64         // the most calls that wait at a time
	waiting    atomic.Int64  // calls waiting now
	lastShed   atomic.Int64  // unix nanoseconds of the last "turned away" warning

	// idp is the issuer's identity provider (a provider), for hints.
	idp atomic.Uint32

	mu        sync.Mutex
	jwksURI   string
	lastError string
}

func newIssuerKeys(ctx context.Context, cfg IssuerConfig, hc *http.Client, o *options) (*issuerKeys, error) {
	now := o.now
	ik := &issuerKeys{cfg: cfg, now: now, log: o.log.With("issuer", cfg.Issuer), http: guardClient(hc, cfg, o.log), bg: ctx, tried: make(chan struct{}), jwksURI: cfg.JWKSURI,
		keyWait: o.keyWait, keyWaiters: int64(o.keyWaiters)}
	ik.idp.Store(uint32(providerOfIssuer(cfg.Issuer)))
	if cfg.Introspection != nil {
		in, err := newIntrospector(ctx, cfg, o)
		if err != nil {
			return nil, err
		}
		ik.intro = in
		in.carryFrom(o.previous, cfg.Discovery)
		if cfg.JWKSURI == "" && !cfg.Discovery && cfg.JWKSFile == "" { // opaque tokens only
			ik.keyless.Store(true)
			ik.markTried()
			return ik, nil
		}
	}
	if cfg.JWKSFile != "" {
		b, err := os.ReadFile(cfg.JWKSFile)
		if err != nil {
			return nil, fmt.Errorf("jwks_file: %w", err)
		}
		ks, err := parseKeySet(b, now())
		if err != nil {
			return nil, fmt.Errorf("jwks_file %s: %w", cfg.JWKSFile, err)
		}
		ik.static = true
		ik.jwksURI = (&url.URL{Scheme: "file", Path: cfg.JWKSFile}).String()
		ik.accept(ks)
		ik.markTried()
		return ik, nil
	}
	ctrl, err := httprc.NewClient(httprc.WithWorkers(1)).Start(ctx)
	if err != nil {
		return nil, fmt.Errorf("start key fetcher: %w", err)
	}
	ik.ctrl = ctrl
	ik.carryFrom(o.previous)
	go ik.firstFetch()
	return ik, nil
}

// firstFetch tries until a set is held and httprc has the key set's URL,
// with jittered exponential backoff; after that, httprc refreshes on
// schedule. (A set carried over from the running validator is held before
// any fetch: the URL must still be registered.)
func (ik *issuerKeys) firstFetch() {
	backoff := time.Second
	// A carried Retry-After (WithPrevious) still holds.
	for wait := time.Unix(0, ik.notBefore.Load()).Sub(ik.now()); ; {
		if wait > 0 {
			select {
			case <-ik.bg.Done():
				return
			case <-time.After(wait):
			}
		}
		_ = ik.fetchShared(ik.bg)
		ik.markTried()
		if ik.set.Load() != nil && ik.res.Load() != nil || ik.keyless.Load() {
			return
		}
		wait = max(backoff/2+rand.N(backoff/2+1), time.Unix(0, ik.notBefore.Load()).Sub(ik.now()))
		backoff = min(2*backoff, maxStartBackoff)
	}
}

func (ik *issuerKeys) markTried() { ik.triedOnce.Do(func() { close(ik.tried) }) }

// keys returns the current set (nil when none was ever fetched).
func (ik *issuerKeys) keys() *keySet { return ik.set.Load() }

// stale reports whether a fetched set is older than max_stale: every
// refresh for that long failed, and it is no longer trusted.
func (ik *issuerKeys) stale(ks *keySet) bool {
	return !ik.static && ik.now().Sub(ks.fetched) > ik.cfg.MaxStale
}

// refreshForToken refetches the set because a token named a kid it lacks
// (or no set is held): at most once per unknown_kid_cooldown per issuer, and
// concurrent callers share one fetch. The caller waits for that fetch only
// briefly (see await); the fetch itself goes on in the background.
func (ik *issuerKeys) refreshForToken(ctx context.Context) {
	if ik.static {
		return
	}
	if done := ik.forcedRefresh(); done != nil {
		ik.await(ctx, done)
	}
}

// forcedRefresh starts a token-driven refresh unless one is due to wait
// (the cooldown, Retry-After), and returns the channel closed when the
// latest one is done (nil when there never was one). Within the cooldown,
// callers join the refresh still in flight, if any, so that a burst of
// tokens signed with a freshly rotated key all see it.
func (ik *issuerKeys) forcedRefresh() <-chan struct{} {
	now := ik.now().UnixNano()
	last := ik.lastForced.Load()
	if now < ik.notBefore.Load() || now-last < int64(ik.cfg.UnknownKIDCooldown) || !ik.lastForced.CompareAndSwap(last, now) {
		if done := ik.forced.Load(); done != nil {
			return *done
		}
		return nil
	}
	done := make(chan struct{})
	ik.forced.Store(&done)
	go func() {
		defer close(done)
		_ = ik.fetchShared(ik.bg)
	}()
	return done
}

// await waits for done (a fetch in flight) for at most keyWait, and at most
// half the time left before ctx's deadline, so that the caller gets a
// verdict rather than DEADLINE_EXCEEDED. At most keyWaiters callers of the
// issuer wait at a time: the others return at once and get their verdict
// from the keys held.
func (ik *issuerKeys) await(ctx context.Context, done <-chan struct{}) {
	select {
	case <-done:
		return
	default:
	}
	if ik.waiting.Add(1) > ik.keyWaiters {
		ik.waiting.Add(-1)
		ik.warnShed()
		return
	}
	defer ik.waiting.Add(-1)
	wait := ik.keyWait
	if dl, ok := ctx.Deadline(); ok {
		wait = min(wait, time.Until(dl)/2)
	}
	if wait <= 0 {
		return
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case <-done:
	case <-ctx.Done():
	case <-timer.C:
	}
}

// warnShed says, at most once per shedLogEvery, that calls were answered
// without waiting for the issuer's key set fetch.
func (ik *issuerKeys) warnShed() {
	now := ik.now().UnixNano()
	last := ik.lastShed.Load()
	if (last != 0 && now-last < int64(shedLogEvery)) || !ik.lastShed.CompareAndSwap(last, now) {
		return
	}
	ik.log.Warn("key set fetch is slow: calls beyond the per-issuer wait bound get their verdict from the keys held without waiting (KEYS_UNAVAILABLE or UNKNOWN_KEY); check that usher can reach the issuer (`usher doctor`)",
		"max_waiting", ik.keyWaiters, "jwks_uri", ik.status().JWKSURI)
}

// fetchShared runs one fetch at a time per issuer; concurrent callers share it.
func (ik *issuerKeys) fetchShared(ctx context.Context) error {
	if ik.keyless.Load() {
		return nil
	}
	_, err, _ := ik.fetches.Do("fetch", func() (any, error) {
		fctx, cancel := context.WithTimeout(ctx, ik.cfg.FetchTimeout+time.Second)
		defer cancel()
		return nil, ik.fetch(fctx)
	})
	return err
}

func (ik *issuerKeys) fetch(ctx context.Context) error {
	res := ik.res.Load()
	if res == nil {
		uri := ik.cfg.JWKSURI
		if ik.cfg.Discovery {
			var err error
			if uri, err = ik.discover(ctx); err != nil {
				ik.fail(err)
				return err
			}
			if uri == "" { // an issuer of opaque tokens only
				ik.keyless.Store(true)
				ik.mu.Lock()
				ik.lastError = ""
				ik.mu.Unlock()
				ik.log.Info("the discovery document names no jwks_uri: this issuer's opaque tokens are answered through introspection, its JWTs get UNKNOWN_KEY")
				return nil
			}
		}
		interval := ik.cfg.RefreshInterval
		r, err := httprc.NewResource[*keySet](uri, httprc.TransformFunc[*keySet](ik.transform),
			httprc.WithHTTPClient(statusClient{ik}),
			httprc.WithMinInterval(interval),
			httprc.WithMaxInterval(max(interval, maxScheduledWait)))
		if err != nil {
			ik.fail(err)
			return err
		}
		// httprc schedules on the wall clock, not the engine's.
		r.SetNext(time.Now().Add(interval)) // the first fetch is the one below
		if err := ik.ctrl.Add(ctx, r, httprc.WithWaitReady(false)); err != nil {
			ik.fail(err)
			return err
		}
		ik.res.Store(r)
		ik.mu.Lock()
		ik.jwksURI = uri
		ik.mu.Unlock()
		res = r
	}
	return ik.ctrl.Refresh(ctx, res.URL())
}

// transform is httprc's Transformer: body to parsed keys. An error keeps the
// previous set in place.
func (ik *issuerKeys) transform(_ context.Context, res *http.Response) (*keySet, error) {
	body, err := io.ReadAll(io.LimitReader(res.Body, maxJWKSBytes+1))
	if err != nil {
		ik.fail(fmt.Errorf("read %s: %w", res.Request.URL, err))
		return nil, err
	}
	if len(body) > maxJWKSBytes {
		err := fmt.Errorf("%s: body over %d bytes", res.Request.URL, maxJWKSBytes)
		ik.fail(err)
		return nil, err
	}
	ks, err := parseKeySet(body, ik.now())
	if err != nil {
		err = fmt.Errorf("%s: %w", res.Request.URL, err)
		ik.fail(err)
		return nil, err
	}
	ik.accept(ks)
	return ks, nil
}

// accept and fail count a fetch once its outcome is in place, so that a
// reader who sees the count sees the outcome.
func (ik *issuerKeys) accept(ks *keySet) {
	prev := ik.set.Swap(ks)
	ik.mu.Lock()
	ik.lastError = ""
	ik.mu.Unlock()
	ik.goodFetches.Add(1)
	if prev == nil || !slices.Equal(prev.kids(), ks.kids()) {
		ik.log.Info("key set loaded", "kids", ks.kids(), "dropped", ks.dropped)
	}
}

func (ik *issuerKeys) fail(err error) {
	ik.mu.Lock()
	ik.lastError = err.Error()
	ik.mu.Unlock()
	ik.badFetches.Add(1)
	ik.log.Warn("key set fetch failed; keeping the last good set", "err", err, "have_keys", ik.set.Load() != nil)
}

// discover reads jwks_uri from the OIDC discovery document and insists that
// its issuer is exactly the configured one. An issuer with introspection
// also takes its introspection_endpoint from it (unless the configuration
// names one), and may have no jwks_uri at all: then discover returns "".
func (ik *issuerKeys) discover(ctx context.Context) (string, error) {
	doc, u, err := fetchDiscovery(ctx, ik.http, ik.cfg.Issuer)
	if err != nil {
		return "", err
	}
	if err := doc.checkIssuer(ik.cfg.Issuer); err != nil {
		return "", fmt.Errorf("discovery %s: %w", u, err)
	}
	ik.learnProvider(doc)
	if ik.intro != nil {
		ik.intro.fromDiscovery(doc)
		if doc.JWKSURI == "" {
			return "", nil
		}
	}
	if err := doc.checkURL("jwks_uri", doc.JWKSURI); err != nil {
		return "", fmt.Errorf("discovery %s: %w", u, err)
	}
	return doc.JWKSURI, nil
}

// statusClient is the HTTP client httprc uses: it records failed requests,
// which never reach the transformer.
type statusClient struct{ ik *issuerKeys }

func (c statusClient) Do(req *http.Request) (*http.Response, error) {
	resp, err := c.ik.http.Do(req)
	switch {
	case err != nil:
		c.ik.fail(fmt.Errorf("fetch keys: %w", err))
	case resp.StatusCode != http.StatusOK:
		msg := fmt.Sprintf("fetch keys %s: HTTP %d", req.URL, resp.StatusCode)
		now := c.ik.now()
		if d := retryAfter(resp, now); d > 0 {
			c.ik.notBefore.Store(now.Add(d).UnixNano())
			msg += fmt.Sprintf(" (Retry-After: no fetch for %s)", d)
		}
		c.ik.fail(errors.New(msg))
	}
	return resp, err
}

// retryAfter reads a 429 or 503's Retry-After (seconds or an HTTP date),
// capped at maxRetryAfter; 0 when there is none.
func retryAfter(resp *http.Response, now time.Time) time.Duration {
	if resp.StatusCode != http.StatusTooManyRequests && resp.StatusCode != http.StatusServiceUnavailable {
		return 0
	}
	v := strings.TrimSpace(resp.Header.Get("Retry-After"))
	if v == "" {
		return 0
	}
	var d time.Duration
	if secs, err := strconv.Atoi(v); err == nil {
		d = time.Duration(secs) * time.Second
	} else if at, err := http.ParseTime(v); err == nil {
		d = at.Sub(now)
	}
	return min(max(d, 0), maxRetryAfter)
}

// status is what ListIssuers reports.
func (ik *issuerKeys) status() IssuerStatus {
	st := IssuerStatus{Issuer: ik.cfg.Issuer, Algorithms: slices.Clone(ik.cfg.Algorithms), Fetches: ik.goodFetches.Load(), Failures: ik.badFetches.Load()}
	ik.mu.Lock()
	st.JWKSURI, st.LastError = ik.jwksURI, ik.lastError
	ik.mu.Unlock()
	if ks := ik.set.Load(); ks != nil {
		st.KeyIDs, st.LastRefresh, st.Stale = ks.kids(), ks.fetched, ik.stale(ks)
	}
	if r := ik.res.Load(); r != nil {
		st.NextRefresh = r.Next()
	}
	st.OpaqueOnly = ik.keyless.Load()
	if ik.intro != nil {
		st.Introspection = true
		st.IntrospectionEndpoint, st.IntrospectionError = ik.intro.endpoint(), ik.intro.lastErr()
	}
	return st
}
