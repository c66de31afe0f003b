package grpcapi_test

import (
	"context"
	"crypto/elliptic"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/usher-dev/usher/internal/testkit"
	usherv1 "github.com/usher-dev/usher/proto/usher/v1"
	"github.com/usher-dev/usher/service"
)

// The protected API's request the proofs below are made for.
const (
	apiMethod = "POST"
	apiURI    = "https://api.example.com/invoices.v1.Invoices/Get"
)

// TestServer_DPoP: a DPoP-bound token through a real gRPC server and the
// real engine: VALID with a good proof, its cnf in the claims (of
// InspectToken too); PROOF_MISSING as Bearer or without a proof;
// INVALID_PROOF for another URI, another method, another key, and a
// replayed proof, each naming the claim with expected and actual values.
func TestServer_DPoP(t *testing.T) {
	ctx := testkit.Context(t)
	k := testkit.ECKey(t, "ec-1", elliptic.P256())
	ti := testkit.NewIssuer(t, k)
	clock := testkit.NewClock()
	v := testkit.NewValidator(t, ctx, clock, []service.IssuerConfig{ti.Config()})
	c := usherv1.NewTokenServiceClient(serve(t, ctx, v))

	dk := testkit.ECKey(t, "dpop", elliptic.P256())
	tok := k.Token(t, testkit.Claims(ti.URL(), "cnf", dk.Cnf()))
	ask := func(scheme, proof string) *usherv1.ValidateTokenResponse {
		t.Helper()
		resp, err := c.ValidateToken(ctx, &usherv1.ValidateTokenRequest{Token: tok, ExpectedAudience: "api/users",
			Scheme: scheme, DpopProof: proof, HttpMethod: apiMethod, HttpUri: apiURI})
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}

	good := dk.Proof(t, tok, apiMethod, apiURI, clock.Now())
	resp := ask("DPoP", good)
	if !resp.GetValid() || resp.GetReason() != usherv1.Reason_REASON_VALID {
		t.Fatalf("a bound token with its proof: %v", resp)
	}
	if got := resp.GetClaims().GetConfirmation(); got.GetJkt() != dk.Thumbprint() || got.GetX5TS256() != "" {
		t.Errorf("claims.confirmation %v, want jkt %s", got, dk.Thumbprint())
	}
	in, err := c.InspectToken(ctx, &usherv1.InspectTokenRequest{Token: tok})
	if err != nil || in.GetClaims().GetConfirmation().GetJkt() != dk.Thumbprint() {
		t.Errorf("InspectToken confirmation: %v, %v", in.GetClaims().GetConfirmation(), err)
	}

	for _, tc := range []struct {
		name, scheme, proof string
		reason              usherv1.Reason
		claim               string // of the mismatch; "" for none
		expected, actual    []string
	}{
		{"as Bearer, with its proof", "Bearer", dk.Proof(t, tok, apiMethod, apiURI, clock.Now()), usherv1.Reason_REASON_PROOF_MISSING, "scheme", []string{"DPoP"}, []string{"Bearer"}},
		{"without scheme or proof", "", "", usherv1.Reason_REASON_PROOF_MISSING, "scheme", []string{"DPoP"}, []string{"Bearer"}},
		{"DPoP without a proof", "DPoP", "", usherv1.Reason_REASON_PROOF_MISSING, "", nil, nil},
		{"proof for another URI", "dpop", dk.Proof(t, tok, apiMethod, "https://api.example.com/invoices.v1.Invoices/Delete", clock.Now()),
			usherv1.Reason_REASON_INVALID_PROOF, "htu", []string{apiURI}, []string{"https://api.example.com/invoices.v1.Invoices/Delete"}},
		{"proof for another method", "DPoP", dk.Proof(t, tok, "GET", apiURI, clock.Now()), usherv1.Reason_REASON_INVALID_PROOF, "htm", []string{"POST"}, []string{"GET"}},
		{"proof by another key", "DPoP", testkit.EdKey(t, "thief").Proof(t, tok, apiMethod, apiURI, clock.Now()), usherv1.Reason_REASON_INVALID_PROOF, "jkt", []string{dk.Thumbprint()}, nil},
		{"replayed proof", "DPoP", good, usherv1.Reason_REASON_INVALID_PROOF, "jti", nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := ask(tc.scheme, tc.proof)
			if resp.GetValid() || resp.GetReason() != tc.reason || resp.GetHint() == "" {
				t.Fatalf("reason %v, want %v with a hint: %v", resp.GetReason(), tc.reason, resp)
			}
			m := resp.GetMismatch()
			if m.GetClaim() != tc.claim || (tc.expected != nil && !slices.Equal(m.GetExpected(), tc.expected)) || (tc.actual != nil && !slices.Equal(m.GetActual(), tc.actual)) {
				t.Errorf("mismatch %v, want claim %q expected %q actual %q", m, tc.claim, tc.expected, tc.actual)
			}
			if resp.GetClaims().GetConfirmation().GetJkt() != dk.Thumbprint() {
				t.Errorf("a rejection's claims lack the confirmation: %v", resp.GetClaims())
			}
		})
	}
}

