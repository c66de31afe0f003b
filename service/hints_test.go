package service_test

import (
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/usher-dev/usher/internal/testkit"
	"github.com/usher-dev/usher/service"
)

func TestHints(t *testing.T) {
	ctx := testkit.Context(t)
	k := testkit.EdKey(t, "ed-1")
	ti := testkit.NewIssuer(t, k)
	slow := issuerConfig(ti, time.Minute)
	slow.Issuer, slow.Leeway = "https://slow.usher.test", 45*time.Second
	down := testkit.ClosedURL(t)
	typed := issuerConfig(ti, time.Minute)
	typed.Issuer, typed.TokenType = "https://typed.usher.test", "at+jwt"
	prodKey := testkit.EdKey(t, "prod-1")
	prod := testkit.NewIssuer(t, prodKey)
	v := newValidator(t, ctx, issuerConfig(ti, time.Minute), slow, service.IssuerConfig{Issuer: down, JWKSURI: down + "/keys.json"}, typed, issuerConfig(prod, time.Minute))
	waitTried(ctx, t, v)
	iss := ti.URL()

	runHintCases(t, v, []hintCase{
		{
			name: "Users API token at the Invoices API", token: k.Token(t, testkit.Claims(iss)), audience: "api/invoices", want: service.ReasonAudienceMismatch,
			message: "token audience [api/users] does not include api/invoices",
			hint:    `this token was issued for Users API (api/users); ask the issuer for a token with audience api/invoices (OAuth 2.0 "audience" or RFC 8707 "resource" parameter)`,
		},
		{
			name: "two registered audiences", token: k.Token(t, testkit.Claims(iss, "aud", []string{"api/users", "api/invoices"})), audience: "api/orders", want: service.ReasonAudienceMismatch,
			message:  "token audience [api/users api/invoices] does not include api/orders",
			contains: []string{"Users API (api/users)", "Invoices API (api/invoices)", "audience api/orders"},
		},
		{
			name: "unregistered audience", token: k.Token(t, testkit.Claims(iss, "aud", "api/other")), audience: "api/invoices", want: service.ReasonAudienceMismatch,
			contains: []string{"audience api/invoices"},
		},
		{
			name: "no audience", token: k.Token(t, testkit.Claims(iss, "aud", testkit.Absent)), audience: "api/invoices", want: service.ReasonAudienceMismatch,
			contains: []string{"names no API", "api/invoices"},
		},
		{
			name: "aud with a trailing slash", token: k.Token(t, testkit.Claims(iss, "aud", "api/users/")), want: service.ReasonAudienceMismatch,
			contains: []string{"trailing slash", `"api/users/"`, `"api/users"`},
		},
		{
			name: "aud in another case", token: k.Token(t, testkit.Claims(iss, "aud", "API/Users")), want: service.ReasonAudienceMismatch,
			contains: []string{"letter case", `"API/Users"`},
		},
		{
			name: "aud with white space", token: k.Token(t, testkit.Claims(iss, "aud", " api/users")), want: service.ReasonAudienceMismatch,
			contains: []string{"white space"},
		},
		{
			name: "aud URL with another scheme", token: k.Token(t, testkit.Claims(iss, "aud", "http://api.example.com/users")), audience: "https://api.example.com/users", want: service.ReasonAudienceMismatch,
			contains: []string{"scheme"},
		},
		{
			name: "iss with a trailing slash", token: k.Token(t, testkit.Claims(iss+"/")), want: service.ReasonUntrustedIssuer,
			contains: []string{"trailing slash", `"` + iss + `/"`, `"` + iss + `"`},
		},
		{
			name: "iss in another case", token: k.Token(t, testkit.Claims(strings.ToUpper(iss))), want: service.ReasonUntrustedIssuer,
			contains: []string{"letter case"},
		},
		{
			name: "iss over https", token: k.Token(t, testkit.Claims("https"+strings.TrimPrefix(iss, "http"))), want: service.ReasonUntrustedIssuer,
			contains: []string{"scheme (https vs http)"},
		},
		{
			name: "iss unknown", token: k.Token(t, testkit.Claims("https://evil.example")), want: service.ReasonUntrustedIssuer,
			contains: []string{`"https://evil.example"`, iss},
		},
		{
			name: "expired 90s ago", token: k.Token(t, testkit.Claims(iss, "exp", testkit.Now.Add(-90*time.Second).Unix())), want: service.ReasonExpired,
			message:  "token expired 1m30s ago (exp " + testkit.Now.Add(-90*time.Second).Format(time.RFC3339) + ", leeway 30s)",
			contains: []string{"1m30s ago", "leeway of 30s"},
		},
		{
			name: "expired with a configured leeway", token: k.Token(t, testkit.Claims(slow.Issuer, "exp", testkit.Now.Add(-2*time.Hour).Unix())), want: service.ReasonExpired,
			contains: []string{"2h0m0s ago", "leeway of 45s"},
		},
		{
			name: "issued in the future", token: k.Token(t, testkit.Claims(iss, "iat", testkit.Now.Add(10*time.Minute).Unix())), want: service.ReasonNotYetValid,
			contains: []string{"iat", "10m0s", "clock"},
		},
		{
			name: "unknown kid", token: testkit.Sign(t, map[string]any{"alg": "EdDSA", "kid": "2019-old"}, testkit.Claims(iss), "EdDSA", k.Priv), want: service.ReasonUnknownKey,
			contains: []string{"ed-1", "fetched"},
		},
		{
			name: "ID token", token: k.Token(t, testkit.Claims(iss, "aud", "spa-client", "azp", "spa-client", "nonce", "abc", "scope", testkit.Absent)), want: service.ReasonAudienceMismatch,
			contains: []string{"ID token", "access token", "audience api/users"},
		},
		{
			name: "missing scope", token: k.Token(t, testkit.Claims(iss, "scope", "users.read")), scopes: []string{"users.read", "users.delete"}, want: service.ReasonInsufficientScope,
			message:  "token lacks scope users.delete (granted: users.read)",
			contains: []string{`scope "users.delete"`},
		},
		{
			name: "missing exp", token: k.Token(t, testkit.Claims(iss, "exp", testkit.Absent)), want: service.ReasonMissingClaim,
			contains: []string{"required_claims", "exp"},
		},
		{
			name: "HS256", token: testkit.Sign(t, map[string]any{"alg": "HS256"}, testkit.Claims(iss), "HS256", []byte("secret")), want: service.ReasonUnsupportedAlgorithm,
			contains: []string{"key-confusion", "EdDSA"},
		},
		{
			name: "JWE", token: testkit.Segment(t, map[string]any{"alg": "dir", "enc": "A128GCM"}) + "..YQ.YQ.YQ", want: service.ReasonMalformed,
			contains: []string{"encrypted"},
		},
		{
			name: "keys unavailable", token: k.Token(t, testkit.Claims(down)), want: service.ReasonKeysUnavailable,
			contains: []string{"not the token's fault", down + "/keys.json"},
		},
		{
			name: "aud in decomposed Unicode", token: k.Token(t, testkit.Claims(iss, "aud", "api/cafe\u0301")), audience: "api/caf\u00e9", want: service.ReasonAudienceMismatch,
			contains: []string{"NFC vs NFD"},
		},
		{
			name: "aud in fullwidth letters", token: k.Token(t, testkit.Claims(iss, "aud", "\uff41\uff50\uff49/users")), want: service.ReasonAudienceMismatch,
			contains: []string{"look-alike", "NFKC"},
		},
		{
			name: "aud with an explicit default port", token: k.Token(t, testkit.Claims(iss, "aud", "https://api.example.com:443/users")), audience: "https://api.example.com/users", want: service.ReasonAudienceMismatch,
			contains: []string{"the port", `"443"`},
		},
		{
			name: "aud percent-encoded", token: k.Token(t, testkit.Claims(iss, "aud", "api%2Fusers")), want: service.ReasonAudienceMismatch,
			contains: []string{"percent-encoding"},
		},
		{
			name: "aud of an unregistered API", token: k.Token(t, testkit.Claims(iss, "aud", "api/other")), audience: "api/invoices", want: service.ReasonAudienceMismatch,
			hint: `this token was issued for api/other; ask the issuer for a token with audience api/invoices (OAuth 2.0 "audience" or RFC 8707 "resource" parameter)`,
		},
		{
			name: "iss unknown names the closest trusted issuer", token: k.Token(t, testkit.Claims("https://slow.usher.tst")), want: service.ReasonUntrustedIssuer,
			contains: []string{`closest trusted issuer is "https://slow.usher.test"`},
		},
		{
			name: "expired just beyond the leeway suggests clock skew", token: k.Token(t, testkit.Claims(iss, "exp", testkit.Now.Add(-45*time.Second).Unix())), want: service.ReasonExpired,
			contains: []string{"45s ago", "missed by only 15s", "clocks disagree"},
		},
		{
			name: "not yet valid by a little is clock skew", token: k.Token(t, testkit.Claims(iss, "nbf", testkit.Now.Add(90*time.Second).Unix())), want: service.ReasonNotYetValid,
			contains: []string{"nbf", "1m30s", "clock skew"},
		},
		{
			name: "not yet valid by a lot is not clock skew", token: k.Token(t, testkit.Claims(iss, "nbf", testkit.Now.Add(3*time.Hour).Unix())), want: service.ReasonNotYetValid,
			contains: []string{"far more than clock skew"},
		},
		{
			name: "wrong token type", token: k.Token(t, testkit.Claims(typed.Issuer)), want: service.ReasonWrongTokenType,
			contains: []string{`typ "at+jwt"`, "access token"},
		},
		{
			name: "ID token where at+jwt is required", token: k.Token(t, testkit.Claims(typed.Issuer, "nonce", "n-1", "at_hash", "x")), want: service.ReasonWrongTokenType,
			contains: []string{"ID token", "send the access token"},
		},
		{
			name: "kid of another environment", token: testkit.Sign(t, map[string]any{"alg": "EdDSA", "kid": "prod-1"}, testkit.Claims(iss), "EdDSA", prodKey.Priv), want: service.ReasonUnknownKey,
			contains: []string{"ed-1", prod.URL() + " publishes that kid", "another environment"},
		},
		{
			name: "five segments", token: "a.b.c.d.e", want: service.ReasonMalformed,
			contains: []string{"encrypted"},
		},
		{
			name: "forged", token: k.Like(t, "ed-1").Token(t, testkit.Claims(iss)), want: service.ReasonInvalidSignature,
			contains: []string{"fresh token", iss},
		},
		// MALFORMED: the hint follows the kind of defect, whatever the message says.
		{
			name: "exp a string", token: k.Token(t, testkit.Claims(iss, "exp", "tomorrow")), want: service.ReasonMalformed,
			contains: []string{"wrong JSON type", "RFC 7519 §4.1"},
		},
		{
			name: "exp a negative number", token: k.Token(t, testkit.Claims(iss, "exp", -1)), want: service.ReasonMalformed,
			message:  "malformed token: payload: exp is -1, not a date between 1970 and 9999",
			contains: []string{"not a date", "NumericDate"},
		},
		{
			name: "empty payload segment", token: testkit.Segment(t, map[string]any{"alg": "EdDSA"}) + "..YQ", want: service.ReasonMalformed,
			hint: "send the compact JWS exactly as the issuer returned it (three base64url segments joined by dots), without quotes, line breaks or URL encoding",
		},
		{
			name: "payload not an object", token: testkit.Sign(t, map[string]any{"alg": "EdDSA", "kid": "ed-1"}, []byte(`"a string"`), "EdDSA", k.Priv), want: service.ReasonMalformed,
			contains: []string{"three base64url segments"},
		},
		{
			name: "kid a number", token: testkit.Sign(t, map[string]any{"alg": "EdDSA", "kid": 7}, testkit.Claims(iss), "EdDSA", k.Priv), want: service.ReasonMalformed,
			contains: []string{"header parameter", "RFC 7515"},
		},
		{
			name: "crit", token: testkit.Sign(t, map[string]any{"alg": "EdDSA", "kid": "ed-1", "crit": []string{"exp"}}, testkit.Claims(iss), "EdDSA", k.Priv), want: service.ReasonMalformed,
			contains: []string{"extension", "crit"},
		},
		{
			name: "over the size limit", token: strings.Repeat("A", service.DefaultMaxTokenBytes+1), want: service.ReasonMalformed,
			contains: []string{"this large"},
		},
	})
}

