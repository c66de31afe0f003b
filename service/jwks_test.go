package service_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/usher-dev/usher/internal/testkit"
	"github.com/usher-dev/usher/service"
)

func TestJWKS_Rotation(t *testing.T) {
	ctx := testkit.Context(t)
	oldKey, newKey := testkit.RSAKey(t, "2025-a"), testkit.ECKey(t, "2026-b", elliptic.P256())
	ti := testkit.NewIssuer(t, oldKey)
	clock := testkit.NewClock()
	const cooldown = 100 * time.Millisecond
	v := testkit.NewValidator(t, ctx, clock, []service.IssuerConfig{issuerConfig(ti, cooldown)})
	waitTried(ctx, t, v)
	if n := ti.Requests.Load(); n != 1 {
		t.Fatalf("%d requests at start, want 1", n)
	}
	oldTok, newTok := oldKey.Token(t, testkit.Claims(ti.URL())), newKey.Token(t, testkit.Claims(ti.URL()))
	checkVerdict(t, v.Validate(ctx, oldTok, "api/users", nil), service.ReasonValid)

	ti.Publish(oldKey, newKey)
	checkVerdict(t, v.Validate(ctx, newTok, "api/users", nil), service.ReasonValid)
	if n := ti.Requests.Load(); n != 2 {
		t.Fatalf("%d requests after the new kid, want exactly one refetch (2)", n)
	}
	checkVerdict(t, v.Validate(ctx, oldTok, "api/users", nil), service.ReasonValid)
	if got := v.Issuers()[0].KeyIDs; !slices.Equal(got, []string{"2025-a", "2026-b"}) {
		t.Fatalf("key ids %v during the overlap", got)
	}
	if n := ti.Requests.Load(); n != 2 {
		t.Fatalf("%d requests: a known kid must not cause a fetch", n)
	}

	ti.Publish(newKey)
	forceRefresh(ctx, t, v, clock, cooldown, ti, newKey)
	got := v.Validate(ctx, oldTok, "api/users", nil)
	checkVerdict(t, got, service.ReasonUnknownKey)
	checkMismatch(t, got.Mismatch, &service.Mismatch{Claim: "kid", Expected: []string{"2026-b"}, Actual: []string{"2025-a"}})
	if !strings.Contains(got.Hint, "2026-b") {
		t.Errorf("UNKNOWN_KEY hint %q does not name the published kid", got.Hint)
	}
	checkVerdict(t, v.Validate(ctx, newTok, "api/users", nil), service.ReasonValid)
}