// TestServer_CertificateBound: a token bound to a client certificate is
// VALID with its thumbprint, PROOF_MISSING without one and INVALID_PROOF
// with another's.
func TestServer_CertificateBound(t *testing.T) {
	ctx := testkit.Context(t)
	k := testkit.EdKey(t, "ed-1")
	ti := testkit.NewIssuer(t, k)
	v := testkit.NewValidator(t, ctx, testkit.NewClock(), []service.IssuerConfig{ti.Config()})
	c := usherv1.NewTokenServiceClient(serve(t, ctx, v))
	thumb := func(s string) string {
		sum := sha256.Sum256([]byte(s))
		return base64.RawURLEncoding.EncodeToString(sum[:])
	}
	mine := thumb("my certificate")
	tok := k.Token(t, testkit.Claims(ti.URL(), "cnf", map[string]any{"x5t#S256": mine}))
	for _, tc := range []struct {
		name, x5t string
		reason    usherv1.Reason
	}{
		{"its certificate", mine, usherv1.Reason_REASON_VALID},
		{"no certificate", "", usherv1.Reason_REASON_PROOF_MISSING},
		{"another certificate", thumb("another"), usherv1.Reason_REASON_INVALID_PROOF},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := c.ValidateToken(ctx, &usherv1.ValidateTokenRequest{Token: tok, ExpectedAudience: "api/users", ClientCertificateSha256: tc.x5t})
			if err != nil || resp.GetReason() != tc.reason {
				t.Fatalf("%v, %v: want %v", resp, err, tc.reason)
			}
			if got := resp.GetClaims().GetConfirmation(); got.GetX5TS256() != mine || got.GetJkt() != "" {
				t.Errorf("claims.confirmation %v, want x5t_s256 %s", got, mine)
			}
		})
	}
}

// downStore is a replay store that does not answer.
type downStore struct{}

func (downStore) Remember(context.Context, string, time.Time) (bool, error) {
	return false, errors.New("dial tcp 127.0.0.1:6379: connect: connection refused")
}

// TestServer_ReplayStoreDown: when the replay store does not answer, a
// good proof gets no verdict but UNAVAILABLE (fail closed), with a message
// for the engineer on call; bearer tokens on the same server are
// unaffected; the log line has the store's error and never the proof.
func TestServer_ReplayStoreDown(t *testing.T) {
	ctx := testkit.Context(t)
	k := testkit.ECKey(t, "ec-1", elliptic.P256())
	ti := testkit.NewIssuer(t, k)
	clock := testkit.NewClock()
	v := testkit.NewValidator(t, ctx, clock, []service.IssuerConfig{ti.Config()}, service.WithReplayStore(downStore{}))
	var logs testkit.SyncBuffer
	conn, _ := serveWith(t, ctx, v, slog.New(slog.NewTextHandler(&logs, nil)), nil)
	c := usherv1.NewTokenServiceClient(conn)

	dk := testkit.ECKey(t, "dpop", elliptic.P256())
	bound := k.Token(t, testkit.Claims(ti.URL(), "cnf", dk.Cnf()))
	proof := dk.Proof(t, bound, apiMethod, apiURI, clock.Now())
	resp, err := c.ValidateToken(ctx, &usherv1.ValidateTokenRequest{Token: bound, ExpectedAudience: "api/users", Scheme: "DPoP", DpopProof: proof, HttpMethod: apiMethod, HttpUri: apiURI})
	msg := status.Convert(err).Message()
	if status.Code(err) != codes.Unavailable || resp != nil {
		t.Fatalf("%v, %v: want UNAVAILABLE and no verdict", resp, err)
	}
	if strings.Contains(msg, "127.0.0.1:6379") {
		t.Errorf("message %q shows callers the replay store's address: that is for usher's log", msg)
	}
	for _, want := range []string{"could not check the DPoP proof against its replay store", "not the token's or the proof's fault",
		"bearer tokens and calls without a proof are unaffected", "Retry with backoff", "dpop.replay_store"} {
		if !strings.Contains(msg, want) {
			t.Errorf("message %q does not say %q", msg, want)
		}
	}

	// A bad proof is refused before the store is asked: a verdict.
	resp, err = c.ValidateToken(ctx, &usherv1.ValidateTokenRequest{Token: bound, ExpectedAudience: "api/users", Scheme: "DPoP",
		DpopProof: dk.Proof(t, bound, "GET", apiURI, clock.Now()), HttpMethod: apiMethod, HttpUri: apiURI})
	if err != nil || resp.GetReason() != usherv1.Reason_REASON_INVALID_PROOF {
		t.Errorf("a proof for another method with the store down: %v, %v, want INVALID_PROOF", resp, err)
	}
	resp, err = c.ValidateToken(ctx, &usherv1.ValidateTokenRequest{Token: k.Token(t, testkit.Claims(ti.URL())), ExpectedAudience: "api/users"})
	if err != nil || !resp.GetValid() {
		t.Errorf("a bearer token with the store down: %v, %v, want VALID", resp, err)
	}

	l := logs.String()
	if !strings.Contains(l, "level=WARN msg=validate reason=PROOF_UNCHECKED") || !strings.Contains(l, "connection refused") || !strings.Contains(l, "scheme=DPoP") {
		t.Errorf("no WARN line with the store's error:\n%s", l)
	}
	if strings.Contains(l, proof[strings.LastIndexByte(proof, '.')+1:]) {
		t.Errorf("the proof reached the log:\n%s", l)
	}
}
