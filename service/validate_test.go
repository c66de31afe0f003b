package service_test

import (
	"context"
	"crypto/elliptic"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/usher-dev/usher/internal/testkit"
	"github.com/usher-dev/usher/service"
)

const typedIssuer = "https://typed.usher.test"

// reasonsFixture is one issuer publishing an RSA, an EC and an Ed25519 key,
// a second issuer name on the same keys that requires typ at+jwt, and an
// issuer whose key set cannot be reached.
type reasonsFixture struct {
	iss         *testkit.Issuer
	keys        []*testkit.Key
	downIssuer  string
	v           *service.Validator
	allIssuers  []string
	publishKids []string
}

func newReasonsFixture(t *testing.T) *reasonsFixture {
	t.Helper()
	ctx := testkit.Context(t)
	f := &reasonsFixture{keys: []*testkit.Key{testkit.RSAKey(t, "rsa-1"), testkit.ECKey(t, "ec-1", elliptic.P256()), testkit.EdKey(t, "ed-1")}}
	f.iss = testkit.NewIssuer(t, f.keys...)
	f.downIssuer = testkit.ClosedURL(t)
	typed := issuerConfig(f.iss, time.Second)
	typed.Issuer, typed.TokenType = typedIssuer, "at+jwt"
	down := service.IssuerConfig{Issuer: f.downIssuer, JWKSURI: f.downIssuer + "/jwks.json"}
	f.v = newValidator(t, ctx, issuerConfig(f.iss, time.Second), typed, down)
	f.allIssuers = []string{f.iss.URL(), typedIssuer, f.downIssuer}
	f.publishKids = []string{"ec-1", "ed-1", "rsa-1"}
	return f
}