// hintCase is a token, what it is validated for, and what the verdict
// must say.
type hintCase struct {
	name     string
	token    string
	audience string // default api/users
	scopes   []string
	want     service.Reason
	message  string   // exact, when set
	hint     string   // exact, when set
	contains []string // in the hint
	absent   []string // in neither the message nor the hint
	says     []string // in the message
}

func runHintCases(t *testing.T, v *service.Validator, cases []hintCase) {
	t.Helper()
	ctx := testkit.Context(t)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			aud := c.audience
			if aud == "" {
				aud = "api/users"
			}
			got := v.Validate(ctx, c.token, aud, c.scopes)
			checkVerdict(t, got, c.want)
			if c.message != "" && got.Message != c.message {
				t.Errorf("message = %q, want %q", got.Message, c.message)
			}
			if c.hint != "" && got.Hint != c.hint {
				t.Errorf("hint = %q, want %q", got.Hint, c.hint)
			}
			for _, w := range c.contains {
				if !strings.Contains(got.Hint, w) {
					t.Errorf("hint %q does not contain %q", got.Hint, w)
				}
			}
			for _, w := range c.says {
				if !strings.Contains(got.Message, w) {
					t.Errorf("message %q does not contain %q", got.Message, w)
				}
			}
			for _, w := range c.absent {
				if strings.Contains(got.Message, w) || strings.Contains(got.Hint, w) {
					t.Errorf("message %q or hint %q contains %q", got.Message, got.Hint, w)
				}
			}
		})
	}
}

