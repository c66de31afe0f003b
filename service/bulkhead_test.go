package service_test

import (
	"context"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/usher-dev/usher/internal/testkit"
	"github.com/usher-dev/usher/service"
)

// heldKeys makes ti's key set requests hang until the returned release is
// called (then they are answered with body) or the request is cancelled.
// Release runs when the test ends at the latest, before ti closes.
func heldKeys(t *testing.T, ti *testkit.Issuer, body []byte) (release func()) {
	t.Helper()
	held := make(chan struct{})
	release = sync.OnceFunc(func() { close(held) })
	ti.Handle(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-held:
			w.Write(body)
		case <-r.Context().Done():
		}
	})
	t.Cleanup(release)
	return release
}

// answeredBefore validates tok with a deadline and fails the test when the
// verdict is not want or came only once the deadline had passed: a call
// must get its verdict, not DEADLINE_EXCEEDED, while a fetch hangs.
func answeredBefore(t *testing.T, v *service.Validator, tok string, deadline time.Duration, want service.Reason) {
	t.Helper()
	ctx, cancel := context.WithTimeout(testkit.Context(t), deadline)
	defer cancel()
	got := v.Validate(ctx, tok, "api/users", nil)
	if ctx.Err() != nil {
		t.Fatalf("the verdict (%v) came only after the call's %s deadline: the call waited for the whole key set fetch", got.Reason, deadline)
	}
	checkVerdict(t, got, want)
}

// TestBulkhead_VerdictWhileFetchHangs: while an issuer's key set fetch hangs
// (fetch_timeout 20s), a call waits for it only briefly and gets its
// verdict from the keys held, long before its own deadline; the fetch goes
// on in the background, and its keys serve once it answers.
func TestBulkhead_VerdictWhileFetchHangs(t *testing.T) {
	k, rotated := testkit.EdKey(t, "ed-1"), testkit.EdKey(t, "ed-2")
	slow := func(c *service.IssuerConfig) { c.FetchTimeout = 20 * time.Second }

	t.Run("no keys yet: KEYS_UNAVAILABLE", func(t *testing.T) {
		ctx := testkit.Context(t)
		ti := testkit.NewIssuer(t)
		release := heldKeys(t, ti, testkit.JWKS(k))
		cfg := issuerConfig(ti, 0)
		slow(&cfg)
		v := testkit.NewValidator(t, ctx, testkit.NewClock(), []service.IssuerConfig{cfg})
		tok := k.Token(t, testkit.Claims(ti.URL()))
		answeredBefore(t, v, tok, 10*time.Second, service.ReasonKeysUnavailable)
		release() // the fetch the call gave up on is still in flight: it delivers
		testkit.Eventually(ctx, t, "the background fetch delivering the keys", func() bool { return len(v.Issuers()[0].KeyIDs) == 1 })
		checkVerdict(t, v.Validate(ctx, tok, "api/users", nil), service.ReasonValid)
		if n := ti.Requests.Load(); n != 1 {
			t.Errorf("%d key set requests, want 1 (the calls joined the fetch in flight)", n)
		}
	})

	t.Run("unknown kid: UNKNOWN_KEY", func(t *testing.T) {
		ctx := testkit.Context(t)
		ti := testkit.NewIssuer(t, k)
		cfg := issuerConfig(ti, time.Millisecond)
		slow(&cfg)
		clock := testkit.NewClock()
		v := testkit.NewValidator(t, ctx, clock, []service.IssuerConfig{cfg})
		waitTried(ctx, t, v)
		release := heldKeys(t, ti, testkit.JWKS(k, rotated))
		clock.Advance(time.Second)
		tok := rotated.Token(t, testkit.Claims(ti.URL()))
		answeredBefore(t, v, tok, 10*time.Second, service.ReasonUnknownKey)
		checkVerdict(t, v.Validate(ctx, k.Token(t, testkit.Claims(ti.URL())), "api/users", nil), service.ReasonValid)
		release()
		testkit.Eventually(ctx, t, "the background refetch delivering the rotated key", func() bool { return len(v.Issuers()[0].KeyIDs) == 2 })
		checkVerdict(t, v.Validate(ctx, tok, "api/users", nil), service.ReasonValid)
	})
}

// TestBulkhead_NearDeadlineWaitsLess: a call whose deadline is nearer than
// the key wait waits at most half the time it has left, and gets a verdict
// before its deadline.
func TestBulkhead_NearDeadlineWaitsLess(t *testing.T) {
	ctx := testkit.Context(t)
	k := testkit.EdKey(t, "ed-1")
	ti := testkit.NewIssuer(t)
	heldKeys(t, ti, testkit.JWKS(k))
	cfg := issuerConfig(ti, 0)
	cfg.FetchTimeout = 20 * time.Second
	v := testkit.NewValidator(t, ctx, testkit.NewClock(), []service.IssuerConfig{cfg}, service.WithKeyWait(time.Minute, 0))
	answeredBefore(t, v, k.Token(t, testkit.Claims(ti.URL())), 2*time.Second, service.ReasonKeysUnavailable)
}

// TestBulkhead_WaitersBoundedPerIssuer: at most N calls of one issuer wait
// for its key set; the next one gets its verdict at once (and a warning is
// logged, once), while a call of another issuer still waits for its own
// refetch and sees its rotated key. The calls that waited see the new key
// once the held fetch answers.
func TestBulkhead_WaitersBoundedPerIssuer(t *testing.T) {
	const waiters = 4
	ctx := testkit.Context(t)
	k, rotated := testkit.EdKey(t, "ed-1"), testkit.EdKey(t, "ed-2")
	slowIss, other := testkit.NewIssuer(t, k), testkit.NewIssuer(t, k)
	slowCfg := issuerConfig(slowIss, time.Minute)
	slowCfg.FetchTimeout = 20 * time.Second
	var logs testkit.SyncBuffer
	v := testkit.NewValidator(t, ctx, testkit.NewClock(), []service.IssuerConfig{slowCfg, issuerConfig(other, time.Minute)},
		service.WithKeyWait(time.Minute, waiters), service.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	waitTried(ctx, t, v)
	release := heldKeys(t, slowIss, testkit.JWKS(k, rotated))

	tok := rotated.Token(t, testkit.Claims(slowIss.URL()))
	results := make(chan service.Reason, waiters)
	for range waiters {
		go func() { results <- v.Validate(ctx, tok, "api/users", nil).Reason }()
	}
	testkit.Eventually(ctx, t, "every waiter waiting", func() bool { return service.KeyWaiters(v, slowIss.URL()) == waiters })
	for range 3 {
		answeredBefore(t, v, tok, 10*time.Second, service.ReasonUnknownKey) // one too many: at once
	}
	// Another issuer's calls are not held back by the slow one's waiters.
	other.Publish(k, rotated)
	checkVerdict(t, v.Validate(ctx, rotated.Token(t, testkit.Claims(other.URL())), "api/users", nil), service.ReasonValid)

	select {
	case r := <-results:
		t.Fatalf("a waiter returned (%v) while the fetch was held: the test did not hold it", r)
	default:
	}
	release()
	for range waiters {
		if r := <-results; r != service.ReasonValid {
			t.Errorf("a call that waited for the refetch got %v, want VALID", r)
		}
	}
	if n := strings.Count(logs.String(), "calls beyond the per-issuer wait bound"); n != 1 {
		t.Errorf("%d warnings that calls were turned away, want 1:\n%s", n, logs.String())
	}
	if n := slowIss.Requests.Load(); n != 2 {
		t.Errorf("%d key set requests, want 2 (the first fetch and one refetch)", n)
	}
}
