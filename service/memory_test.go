package service_test

import (
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/usher-dev/usher/internal/testkit"
	"github.com/usher-dev/usher/service"
)

// TestCache_HeapStaysWithinBound sends distinct valid tokens through the
// engine and checks that the heap grows by no more than the cache's byte
// bound. USHER_MEMTEST_TOKENS sets how many (default 20000; the figure in
// the notes was measured with 1000000).
func TestCache_HeapStaysWithinBound(t *testing.T) {
	n := 20_000
	if s := os.Getenv("USHER_MEMTEST_TOKENS"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil {
			t.Fatal(err)
		}
	}
	const maxBytes = 4 << 20
	ctx := testkit.Context(t)
	k := testkit.EdKey(t, "ed-1")
	ti := testkit.NewIssuer(t, k)
	cfg := &service.Config{Issuers: []service.IssuerConfig{issuerConfig(ti, time.Minute)}, Audiences: slices.Clone(testkit.Audiences),
		CacheMaxEntries: 1 << 30, CacheMaxBytes: maxBytes}
	v, err := service.NewValidator(ctx, cfg, service.WithClock(func() time.Time { return testkit.Now }), service.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	waitTried(ctx, t, v)
	heap := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	before := heap()
	start := time.Now()
	var wg sync.WaitGroup
	workers := runtime.GOMAXPROCS(0)
	for w := range workers {
		wg.Go(func() {
			for i := w; i < n; i += workers {
				tok := k.Token(t, testkit.Claims(ti.URL(), "jti", fmt.Sprint(i), "sub", "user-"+strconv.Itoa(i)))
				if got := v.Validate(ctx, tok, "api/users", nil); got.Reason != service.ReasonValid {
					t.Errorf("token %d: %v", i, got.Reason)
					return
				}
			}
		})
	}
	wg.Wait()
	after := heap()
	st := v.CacheStats()
	growth := int64(after) - int64(before)
	t.Logf("%d distinct tokens in %s: heap %d -> %d bytes (growth %d), cache %+v, bound %d", n, time.Since(start).Round(time.Millisecond), before, after, growth, st, maxBytes)
	if st.Bytes > maxBytes {
		t.Errorf("cache accounts %d bytes, over its bound %d", st.Bytes, maxBytes)
	}
	if growth > maxBytes*3/2 {
		t.Errorf("heap grew by %d bytes, more than the %d-byte cache bound allows", growth, maxBytes)
	}
}