// What a token is, said from what it carries: an ID token (naming only the
// evidence present), an empty audience; and a blank expected audience is
// the caller's bug.
func TestHints_WhatItIs(t *testing.T) {
	ctx := testkit.Context(t)
	k := testkit.EdKey(t, "ed-1")
	ti := testkit.NewIssuer(t, k)
	typed := issuerConfig(ti, time.Minute)
	typed.Issuer, typed.TokenType = "https://typed.usher.test", "at+jwt"
	v := newValidator(t, ctx, issuerConfig(ti, time.Minute), typed)
	waitTried(ctx, t, v)
	iss := ti.URL()
	runHintCases(t, v, []hintCase{
		// ID tokens: the hint names only the evidence the token carries.
		{
			name: "ID token addressed to its client, without nonce", token: k.Token(t, testkit.Claims(iss, "aud", "spa-client", "azp", "spa-client", "scope", testkit.Absent)), want: service.ReasonAudienceMismatch,
			contains: []string{"ID token", `it is addressed to its own client "spa-client" (aud = azp)`, "it has no scope"},
			absent:   []string{"nonce", "at_hash"},
		},
		{
			name: "ID token with nonce and a scope", token: k.Token(t, testkit.Claims(iss, "aud", "spa-client", "nonce", "n-1")), want: service.ReasonAudienceMismatch,
			contains: []string{"ID token (it carries nonce)"},
			absent:   []string{"at_hash", "no scope", "addressed"},
		},
		{
			name: "ID token with at_hash where at+jwt is required", token: k.Token(t, testkit.Claims(typed.Issuer, "at_hash", "x")), want: service.ReasonWrongTokenType,
			contains: []string{"ID token (it carries at_hash)"},
			absent:   []string{"nonce", "no scope", "addressed"},
		},
		// Audiences shown as they are, an empty one too.
		{
			name: "empty aud", token: k.Token(t, testkit.Claims(iss, "aud", "")), audience: "api/invoices", want: service.ReasonAudienceMismatch,
			message: `token audience [""] does not include api/invoices`,
			hint:    `this token was issued for "" (an empty string); ask the issuer for a token with audience api/invoices (OAuth 2.0 "audience" or RFC 8707 "resource" parameter)`,
		},
		{
			name: "empty aud among others", token: k.Token(t, testkit.Claims(iss, "aud", []string{"api/users", ""})), audience: "api/invoices", want: service.ReasonAudienceMismatch,
			contains: []string{`Users API (api/users) and "" (an empty string);`},
		},
		// A blank expected audience is a caller's bug: it never matches,
		// not even a token whose aud is as blank.
		{
			name: "single-space expected audience", token: k.Token(t, testkit.Claims(iss, "aud", " ")), audience: " ", want: service.ReasonAudienceMismatch,
			says: []string{"white space only"}, contains: []string{"never matches"},
		},
		{
			name: "tab and no-break space expected audience", token: k.Token(t, testkit.Claims(iss, "aud", "\t\u00a0")), audience: "\t\u00a0", want: service.ReasonAudienceMismatch,
			says: []string{"white space only"}, contains: []string{"never matches"},
		},
	})
}