func TestJWKS_KidFlood(t *testing.T) {
	ctx := testkit.Context(t)
	k := testkit.EdKey(t, "ed-1")
	ti := testkit.NewIssuer(t, k)
	v := newValidator(t, ctx, issuerConfig(ti, time.Minute))
	waitTried(ctx, t, v)
	base := ti.Requests.Load()

	const tokens, workers = 2000, 50
	toks := make(chan string, tokens)
	for range tokens {
		kid := make([]byte, 8)
		rand.Read(kid)
		toks <- testkit.Sign(t, map[string]any{"alg": "EdDSA", "kid": hex.EncodeToString(kid)}, testkit.Claims(ti.URL()), "EdDSA", k.Priv)
	}
	close(toks)
	var wrong atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for tok := range toks {
				if r := v.Validate(ctx, tok, "api/users", nil).Reason; r != service.ReasonUnknownKey {
					wrong.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if n := wrong.Load(); n != 0 {
		t.Fatalf("%d of %d random kids were not UNKNOWN_KEY", n, tokens)
	}
	if extra := ti.Requests.Load() - base; extra > 2 {
		t.Fatalf("%d tokens with random kids caused %d key set fetches within one cooldown, want at most 2", tokens, extra)
	}
	checkVerdict(t, v.Validate(ctx, k.Token(t, testkit.Claims(ti.URL())), "api/users", nil), service.ReasonValid)
}

func TestJWKS_OutageKeepsKeys(t *testing.T) {
	ctx := testkit.Context(t)
	k := testkit.RSAKey(t, "rsa-1")
	ti := testkit.NewIssuer(t, k)
	clock := testkit.NewClock()
	const cooldown = 50 * time.Millisecond
	v := testkit.NewValidator(t, ctx, clock, []service.IssuerConfig{issuerConfig(ti, cooldown)})
	waitTried(ctx, t, v)
	tok := k.Token(t, testkit.Claims(ti.URL()))
	checkVerdict(t, v.Validate(ctx, tok, "api/users", nil), service.ReasonValid)

	ti.Handle(unavailable)
	checkVerdict(t, v.Validate(ctx, tok, "api/users", nil), service.ReasonValid)
	forceRefresh(ctx, t, v, clock, cooldown, ti, k)
	forceRefresh(ctx, t, v, clock, cooldown, ti, k)
	checkVerdict(t, v.Validate(ctx, tok, "api/users", nil), service.ReasonValid)
	st := v.Issuers()[0]
	if !slices.Equal(st.KeyIDs, []string{"rsa-1"}) || !strings.Contains(st.LastError, "503") || st.LastRefresh.IsZero() {
		t.Fatalf("status during the outage: %+v", st)
	}

	ti.Publish(k)
	forceRefresh(ctx, t, v, clock, cooldown, ti, k)
	if st := v.Issuers()[0]; st.LastError != "" {
		t.Fatalf("last error %q after a good fetch", st.LastError)
	}
}

func TestJWKS_StartWhileDown(t *testing.T) {
	k := testkit.EdKey(t, "ed-1")
	// recover checks that a token of an issuer whose keys were never fetched is
	// KEYS_UNAVAILABLE, then VALID soon after up() makes the key set reachable
	// (each try moves the clock past the cooldown, so that it refetches).
	const cooldown = 100 * time.Millisecond
	recover := func(t *testing.T, clock *testkit.Clock, v *service.Validator, iss string, up func()) {
		ctx := testkit.Context(t)
		waitTried(ctx, t, v)
		tok := k.Token(t, testkit.Claims(iss))
		got := v.Validate(ctx, tok, "api/users", nil)
		checkVerdict(t, got, service.ReasonKeysUnavailable)
		if got.Mismatch != nil || !strings.Contains(got.Hint, "not the token's fault") {
			t.Fatalf("KEYS_UNAVAILABLE verdict: %+v", got)
		}
		if st := v.Issuers()[0]; st.LastError == "" || len(st.KeyIDs) != 0 || !st.LastRefresh.IsZero() {
			t.Fatalf("status while down: %+v", st)
		}
		up()
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		testkit.Eventually(pctx, t, "VALID after the key set came up", func() bool {
			clock.Advance(cooldown)
			return v.Validate(pctx, tok, "api/users", nil).Reason == service.ReasonValid
		})
		if st := v.Issuers()[0]; st.LastError != "" || !slices.Equal(st.KeyIDs, []string{"ed-1"}) {
			t.Fatalf("status after recovery: %+v", st)
		}
	}

	t.Run("503", func(t *testing.T) {
		ti := testkit.NewIssuer(t, k)
		ti.Handle(unavailable)
		clock := testkit.NewClock()
		v := testkit.NewValidator(t, testkit.Context(t), clock, []service.IssuerConfig{issuerConfig(ti, cooldown)})
		recover(t, clock, v, ti.URL(), func() { ti.Publish(k) })
	})

	t.Run("closed listener", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		srv := httptest.NewUnstartedServer(testkit.ServeBody(testkit.JWKS(k)))
		t.Cleanup(srv.Close)
		cfg := service.IssuerConfig{Issuer: "http://" + addr, JWKSURI: "http://" + addr + "/jwks.json", UnknownKIDCooldown: cooldown}
		clock := testkit.NewClock()
		v := testkit.NewValidator(t, testkit.Context(t), clock, []service.IssuerConfig{cfg})
		recover(t, clock, v, cfg.Issuer, func() {
			l, err := net.Listen("tcp", addr)
			if err != nil {
				t.Skipf("the port was taken meanwhile: %v", err)
			}
			srv.Listener.Close()
			srv.Listener = l
			srv.Start()
		})
	})
}

// A slow key set endpoint never holds a request past its deadline.
func TestJWKS_SlowServerRespectsDeadline(t *testing.T) {
	k := testkit.EdKey(t, "ed-1")
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) })
	cfg := service.IssuerConfig{Issuer: srv.URL, JWKSURI: srv.URL + "/jwks.json", FetchTimeout: 5 * time.Second}
	v := newValidator(t, testkit.Context(t), cfg)
	tok := k.Token(t, testkit.Claims(srv.URL))
	for range 3 {
		ctx, cancel := context.WithTimeout(testkit.Context(t), 200*time.Millisecond)
		start := time.Now()
		got := v.Validate(ctx, tok, "api/users", nil)
		took := time.Since(start)
		cancel()
		checkVerdict(t, got, service.ReasonKeysUnavailable)
		if took > 2*time.Second {
			t.Fatalf("Validate took %v with a 200ms deadline", took)
		}
	}
}

