package service_test

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/usher-dev/usher/internal/testkit"
	"github.com/usher-dev/usher/service"
)

// faultCooldown is the unknown-kid cooldown of these tests: the clock is
// moved past it to cause a refetch.
const faultCooldown = 20 * time.Millisecond

// faultyIssuer is an issuer whose key set answer the test swaps (Handle), and
// a validator over it whose clock the test moves.
func faultyIssuer(ctx context.Context, t *testing.T, h http.HandlerFunc, tune ...func(*service.IssuerConfig)) (*testkit.Issuer, *testkit.Clock, *service.Validator) {
	t.Helper()
	fi := testkit.NewIssuer(t)
	fi.Handle(h)
	cfg := issuerConfig(fi, faultCooldown)
	for _, f := range tune {
		f(&cfg)
	}
	clock := testkit.NewClock()
	v := testkit.NewValidator(t, ctx, clock, []service.IssuerConfig{cfg})
	waitTried(ctx, t, v)
	return fi, clock, v
}

// TestJWKSFaults_KeepLastGoodSet: each fault of a key set endpoint that follows a good
// fetch must keep the last good set (the valid token stays VALID) and be
// recorded as the issuer's last error.
func TestJWKSFaults_KeepLastGoodSet(t *testing.T) {
	k := testkit.RSAKey(t, "rsa-1")
	good := testkit.JWKS(k)
	manyKeys := make([]any, 101)
	for i := range manyKeys {
		manyKeys[i] = k
	}
	for _, row := range []struct {
		name    string
		handler http.HandlerFunc
		lastErr string
	}{
		{"500", func(w http.ResponseWriter, _ *http.Request) { http.Error(w, "boom", 500) }, "HTTP 500"},
		{"429 with Retry-After", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(429)
		}, "Retry-After"},
		{"garbage", testkit.ServeBody([]byte("%!garbage")), "not a JWKS document"},
		{"HTML", testkit.ServeBody([]byte("<html><body>Sign in</body></html>")), "not a JWKS document"},
		{"truncated", testkit.ServeBody(good[:len(good)/2]), "not a JWKS document"},
		{"empty set", testkit.ServeBody([]byte(`{"keys":[]}`)), "empty"},
		{"every key unusable", testkit.ServeBody([]byte(`{"keys":[{"kty":"oct","k":"c2VjcmV0","kid":"h"}]}`)), "no usable key"},
		{"huge body", testkit.ServeBody([]byte(`{"keys":[],"pad":"` + strings.Repeat("x", 2<<20) + `"}`)), "over"},
		{"too many keys", testkit.ServeBody(testkit.JWKS(manyKeys...)), "over the limit"},
	} {
		t.Run(row.name, func(t *testing.T) {
			ctx := testkit.Context(t)
			fi, clock, v := faultyIssuer(ctx, t, testkit.ServeBody(good))
			tok := k.Token(t, testkit.Claims(fi.URL()))
			checkVerdict(t, v.Validate(ctx, tok, "api/users", nil), service.ReasonValid)

			fi.Handle(row.handler)
			forceRefresh(ctx, t, v, clock, faultCooldown, fi, k)
			checkVerdict(t, v.Validate(ctx, tok, "api/users", nil), service.ReasonValid)
			st := v.Issuers()[0]
			if !strings.Contains(st.LastError, row.lastErr) || len(st.KeyIDs) != 1 {
				t.Errorf("status = %+v, want the last good set kept and an error containing %q", st, row.lastErr)
			}
		})
	}
}

// TestJWKSFaults_RetryAfter: an issuer answering 503 with Retry-After gets no
// further request before then, however many tokens arrive.
func TestJWKSFaults_RetryAfter(t *testing.T) {
	ctx := testkit.Context(t)
	k := testkit.EdKey(t, "ed-1")
	fi, clock, v := faultyIssuer(ctx, t, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Retry-After", "120")
		http.Error(w, "maintenance", http.StatusServiceUnavailable)
	})
	tok := k.Token(t, testkit.Claims(fi.URL()))
	for range 20 {
		clock.Advance(faultCooldown + time.Millisecond) // past the unknown-kid cooldown each time, 0.4 s in all
		got := v.Validate(ctx, tok, "api/users", nil)
		checkVerdict(t, got, service.ReasonKeysUnavailable)
	}
	if n := fi.Requests.Load(); n != 1 {
		t.Errorf("%d key set requests within Retry-After: 120, want 1", n)
	}
	clock.Advance(2 * time.Minute) // Retry-After has passed: the next token refetches
	checkVerdict(t, v.Validate(ctx, tok, "api/users", nil), service.ReasonKeysUnavailable)
	if n := fi.Requests.Load(); n != 2 {
		t.Errorf("%d key set requests once Retry-After passed, want 2", n)
	}
	if st := v.Issuers()[0]; !strings.Contains(st.LastError, "Retry-After: no fetch for 2m0s") {
		t.Errorf("last error %q does not say Retry-After was honoured", st.LastError)
	}
}