func TestValidate_Reasons(t *testing.T) {
	f := newReasonsFixture(t)
	ctx := testkit.Context(t)
	iss := f.iss.URL()
	exp := testkit.Now.Add(-time.Hour)
	nbf := testkit.Now.Add(time.Hour)
	rfc := func(tm time.Time) string { return tm.UTC().Format(time.RFC3339) }

	type tc struct {
		name       string
		token      func(t testing.TB) string
		audience   string
		scopes     []string
		want       service.Reason
		mismatch   *service.Mismatch
		violations []service.Reason
	}
	for _, k := range f.keys {
		other := k.Like(t, k.KID)
		cases := []tc{
			{name: "valid", token: func(t testing.TB) string { return k.Token(t, testkit.Claims(iss)) }, scopes: []string{"users.read"}, want: service.ReasonValid},
			{name: "valid at+jwt", token: func(t testing.TB) string {
				return testkit.Sign(t, map[string]any{"alg": k.Alg, "kid": k.KID, "typ": "at+jwt"}, testkit.Claims(typedIssuer), k.Alg, k.Priv)
			}, want: service.ReasonValid},
			{name: "malformed exp string", token: func(t testing.TB) string { return k.Token(t, testkit.Claims(iss, "exp", "tomorrow")) }, want: service.ReasonMalformed},
			{name: "alg none with a real signature", token: func(t testing.TB) string {
				return testkit.Sign(t, map[string]any{"alg": "none", "kid": k.KID}, testkit.Claims(iss), k.Alg, k.Priv)
			}, want: service.ReasonUnsupportedAlgorithm,
				mismatch: &service.Mismatch{Claim: "alg", Expected: service.DefaultAlgorithms, Actual: []string{"none"}}},
			{name: "untrusted issuer", token: func(t testing.TB) string { return k.Token(t, testkit.Claims("https://evil.example")) }, want: service.ReasonUntrustedIssuer,
				mismatch: &service.Mismatch{Claim: "iss", Expected: f.allIssuers, Actual: []string{"https://evil.example"}}},
			{name: "unknown key", token: func(t testing.TB) string {
				return testkit.Sign(t, map[string]any{"alg": k.Alg, "kid": "nope"}, testkit.Claims(iss), k.Alg, k.Priv)
			}, want: service.ReasonUnknownKey,
				mismatch: &service.Mismatch{Claim: "kid", Expected: f.publishKids, Actual: []string{"nope"}}},
			{name: "invalid signature", token: func(t testing.TB) string { return other.Token(t, testkit.Claims(iss)) }, want: service.ReasonInvalidSignature},
			{name: "wrong token type", token: func(t testing.TB) string { return k.Token(t, testkit.Claims(typedIssuer)) }, want: service.ReasonWrongTokenType,
				mismatch: &service.Mismatch{Claim: "typ", Expected: []string{"at+jwt"}, Actual: []string{"JWT"}}},
			{name: "expired", token: func(t testing.TB) string { return k.Token(t, testkit.Claims(iss, "exp", exp.Unix())) }, want: service.ReasonExpired,
				mismatch: &service.Mismatch{Claim: "exp", Expected: []string{"after " + rfc(testkit.Now.Add(-30*time.Second))}, Actual: []string{rfc(exp)}}},
			{name: "not yet valid", token: func(t testing.TB) string { return k.Token(t, testkit.Claims(iss, "nbf", nbf.Unix())) }, want: service.ReasonNotYetValid,
				mismatch: &service.Mismatch{Claim: "nbf", Expected: []string{"before " + rfc(testkit.Now.Add(30*time.Second))}, Actual: []string{rfc(nbf)}}},
			{name: "missing exp", token: func(t testing.TB) string { return k.Token(t, testkit.Claims(iss, "exp", testkit.Absent)) }, want: service.ReasonMissingClaim,
				mismatch: &service.Mismatch{Claim: "exp", Expected: []string{"exp"}}},
			{name: "audience mismatch", token: func(t testing.TB) string { return k.Token(t, testkit.Claims(iss)) }, audience: "api/invoices", want: service.ReasonAudienceMismatch,
				mismatch: &service.Mismatch{Claim: "aud", Expected: []string{"api/invoices"}, Actual: []string{"api/users"}}},
			{name: "insufficient scope", token: func(t testing.TB) string { return k.Token(t, testkit.Claims(iss)) }, scopes: []string{"users.read", "users.admin"}, want: service.ReasonInsufficientScope,
				mismatch: &service.Mismatch{Claim: "scope", Expected: []string{"users.read", "users.admin"}, Actual: []string{"users.read", "users.write"}}},
			{name: "keys unavailable", token: func(t testing.TB) string { return k.Token(t, testkit.Claims(f.downIssuer)) }, want: service.ReasonKeysUnavailable},
			{name: "expired for the wrong API", token: func(t testing.TB) string { return k.Token(t, testkit.Claims(iss, "exp", exp.Unix())) }, audience: "api/invoices",
				want: service.ReasonExpired, violations: []service.Reason{service.ReasonExpired, service.ReasonAudienceMismatch}},
			{name: "every claim check fails", token: func(t testing.TB) string {
				return k.Token(t, testkit.Claims(typedIssuer, "exp", exp.Unix(), "nbf", nbf.Unix(), "scope", "other"))
			}, audience: "api/invoices", scopes: []string{"users.read"}, want: service.ReasonWrongTokenType,
				violations: []service.Reason{service.ReasonWrongTokenType, service.ReasonExpired, service.ReasonNotYetValid, service.ReasonAudienceMismatch, service.ReasonInsufficientScope}},
		}
		for _, c := range cases {
			t.Run(k.Alg+"/"+c.name, func(t *testing.T) {
				aud := c.audience
				if aud == "" {
					aud = "api/users"
				}
				v := f.v.Validate(ctx, c.token(t), aud, c.scopes)
				checkVerdict(t, v, c.want)
				if c.mismatch != nil {
					checkMismatch(t, v.Mismatch, c.mismatch)
				}
				if c.violations != nil && !slices.Equal(reasons(v.Violations), c.violations) {
					t.Fatalf("violations = %v, want %v", reasons(v.Violations), c.violations)
				}
				for i, vi := range v.Violations {
					if vi.Message == "" || vi.Hint == "" {
						t.Errorf("violations[%d] has no message or hint: %+v", i, vi)
					}
				}
				if len(v.Violations) > 0 {
					first := v.Violations[0]
					if first.Message != v.Message || first.Hint != v.Hint || first.Mismatch != v.Mismatch {
						t.Errorf("violations[0] %+v differs from the verdict %+v", first, v)
					}
				}
				if v.Claims != nil && (v.Claims.KeyID != k.KID || v.Claims.Algorithm != k.Alg) {
					t.Errorf("claims name key %q alg %q, want %q %q", v.Claims.KeyID, v.Claims.Algorithm, k.KID, k.Alg)
				}
			})
		}
	}
	if !t.Failed() {
		checkValidClaims(t, f, ctx)
	}
}

