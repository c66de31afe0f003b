package service_test

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/usher-dev/usher/internal/testkit"
	"github.com/usher-dev/usher/service"
)

// prefixed is s's config with token_prefixes.
func prefixed(t *testing.T, s *testkit.IntrospectionServer, prefixes ...string) service.IssuerConfig {
	cfg := s.Config(t)
	cfg.Introspection.TokenPrefixes = prefixes
	return cfg
}

// TestOpaque_Routing: an opaque token goes to the issuer whose
// token_prefixes it starts with, and the other endpoints never see it; one
// that no prefix matches goes nowhere (MALFORMED, the hint naming

// activate makes the server answer for a new opaque token with prefix.
func activate(s *testkit.IntrospectionServer, prefix string) string {
	tok := opaqueToken(prefix)
	s.Activate(tok, testkit.Claims(s.URL()))
	return tok
}

// asked fails the test unless the server was asked about exactly want.
func asked(t *testing.T, s *testkit.IntrospectionServer, want ...string) {
	t.Helper()
	if got := s.Asked(); !slices.Equal(got, want) {
		t.Fatalf("the endpoint of %s was asked about %q, want %q", s.URL(), got, want)
	}
}

// token_prefixes), and a JWT never goes to an introspection endpoint.
func TestOpaque_Routing(t *testing.T) {
	ctx := testkit.Context(t)
	a, b := testkit.NewIntrospectionServer(t), testkit.NewIntrospectionServer(t)
	k := testkit.EdKey(t, "ed-1")
	jwks := testkit.NewIssuer(t, k)

	t.Run("by prefix", func(t *testing.T) {
		v := testkit.NewValidator(t, ctx, testkit.NewClock(), []service.IssuerConfig{prefixed(t, a, "a_at_"), prefixed(t, b, "b_at_"), jwks.Config()})
		ta, tb := activate(a, "a_at_"), activate(b, "b_at_")
		got := v.Validate(ctx, tb, "api/users", nil)
		checkVerdict(t, got, service.ReasonValid)
		if got.Claims.Issuer != b.URL() {
			t.Fatalf("issuer %q", got.Claims.Issuer)
		}
		checkVerdict(t, v.Validate(ctx, ta, "api/users", nil), service.ReasonValid)
		asked(t, a, ta)
		asked(t, b, tb)
		// Neither prefix: two issuers could own it, so neither is asked.
		got = v.Validate(ctx, opaqueToken("c_at_"), "api/users", nil)
		checkVerdict(t, got, service.ReasonMalformed)
		for _, want := range []string{"token_prefixes", a.URL() + ": a_at_", b.URL() + ": b_at_"} {
			if !strings.Contains(got.Hint, want) {
				t.Errorf("hint %q lacks %q", got.Hint, want)
			}
		}
		// A JWT is validated by its signature.
		checkVerdict(t, v.Validate(ctx, k.Token(t, testkit.Claims(jwks.URL())), "api/users", nil), service.ReasonValid)
		asked(t, a, ta)
		asked(t, b, tb)
	})

}