// TestJWKSFaults_MaxStale: once every refresh failed for max_stale, the last
// good set is no longer trusted.
func TestJWKSFaults_MaxStale(t *testing.T) {
	ctx := testkit.Context(t)
	k := testkit.RSAKey(t, "rsa-1")
	fi, clock, v := faultyIssuer(ctx, t, testkit.ServeBody(testkit.JWKS(k)), func(c *service.IssuerConfig) {
		c.RefreshInterval, c.MaxStale = time.Hour, time.Hour
	})
	tok := k.Token(t, testkit.Claims(fi.URL()))
	checkVerdict(t, v.Validate(ctx, tok, "api/users", nil), service.ReasonValid)
	fi.Handle(func(w http.ResponseWriter, _ *http.Request) { http.Error(w, "down", 502) })
	clock.Advance(time.Hour - time.Second)
	checkVerdict(t, v.Validate(ctx, tok, "api/users", nil), service.ReasonValid) // within max_stale
	clock.Advance(2 * time.Second)
	got := v.Validate(ctx, tok, "api/users", nil)
	checkVerdict(t, got, service.ReasonKeysUnavailable)
	if !strings.Contains(got.Message, "beyond max_stale 1h0m0s") {
		t.Errorf("message %q does not say the set is stale", got.Message)
	}
	fi.Handle(testkit.ServeBody(testkit.JWKS(k)))
	clock.Advance(faultCooldown)
	checkVerdict(t, v.Validate(ctx, tok, "api/users", nil), service.ReasonValid) // the stale set makes a token refetch
}

// TestJWKSFaults_ConcurrentDuringRefresh: 1,000 validations with a new kid
// during one slow refresh make one outbound request, and all see the new key
// when they may all wait for it. (The refresh is held until every
// validation started, so they may wait a minute, and 1,000 of them; by
// default at most 128 wait, for at most 500 ms: TestBulkhead_*.)
func TestJWKSFaults_ConcurrentDuringRefresh(t *testing.T) {
	ctx := testkit.Context(t)
	old, rotated := testkit.RSAKey(t, "rsa-1"), testkit.RSAKey(t, "rsa-2")
	fi := testkit.NewIssuer(t, old)
	cfg := issuerConfig(fi, time.Minute)
	v := testkit.NewValidator(t, ctx, testkit.NewClock(), []service.IssuerConfig{cfg}, service.WithKeyWait(time.Minute, 1000))
	waitTried(ctx, t, v)
	body := testkit.JWKS(old, rotated)
	arrived, release := make(chan struct{}), make(chan struct{})
	var first sync.Once
	fi.Handle(func(w http.ResponseWriter, _ *http.Request) {
		first.Do(func() { close(arrived) })
		<-release // held until every validation has started
		w.Write(body)
	})
	tok := rotated.Token(t, testkit.Claims(fi.URL()))
	var wg sync.WaitGroup
	var valid, started atomic.Int64
	for range 1000 {
		wg.Go(func() {
			started.Add(1)
			if v.Validate(ctx, tok, "api/users", nil).Reason == service.ReasonValid {
				valid.Add(1)
			}
		})
	}
	<-arrived
	testkit.Eventually(ctx, t, "every validation started", func() bool { return started.Load() == 1000 })
	close(release)
	wg.Wait()
	if n := fi.Requests.Load(); n != 2 {
		t.Errorf("%d key set requests, want 2 (the first fetch and one refresh)", n)
	}
	if valid.Load() != 1000 {
		t.Errorf("%d of 1000 validations saw the rotated key", valid.Load())
	}
}
