package service_test

import (
	"sync"
	"testing"

	"github.com/usher-dev/usher/internal/testkit"
	"github.com/usher-dev/usher/service"
)

// events is an Observer that keeps what it was told.
type events struct {
	mu   sync.Mutex
	seen []service.VerdictEvent
}

func (e *events) ObserveVerdict(ev service.VerdictEvent) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.seen = append(e.seen, ev)
}

// The observer hears of every validation, with caller- and token-chosen
// values already reduced to configured issuers and registered audiences.
func TestObserver_BoundedValues(t *testing.T) {
	ctx := testkit.Context(t)
	k := testkit.EdKey(t, "ed-1")
	ti := testkit.NewIssuer(t, k)
	obs := &events{}
	v := testkit.NewValidator(t, ctx, testkit.NewClock(), []service.IssuerConfig{ti.Config()}, service.WithObserver(obs))
	waitTried(ctx, t, v)
	iss := ti.URL()
	for _, c := range []struct {
		name     string
		token    string
		audience string
		want     service.VerdictEvent
	}{
		{"valid", k.Token(t, testkit.Claims(iss)), "api/users",
			service.VerdictEvent{Reason: service.ReasonValid, Issuer: iss, Audience: "api/users"}},
		{"unregistered expected audience", k.Token(t, testkit.Claims(iss, "aud", "api/users")), "api/attacker-chosen",
			service.VerdictEvent{Reason: service.ReasonAudienceMismatch, Issuer: iss, TokenAudience: "api/users"}},
		{"mismatch between registered APIs", k.Token(t, testkit.Claims(iss, "aud", []string{"x-1", "api/users"})), "api/invoices",
			service.VerdictEvent{Reason: service.ReasonAudienceMismatch, Issuer: iss, Audience: "api/invoices", TokenAudience: "api/users"}},
		{"token audience unregistered", k.Token(t, testkit.Claims(iss, "aud", "x-2")), "api/invoices",
			service.VerdictEvent{Reason: service.ReasonAudienceMismatch, Issuer: iss, Audience: "api/invoices"}},
		{"untrusted issuer", k.Token(t, testkit.Claims("https://attacker.example")), "api/users",
			service.VerdictEvent{Reason: service.ReasonUntrustedIssuer, Audience: "api/users"}},
		{"malformed", "not a token", "api/users",
			service.VerdictEvent{Reason: service.ReasonMalformed, Audience: "api/users"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			obs.mu.Lock()
			obs.seen = nil
			obs.mu.Unlock()
			v.Validate(ctx, c.token, c.audience, nil)
			obs.mu.Lock()
			defer obs.mu.Unlock()
			if len(obs.seen) != 1 {
				t.Fatalf("%d events, want 1", len(obs.seen))
			}
			got := obs.seen[0]
			if got.Took <= 0 {
				t.Errorf("took %v", got.Took)
			}
			got.Took = 0
			if got != c.want {
				t.Errorf("event %+v, want %+v", got, c.want)
			}
		})
	}
}

// MemoClaims converts a cached token's claims once per type, and the
// conversion is shared by every verdict served from the cache.
func TestMemoClaims(t *testing.T) {
	ctx := testkit.Context(t)
	k := testkit.EdKey(t, "ed-1")
	ti := testkit.NewIssuer(t, k)
	v := newValidator(t, ctx, ti.Config())
	waitTried(ctx, t, v)
	tok := k.Token(t, testkit.Claims(ti.URL()))
	first, second := v.Validate(ctx, tok, "api/users", nil), v.Validate(ctx, tok, "api/users", nil)
	if first.Claims == nil || first.Claims != second.Claims {
		t.Fatal("a cache hit does not share the claims of the miss")
	}
	calls := 0
	conv := func(c *service.Claims) *string {
		calls++
		s := c.Subject
		return &s
	}
	a, b := service.MemoClaims(first.Claims, conv), service.MemoClaims(second.Claims, conv)
	if calls != 1 || a != b || *a != "user-42" {
		t.Errorf("converted %d times (%p, %p), want once and shared", calls, a, b)
	}
	other := service.MemoClaims(first.Claims, func(c *service.Claims) int { return len(c.Audience) })
	if other != 1 {
		t.Errorf("a conversion to another type got %d", other)
	}
	if again := service.MemoClaims(first.Claims, conv); again != a || calls != 1 {
		t.Error("a conversion to another type replaced the memo")
	}
}