// Opaque (reference) tokens are no JWS at all, and the hint says so and how
// to get a JWT; a JWS mangled in transit is not called opaque.
func TestHints_Opaque(t *testing.T) {
	ctx := testkit.Context(t)
	k := testkit.EdKey(t, "ed-1")
	ti := testkit.NewIssuer(t, k)
	v := newValidator(t, ctx, issuerConfig(ti, time.Minute))
	iss := ti.URL()
	runHintCases(t, v, []hintCase{
		{
			name: "opaque token of one segment (node-oidc-provider)", token: "Bearer " + opaqueNodeOIDC, want: service.ReasonMalformed,
			says:     []string{"not a JWT", "43 characters without a dot", "opaque"},
			contains: []string{"opaque (reference) access token", "strategies.access_token: jwt", "RFC 8707", "introspection"},
			absent:   []string{"exactly as the issuer returned it", opaqueNodeOIDC},
		},
		{
			name: "opaque Ory access token", token: opaqueOry, want: service.ReasonMalformed,
			says:     []string{"not a JWT", "2 segments", "ory_at_ is Ory's prefix of an opaque access token"},
			contains: []string{"opaque (reference) access token", "strategies.access_token: jwt"},
			absent:   []string{"exactly as the issuer returned it", opaqueOry},
		},
		{
			name: "opaque token in RFC 6750's b64token alphabet", token: "mF_9.B5f-4.1JqM+/x~y==", want: service.ReasonMalformed,
			contains: []string{"opaque (reference) access token"},
		},
		{
			name: "Ory refresh token", token: "ory_rt_" + opaqueNodeOIDC + "." + opaqueNodeOIDC, want: service.ReasonMalformed,
			says: []string{"refresh token"}, contains: []string{"opaque"},
		},
		{
			name: "header and payload without signature is no opaque token", token: strings.Join(segments(k.Token(t, testkit.Claims(iss)))[:2], "."), want: service.ReasonMalformed,
			contains: []string{"exactly as the issuer returned it"}, absent: []string{"opaque"},
		},
		{
			name: "a lone JWS header is no opaque token", token: segments(k.Token(t, testkit.Claims(iss)))[0], want: service.ReasonMalformed,
			contains: []string{"exactly as the issuer returned it"}, absent: []string{"opaque"},
		},
		{
			name: "the Bearer scheme alone is no opaque token", token: "Bearer", want: service.ReasonMalformed,
			absent: []string{"opaque"},
		},
		{
			name: "a quoted opaque token is a transport problem", token: `"` + opaqueNodeOIDC + `"`, want: service.ReasonMalformed,
			contains: []string{"without quotes"}, absent: []string{"opaque"},
		},
	})
}

