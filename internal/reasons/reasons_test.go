package reasons_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/usher-dev/usher/internal/reasons"
	usherv1 "github.com/usher-dev/usher/proto/usher/v1"
	"github.com/usher-dev/usher/service"
)

var update = flag.Bool("update", false, "rewrite examples/reasons.json from the table")

// TestTable_CoversTheProto fails when the .proto gains a Reason the table
// does not map: every reason must be decided here, once.
func TestTable_CoversTheProto(t *testing.T) {
	for n, name := range usherv1.Reason_name {
		r := usherv1.Reason(n)
		_, known := reasons.Of(r)
		if r == usherv1.Reason_REASON_UNSPECIFIED {
			if known {
				t.Errorf("%s is never sent, but the table maps it", name)
			}
			continue
		}
		if !known {
			t.Errorf("%s is in usher.proto but not in the reason table: decide its gRPC code, HTTP status, RFC 6750 error, cacheable and retryable in internal/reasons", name)
		}
		if got := reasons.Name(r); "REASON_"+got != name {
			t.Errorf("Name(%s) = %q", name, got)
		}
	}
	if got := reasons.Name(usherv1.Reason(999)); got != "REASON_999" {
		t.Errorf("Name(999) = %q", got)
	}
}

// TestTable_Rules holds the table to the rules every front end promises: a
// token's fault is UNAUTHENTICATED/401 invalid_token, a missing scope
// PERMISSION_DENIED/403 insufficient_scope, and anything that is not the
// token's fault fails closed as UNAVAILABLE/503 (RFC 6750 §3.1 for the
// errors).
func TestTable_Rules(t *testing.T) {
	for n, name := range usherv1.Reason_name {
		r := usherv1.Reason(n)
		rule, ok := reasons.Of(r)
		if !ok {
			continue
		}
		deny := reasons.Deny(r)
		switch r {
		case usherv1.Reason_REASON_VALID:
			if rule.Code != codes.OK || rule.HTTPStatus != 200 || !rule.Cacheable {
				t.Errorf("VALID: %+v", rule)
			}
			if deny.Code != codes.Unavailable {
				t.Errorf("a rejection that says VALID is not failed closed: %+v", deny)
			}
		case usherv1.Reason_REASON_INSUFFICIENT_SCOPE:
			if rule != deny || rule.Code != codes.PermissionDenied || rule.HTTPStatus != 403 || rule.BearerError != reasons.InsufficientScope {
				t.Errorf("INSUFFICIENT_SCOPE: %+v", rule)
			}
		default:
			if rule != deny {
				t.Errorf("%s: Deny %+v differs from Of %+v", name, deny, rule)
			}
			if rule.Retryable {
				if rule.Code != codes.Unavailable || rule.HTTPStatus != 503 || rule.BearerError != "" || rule.Cacheable {
					t.Errorf("%s is retryable but not failed closed as UNAVAILABLE/503, uncached: %+v", name, rule)
				}
				continue
			}
			want := reasons.InvalidToken
			if r == usherv1.Reason_REASON_INVALID_PROOF {
				want = reasons.InvalidDPoPProof
			}
			if rule.Code != codes.Unauthenticated || rule.HTTPStatus != 401 || rule.BearerError != want {
				t.Errorf("%s: a token's fault must be UNAUTHENTICATED/401 %s: %+v", name, want, rule)
			}
			proof := r == usherv1.Reason_REASON_PROOF_MISSING || r == usherv1.Reason_REASON_INVALID_PROOF
			if proof != (rule.Challenge == reasons.DPoP) || proof && rule.Cacheable {
				t.Errorf("%s: a proof's verdict is answered with a DPoP challenge and never cached: %+v", name, rule)
			}
		}
	}
	for _, r := range []usherv1.Reason{usherv1.Reason_REASON_UNSPECIFIED, usherv1.Reason(999)} {
		if d := reasons.Deny(r); d.Code != codes.Unavailable || d.HTTPStatus != 503 || d.Cacheable || !d.Retryable {
			t.Errorf("reason %d is not failed closed: %+v", r, d)
		}
	}
	// The verdicts whose truth can change under an unchanged token.
	for _, r := range []usherv1.Reason{usherv1.Reason_REASON_KEYS_UNAVAILABLE, usherv1.Reason_REASON_UNKNOWN_KEY,
		usherv1.Reason_REASON_UNTRUSTED_ISSUER, usherv1.Reason_REASON_NOT_YET_VALID} {
		if rule, _ := reasons.Of(r); rule.Cacheable {
			t.Errorf("%s is cacheable", r)
		}
	}
}

// jsonRule is a rule in examples/reasons.json, read by the Python and Node tests.
type jsonRule struct {
	Reason      string `json:"reason,omitempty"`
	GRPCCode    string `json:"grpc_code"`
	HTTPStatus  int    `json:"http_status"`
	BearerError string `json:"bearer_error"`
	Cacheable   bool   `json:"cacheable"`
	Retryable   bool   `json:"retryable"`
	Challenge   string `json:"challenge"`
}

func toJSON(name string, r reasons.Rule) jsonRule {
	return jsonRule{Reason: name, GRPCCode: strings.ToUpper(codeName(r.Code)), HTTPStatus: r.HTTPStatus,
		BearerError: r.BearerError, Cacheable: r.Cacheable, Retryable: r.Retryable, Challenge: r.Challenge}
}

// codeName spells a code as the gRPC specification does (PERMISSION_DENIED).
func codeName(c codes.Code) string {
	var b strings.Builder
	prev := rune(0)
	for _, ch := range c.String() {
		if ch >= 'A' && ch <= 'Z' && prev >= 'a' && prev <= 'z' {
			b.WriteByte('_')
		}
		b.WriteRune(ch)
		prev = ch
	}
	return b.String()
}

// TestTable_JSON keeps examples/reasons.json, the table for the other
// languages' helpers, equal to this one (go test -run TestTable_JSON -update
// rewrites it).
func TestTable_JSON(t *testing.T) {
	var doc struct {
		Comment string     `json:"comment"`
		Reasons []jsonRule `json:"reasons"`
		Unknown jsonRule   `json:"unknown"`
		DPoPAlg string     `json:"dpop_algs"`
	}
	doc.Comment = "What each usher.v1.Reason means to a protected API's caller: generated from internal/reasons by `go test ./internal/reasons -update`; do not edit. A reason not listed here fails closed as \"unknown\"."
	names := make([]int32, 0, len(usherv1.Reason_name))
	for n := range usherv1.Reason_name {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		if rule, ok := reasons.Of(usherv1.Reason(n)); ok {
			doc.Reasons = append(doc.Reasons, toJSON(usherv1.Reason_name[n], rule))
		}
	}
	doc.Unknown = toJSON("", reasons.Deny(usherv1.Reason(-1)))
	doc.DPoPAlg = reasons.DPoPAlgorithms
	want, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	want = append(want, '\n')
	path := filepath.Join("..", "..", "examples", "reasons.json")
	if *update {
		if err := os.WriteFile(path, want, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the table; run go test ./internal/reasons -update and commit it:\n%s", path, want)
	}
}

// TestDPoPAlgorithms: the challenge announces exactly the algorithms the
// engine accepts for a proof, in its order.
func TestDPoPAlgorithms(t *testing.T) {
	if want := strings.Join(service.DPoPAlgorithms, " "); reasons.DPoPAlgorithms != want {
		t.Errorf("reasons.DPoPAlgorithms = %q, the engine accepts %q", reasons.DPoPAlgorithms, want)
	}
}
