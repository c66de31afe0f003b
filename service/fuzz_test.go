package service_test

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/usher-dev/usher/internal/testkit"
	"github.com/usher-dev/usher/service"
)

const fuzzIssuer = "https://fuzz.usher.test"

// fuzzFixture is a validator over a static key set whose Ed25519 key is
// derived from a fixed seed, so that the corpus can hold a token it signed
// (Ed25519 signatures are deterministic), and that valid token.
func fuzzFixture(t testing.TB) (*service.Validator, string) {
	t.Helper()
	seed := sha256.Sum256([]byte("usher FuzzValidate key"))
	k := &testkit.Key{KID: "fuzz-1", Alg: "EdDSA", Priv: ed25519.NewKeyFromSeed(seed[:])}
	cfg := &service.Config{
		Issuers:   []service.IssuerConfig{{Issuer: fuzzIssuer, JWKSFile: testkit.WriteJWKS(t, k)}},
		Audiences: testkit.Audiences,
	}
	v, err := service.NewValidator(t.Context(), cfg, service.WithClock(func() time.Time { return testkit.Now }))
	if err != nil {
		t.Fatal(err)
	}
	return v, k.Token(t, testkit.Claims(fuzzIssuer))
}

// bare is the token inside a request value: surrounding white space and a
// "Bearer " prefix (any case) removed, as ValidateTokenRequest.token documents.
func bare(s string) string {
	s = strings.TrimSpace(s)
	if len(s) > 7 && strings.EqualFold(s[:7], "bearer ") {
		s = strings.TrimSpace(s[7:])
	}
	return s
}

func FuzzValidate(f *testing.F) {
	v, valid := fuzzFixture(f)
	p := segments(valid)
	f.Add(valid)
	f.Add("Bearer " + valid)
	f.Add(p[0] + "." + p[1] + "." + p[2][:len(p[2])-2] + "AA")
	f.Add(p[0] + "." + p[1] + ".")
	f.Add(p[0] + "." + p[1])
	f.Add(testkit.Segment(f, map[string]any{"alg": "none"}) + "." + p[1] + ".")
	f.Add(testkit.Segment(f, map[string]any{"alg": "RSA-OAEP", "enc": "A256GCM"}) + ".YQ.YQ.YQ.YQ")
	f.Add(`{"payload":"` + p[1] + `","signatures":[]}`)
	f.Add("")

	f.Fuzz(func(t *testing.T, tok string) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		got := v.Validate(ctx, tok, "api/users", nil)
		if got.Reason == service.ReasonUnspecified || got.Reason.String() == "UNSPECIFIED" {
			t.Fatalf("reason %d for %q", got.Reason, tok)
		}
		if got.Reason == service.ReasonValid && bare(tok) != valid {
			t.Fatalf("a token other than the valid seed verified: %q", tok)
		}
		if len(tok) < 1024 && bare(tok) == valid && got.Reason != service.ReasonValid {
			t.Fatalf("the valid seed came back %v: %s", got.Reason, got.Message)
		}
		if (got.Claims != nil) != verified(got.Reason) {
			t.Fatalf("claims %v with reason %v", got.Claims != nil, got.Reason)
		}
		if got.Reason != service.ReasonValid && (got.Message == "" || got.Hint == "") {
			t.Fatalf("%v without message or hint", got.Reason)
		}
		if in := v.Inspect(ctx, tok); in.Signature == service.ReasonUnspecified || (in.Signature == service.ReasonValid) != (got.Claims != nil) {
			t.Fatalf("inspect signature %v, validate %v", in.Signature, got.Reason)
		}
	})
}

// The corpus's valid seed is the token the fixture signs, so the fuzz
// property above is checked against a token that really verifies.
func TestFuzzCorpusValidSeed(t *testing.T) {
	v, valid := fuzzFixture(t)
	b, err := os.ReadFile(filepath.Join("testdata", "fuzz", "FuzzValidate", "valid"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != 2 || lines[0] != "go test fuzz v1" || !strings.HasPrefix(lines[1], "string(") {
		t.Fatalf("corpus file %q", b)
	}
	seed, err := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(lines[1], "string("), ")"))
	if err != nil {
		t.Fatal(err)
	}
	if seed != valid {
		t.Fatalf("corpus seed %q is not the fixture's valid token %q", seed, valid)
	}
	checkVerdict(t, v.Validate(testkit.Context(t), seed, "api/users", nil), service.ReasonValid)
}

