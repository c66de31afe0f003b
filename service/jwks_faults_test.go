package service_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/usher-dev/usher/service"
)

// faultyIssuer serves a key set through a handler the test swaps at will, and
// counts the key set requests.
type faultyIssuer struct {
	srv      *httptest.Server
	requests atomic.Int64
	handler  atomic.Pointer[http.HandlerFunc]
}

func newFaultyIssuer(t testing.TB, h http.HandlerFunc) *faultyIssuer {
	t.Helper()
	fi := &faultyIssuer{}
	fi.set(h)
	fi.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fi.requests.Add(1)
		(*fi.handler.Load())(w, r)
	}))
	t.Cleanup(fi.srv.Close)
	return fi
}

func (fi *faultyIssuer) set(h http.HandlerFunc) { fi.handler.Store(&h) }

func (fi *faultyIssuer) config() service.IssuerConfig {
	return service.IssuerConfig{Issuer: fi.srv.URL, JWKSURI: fi.srv.URL + "/jwks.json", UnknownKIDCooldown: service.Duration(20 * time.Millisecond)}
}

func serveBody(body []byte) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) { w.Write(body) }
}

// TestJWKSFaults: each row of threats.md's fault table that follows a good
// fetch must keep the last good set (the valid token stays VALID) and be
// recorded as the issuer's last error.
func TestJWKSFaults_KeepLastGoodSet(t *testing.T) {
	k := newRSAKey(t, "rsa-1")
	good := jwks(k)
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
		{"garbage", serveBody([]byte("%!garbage")), "not a JWKS document"},
		{"HTML", serveBody([]byte("<html><body>Sign in</body></html>")), "not a JWKS document"},
		{"truncated", serveBody(good[:len(good)/2]), "not a JWKS document"},
		{"empty set", serveBody([]byte(`{"keys":[]}`)), "empty"},
		{"every key unusable", serveBody([]byte(`{"keys":[{"kty":"oct","k":"c2VjcmV0","kid":"h"}]}`)), "no usable key"},
		{"huge body", serveBody([]byte(`{"keys":[],"pad":"` + strings.Repeat("x", 2<<20) + `"}`)), "over"},
		{"too many keys", serveBody(jwks(manyKeys...)), "over the limit"},
	} {
		t.Run(row.name, func(t *testing.T) {
			ctx := testContext(t)
			fi := newFaultyIssuer(t, serveBody(good))
			v := newValidator(t, ctx, fi.config())
			waitTried(ctx, t, v)
			tok := k.token(t, claims(fi.srv.URL))
			checkVerdict(t, v.Validate(ctx, tok, "api/users", nil), service.ReasonValid)

			fi.set(row.handler)
			before := fi.requests.Load()
			unknown := sign(t, map[string]any{"alg": "RS256", "kid": "not-there"}, claims(fi.srv.URL), "RS256", k.priv)
			poll(ctx, t, "a refetch", func() bool {
				v.Validate(ctx, unknown, "api/users", nil)
				return fi.requests.Load() > before
			})
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
	ctx := testContext(t)
	k := newEdKey(t, "ed-1")
	fi := newFaultyIssuer(t, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Retry-After", "120")
		http.Error(w, "maintenance", http.StatusServiceUnavailable)
	})
	v := newValidator(t, ctx, fi.config())
	waitTried(ctx, t, v)
	tok := k.token(t, claims(fi.srv.URL))
	for range 20 {
		got := v.Validate(ctx, tok, "api/users", nil)
		checkVerdict(t, got, service.ReasonKeysUnavailable)
		time.Sleep(25 * time.Millisecond) // past the unknown-kid cooldown each time
	}
	if n := fi.requests.Load(); n != 1 {
		t.Errorf("%d key set requests within Retry-After: 120, want 1", n)
	}
	if st := v.Issuers()[0]; !strings.Contains(st.LastError, "Retry-After: no fetch for 2m0s") {
		t.Errorf("last error %q does not say Retry-After was honoured", st.LastError)
	}
}

// TestJWKSFaults_MaxStale: once every refresh failed for max_stale, the last
// good set is no longer trusted.
func TestJWKSFaults_MaxStale(t *testing.T) {
	ctx := testContext(t)
	k := newRSAKey(t, "rsa-1")
	fi := newFaultyIssuer(t, serveBody(jwks(k)))
	cfg := fi.config()
	cfg.RefreshInterval, cfg.MaxStale = service.Duration(time.Second), service.Duration(time.Second)
	v := newValidator(t, ctx, cfg)
	waitTried(ctx, t, v)
	tok := k.token(t, claims(fi.srv.URL))
	checkVerdict(t, v.Validate(ctx, tok, "api/users", nil), service.ReasonValid)
	fi.set(func(w http.ResponseWriter, _ *http.Request) { http.Error(w, "down", 502) })
	var got service.Verdict
	poll(ctx, t, "KEYS_UNAVAILABLE after max_stale", func() bool {
		got = v.Validate(ctx, tok, "api/users", nil)
		return got.Reason == service.ReasonKeysUnavailable
	})
	if !strings.Contains(got.Message, "beyond max_stale 1s") {
		t.Errorf("message %q does not say the set is stale", got.Message)
	}
	fi.set(serveBody(jwks(k)))
	poll(ctx, t, "VALID again once the issuer is back", func() bool {
		return v.Validate(ctx, tok, "api/users", nil).Reason == service.ReasonValid
	})
}

// TestJWKSFaults_ConcurrentDuringRefresh: 1,000 validations with a new kid
// during one slow refresh make one outbound request, and all see the new key.
func TestJWKSFaults_ConcurrentDuringRefresh(t *testing.T) {
	ctx := testContext(t)
	old, rotated := newRSAKey(t, "rsa-1"), newRSAKey(t, "rsa-2")
	fi := newFaultyIssuer(t, serveBody(jwks(old)))
	cfg := fi.config()
	cfg.UnknownKIDCooldown = service.Duration(time.Minute)
	v := newValidator(t, ctx, cfg)
	waitTried(ctx, t, v)
	body := jwks(old, rotated)
	fi.set(func(w http.ResponseWriter, _ *http.Request) {
		time.Sleep(300 * time.Millisecond)
		w.Write(body)
	})
	tok := rotated.token(t, claims(fi.srv.URL))
	var wg sync.WaitGroup
	var valid atomic.Int64
	for range 1000 {
		wg.Go(func() {
			if v.Validate(ctx, tok, "api/users", nil).Reason == service.ReasonValid {
				valid.Add(1)
			}
		})
	}
	wg.Wait()
	if n := fi.requests.Load(); n != 2 {
		t.Errorf("%d key set requests, want 2 (the first fetch and one refresh)", n)
	}
	if valid.Load() != 1000 {
		t.Errorf("%d of 1000 validations saw the rotated key", valid.Load())
	}
}