func TestJWKS_RedirectToAnotherHostRefused(t *testing.T) {
	ctx := testkit.Context(t)
	k := testkit.EdKey(t, "ed-1")
	elsewhere := testkit.NewIssuer(t, k)
	srv := httptest.NewServer(http.RedirectHandler(strings.Replace(elsewhere.JWKSURI(), "127.0.0.1", "localhost", 1), http.StatusFound))
	t.Cleanup(srv.Close)
	v := newValidator(t, ctx, service.IssuerConfig{Issuer: srv.URL, JWKSURI: srv.URL + "/jwks.json"})
	waitTried(ctx, t, v)
	checkVerdict(t, v.Validate(ctx, k.Token(t, testkit.Claims(srv.URL)), "api/users", nil), service.ReasonKeysUnavailable)
	if n := elsewhere.Requests.Load(); n != 0 {
		t.Fatalf("the redirect target was fetched %d times", n)
	}
	if st := v.Issuers()[0]; !strings.Contains(st.LastError, "redirect") {
		t.Fatalf("last error %q does not say the redirect was refused", st.LastError)
	}
}

func TestJWKS_AcceptanceRules(t *testing.T) {
	good := testkit.RSAKey(t, "good")
	goodEC := testkit.ECKey(t, "good-ec", elliptic.P256())

	t.Run("a bad set never replaces a good one", func(t *testing.T) {
		ctx := testkit.Context(t)
		ti := testkit.NewIssuer(t, good)
		clock := testkit.NewClock()
		v := testkit.NewValidator(t, ctx, clock, []service.IssuerConfig{issuerConfig(ti, time.Millisecond)})
		waitTried(ctx, t, v)
		tok := good.Token(t, testkit.Claims(ti.URL()))
		checkVerdict(t, v.Validate(ctx, tok, "api/users", nil), service.ReasonValid)
		weak := testkit.RSAKeyBits(t, "weak", 1024)
		many := make([]any, 101)
		for i := range many {
			many[i] = good
		}
		for name, body := range map[string]string{
			`{"keys":[]}`:       `{"keys":[]}`,
			"no keys member":    `{}`,
			"HTML":              `<html><body>maintenance</body></html>`,
			"truncated":         string(testkit.JWKS(good))[:40],
			"only unusable":     string(testkit.JWKS(weak, map[string]any{"kty": "oct", "k": "c2VjcmV0"})),
			"over 100 keys":     string(testkit.JWKS(many...)),
			"body over 1 MiB":   `{"pad":"` + strings.Repeat("x", 1<<20) + `","keys":` + strings.TrimPrefix(string(testkit.JWKS(goodEC)), `{"keys":`),
			"keys not an array": `{"keys":{}}`,
		} {
			t.Run(name, func(t *testing.T) {
				ti.ServeRaw([]byte(body))
				forceRefresh(ctx, t, v, clock, time.Millisecond, ti, good)
				checkVerdict(t, v.Validate(ctx, tok, "api/users", nil), service.ReasonValid)
				if st := v.Issuers()[0]; !slices.Equal(st.KeyIDs, []string{"good"}) || st.LastError == "" {
					t.Fatalf("status after a bad set: %+v", st)
				}
			})
		}
	})

	t.Run("unusable keys are dropped, the rest used", func(t *testing.T) {
		ctx := testkit.Context(t)
		weak := testkit.RSAKeyBits(t, "weak-1024", 1024)
		leaked := testkit.ECKey(t, "leaked", elliptic.P256())
		leakedJWK := leaked.JWK()
		d, err := leaked.Priv.(*ecdsa.PrivateKey).Bytes()
		if err != nil {
			t.Fatal(err)
		}
		leakedJWK["d"] = testkit.B64.EncodeToString(d)
		e1 := good.Like(t, "e-1").JWK()
		e1["e"] = "AQ"
		enc := testkit.ECKey(t, "enc", elliptic.P256())
		enc.Use = "enc"
		dup1, dup2 := testkit.EdKey(t, "dup"), testkit.EdKey(t, "dup")
		ti := testkit.NewIssuer(t)
		ti.ServeRaw(testkit.JWKS(
			map[string]any{"kty": "XYZ", "kid": "weird", "x": "AA"},
			weak, leakedJWK, e1, enc, dup1, dup2,
			map[string]any{"kty": "oct", "kid": "oct", "k": "c2VjcmV0"},
			map[string]any{"kty": "EC", "kid": "p192", "crv": "P-192", "x": "AA", "y": "AA"},
			good,
		))
		logs := &testkit.SyncBuffer{}
		cfg := &service.Config{Issuers: []service.IssuerConfig{issuerConfig(ti, time.Minute)}}
		v, err := service.NewValidator(ctx, cfg, service.WithClock(func() time.Time { return testkit.Now }), service.WithLogger(slog.New(slog.NewTextHandler(logs, nil))))
		if err != nil {
			t.Fatal(err)
		}
		waitTried(ctx, t, v)
		checkVerdict(t, v.Validate(ctx, good.Token(t, testkit.Claims(ti.URL())), "api/users", nil), service.ReasonValid)
		for _, k := range []*testkit.Key{weak, leaked, enc, dup1, dup2} {
			checkVerdict(t, v.Validate(ctx, k.Token(t, testkit.Claims(ti.URL())), "api/users", nil), service.ReasonUnknownKey)
		}
		if got := v.Issuers()[0].KeyIDs; !slices.Equal(got, []string{"good"}) {
			t.Fatalf("key ids %v, want only the good key", got)
		}
		out := logs.String()
		for _, want := range []string{"keys[1]: ", "1024 bits", `\"leaked\" holds private key material`, "keys[3]: ", "exponent", `\"dup\": published more than once`, `use \"enc\"`, "(XYZ)"} {
			if !strings.Contains(out, want) {
				t.Errorf("the log does not say why a key was dropped (%q):\n%s", want, out)
			}
		}
	})
}