// Opaque tokens as two identity providers issue them by default: one
// random segment (node-oidc-provider), and Ory Hydra's prefixed key and
// signature.
const (
	opaqueNodeOIDC = "Zs0fJ9aEq3x1rT8vK2mWnB6yHcD4pLuQ7gNiVoR5ekA"
	opaqueOry      = "ory_at_kT3pX0vY9wQ2mN8bR4cJ6hL1sD5fG7aZ0uE2iO3yW4.q8sV1nB3mK5xZ7cL9jH2gF4dS6aP0oI8uY1tR3eW5"
)

func TestInspect(t *testing.T) {
	ctx := testkit.Context(t)
	k := testkit.RSAKey(t, "rsa-1")
	ti := testkit.NewIssuer(t, k)
	v := newValidator(t, ctx, issuerConfig(ti, time.Minute))
	iss := ti.URL()
	users := service.KnownAudience{Audience: "api/users", Name: "Users API"}
	invoices := service.KnownAudience{Audience: "api/invoices", Name: "Invoices API"}

	t.Run("valid", func(t *testing.T) {
		in := v.Inspect(ctx, "Bearer "+k.Token(t, testkit.Claims(iss)))
		if in.Signature != service.ReasonValid || !slices.Equal(in.Audiences, []service.KnownAudience{users}) {
			t.Fatalf("inspection %+v", in)
		}
		if in.Header["kid"] != "rsa-1" || in.Header["alg"] != "RS256" || in.Claims == nil || in.Claims.Subject != "user-42" || in.Claims.KeyID != "rsa-1" {
			t.Fatalf("header %v claims %+v", in.Header, in.Claims)
		}
		if !strings.Contains(in.Message, "Users API (api/users)") || !strings.Contains(in.Message, `"rsa-1"`) {
			t.Fatalf("message %q", in.Message)
		}
	})
	t.Run("two audiences", func(t *testing.T) {
		in := v.Inspect(ctx, k.Token(t, testkit.Claims(iss, "aud", []string{"api/invoices", "api/users"})))
		if in.Signature != service.ReasonValid || !slices.Equal(in.Audiences, []service.KnownAudience{users, invoices}) {
			t.Fatalf("inspection %+v", in)
		}
	})
	t.Run("forged", func(t *testing.T) {
		in := v.Inspect(ctx, k.Like(t, "rsa-1").Token(t, testkit.Claims(iss, "sub", "admin")))
		if in.Signature != service.ReasonInvalidSignature || len(in.Audiences) != 0 {
			t.Fatalf("inspection %+v", in)
		}
		if in.Claims == nil || in.Claims.Subject != "admin" || !slices.Equal(in.Claims.Audience, []string{"api/users"}) || in.Header["kid"] != "rsa-1" {
			t.Fatalf("claims of a forged token not decoded: %+v", in.Claims)
		}
		if in.Message == "" || in.Hint == "" {
			t.Fatalf("no diagnosis: %+v", in)
		}
	})
	t.Run("expired", func(t *testing.T) {
		in := v.Inspect(ctx, k.Token(t, testkit.Claims(iss, "exp", testkit.Now.Add(-time.Hour).Unix())))
		if in.Signature != service.ReasonValid || len(in.Audiences) != 0 || !strings.Contains(in.Message, "expired") {
			t.Fatalf("inspection %+v", in)
		}
	})
	t.Run("alg none", func(t *testing.T) {
		in := v.Inspect(ctx, testkit.Segment(t, map[string]any{"alg": "none"})+"."+testkit.Segment(t, testkit.Claims(iss))+".")
		if in.Signature != service.ReasonUnsupportedAlgorithm || len(in.Audiences) != 0 || in.Claims == nil || in.Claims.Issuer != iss {
			t.Fatalf("inspection %+v", in)
		}
	})
	t.Run("malformed", func(t *testing.T) {
		in := v.Inspect(ctx, "not.a.token")
		if in.Signature != service.ReasonMalformed || in.Claims != nil || in.Header != nil || in.Message == "" {
			t.Fatalf("inspection %+v", in)
		}
	})
}

