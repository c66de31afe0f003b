package service_test

import (
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/usher-dev/usher/internal/testkit"
	"github.com/usher-dev/usher/service"
)

// tokenPool signs distinct EdDSA tokens of one issuer on demand and keeps
// them, so that the rounds of a benchmark (b.N grows) share the signing.
type tokenPool struct {
	k    *testkit.Key
	iss  string
	toks []string
}

// take returns n tokens from the pool, starting at from, signing the ones
// it lacks on every core.
func (p *tokenPool) take(b *testing.B, from, n int) []string {
	b.Helper()
	if need := from + n; need > len(p.toks) {
		start := len(p.toks)
		p.toks = slices.Grow(p.toks, need-start)[:need]
		var wg sync.WaitGroup
		workers := runtime.GOMAXPROCS(0)
		for w := range workers {
			wg.Go(func() {
				for i := start + w; i < need; i += workers {
					p.toks[i] = p.k.Token(b, testkit.Claims(p.iss, "jti", fmt.Sprint("d-", i), "sub", fmt.Sprint("user-", i)))
				}
			})
		}
		wg.Wait()
	}
	return p.toks[from : from+n]
}

// processCPU is the CPU time the process has used, user and system, its
// garbage collector's workers included.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reportCPU reports the process CPU time per op since start (cpu-ns/op):
// on a machine others share, a steadier figure than the wall clock's, and
// one that counts the collector's work on other cores.
func reportCPU(b *testing.B, start time.Duration) {
	b.ReportMetric(float64(processCPU(b)-start)/float64(b.N), "cpu-ns/op")
}

// distinctValidator is an engine over a static key set with the
// verified-token cache at entries (-1: off; 0: the default bounds).
func distinctValidator(b *testing.B, iss, jwks string, entries int) *service.Validator {
	b.Helper()
	ctx := testkit.Context(b)
	cfg := &service.Config{Issuers: []service.IssuerConfig{{Issuer: iss, JWKSFile: jwks}}, Audiences: slices.Clone(testkit.Audiences), CacheMaxEntries: entries}
	v, err := service.NewValidator(ctx, cfg, service.WithClock(func() time.Time { return testkit.Now }), service.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		b.Fatal(err)
	}
	waitTried(ctx, b, v)
	return v
}

// BenchmarkValidateDistinct is the engine under a flood of distinct EdDSA
// tokens, each seen once (the load of a replica behind which every call
// brings a new token): "cache-off" with the verified-token cache turned
// off, "cache" with it at its default bounds, filled with other one-off
// tokens before the timer starts, so that what is measured is the steady
// state of a full cache. The difference is what the cache costs a token it
// will never serve again.
func BenchmarkValidateDistinct(b *testing.B) {
	const iss = "https://distinct.usher.test"
	k := testkit.EdKey(b, "ed")
	jwks := testkit.WriteJWKS(b, k)
	pool := &tokenPool{k: k, iss: iss}
	fill := service.DefaultCacheEntries
	for _, mode := range []struct {
		name    string
		entries int
	}{{"cache-off", -1}, {"cache", 0}} {
		b.Run(mode.name, func(b *testing.B) {
			v := distinctValidator(b, iss, jwks, mode.entries)
			ctx := testkit.Context(b)
			for _, tok := range pool.take(b, 0, fill) {
				v.Validate(ctx, tok, "api/users", nil)
			}
			toks := pool.take(b, fill, b.N)
			runtime.GC()
			b.ReportAllocs()
			b.ResetTimer()
			cpu := processCPU(b)
			for i := range b.N {
				if got := v.Validate(ctx, toks[i], "api/users", nil); got.Reason != service.ReasonValid {
					b.Fatalf("%v %s", got.Reason, got.Message)
				}
			}
			b.StopTimer()
			reportCPU(b, cpu)
			st := v.CacheStats()
			b.ReportMetric(float64(st.Entries), "entries")
		})
	}
}

// BenchmarkValidateScan is a hot set of tokens under a flood of one-off
// ones: every fifth call is one of 1,000 hot tokens (in turn), the others
// distinct tokens seen once, against a cache of 2,000 entries. Between two
// uses of a hot token come 4,000 one-off tokens, twice the cache: a cache
// that admits every token loses its hot entries to them. Two rounds of the
// hot set run before the timer starts; it reports the share of hot calls
// answered from the cache (hot-hit-%).
func BenchmarkValidateScan(b *testing.B) {
	const iss = "https://scan.usher.test"
	const hotN, every, entries = 1000, 5, 2000
	const warm = 2 * hotN * every
	k := testkit.EdKey(b, "ed")
	jwks := testkit.WriteJWKS(b, k)
	pool := &tokenPool{k: k, iss: iss}
	hot := slices.Clone(pool.take(b, 0, hotN))
	b.Run("mixed", func(b *testing.B) {
		v := distinctValidator(b, iss, jwks, entries)
		ctx := testkit.Context(b)
		cold := pool.take(b, hotN, warm+b.N)
		call := func(i int) (isHot, hit bool) {
			tok := cold[i]
			if isHot = i%every == 0; isHot {
				tok = hot[(i/every)%hotN]
			}
			before := v.CacheStats().Hits
			if got := v.Validate(ctx, tok, "api/users", nil); got.Reason != service.ReasonValid {
				b.Fatalf("%v %s", got.Reason, got.Message)
			}
			return isHot, v.CacheStats().Hits > before
		}
		for i := range warm {
			call(i)
		}
		runtime.GC()
		b.ReportAllocs()
		b.ResetTimer()
		hotCalls, hits := 0, 0
		cpu := processCPU(b)
		for i := range b.N {
			if isHot, hit := call(warm + i); isHot {
				hotCalls++
				if hit {
					hits++
				}
			}
		}
		b.StopTimer()
		reportCPU(b, cpu)
		if hotCalls > 0 {
			b.ReportMetric(100*float64(hits)/float64(hotCalls), "hot-hit-%")
		}
	})
}
