package service_test

import (
	"context"
	"crypto/elliptic"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/usher-dev/usher/service"
)

const typedIssuer = "https://typed.usher.test"

// reasonsFixture is one issuer publishing an RSA, an EC and an Ed25519 key,
// a second issuer name on the same keys that requires typ at+jwt, and an
// issuer whose key set cannot be reached.
type reasonsFixture struct {
	iss         *testIssuer
	keys        []*testKey
	downIssuer  string
	v           *service.Validator
	allIssuers  []string
	publishKids []string
}

func newReasonsFixture(t *testing.T) *reasonsFixture {
	t.Helper()
	ctx := testContext(t)
	f := &reasonsFixture{keys: []*testKey{newRSAKey(t, "rsa-1"), newECKey(t, "ec-1", elliptic.P256()), newEdKey(t, "ed-1")}}
	f.iss = newTestIssuer(t, f.keys...)
	f.downIssuer = closedURL(t)
	typed := f.iss.config(time.Second)
	typed.Issuer, typed.TokenType = typedIssuer, "at+jwt"
	down := service.IssuerConfig{Issuer: f.downIssuer, JWKSURI: f.downIssuer + "/jwks.json"}
	f.v = newValidator(t, ctx, f.iss.config(time.Second), typed, down)
	f.allIssuers = []string{f.iss.URL(), typedIssuer, f.downIssuer}
	f.publishKids = []string{"ec-1", "ed-1", "rsa-1"}
	return f
}