// An unknown kid while the refetch cools down, right after a rotation: the
// hint says how old the key set is and when a retry refetches it, not that
// the key was never published; the retry after the cooldown verifies.
func TestHints_UnknownKIDDuringCooldown(t *testing.T) {
	ctx := testkit.Context(t)
	old, rotated := testkit.EdKey(t, "2026-01"), testkit.EdKey(t, "2026-02")
	ti := testkit.NewIssuer(t, old)
	clock := testkit.NewClock()
	v := testkit.NewValidator(t, ctx, clock, []service.IssuerConfig{issuerConfig(ti, time.Minute)})
	waitTried(ctx, t, v)
	fetched := v.Issuers()[0].Fetches
	forceRefresh(ctx, t, v, clock, 0, ti, old) // the cooldown starts now
	testkit.Eventually(ctx, t, "key set refetched", func() bool { return v.Issuers()[0].Fetches > fetched })

	ti.Publish(old, rotated)
	clock.Advance(12 * time.Second)
	tok := rotated.Token(t, testkit.Claims(ti.URL()))
	requests := ti.Requests.Load()
	got := v.Validate(ctx, tok, "api/users", nil)
	checkVerdict(t, got, service.ReasonUnknownKey)
	if ti.Requests.Load() != requests {
		t.Fatal("the key set was refetched within the cooldown")
	}
	for _, w := range []string{"2026-01 in the key set usher fetched 12s ago", "may not be in it yet", "unknown_kid_cooldown (1m0s)", "retry in 48s"} {
		if !strings.Contains(got.Hint, w) {
			t.Errorf("hint %q does not contain %q", got.Hint, w)
		}
	}
	if strings.Contains(got.Hint, "never") {
		t.Errorf("hint %q says the key was never published", got.Hint)
	}

	clock.Advance(48 * time.Second)
	checkVerdict(t, v.Validate(ctx, tok, "api/users", nil), service.ReasonValid)
}