// freshStore is a replay store that has seen nothing, ever: FuzzProof's
// valid seed stays valid on every run.
type freshStore struct{}

func (freshStore) Remember(context.Context, string, time.Time) (bool, error) { return true, nil }

// proofFuzzFixture is fuzzFixture's validator (without replay memory), a
// token bound to a client key derived from a fixed seed, and that key's
// proof for the token (Ed25519 is deterministic: the corpus can hold it).
func proofFuzzFixture(t testing.TB) (v *service.Validator, tok, valid string) {
	t.Helper()
	seed := sha256.Sum256([]byte("usher FuzzValidate key"))
	k := &testkit.Key{KID: "fuzz-1", Alg: "EdDSA", Priv: ed25519.NewKeyFromSeed(seed[:])}
	cseed := sha256.Sum256([]byte("usher FuzzProof client key"))
	client := &testkit.Key{Alg: "EdDSA", Priv: ed25519.NewKeyFromSeed(cseed[:])}
	cfg := &service.Config{Issuers: []service.IssuerConfig{{Issuer: fuzzIssuer, JWKSFile: testkit.WriteJWKS(t, k)}}, Audiences: testkit.Audiences}
	v, err := service.NewValidator(t.Context(), cfg, service.WithClock(func() time.Time { return testkit.Now }), service.WithReplayStore(freshStore{}))
	if err != nil {
		t.Fatal(err)
	}
	tok = k.Token(t, testkit.Claims(fuzzIssuer, "cnf", client.Cnf()))
	claims := testkit.ProofClaims(tok, "POST", "https://usher.test/usher.v1.TokenService/ValidateToken", testkit.Now, "jti", "fuzz-jti")
	return v, tok, testkit.Sign(t, client.ProofHeader(), claims, "EdDSA", client.Priv)
}

// FuzzProof: any DPoP header with a bound token is a verdict, never a panic
// or an error: VALID for the one proof made for it, else INVALID_PROOF (or
// PROOF_MISSING when blank), with a bounded message and a hint, and the
// token's claims.
func FuzzProof(f *testing.F) {
	v, tok, valid := proofFuzzFixture(f)
	p := segments(valid)
	f.Add(valid)
	f.Add(" " + valid + "\t")
	f.Add(valid + "," + valid)
	f.Add(p[0] + "." + p[1] + "." + p[2][:len(p[2])-2] + "AA")
	f.Add(p[0] + "." + p[1] + ".")
	f.Add(p[0] + "." + p[1])
	f.Add(testkit.Segment(f, map[string]any{"alg": "none", "typ": "dpop+jwt"}) + "." + p[1] + ".")
	f.Add(testkit.Segment(f, map[string]any{"alg": "HS256", "typ": "dpop+jwt", "jwk": map[string]any{"kty": "oct", "k": "c2VjcmV0"}}) + "." + p[1] + "." + p[2])
	f.Add(`{"payload":"` + p[1] + `","protected":"` + p[0] + `","signature":"` + p[2] + `"}`)
	f.Add(tok)
	f.Add("")
	f.Fuzz(func(t *testing.T, proof string) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		r := &service.Request{Token: tok, Audience: "api/users", Scheme: "DPoP", DPoPProof: proof, HTTPMethod: "POST",
			HTTPURI: "https://usher.test/usher.v1.TokenService/ValidateToken"}
		got, err := v.ValidateRequest(ctx, r)
		switch {
		case err != nil:
			t.Fatalf("error %v for %q", err, proof)
		case got.Claims == nil || got.Claims.Confirmation.JKT == "":
			t.Fatalf("no claims with %v", got.Reason)
		case got.Reason == service.ReasonValid && strings.TrimSpace(proof) != valid:
			t.Fatalf("a proof other than the valid seed was accepted: %q", proof)
		case strings.TrimSpace(proof) == valid && got.Reason != service.ReasonValid:
			t.Fatalf("the valid seed came back %v: %s", got.Reason, got.Message)
		case got.Reason != service.ReasonValid && got.Reason != service.ReasonInvalidProof && got.Reason != service.ReasonProofMissing:
			t.Fatalf("reason %v for %q", got.Reason, proof)
		case got.Reason == service.ReasonProofMissing && strings.TrimSpace(proof) != "":
			t.Fatalf("PROOF_MISSING for a proof: %q", proof)
		case got.Reason != service.ReasonValid && (got.Message == "" || got.Hint == "" || len(got.Message) > 1024):
			t.Fatalf("%v with message %q, hint %q", got.Reason, got.Message, got.Hint)
		}
	})
}
