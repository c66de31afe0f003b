package service_test

import (
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/usher-dev/usher/internal/testkit"
	"github.com/usher-dev/usher/service"
)

// A hint does about the work for a huge Unicode iss or aud that it does for
// a short one, whatever the number of trusted issuers: the near-miss checks
// compare only what could be a near miss, and normalize the configured side
// once. Work is counted here as bytes allocated per call, which needs no
// clock (BenchmarkHostile/*-21-issuers measures the time): normalizing the
// long value once per issuer allocated about 2 MB per call.
func TestHostile_HintWork(t *testing.T) {
	ctx := testkit.Context(t)
	k := testkit.EdKey(t, "ed")
	jwks := testkit.WriteJWKS(t, k)
	cfg := &service.Config{Audiences: slices.Clone(testkit.Audiences)}
	for i := range 21 {
		cfg.Issuers = append(cfg.Issuers, service.IssuerConfig{Issuer: fmt.Sprintf("https://tenant-%02d.auth.example.com/", i), JWKSFile: jwks})
	}
	v, err := service.NewValidator(ctx, cfg, service.WithClock(testkit.NewClock().Now), service.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	const trusted = "https://tenant-00.auth.example.com/"
	long := strings.Repeat("e\u0301", 3800) // 11,400 bytes: the token stays under 16 KiB
	for _, c := range []struct {
		name        string
		short, long string
		want        service.Reason
		decoded     bool // decoded on every call; else a verified token answered from the cache
	}{
		{"iss", k.Token(t, testkit.Claims("https://evil.example")), k.Token(t, testkit.Claims(long)), service.ReasonUntrustedIssuer, true},
		{"iss near a trusted one", k.Token(t, testkit.Claims(trusted+"x")), k.Token(t, testkit.Claims(trusted+long)), service.ReasonUntrustedIssuer, true},
		{"aud", k.Token(t, testkit.Claims(trusted, "aud", "api/other")), k.Token(t, testkit.Claims(trusted, "aud", long)), service.ReasonAudienceMismatch, false},
		{"aud near the expected one", k.Token(t, testkit.Claims(trusted, "aud", "api/users/")), k.Token(t, testkit.Claims(trusted, "aud", "api/users"+long)), service.ReasonAudienceMismatch, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			short, long := allocPerCall(t, v, c.short, c.want), allocPerCall(t, v, c.long, c.want)
			// A long token decoded on every call costs its decoding (a few
			// times its length); the hint costs what the short one's does.
			limit := 2*short + 4096
			if c.decoded {
				limit += 8 * uint64(len(c.long))
			}
			t.Logf("bytes allocated per call: %d for the short %s, %d for the long one (limit %d)", short, c.name, long, limit)
			if long > limit {
				t.Errorf("%d bytes allocated per call for the long %s, %d for the short one: over %d", long, c.name, short, limit)
			}
		})
	}
}

// allocPerCall validates tok (which must get want) and returns the bytes
// allocated per call, over 20 calls.
func allocPerCall(t *testing.T, v *service.Validator, tok string, want service.Reason) uint64 {
	t.Helper()
	ctx := testkit.Context(t)
	checkVerdict(t, v.Validate(ctx, tok, "api/users", nil), want) // and warm the cache
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for range 20 {
		v.Validate(ctx, tok, "api/users", nil)
	}
	runtime.ReadMemStats(&after)
	return (after.TotalAlloc - before.TotalAlloc) / 20
}