// The issuer asked for no fetch (Retry-After): the hint names that wait.
func TestHints_UnknownKIDDuringRetryAfter(t *testing.T) {
	ctx := testkit.Context(t)
	k := testkit.EdKey(t, "2026-01")
	ti := testkit.NewIssuer(t, k)
	clock := testkit.NewClock()
	v := testkit.NewValidator(t, ctx, clock, []service.IssuerConfig{issuerConfig(ti, time.Second)})
	waitTried(ctx, t, v)
	ti.Handle(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Retry-After", "120")
		w.WriteHeader(http.StatusServiceUnavailable)
	})
	forceRefresh(ctx, t, v, clock, time.Second, ti, k)
	testkit.Eventually(ctx, t, "the failed fetch recorded", func() bool { return v.Issuers()[0].Failures > 0 })
	clock.Advance(20 * time.Second)
	got := v.Validate(ctx, testkit.Sign(t, map[string]any{"alg": "EdDSA", "kid": "2026-02"}, testkit.Claims(ti.URL()), "EdDSA", k.Priv), "api/users", nil)
	checkVerdict(t, got, service.ReasonUnknownKey)
	for _, w := range []string{"fetched 21s ago", "Retry-After", "retry in 1m40s"} {
		if !strings.Contains(got.Hint, w) {
			t.Errorf("hint %q does not contain %q", got.Hint, w)
		}
	}
}

// A token without kid is checked with the issuer's only key of its
// algorithm: messages name that key, never key "".
func TestHints_TokenWithoutKID(t *testing.T) {
	ctx := testkit.Context(t)
	named, unnamed := testkit.RSAKey(t, "rsa-1"), testkit.RSAKey(t, "")
	withKID, withoutKID := testkit.NewIssuer(t, named), testkit.NewIssuer(t, unnamed)
	v := newValidator(t, ctx, issuerConfig(withKID, time.Minute), issuerConfig(withoutKID, time.Minute))
	waitTried(ctx, t, v)
	forger := named.Like(t, "")
	kidless := func(iss string, k *testkit.Key) string {
		return testkit.Sign(t, map[string]any{"alg": "RS256"}, testkit.Claims(iss), "RS256", k.Priv)
	}
	for _, c := range []struct {
		name, token string
		want        service.Reason
		says        string
	}{
		{"forged, the issuer's key has a kid", kidless(withKID.URL(), forger), service.ReasonInvalidSignature, `the issuer's only RS256 key (kid "rsa-1") of ` + withKID.URL() + " (the token names no kid)"},
		{"forged, the issuer's key has none", kidless(withoutKID.URL(), forger), service.ReasonInvalidSignature, "the issuer's only RS256 key (it has no kid) of " + withoutKID.URL()},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := v.Validate(ctx, c.token, "api/users", nil)
			checkVerdict(t, got, c.want)
			if !strings.Contains(got.Message, c.says) || strings.Contains(got.Message, `key ""`) {
				t.Errorf("message %q, want it to contain %q", got.Message, c.says)
			}
			if strings.Contains(got.Hint, "reuses this kid") {
				t.Errorf("hint %q speaks of a kid the token does not have", got.Hint)
			}
		})
	}
	in := v.Inspect(ctx, kidless(withoutKID.URL(), unnamed))
	if in.Signature != service.ReasonValid || strings.Contains(in.Message, `key ""`) || !strings.Contains(in.Message, "the issuer's only RS256 key (it has no kid)") {
		t.Errorf("inspection %+v", in)
	}
}

// An unknown kid whose refetch has not finished when the call stops waiting
// for it: the hint says a refetch is under way, and to retry shortly.
func TestHints_UnknownKIDDuringRefetch(t *testing.T) {
	ctx := testkit.Context(t)
	k := testkit.EdKey(t, "2026-01")
	ti := testkit.NewIssuer(t, k)
	clock := testkit.NewClock()
	v := testkit.NewValidator(t, ctx, clock, []service.IssuerConfig{issuerConfig(ti, time.Minute)}, service.WithKeyWait(20*time.Millisecond, 0))
	waitTried(ctx, t, v)
	release := make(chan struct{})
	ti.Handle(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
		w.WriteHeader(http.StatusServiceUnavailable)
	})
	defer close(release)
	clock.Advance(5 * time.Second)
	got := v.Validate(ctx, testkit.Sign(t, map[string]any{"alg": "EdDSA", "kid": "2026-02"}, testkit.Claims(ti.URL()), "EdDSA", k.Priv), "api/users", nil)
	checkVerdict(t, got, service.ReasonUnknownKey)
	for _, w := range []string{"fetched 5s ago", "has not finished", "retry shortly"} {
		if !strings.Contains(got.Hint, w) {
			t.Errorf("hint %q does not contain %q", got.Hint, w)
		}
	}
}