func checkValidClaims(t *testing.T, f *reasonsFixture, ctx context.Context) {
	k := f.keys[0]
	v := f.v.Validate(ctx, k.Token(t, testkit.Claims(f.iss.URL(), "azp", "ignored", "nbf", testkit.Now.Unix())), "api/users", nil)
	checkVerdict(t, v, service.ReasonValid)
	c := v.Claims
	if c.Issuer != f.iss.URL() || c.Subject != "user-42" || !slices.Equal(c.Audience, []string{"api/users"}) ||
		!slices.Equal(c.Scopes, []string{"users.read", "users.write"}) || c.ClientID != "frontend" || c.JWTID != "jti-1" ||
		c.KeyID != "rsa-1" || c.Algorithm != "RS256" || c.TokenType != "JWT" ||
		!c.ExpiresAt.Equal(testkit.Now.Add(time.Hour)) || !c.IssuedAt.Equal(testkit.Now.Add(-time.Minute)) || !c.NotBefore.Equal(testkit.Now) {
		t.Fatalf("claims = %+v", c)
	}
	if c.Raw["azp"] != "ignored" || c.Raw["sub"] != "user-42" {
		t.Fatalf("raw claims = %v", c.Raw)
	}
	if v.Message == "" {
		t.Fatal("valid verdict without a message")
	}
}

// The checks run in their documented order: nothing of a token whose signature
// did not verify is trusted, so a forged token is never diagnosed by its claims.
func TestValidate_CheckOrder(t *testing.T) {
	ctx := testkit.Context(t)
	k := testkit.EdKey(t, "ed-1")
	attacker := k.Like(t, "ed-1")
	iss := testkit.NewIssuer(t, k)
	v := newValidator(t, ctx, issuerConfig(iss, time.Second))
	expired := testkit.Claims(iss.URL(), "exp", testkit.Now.Add(-time.Hour).Unix())

	t.Run("expired and forged", func(t *testing.T) {
		got := v.Validate(ctx, attacker.Token(t, expired), "api/users", nil)
		checkVerdict(t, got, service.ReasonInvalidSignature)
		if got.Mismatch != nil {
			t.Fatalf("mismatch %+v on a forged token", got.Mismatch)
		}
	})
	t.Run("forged for the wrong API", func(t *testing.T) {
		got := v.Validate(ctx, attacker.Token(t, testkit.Claims(iss.URL())), "api/invoices", []string{"missing.scope"})
		checkVerdict(t, got, service.ReasonInvalidSignature)
		for _, s := range []string{got.Message, got.Hint} {
			if strings.Contains(s, "audience") || strings.Contains(s, "Users API") || strings.Contains(s, "api/invoices") || strings.Contains(s, "scope") {
				t.Fatalf("forged token diagnosed by its claims: %q", s)
			}
		}
	})
	t.Run("expired with a tampered payload", func(t *testing.T) {
		tok := k.Token(t, expired)
		parts := strings.Split(tok, ".")
		parts[1] = testkit.Segment(t, testkit.Claims(iss.URL(), "exp", testkit.Now.Add(-2*time.Hour).Unix()))
		checkVerdict(t, v.Validate(ctx, strings.Join(parts, "."), "api/users", nil), service.ReasonInvalidSignature)
	})
	t.Run("unknown key beats expired", func(t *testing.T) {
		tok := testkit.Sign(t, map[string]any{"alg": "EdDSA", "kid": "gone"}, expired, "EdDSA", k.Priv)
		checkVerdict(t, v.Validate(ctx, tok, "api/invoices", nil), service.ReasonUnknownKey)
	})
	t.Run("untrusted issuer beats unknown key", func(t *testing.T) {
		tok := testkit.Sign(t, map[string]any{"alg": "EdDSA", "kid": "gone"}, testkit.Claims("https://evil.example"), "EdDSA", k.Priv)
		checkVerdict(t, v.Validate(ctx, tok, "api/users", nil), service.ReasonUntrustedIssuer)
	})
	t.Run("alg none beats untrusted issuer", func(t *testing.T) {
		tok := testkit.Sign(t, map[string]any{"alg": "none"}, testkit.Claims("https://evil.example"), "EdDSA", k.Priv)
		checkVerdict(t, v.Validate(ctx, tok, "api/users", nil), service.ReasonUnsupportedAlgorithm)
	})
	t.Run("malformed beats alg none", func(t *testing.T) {
		tok := testkit.Sign(t, map[string]any{"alg": "none"}, testkit.Claims("https://evil.example", "aud", 1), "EdDSA", k.Priv)
		checkVerdict(t, v.Validate(ctx, tok, "api/users", nil), service.ReasonMalformed)
	})
	t.Run("empty expected audience fails closed", func(t *testing.T) {
		got := v.Validate(ctx, k.Token(t, testkit.Claims(iss.URL())), "", nil)
		checkVerdict(t, got, service.ReasonAudienceMismatch)
	})
}