func TestValidate_Reasons(t *testing.T) {
	f := newReasonsFixture(t)
	ctx := testContext(t)
	iss := f.iss.URL()
	exp := testNow.Add(-time.Hour)
	nbf := testNow.Add(time.Hour)
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
		other := k.like(t, k.kid)
		cases := []tc{
			{name: "valid", token: func(t testing.TB) string { return k.token(t, claims(iss)) }, scopes: []string{"users.read"}, want: service.ReasonValid},
			{name: "valid at+jwt", token: func(t testing.TB) string {
				return sign(t, map[string]any{"alg": k.alg, "kid": k.kid, "typ": "at+jwt"}, claims(typedIssuer), k.alg, k.priv)
			}, want: service.ReasonValid},
			{name: "malformed exp string", token: func(t testing.TB) string { return k.token(t, claims(iss, "exp", "tomorrow")) }, want: service.ReasonMalformed},
			{name: "alg none with a real signature", token: func(t testing.TB) string {
				return sign(t, map[string]any{"alg": "none", "kid": k.kid}, claims(iss), k.alg, k.priv)
			}, want: service.ReasonUnsupportedAlgorithm,
				mismatch: &service.Mismatch{Claim: "alg", Expected: service.DefaultAlgorithms, Actual: []string{"none"}}},
			{name: "untrusted issuer", token: func(t testing.TB) string { return k.token(t, claims("https://evil.example")) }, want: service.ReasonUntrustedIssuer,
				mismatch: &service.Mismatch{Claim: "iss", Expected: f.allIssuers, Actual: []string{"https://evil.example"}}},
			{name: "unknown key", token: func(t testing.TB) string {
				return sign(t, map[string]any{"alg": k.alg, "kid": "nope"}, claims(iss), k.alg, k.priv)
			}, want: service.ReasonUnknownKey,
				mismatch: &service.Mismatch{Claim: "kid", Expected: f.publishKids, Actual: []string{"nope"}}},
			{name: "invalid signature", token: func(t testing.TB) string { return other.token(t, claims(iss)) }, want: service.ReasonInvalidSignature},
			{name: "wrong token type", token: func(t testing.TB) string { return k.token(t, claims(typedIssuer)) }, want: service.ReasonWrongTokenType,
				mismatch: &service.Mismatch{Claim: "typ", Expected: []string{"at+jwt"}, Actual: []string{"JWT"}}},
			{name: "expired", token: func(t testing.TB) string { return k.token(t, claims(iss, "exp", exp.Unix())) }, want: service.ReasonExpired,
				mismatch: &service.Mismatch{Claim: "exp", Expected: []string{"after " + rfc(testNow.Add(-30*time.Second))}, Actual: []string{rfc(exp)}}},
			{name: "not yet valid", token: func(t testing.TB) string { return k.token(t, claims(iss, "nbf", nbf.Unix())) }, want: service.ReasonNotYetValid,
				mismatch: &service.Mismatch{Claim: "nbf", Expected: []string{"before " + rfc(testNow.Add(30*time.Second))}, Actual: []string{rfc(nbf)}}},
			{name: "missing exp", token: func(t testing.TB) string { return k.token(t, claims(iss, "exp", absent)) }, want: service.ReasonMissingClaim,
				mismatch: &service.Mismatch{Claim: "exp", Expected: []string{"exp"}}},
			{name: "audience mismatch", token: func(t testing.TB) string { return k.token(t, claims(iss)) }, audience: "api/invoices", want: service.ReasonAudienceMismatch,
				mismatch: &service.Mismatch{Claim: "aud", Expected: []string{"api/invoices"}, Actual: []string{"api/users"}}},
			{name: "insufficient scope", token: func(t testing.TB) string { return k.token(t, claims(iss)) }, scopes: []string{"users.read", "users.admin"}, want: service.ReasonInsufficientScope,
				mismatch: &service.Mismatch{Claim: "scope", Expected: []string{"users.read", "users.admin"}, Actual: []string{"users.read", "users.write"}}},
			{name: "keys unavailable", token: func(t testing.TB) string { return k.token(t, claims(f.downIssuer)) }, want: service.ReasonKeysUnavailable},
			{name: "expired for the wrong API", token: func(t testing.TB) string { return k.token(t, claims(iss, "exp", exp.Unix())) }, audience: "api/invoices",
				want: service.ReasonExpired, violations: []service.Reason{service.ReasonExpired, service.ReasonAudienceMismatch}},
			{name: "every claim check fails", token: func(t testing.TB) string {
				return k.token(t, claims(typedIssuer, "exp", exp.Unix(), "nbf", nbf.Unix(), "scope", "other"))
			}, audience: "api/invoices", scopes: []string{"users.read"}, want: service.ReasonWrongTokenType,
				violations: []service.Reason{service.ReasonWrongTokenType, service.ReasonExpired, service.ReasonNotYetValid, service.ReasonAudienceMismatch, service.ReasonInsufficientScope}},
		}
		for _, c := range cases {
			t.Run(k.alg+"/"+c.name, func(t *testing.T) {
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
				if v.Claims != nil && (v.Claims.KeyID != k.kid || v.Claims.Algorithm != k.alg) {
					t.Errorf("claims name key %q alg %q, want %q %q", v.Claims.KeyID, v.Claims.Algorithm, k.kid, k.alg)
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
	v := f.v.Validate(ctx, k.token(t, claims(f.iss.URL(), "azp", "ignored", "nbf", testNow.Unix())), "api/users", nil)
	checkVerdict(t, v, service.ReasonValid)
	c := v.Claims
	if c.Issuer != f.iss.URL() || c.Subject != "user-42" || !slices.Equal(c.Audience, []string{"api/users"}) ||
		!slices.Equal(c.Scopes, []string{"users.read", "users.write"}) || c.ClientID != "frontend" || c.JWTID != "jti-1" ||
		c.KeyID != "rsa-1" || c.Algorithm != "RS256" || c.TokenType != "JWT" ||
		!c.ExpiresAt.Equal(testNow.Add(time.Hour)) || !c.IssuedAt.Equal(testNow.Add(-time.Minute)) || !c.NotBefore.Equal(testNow) {
		t.Fatalf("claims = %+v", c)
	}
	if c.Raw["azp"] != "ignored" || c.Raw["sub"] != "user-42" {
		t.Fatalf("raw claims = %v", c.Raw)
	}
	if v.Message == "" {
		t.Fatal("valid verdict without a message")
	}
}

// The checks run in the contract's order: nothing of a token whose signature
// did not verify is trusted, so a forged token is never diagnosed by its claims.
func TestValidate_CheckOrder(t *testing.T) {
	ctx := testContext(t)
	k := newEdKey(t, "ed-1")
	attacker := k.like(t, "ed-1")
	iss := newTestIssuer(t, k)
	v := newValidator(t, ctx, iss.config(time.Second))
	expired := claims(iss.URL(), "exp", testNow.Add(-time.Hour).Unix())

	t.Run("expired and forged", func(t *testing.T) {
		got := v.Validate(ctx, attacker.token(t, expired), "api/users", nil)
		checkVerdict(t, got, service.ReasonInvalidSignature)
		if got.Mismatch != nil {
			t.Fatalf("mismatch %+v on a forged token", got.Mismatch)
		}
	})
	t.Run("forged for the wrong API", func(t *testing.T) {
		got := v.Validate(ctx, attacker.token(t, claims(iss.URL())), "api/invoices", []string{"missing.scope"})
		checkVerdict(t, got, service.ReasonInvalidSignature)
		for _, s := range []string{got.Message, got.Hint} {
			if strings.Contains(s, "audience") || strings.Contains(s, "Users API") || strings.Contains(s, "api/invoices") || strings.Contains(s, "scope") {
				t.Fatalf("forged token diagnosed by its claims: %q", s)
			}
		}
	})
	t.Run("expired with a tampered payload", func(t *testing.T) {
		tok := k.token(t, expired)
		parts := strings.Split(tok, ".")
		parts[1] = segment(t, claims(iss.URL(), "exp", testNow.Add(-2*time.Hour).Unix()))
		checkVerdict(t, v.Validate(ctx, strings.Join(parts, "."), "api/users", nil), service.ReasonInvalidSignature)
	})
	t.Run("unknown key beats expired", func(t *testing.T) {
		tok := sign(t, map[string]any{"alg": "EdDSA", "kid": "gone"}, expired, "EdDSA", k.priv)
		checkVerdict(t, v.Validate(ctx, tok, "api/invoices", nil), service.ReasonUnknownKey)
	})
	t.Run("untrusted issuer beats unknown key", func(t *testing.T) {
		tok := sign(t, map[string]any{"alg": "EdDSA", "kid": "gone"}, claims("https://evil.example"), "EdDSA", k.priv)
		checkVerdict(t, v.Validate(ctx, tok, "api/users", nil), service.ReasonUntrustedIssuer)
	})
	t.Run("alg none beats untrusted issuer", func(t *testing.T) {
		tok := sign(t, map[string]any{"alg": "none"}, claims("https://evil.example"), "EdDSA", k.priv)
		checkVerdict(t, v.Validate(ctx, tok, "api/users", nil), service.ReasonUnsupportedAlgorithm)
	})
	t.Run("malformed beats alg none", func(t *testing.T) {
		tok := sign(t, map[string]any{"alg": "none"}, claims("https://evil.example", "aud", 1), "EdDSA", k.priv)
		checkVerdict(t, v.Validate(ctx, tok, "api/users", nil), service.ReasonMalformed)
	})
	t.Run("empty expected audience fails closed", func(t *testing.T) {
		got := v.Validate(ctx, k.token(t, claims(iss.URL())), "", nil)
		checkVerdict(t, got, service.ReasonAudienceMismatch)
	})
}
