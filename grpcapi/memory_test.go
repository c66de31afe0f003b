package grpcapi_test

import (
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"testing"
	"time"

	"github.com/usher-dev/usher/grpcapi"
	"github.com/usher-dev/usher/internal/testkit"
	usherv1 "github.com/usher-dev/usher/proto/usher/v1"
	"github.com/usher-dev/usher/service"
)

// TestServer_CacheHeapStaysWithinBound sends distinct tokens with ten
// custom claims, each twice (so that each is admitted to the cache's main
// part), through the gRPC adapter, which keeps each one's claims converted
// and encoded beside the cache entry, and checks that the heap grows by no
// more than the cache's byte bound allows: the bound counts the adapter's
// copy too.
func TestServer_CacheHeapStaysWithinBound(t *testing.T) {
	const maxBytes, n = 2 << 20, 3000
	ctx := testkit.Context(t)
	k := testkit.EdKey(t, "ed-1")
	ti := testkit.NewIssuer(t, k)
	cfg := &service.Config{Issuers: []service.IssuerConfig{ti.Config()}, Audiences: testkit.Audiences, CacheMaxEntries: 1 << 20, CacheMaxBytes: maxBytes}
	v, err := service.NewValidator(ctx, cfg, service.WithClock(func() time.Time { return testkit.Now }), service.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	if err := v.WaitTried(ctx); err != nil {
		t.Fatal(err)
	}
	srv := grpcapi.NewServer(v, nil)
	toks := make([]string, n)
	for i := range toks {
		kv := []any{"jti", fmt.Sprint("j-", i), "sub", fmt.Sprint("user-", i)}
		for j := range 10 {
			kv = append(kv, fmt.Sprint("claim_", j), fmt.Sprint("value of claim ", j, " for ", i))
		}
		toks[i] = k.Token(t, testkit.Claims(ti.URL(), kv...))
	}
	heap := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	before := heap()
	for _, tok := range toks {
		for range 2 {
			if resp, err := srv.ValidateToken(context.Background(), &usherv1.ValidateTokenRequest{Token: tok, ExpectedAudience: "api/users"}); err != nil || !resp.GetValid() {
				t.Fatalf("%v %v", resp, err)
			}
		}
	}
	growth := int64(heap()) - int64(before)
	st := v.CacheStats()
	t.Logf("%d tokens of %d bytes, each twice: heap growth %d bytes, cache %+v, bound %d", n, len(toks[0]), growth, st, maxBytes)
	if st.Entries < 100 || st.Evictions == 0 {
		t.Fatalf("the cache did not fill: %+v", st)
	}
	if growth > maxBytes*3/2 {
		t.Errorf("heap grew by %d bytes, more than the %d-byte cache bound allows", growth, maxBytes)
	}
	runtime.KeepAlive(toks)
}
