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

// distinctTokens are n valid tokens of k, each its own (jti prefix-i).
func distinctTokens(t *testing.T, k *testkit.Key, iss, prefix string, n int) []string {
	t.Helper()
	out := make([]string, n)
	for i := range out {
		out[i] = k.Token(t, testkit.Claims(iss, "jti", fmt.Sprint(prefix, i)))
	}
	return out
}

// A token's second use is a hit when it comes soon (the token is still in
// the window); when it comes after a flood pushed the token out of the
// window, that second sighting admits it, and its third use hits, after
// another flood too.
func TestCache_AdmitsRepeatedTokens(t *testing.T) {
	ctx := testkit.Context(t)
	k := testkit.EdKey(t, "ed-1")
	ti := testkit.NewIssuer(t, k)
	v, _ := cachedValidator(t, ti, 100, 1<<20) // a window of 64 entries, 36 in the main part
	quick, late := k.Token(t, testkit.Claims(ti.URL(), "jti", "quick")), k.Token(t, testkit.Claims(ti.URL(), "jti", "late"))
	checkVerdict(t, v.Validate(ctx, quick, "api/users", nil), service.ReasonValid)
	checkVerdict(t, v.Validate(ctx, quick, "api/users", nil), service.ReasonValid)
	if st := v.CacheStats(); st.Hits != 1 || st.Misses != 1 {
		t.Fatalf("a token used twice in a row: %+v, want its second use a hit", st)
	}
	checkVerdict(t, v.Validate(ctx, late, "api/users", nil), service.ReasonValid)
	for _, tok := range distinctTokens(t, k, ti.URL(), "flood-a-", 100) {
		checkVerdict(t, v.Validate(ctx, tok, "api/users", nil), service.ReasonValid)
	}
	before := v.CacheStats()
	checkVerdict(t, v.Validate(ctx, late, "api/users", nil), service.ReasonValid) // its second sighting: a miss, admitted
	if st := v.CacheStats(); st.Misses != before.Misses+1 {
		t.Fatalf("a token back after 100 others: %+v, want a miss (it left the window)", st)
	}
	for _, tok := range distinctTokens(t, k, ti.URL(), "flood-b-", 100) {
		checkVerdict(t, v.Validate(ctx, tok, "api/users", nil), service.ReasonValid)
	}
	before = v.CacheStats()
	for _, tok := range []string{quick, late} {
		checkVerdict(t, v.Validate(ctx, tok, "api/users", nil), service.ReasonValid)
	}
	if st := v.CacheStats(); st.Hits != before.Hits+2 {
		t.Errorf("repeated tokens after a flood of 100 one-off tokens: %+v, want two more hits", st)
	}
}

// A flood of distinct tokens, three times the cache's entries, does not
// evict a hot entry: tokens seen once only churn the window, and no more of
// them stay than it holds (but for the doorkeeper's rare false positives).
func TestCache_FloodKeepsHotEntry(t *testing.T) {
	ctx := testkit.Context(t)
	k := testkit.EdKey(t, "ed-1")
	ti := testkit.NewIssuer(t, k)
	v, _ := cachedValidator(t, ti, 100, 1<<20)
	hot := k.Token(t, testkit.Claims(ti.URL(), "jti", "hot"))
	checkVerdict(t, v.Validate(ctx, hot, "api/users", nil), service.ReasonValid)
	checkVerdict(t, v.Validate(ctx, hot, "api/users", nil), service.ReasonValid)
	for _, tok := range distinctTokens(t, k, ti.URL(), "flood-", 300) {
		checkVerdict(t, v.Validate(ctx, tok, "api/users", nil), service.ReasonValid)
	}
	// A false positive of the doorkeeper (about one run in ten has one)
	// admits a one-off token: a few are allowed for.
	const falsePositives = 5
	st := v.CacheStats()
	if st.Entries > 64+1+falsePositives || st.Evictions < 300-64-falsePositives {
		t.Errorf("after 300 one-off tokens: %+v, want the 64 of the window and the hot token, 236 evicted", st)
	}
	checkVerdict(t, v.Validate(ctx, hot, "api/users", nil), service.ReasonValid)
	if got := v.CacheStats(); got.Hits != st.Hits+1 {
		t.Errorf("the hot token after a flood: %+v, want a hit", got)
	}
}