// TestOpaque_RoutingFallback: without a prefix that matches, the only
// issuer with introspection gets the token when it names no prefixes; two
// issuers, or one that names its prefixes, get nothing (MALFORMED). A JWT
// mangled in transit is no opaque token, and without introspection the
// hint says how to set it up.
func TestOpaque_RoutingFallback(t *testing.T) {
	ctx := testkit.Context(t)
	k := testkit.EdKey(t, "ed-1")
	jwks := testkit.NewIssuer(t, k)

	t.Run("two issuers, one without prefixes: still ambiguous", func(t *testing.T) {
		a, b := testkit.NewIntrospectionServer(t), testkit.NewIntrospectionServer(t)
		v := testkit.NewValidator(t, ctx, testkit.NewClock(), []service.IssuerConfig{prefixed(t, a, "a_at_"), b.Config(t)})
		got := v.Validate(ctx, activate(b, ""), "api/users", nil)
		checkVerdict(t, got, service.ReasonMalformed)
		if !strings.Contains(got.Hint, b.URL()+": none") {
			t.Errorf("hint %q", got.Hint)
		}
		asked(t, a)
		asked(t, b)
	})

	t.Run("the only issuer with introspection", func(t *testing.T) {
		c := testkit.NewIntrospectionServer(t)
		v := testkit.NewValidator(t, ctx, testkit.NewClock(), []service.IssuerConfig{c.Config(t), jwks.Config()})
		tok := activate(c, "")
		checkVerdict(t, v.Validate(ctx, tok, "api/users", nil), service.ReasonValid)
		// RFC 6750's b64token alphabet, dots included.
		dotted := "mF_9.B5f-4.1JqM+/x~y=="
		c.Activate(dotted, testkit.Claims(c.URL()))
		checkVerdict(t, v.Validate(ctx, dotted, "api/users", nil), service.ReasonValid)
		asked(t, c, tok, dotted)
	})

	t.Run("the only issuer gets the tokens its prefixes do not name", func(t *testing.T) {
		// As the contract routes them: prefix, else the only issuer with
		// introspection. A refresh token is told apart by the answer.
		c := testkit.NewIntrospectionServer(t)
		v := testkit.NewValidator(t, ctx, testkit.NewClock(), []service.IssuerConfig{prefixed(t, c, "ory_at_")})
		tok := opaqueToken("ory_rt_")
		checkVerdict(t, v.Validate(ctx, tok, "api/users", nil), service.ReasonInactive)
		asked(t, c, tok)
	})

	t.Run("a random token that begins like a JOSE header is opaque", func(t *testing.T) {
		// The base64url of '{' is "ey"-"e_": about one random token in 256
		// begins so. With no dot it cannot be a JWS at all.
		c := testkit.NewIntrospectionServer(t)
		v := testkit.NewValidator(t, ctx, testkit.NewClock(), []service.IssuerConfig{c.Config(t), jwks.Config()})
		for _, tok := range []string{"eyJ" + opaqueToken(""), "ez" + opaqueToken(""), "e-" + opaqueToken("")} {
			c.Activate(tok, testkit.Claims(c.URL()))
			checkVerdict(t, v.Validate(ctx, tok, "api/users", nil), service.ReasonValid)
		}
	})

	t.Run("a mangled JWT is not opaque", func(t *testing.T) {
		c := testkit.NewIntrospectionServer(t)
		v := testkit.NewValidator(t, ctx, testkit.NewClock(), []service.IssuerConfig{c.Config(t)})
		tok := k.Token(t, testkit.Claims(jwks.URL()))
		for _, bad := range []string{strings.Join(segments(tok)[:2], "."), `"` + tok + `"`, tok + " x", ""} {
			checkVerdict(t, v.Validate(ctx, bad, "api/users", nil), service.ReasonMalformed)
		}
		asked(t, c)
	})

	t.Run("no introspection configured: the hint says to configure it", func(t *testing.T) {
		v := testkit.NewValidator(t, ctx, testkit.NewClock(), []service.IssuerConfig{jwks.Config()})
		got := v.Validate(ctx, opaqueToken(""), "api/users", nil)
		checkVerdict(t, got, service.ReasonMalformed)
		if !strings.Contains(got.Hint, "Configure introspection for the issuer (introspection: endpoint, client_id, client_secret_file") {
			t.Fatalf("hint %q", got.Hint)
		}
	})
}

// TestOpaque_SharedCall: concurrent lookups of one token that is not
// cached share one call to the endpoint, and all get its verdict.
func TestOpaque_SharedCall(t *testing.T) {
	ctx := testkit.Context(t)
	s := testkit.NewIntrospectionServer(t)
	v, _ := opaqueEngine(t, s, nil)
	tok := opaqueToken("")
	s.Activate(tok, testkit.Claims(s.URL()))
	release := s.Hold(t)
	const n = 32
	got := make([]service.Verdict, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { got[i] = v.Validate(ctx, tok, "api/users", nil) })
	}
	testkit.Eventually(ctx, t, "every caller waiting", func() bool { return service.IntrospectionWaiters(v, s.URL()) == n })
	release()
	wg.Wait()
	for _, g := range got {
		checkVerdict(t, g, service.ReasonValid)
	}
	if c := s.Calls.Load(); c != 1 {
		t.Fatalf("%d calls for %d concurrent lookups of one token, want 1", c, n)
	}
	if c := v.IntrospectionCacheStats(); c.Entries != 1 {
		t.Fatalf("cache %+v", c)
	}
}