func TestJWKS_Discovery(t *testing.T) {
	k := testkit.EdKey(t, "ed-1")

	t.Run("valid", func(t *testing.T) {
		ctx := testkit.Context(t)
		ti := testkit.NewIssuer(t, k)
		v := newValidator(t, ctx, service.IssuerConfig{Issuer: ti.URL(), Discovery: true})
		checkVerdict(t, v.Validate(ctx, k.Token(t, testkit.Claims(ti.URL())), "api/users", nil), service.ReasonValid)
		if st := v.Issuers()[0]; st.JWKSURI != ti.JWKSURI() || !slices.Equal(st.KeyIDs, []string{"ed-1"}) {
			t.Fatalf("status %+v", st)
		}
	})

	t.Run("issuer differs by a trailing slash", func(t *testing.T) {
		ctx := testkit.Context(t)
		ti := testkit.NewIssuer(t, k)
		ti.SetDiscoveryIssuer(ti.URL() + "/")
		v := newValidator(t, ctx, service.IssuerConfig{Issuer: ti.URL(), Discovery: true})
		waitTried(ctx, t, v)
		got := v.Validate(ctx, k.Token(t, testkit.Claims(ti.URL())), "api/users", nil)
		checkVerdict(t, got, service.ReasonKeysUnavailable)
		st := v.Issuers()[0]
		for _, want := range []string{`"` + ti.URL() + `/"`, `"` + ti.URL() + `"`} {
			if !strings.Contains(st.LastError, want) {
				t.Errorf("last error %q does not show %s", st.LastError, want)
			}
		}
		if ti.Requests.Load() != 0 {
			t.Error("the key set of a refused discovery document was fetched")
		}
	})
}

func TestJWKS_File(t *testing.T) {
	ctx := testkit.Context(t)
	k := testkit.ECKey(t, "ec-1", elliptic.P256())
	const iss = "https://static.usher.test"
	path := testkit.WriteJWKS(t, k)
	v := newValidator(t, ctx, service.IssuerConfig{Issuer: iss, JWKSFile: path})
	waitTried(ctx, t, v)
	checkVerdict(t, v.Validate(ctx, k.Token(t, testkit.Claims(iss)), "api/users", nil), service.ReasonValid)
	checkVerdict(t, v.Validate(ctx, testkit.Sign(t, map[string]any{"alg": "ES256", "kid": "other"}, testkit.Claims(iss), "ES256", k.Priv), "api/users", nil), service.ReasonUnknownKey)
	if st := v.Issuers()[0]; !strings.HasPrefix(st.JWKSURI, "file://") || !slices.Equal(st.KeyIDs, []string{"ec-1"}) {
		t.Fatalf("status %+v", st)
	}

	for name, path := range map[string]string{
		"missing":      t.TempDir() + "/nope.json",
		"empty set":    testkit.WriteFile(t, "jwks.json", []byte(`{"keys":[]}`)),
		"only weak":    testkit.WriteJWKS(t, testkit.RSAKeyBits(t, "weak", 1024)),
		"not JSON":     testkit.WriteFile(t, "jwks.json", []byte("keys:")),
		"private keys": testkit.WriteFile(t, "jwks.json", []byte(`{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}`)),
	} {
		t.Run(name, func(t *testing.T) {
			_, err := service.NewValidator(ctx, &service.Config{Issuers: []service.IssuerConfig{{Issuer: iss, JWKSFile: path}}})
			if err == nil || !strings.Contains(err.Error(), "jwks_file") || !strings.Contains(err.Error(), iss) {
				t.Fatalf("NewValidator error = %v, want one naming jwks_file and the issuer", err)
			}
		})
	}
}

// unavailable answers 503, as an issuer's key set endpoint in an outage.
func unavailable(w http.ResponseWriter, _ *http.Request) {
	http.Error(w, "unavailable", http.StatusServiceUnavailable)
}
