package service_test

import (
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/usher-dev/usher/internal/testkit"
	"github.com/usher-dev/usher/service"
)

// cachedValidator is a validator with the verified-token cache on and a
// clock the test moves.
func cachedValidator(t *testing.T, ti *testkit.Issuer, entries int, maxBytes int64) (*service.Validator, func(time.Duration)) {
	t.Helper()
	ctx := testkit.Context(t)
	var mu sync.Mutex
	now := testkit.Now
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	cfg := &service.Config{Issuers: []service.IssuerConfig{issuerConfig(ti, 10*time.Millisecond)}, Audiences: slices.Clone(testkit.Audiences),
		CacheMaxEntries: entries, CacheMaxBytes: maxBytes}
	v, err := service.NewValidator(ctx, cfg, service.WithClock(clock), service.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	waitTried(ctx, t, v)
	return v, advance
}

func TestCache_HitsStayExact(t *testing.T) {
	ctx := testkit.Context(t)
	k := testkit.RSAKey(t, "rsa-1")
	ti := testkit.NewIssuer(t, k)
	v, advance := cachedValidator(t, ti, 100, 1<<20)
	tok := k.Token(t, testkit.Claims(ti.URL(), "exp", testkit.Now.Add(time.Minute).Unix()))

	checkVerdict(t, v.Validate(ctx, tok, "api/users", nil), service.ReasonValid)
	checkVerdict(t, v.Validate(ctx, tok, "api/users", nil), service.ReasonValid)
	if st := v.CacheStats(); st.Hits != 1 || st.Misses != 1 || st.Entries != 1 {
		t.Fatalf("stats after a repeat: %+v", st)
	}
	// Audience and scope checks run on a hit.
	checkVerdict(t, v.Validate(ctx, tok, "api/invoices", nil), service.ReasonAudienceMismatch)
	checkVerdict(t, v.Validate(ctx, "Bearer "+tok, "api/users", []string{"users.delete"}), service.ReasonInsufficientScope)
	// So do time checks: past exp + leeway the cached token is EXPIRED.
	advance(time.Minute + 31*time.Second)
	checkVerdict(t, v.Validate(ctx, tok, "api/users", nil), service.ReasonExpired)
	if st := v.CacheStats(); st.Entries != 0 {
		t.Errorf("an entry outlived its token's exp: %+v", st)
	}
}

func TestCache_DropsEntriesWhoseKeyLeft(t *testing.T) {
	ctx := testkit.Context(t)
	old, rotated := testkit.RSAKey(t, "rsa-1"), testkit.RSAKey(t, "rsa-2")
	ti := testkit.NewIssuer(t, old)
	v, _ := cachedValidator(t, ti, 100, 1<<20)
	tok := old.Token(t, testkit.Claims(ti.URL()))
	checkVerdict(t, v.Validate(ctx, tok, "api/users", nil), service.ReasonValid)
	checkVerdict(t, v.Validate(ctx, tok, "api/users", nil), service.ReasonValid) // a hit

	ti.Publish(rotated) // rsa-1 withdrawn
	checkVerdict(t, v.Validate(ctx, rotated.Token(t, testkit.Claims(ti.URL())), "api/users", nil), service.ReasonValid)
	checkVerdict(t, v.Validate(ctx, tok, "api/users", nil), service.ReasonUnknownKey)
}

func TestCache_Bounded(t *testing.T) {
	ctx := testkit.Context(t)
	k := testkit.EdKey(t, "ed-1")
	ti := testkit.NewIssuer(t, k)
	v, _ := cachedValidator(t, ti, 3, 1<<20)
	for i := range 5 {
		checkVerdict(t, v.Validate(ctx, k.Token(t, testkit.Claims(ti.URL(), "jti", fmt.Sprint(i))), "api/users", nil), service.ReasonValid)
	}
	if st := v.CacheStats(); st.Entries != 3 || st.Evictions != 2 {
		t.Errorf("3-entry cache after 5 tokens: %+v", st)
	}
	v, _ = cachedValidator(t, ti, 1000, 1<<20)
	for i := range 2000 {
		v.Validate(ctx, k.Token(t, testkit.Claims(ti.URL(), "jti", fmt.Sprint(i))), "api/users", nil)
	}
	if st := v.CacheStats(); st.Bytes > 1<<20 || st.Entries == 0 || st.Evictions == 0 {
		t.Errorf("1 MiB cache after 2000 tokens: %+v", st)
	}
}
