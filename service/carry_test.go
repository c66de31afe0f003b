package service_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/usher-dev/usher/internal/testkit"
	"github.com/usher-dev/usher/service"
)

// down answers every key set request with 503 (and Retry-After when given).
func down(retryAfter string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		if retryAfter != "" {
			w.Header().Set("Retry-After", retryAfter)
		}
		http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
	}
}

// TestWithPrevious_KeepsKeysOfUnchangedSources: a validator built with
// WithPrevious during a key set outage starts with the old sets of issuers
// whose key source did not change (a jwks_uri issuer whose checks changed,
// a discovery issuer), keeps their fetch time (max_stale still counts from
// the last good fetch) and still fetches them in the background; an issuer
// whose jwks_uri changed starts empty, and KeysLost names it alone.
func TestWithPrevious_KeepsKeysOfUnchangedSources(t *testing.T) {
	ctx := testkit.Context(t)
	k := testkit.EdKey(t, "ed-1")
	plain, disco, moved := testkit.NewIssuer(t, k), testkit.NewIssuer(t, k), testkit.NewIssuer(t, k)
	discoCfg := service.IssuerConfig{Issuer: disco.URL(), Discovery: true}
	clock := testkit.NewClock()
	old := testkit.NewValidator(t, ctx, clock, []service.IssuerConfig{plain.Config(), discoCfg, moved.Config()})
	waitTried(ctx, t, old)
	fetched := old.Issuers()[0].LastRefresh
	for _, ti := range []*testkit.Issuer{plain, disco, moved} {
		ti.Handle(down(""))
	}
	clock.Advance(time.Hour)

	stricter := plain.Config()
	stricter.Algorithms, stricter.Leeway, stricter.MaxStale = []string{"EdDSA"}, time.Second, 2*time.Hour
	movedCfg := moved.Config()
	movedCfg.JWKSURI = moved.URL() + "/moved/jwks.json"
	v := testkit.NewValidator(t, ctx, clock, []service.IssuerConfig{stricter, discoCfg, movedCfg}, service.WithPrevious(old))
	waitTried(ctx, t, v)
	claims := func(ti *testkit.Issuer) map[string]any {
		return testkit.Claims(ti.URL(), "exp", clock.Now().Add(time.Hour).Unix())
	}
	checkVerdict(t, v.Validate(ctx, k.Token(t, claims(plain)), "api/users", nil), service.ReasonValid)
	checkVerdict(t, v.Validate(ctx, k.Token(t, claims(disco)), "api/users", nil), service.ReasonValid)
	checkVerdict(t, v.Validate(ctx, k.Token(t, claims(moved)), "api/users", nil), service.ReasonKeysUnavailable)

	testkit.Eventually(ctx, t, "the carried sets refetched in the background", func() bool {
		st := v.Issuers()
		return strings.Contains(st[0].LastError, "HTTP 503") && strings.Contains(st[1].LastError, "HTTP 503")
	})
	if st := v.Issuers()[0]; !st.LastRefresh.Equal(fetched) || len(st.KeyIDs) != 1 {
		t.Errorf("carried status %+v: want the old set, fetched at %s", st, fetched)
	}
	if st := v.Issuers()[1]; st.JWKSURI != disco.JWKSURI() {
		t.Errorf("discovery issuer's jwks_uri %q, want the discovered %q", st.JWKSURI, disco.JWKSURI())
	}
	err := v.KeysLost(old)
	if err == nil || strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), moved.URL()) || !strings.Contains(err.Error(), "moved/jwks.json") {
		t.Fatalf("KeysLost = %v, want the moved issuer alone, with its new key source", err)
	}

	// max_stale (now 2h) counts from the last good fetch, not from the reload.
	clock.Advance(time.Hour + time.Second)
	checkVerdict(t, v.Validate(ctx, k.Token(t, claims(plain)), "api/users", nil), service.ReasonKeysUnavailable)
}

// TestWithPrevious_NothingToLose: KeysLost is nil when the old set was
// beyond max_stale (nothing usable is lost) or the issuer was removed, and
// a static jwks_file is read again rather than carried.
func TestWithPrevious_NothingToLose(t *testing.T) {
	ctx := testkit.Context(t)
	k, k2 := testkit.EdKey(t, "ed-1"), testkit.EdKey(t, "ed-2")
	ti, gone := testkit.NewIssuer(t, k), testkit.NewIssuer(t, k)
	file := service.IssuerConfig{Issuer: "https://static.example", JWKSFile: testkit.WriteJWKS(t, k)}
	cfg := ti.Config()
	cfg.RefreshInterval, cfg.MaxStale = time.Hour, time.Hour
	clock := testkit.NewClock()
	old := testkit.NewValidator(t, ctx, clock, []service.IssuerConfig{cfg, gone.Config(), file})
	waitTried(ctx, t, old)
	ti.Handle(down(""))
	clock.Advance(2 * time.Hour)

	cfg.JWKSURI = ti.URL() + "/moved/jwks.json"
	file.JWKSFile = testkit.WriteJWKS(t, k2)
	v := testkit.NewValidator(t, ctx, clock, []service.IssuerConfig{cfg, file}, service.WithPrevious(old))
	waitTried(ctx, t, v)
	if err := v.KeysLost(old); err != nil {
		t.Errorf("KeysLost with a stale old set and a removed issuer: %v", err)
	}
	if kids := v.Issuers()[1].KeyIDs; len(kids) != 1 || kids[0] != "ed-2" {
		t.Errorf("jwks_file keys %v, want the file read again (ed-2)", kids)
	}
}

// TestWithPrevious_CarriesRetryAfter: an issuer that asked (Retry-After) for
// no fetch for two minutes gets none from the new validator either, however
// many unknown kids its tokens name.
func TestWithPrevious_CarriesRetryAfter(t *testing.T) {
	ctx := testkit.Context(t)
	k := testkit.EdKey(t, "ed-1")
	ti := testkit.NewIssuer(t, k)
	clock := testkit.NewClock()
	cfg := issuerConfig(ti, faultCooldown)
	old := testkit.NewValidator(t, ctx, clock, []service.IssuerConfig{cfg})
	waitTried(ctx, t, old)
	ti.Handle(down("120"))
	forceRefresh(ctx, t, old, clock, faultCooldown, ti, k)
	requests := ti.Requests.Load()

	v := testkit.NewValidator(t, ctx, clock, []service.IssuerConfig{cfg}, service.WithPrevious(old))
	waitTried(ctx, t, v)
	for range 5 {
		clock.Advance(faultCooldown + time.Millisecond)
		tok := testkit.Sign(t, map[string]any{"alg": k.Alg, "kid": "rotated"}, testkit.Claims(ti.URL()), k.Alg, k.Priv)
		checkVerdict(t, v.Validate(ctx, tok, "api/users", nil), service.ReasonUnknownKey)
	}
	checkVerdict(t, v.Validate(ctx, k.Token(t, testkit.Claims(ti.URL())), "api/users", nil), service.ReasonValid)
	if n := ti.Requests.Load(); n != requests {
		t.Errorf("%d key set requests within the carried Retry-After, want none", n-requests)
	}
	if st := v.Issuers()[0]; !strings.Contains(st.LastError, "Retry-After") {
		t.Errorf("last error %q: want the old one (Retry-After) carried", st.LastError)
	}
}
