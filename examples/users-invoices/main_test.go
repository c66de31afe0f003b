package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// TestRun is `go run ./examples/users-invoices`: every step must behave as
// the program says.
func TestRun(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), &out); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	for _, want := range []string{
		"Invoices API -> Unauthenticated", "reason    AUDIENCE_MISMATCH", "token for api/users", "service   api/invoices",
		"[4/4] Billing gets a DPoP-bound token", "Billing, its own key          -> OK",
		"Attacker, its own key         -> Unauthenticated", "reason    INVALID_PROOF", "expected  jkt ", "actual    jkt ",
		`challenge DPoP algs="ES256`, `error="invalid_dpop_proof"`,
		"Attacker, as a Bearer token   -> Unauthenticated", "reason    PROOF_MISSING",
		"Every step behaved as described.",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}