// TestOpaque_Bulkhead: an issuer whose endpoint hangs holds at most the
// WithKeyWait bound of callers; the next caller gets ISSUER_UNAVAILABLE at
// once, and another issuer's opaque tokens and JWTs are answered as usual
// meanwhile.
func TestOpaque_Bulkhead(t *testing.T) {
	ctx := testkit.Context(t)
	slow, fast := testkit.NewIntrospectionServer(t), testkit.NewIntrospectionServer(t)
	k := testkit.EdKey(t, "ed-1")
	jwks := testkit.NewIssuer(t, k)
	slowCfg := prefixed(t, slow, "slow_")
	slowCfg.Introspection.Timeout = 20 * time.Second
	v := testkit.NewValidator(t, ctx, testkit.NewClock(), []service.IssuerConfig{slowCfg, prefixed(t, fast, "fast_"), jwks.Config()}, service.WithKeyWait(0, 2))
	waitTried(ctx, t, v)
	release := slow.Hold(t)
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			v.Validate(ctx, opaqueToken("slow_"), "api/users", nil)
		})
	}
	testkit.Eventually(ctx, t, "two callers waiting for the slow endpoint", func() bool { return service.IntrospectionWaiters(v, slow.URL()) == 2 })

	answered := func(tok string, want service.Reason) service.Verdict {
		t.Helper()
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		got := v.Validate(cctx, tok, "api/users", nil)
		if cctx.Err() != nil {
			t.Fatalf("the verdict (%v) came only after the deadline", got.Reason)
		}
		checkVerdict(t, got, want)
		return got
	}
	shed := answered(opaqueToken("slow_"), service.ReasonIssuerUnavailable)
	if !strings.Contains(shed.Message, "already has 2 calls waiting or in flight") || !strings.Contains(shed.Hint, "retry shortly") {
		t.Fatalf("message %q, hint %q", shed.Message, shed.Hint)
	}
	tok := opaqueToken("fast_")
	fast.Activate(tok, testkit.Claims(fast.URL()))
	answered(tok, service.ReasonValid)
	answered(k.Token(t, testkit.Claims(jwks.URL())), service.ReasonValid)
	if n := slow.Calls.Load(); n != 2 {
		t.Fatalf("the slow endpoint got %d calls, want 2 (the third caller was turned away)", n)
	}
	release()
	wg.Wait()
}

// TestOpaque_BulkheadBounds: the two bounds of one issuer, apart. Callers
// of one token share one call, yet count as waiters: the third is turned
// away although no new call would be made. Callers that stop waiting (their
// deadline) leave their calls in flight until the timeout: while they are,
// a new token is turned away although nobody waits.
func TestOpaque_BulkheadBounds(t *testing.T) {
	ctx := testkit.Context(t)
	s := testkit.NewIntrospectionServer(t)
	cfg := s.Config(t)
	cfg.Introspection.Timeout = 20 * time.Second
	v := testkit.NewValidator(t, ctx, testkit.NewClock(), []service.IssuerConfig{cfg}, service.WithKeyWait(0, 2))
	release := s.Hold(t)
	defer release()

	t.Run("waiters", func(t *testing.T) {
		tok := opaqueToken("")
		var wg sync.WaitGroup
		wctx, cancel := context.WithCancel(ctx)
		for range 2 {
			wg.Go(func() { v.Validate(wctx, tok, "api/users", nil) })
		}
		testkit.Eventually(ctx, t, "two callers of one token waiting", func() bool { return service.IntrospectionWaiters(v, s.URL()) == 2 })
		got := v.Validate(ctx, tok, "api/users", nil)
		checkVerdict(t, got, service.ReasonIssuerUnavailable)
		if !strings.Contains(got.Message, "already has 2 calls waiting or in flight") || s.Calls.Load() != 1 {
			t.Fatalf("message %q, %d calls", got.Message, s.Calls.Load())
		}
		cancel()
		wg.Wait()
	})
	t.Run("calls in flight", func(t *testing.T) {
		// The call of "waiters" is still in flight; one more, whose
		// caller leaves at once, fills the bound.
		cctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		checkVerdict(t, v.Validate(cctx, opaqueToken(""), "api/users", nil), service.ReasonIssuerUnavailable)
		cancel()
		testkit.Eventually(ctx, t, "two calls held, nobody waiting", func() bool {
			return s.Calls.Load() == 2 && service.IntrospectionWaiters(v, s.URL()) == 0
		})
		got := v.Validate(ctx, opaqueToken(""), "api/users", nil)
		checkVerdict(t, got, service.ReasonIssuerUnavailable)
		if !strings.Contains(got.Message, "already has 2 calls waiting or in flight") || s.Calls.Load() != 2 {
			t.Fatalf("message %q, %d calls", got.Message, s.Calls.Load())
		}
	})
}
