package service_test

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/usher-dev/usher/internal/testkit"
	"github.com/usher-dev/usher/service"
)

// newValidator builds a validator over issuers whose clock stays at
// testkit.Now.
func newValidator(t testing.TB, ctx context.Context, issuers ...service.IssuerConfig) *service.Validator {
	t.Helper()
	return testkit.NewValidator(t, ctx, testkit.NewClock(), issuers)
}

// issuerConfig trusts ti through its jwks_uri with an unknown-kid cooldown
// (0: the default).
func issuerConfig(ti *testkit.Issuer, cooldown time.Duration) service.IssuerConfig {
	cfg := ti.Config()
	cfg.UnknownKIDCooldown = cooldown
	return cfg
}

// checkMismatch compares a Mismatch field by field (nil and empty slices alike).
func checkMismatch(t testing.TB, got, want *service.Mismatch) {
	t.Helper()
	if got == nil {
		t.Fatalf("mismatch = nil, want %+v", *want)
	}
	if got.Claim != want.Claim || !slices.Equal(got.Expected, want.Expected) || !slices.Equal(got.Actual, want.Actual) {
		t.Fatalf("mismatch = %+v, want %+v", *got, *want)
	}
}

// verified reports whether a verdict with this reason comes from a token whose signature verified.
func verified(r service.Reason) bool {
	return r == service.ReasonValid || (r >= service.ReasonWrongTokenType && r <= service.ReasonInsufficientScope) ||
		r == service.ReasonProofMissing || r == service.ReasonInvalidProof
}

// checkVerdict asserts the reason, and that claims are present exactly when the signature verified.
func checkVerdict(t testing.TB, v service.Verdict, want service.Reason) {
	t.Helper()
	if v.Reason != want {
		t.Fatalf("reason = %v, want %v (message %q, hint %q)", v.Reason, want, v.Message, v.Hint)
	}
	if got := v.Claims != nil; got != verified(want) {
		t.Fatalf("claims set = %v, want %v for %v", got, verified(want), want)
	}
	if want != service.ReasonValid && (len(v.Violations) > 0) != verified(want) {
		t.Fatalf("violations = %v for %v: every failed check after a verified signature, none before", v.Violations, want)
	}
	if verified(want) && want != service.ReasonValid && v.Violations[0].Reason != want {
		t.Fatalf("violations[0] = %v, want %v", v.Violations[0].Reason, want)
	}
	if want == service.ReasonValid && (v.Hint != "" || len(v.Violations) > 0) {
		t.Fatalf("valid verdict with hint %q, violations %v", v.Hint, v.Violations)
	}
	if want != service.ReasonValid && (v.Message == "" || v.Hint == "") {
		t.Fatalf("rejection without message or hint: %+v", v)
	}
}

func reasons(vs []service.Violation) []service.Reason {
	out := make([]service.Reason, len(vs))
	for i, v := range vs {
		out[i] = v.Reason
	}
	return out
}

func segments(tok string) []string { return strings.Split(tok, ".") }

func mustDecode(t testing.TB, s string) []byte {
	t.Helper()
	b, err := testkit.B64.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustJSON(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// forceRefresh moves the clock past the unknown-kid cooldown and validates
// a token with an unknown kid, which refetches the issuer's key set; it
// returns once the key set was requested again and that fetch is over (a
// call waits for it only briefly: a slow fetch ends in the background).
func forceRefresh(ctx context.Context, t testing.TB, v *service.Validator, clock *testkit.Clock, cooldown time.Duration, ti *testkit.Issuer, k *testkit.Key) {
	t.Helper()
	before, fetches := ti.Requests.Load(), fetchCount(v, ti.URL())
	clock.Advance(cooldown)
	tok := testkit.Sign(t, map[string]any{"alg": k.Alg, "kid": "force-refresh"}, testkit.Claims(ti.URL()), k.Alg, k.Priv)
	checkVerdict(t, v.Validate(ctx, tok, "api/users", nil), service.ReasonUnknownKey)
	if ti.Requests.Load() == before {
		t.Fatal("an unknown kid past the cooldown did not refetch the key set")
	}
	testkit.Eventually(ctx, t, "the refetch over", func() bool { return fetchCount(v, ti.URL()) > fetches })
}

// fetchCount is how many key set fetches of issuer are over, good or bad.
func fetchCount(v *service.Validator, issuer string) uint64 {
	for _, st := range v.Issuers() {
		if st.Issuer == issuer {
			return st.Fetches + st.Failures
		}
	}
	return 0
}

func waitTried(ctx context.Context, t testing.TB, v *service.Validator) {
	t.Helper()
	if err := v.WaitTried(ctx); err != nil {
		t.Fatal(err)
	}
}
