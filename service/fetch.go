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

	mu        sync.Mutex
	jwksURI   string
	lastError string
}

func newIssuerKeys(ctx context.Context, cfg IssuerConfig, hc *http.Client, log *slog.Logger, now func() time.Time) (*issuerKeys, error) {
	ik := &issuerKeys{cfg: cfg, now: now, log: log.With("issuer", cfg.Issuer), http: hc, bg: ctx, tried: make(chan struct{}), jwksURI: cfg.JWKSURI}
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
	go ik.firstFetch()
	return ik, nil
}

// firstFetch tries until a set is held, with jittered exponential backoff;
// after that, httprc refreshes on schedule.
func (ik *issuerKeys) firstFetch() {
	backoff := time.Second
	for {
		_ = ik.fetchShared(ik.bg)
		ik.markTried()
		if ik.set.Load() != nil {
			return
		}
		wait := backoff/2 + rand.N(backoff/2+1)
		if until := time.Unix(0, ik.notBefore.Load()).Sub(ik.now()); until > wait {
			wait = until
		}
		select {
		case <-ik.bg.Done():
			return
		case <-time.After(wait):
		}
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
// concurrent callers share one fetch. It waits no longer than ctx allows.
func (ik *issuerKeys) refreshForToken(ctx context.Context) {
	if ik.static {
		return
	}
	now := ik.now().UnixNano()
	last := ik.lastForced.Load()
	if now < ik.notBefore.Load() || now-last < int64(ik.cfg.UnknownKIDCooldown) || !ik.lastForced.CompareAndSwap(last, now) {
		// Within the cooldown: join the refresh still in flight, if any,
		// so a burst of tokens signed with a freshly rotated key all see it.
		if done := ik.forced.Load(); done != nil {
			select {
			case <-*done:
			case <-ctx.Done():
			}
		}
		return
	}
	done := make(chan struct{})
	ik.forced.Store(&done)
	go func() {
		defer close(done)
		_ = ik.fetchShared(ik.bg)
	}()
	select {
	case <-done:
	case <-ctx.Done():
	}
}

// fetchShared runs one fetch at a time per issuer; concurrent callers share it.
func (ik *issuerKeys) fetchShared(ctx context.Context) error {
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

func (ik *issuerKeys) accept(ks *keySet) {
	ik.goodFetches.Add(1)
	prev := ik.set.Swap(ks)
	ik.mu.Lock()
	ik.lastError = ""
	ik.mu.Unlock()
	if prev == nil || !slices.Equal(prev.kids(), ks.kids()) {
		ik.log.Info("key set loaded", "kids", ks.kids(), "dropped", ks.dropped)
	}
}

func (ik *issuerKeys) fail(err error) {
	ik.badFetches.Add(1)
	ik.mu.Lock()
	ik.lastError = err.Error()
	ik.mu.Unlock()
	ik.log.Warn("key set fetch failed; keeping the last good set", "err", err, "have_keys", ik.set.Load() != nil)
}

// discover reads jwks_uri from the OIDC discovery document and insists that
// its issuer is exactly the configured one.
func (ik *issuerKeys) discover(ctx context.Context) (string, error) {
	doc, u, err := fetchDiscovery(ctx, ik.http, ik.cfg.Issuer)
	if err != nil {
		return "", err
	}
	if err := doc.check(ik.cfg.Issuer); err != nil {
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
		st.KeyIDs, st.LastRefresh = ks.kids(), ks.fetched
	}
	if r := ik.res.Load(); r != nil {
		st.NextRefresh = r.Next()
	}
	return st
}
