package interop

import (
	"crypto/rand"
	"slices"
	"strings"
	"testing"
	"time"

	usherv1 "github.com/usher-dev/usher/proto/usher/v1"
)

const (
	// keysWait bounds usher's first key fetch and a scheduled refresh
	// (refresh_interval 1s) on a loaded machine.
	keysWait = 30 * time.Second
	// cacheTTL and negTTL are usher's introspection cache_ttl and
	// negative_cache_ttl in these tests; seenMargin is what a change at the
	// provider may take beyond them to show (one introspection call, bounded
	// by its 2s timeout, on a loaded machine).
	cacheTTL   = 2 * time.Second
	negTTL     = time.Second
	seenMargin = 5 * time.Second
)

var firstKeys = []string{"rsa-1", "ec-1", "ed-1"}

func opaqueConfig(secret string) usherConfig {
	return usherConfig{tokenType: "at+jwt", secret: secret, cacheTTL: cacheTTL.String(), negTTL: negTTL.String()}
}

// RFC 9068 JWT access tokens for a resource indicator, checked through usher
// with the issuer found by discovery.
func TestJWTAccessTokens(t *testing.T) {
	p := startProvider(t)
	u := startUsher(t, p, usherConfig{tokenType: "at+jwt"})
	u.WaitKeys(t, keysWait, firstKeys...)
	users := p.ClientCredentials(t, usersAPI, "users:read")

	t.Run("VALID at its API", func(t *testing.T) {
		r := u.Validate(t, users, usersAPI, "users:read")
		expect(t, "users token at the Users API", r, usherv1.Reason_REASON_VALID)
		c := r.GetClaims()
		if c.GetIssuer() != p.Issuer || !slices.Equal(c.GetAudience(), []string{usersAPI}) || c.GetClientId() != "caller" ||
			c.GetAlgorithm() != "RS256" || c.GetKeyId() != "rsa-1" || c.GetTokenType() != "at+jwt" || c.GetTokenFormat() != "jwt" ||
			!slices.Equal(c.GetScopes(), []string{"users:read"}) {
			t.Errorf("claims = %v", c)
		}
	})
	t.Run("AUDIENCE_MISMATCH at another API names the registered API", func(t *testing.T) {
		r := u.Validate(t, users, invoicesAPI)
		expect(t, "users token at the Invoices API", r, usherv1.Reason_REASON_AUDIENCE_MISMATCH)
		expectHint(t, "audience mismatch", r, "Users API", usersAPI, invoicesAPI, "resource")
		if m := r.GetMismatch(); m.GetClaim() != "aud" || !slices.Equal(m.GetExpected(), []string{invoicesAPI}) || !slices.Equal(m.GetActual(), []string{usersAPI}) {
			t.Errorf("mismatch = %v", m)
		}
	})
	t.Run("INSUFFICIENT_SCOPE", func(t *testing.T) {
		r := u.Validate(t, users, usersAPI, "users:write")
		expect(t, "users:read token where users:write is required", r, usherv1.Reason_REASON_INSUFFICIENT_SCOPE)
	})
	t.Run("PS256 ES256 EdDSA", func(t *testing.T) {
		for _, c := range []struct{ api, alg, kid string }{{ps256API, "PS256", "rsa-1"}, {es256API, "ES256", "ec-1"}, {eddsaAPI, "EdDSA", "ed-1"}} {
			tok := p.ClientCredentials(t, c.api)
			r := u.Validate(t, tok, c.api)
			expect(t, c.alg+" token", r, usherv1.Reason_REASON_VALID)
			if r.GetClaims().GetAlgorithm() != c.alg || r.GetClaims().GetKeyId() != c.kid {
				t.Errorf("%s token: algorithm %q key %q, want %s %s", c.alg, r.GetClaims().GetAlgorithm(), r.GetClaims().GetKeyId(), c.alg, c.kid)
			}
		}
	})
	t.Run("ID token sent as an access token", func(t *testing.T) {
		id := p.IDToken(t)
		// token_type at+jwt: the ID token's typ (none) is the first failure.
		r := u.Validate(t, id, usersAPI)
		expect(t, "ID token, issuer with token_type at+jwt", r, usherv1.Reason_REASON_WRONG_TOKEN_TYPE)
		expectHint(t, "ID token, token_type", r, "ID token", "nonce")
		// Without token_type its audience (the web client) is.
		plain := startUsher(t, p, usherConfig{})
		plain.WaitKeys(t, keysWait, firstKeys...)
		r = plain.Validate(t, id, usersAPI)
		expect(t, "ID token, issuer without token_type", r, usherv1.Reason_REASON_AUDIENCE_MISMATCH)
		expectHint(t, "ID token, audience", r, "ID token", "nonce")
		if !slices.Equal(r.GetMismatch().GetActual(), []string{"web"}) {
			t.Errorf("mismatch actual = %v, want the web client", r.GetMismatch().GetActual())
		}
	})
}

// Key rotation at the provider: a token signed with a new key is VALID at
// once (usher refetches for the unknown kid); once the old key is removed,
// its tokens are UNKNOWN_KEY after usher's next scheduled refresh.
func TestKeyRotation(t *testing.T) {
	p := startProvider(t)
	u := startUsher(t, p, usherConfig{tokenType: "at+jwt", refreshInterval: "1s"})
	u.WaitKeys(t, keysWait, firstKeys...)
	old := p.ClientCredentials(t, usersAPI)
	expect(t, "token of the first key", u.Validate(t, old, usersAPI), usherv1.Reason_REASON_VALID)

	if kids := p.Command(t, "rotate"); !slices.Contains(kids, "rsa-2") || !slices.Contains(kids, "rsa-1") {
		t.Fatalf("after rotate the provider publishes %v, want rsa-2 beside rsa-1", kids)
	}
	fresh := p.ClientCredentials(t, usersAPI)
	if kid := header(t, fresh)["kid"]; kid != "rsa-2" {
		t.Fatalf("after rotate the provider signs with %v, want rsa-2", kid)
	}
	r := u.Validate(t, fresh, usersAPI)
	expect(t, "token of the new key", r, usherv1.Reason_REASON_VALID)
	if r.GetClaims().GetKeyId() != "rsa-2" {
		t.Errorf("new token verified with key %q, want rsa-2", r.GetClaims().GetKeyId())
	}
	expect(t, "token of the old key while it is still published", u.Validate(t, old, usersAPI), usherv1.Reason_REASON_VALID)

	if kids := p.Command(t, "retire"); slices.Contains(kids, "rsa-1") {
		t.Fatalf("after retire the provider still publishes %v", kids)
	}
	r = u.ValidateUntil(t, keysWait, usherv1.Reason_REASON_UNKNOWN_KEY, old, usersAPI)
	if !strings.Contains(r.GetMessage(), "rsa-1") {
		t.Errorf("old key removed: message does not name the token's kid rsa-1: %s", r.GetMessage())
	}
	expectHint(t, "old key removed: the keys published now", r, "rsa-2")
	expect(t, "token of the new key after the old one left", u.Validate(t, fresh, usersAPI), usherv1.Reason_REASON_VALID)
}

// Opaque access tokens, answered through the provider's introspection
// endpoint (found by discovery) with the same verdicts as JWTs.
func TestOpaqueTokens(t *testing.T) {
	p := startProvider(t)
	u := startUsher(t, p, opaqueConfig(p.secrets["usher"]))
	u.WaitKeys(t, keysWait, firstKeys...)
	orders := p.ClientCredentials(t, ordersAPI, "orders:read")
	requireOpaque(t, orders)

	t.Run("VALID at its API", func(t *testing.T) {
		r := u.Validate(t, orders, ordersAPI, "orders:read")
		expect(t, "opaque orders token at the Orders API", r, usherv1.Reason_REASON_VALID)
		c := r.GetClaims()
		if c.GetTokenFormat() != "opaque" || c.GetIssuer() != p.Issuer || !slices.Equal(c.GetAudience(), []string{ordersAPI}) ||
			c.GetClientId() != "caller" || !slices.Equal(c.GetScopes(), []string{"orders:read"}) || c.GetExpiresAt() == nil {
			t.Errorf("claims = %v", c)
		}
	})
	t.Run("AUDIENCE_MISMATCH at another API names the registered API", func(t *testing.T) {
		r := u.Validate(t, orders, usersAPI)
		expect(t, "opaque orders token at the Users API", r, usherv1.Reason_REASON_AUDIENCE_MISMATCH)
		expectHint(t, "opaque audience mismatch", r, "Orders API", ordersAPI, usersAPI)
	})
	t.Run("INSUFFICIENT_SCOPE", func(t *testing.T) {
		r := u.Validate(t, orders, ordersAPI, "orders:write")
		expect(t, "orders:read token where orders:write is required", r, usherv1.Reason_REASON_INSUFFICIENT_SCOPE)
	})
	t.Run("no resource indicator: opaque and without audience", func(t *testing.T) {
		bare := p.ClientCredentials(t, "")
		requireOpaque(t, bare)
		r := u.Validate(t, bare, ordersAPI)
		expect(t, "token asked for without resource", r, usherv1.Reason_REASON_AUDIENCE_MISMATCH)
		expectHint(t, "no audience", r, "resource")
	})
	t.Run("INACTIVE when never issued", func(t *testing.T) {
		r := u.Validate(t, rand.Text()+rand.Text(), ordersAPI)
		expect(t, "an opaque token the provider never issued", r, usherv1.Reason_REASON_INACTIVE)
	})
	t.Run("opaque even when it begins like a JSON header", func(t *testing.T) {
		// The provider's opaque tokens are 43 random base64url characters:
		// one in 256 begins with "e" and one of "wxyz0-9-_", whose first
		// byte decodes to '{' as a JWS header's does. It is still opaque
		// and goes to introspection, which says it was never issued.
		tok := "ew" + rand.Text() + rand.Text()[:15]
		r := u.Validate(t, tok, ordersAPI)
		expect(t, "an opaque token beginning with \"ew\"", r, usherv1.Reason_REASON_INACTIVE)
	})
	t.Run("INACTIVE after revocation, within cache_ttl", func(t *testing.T) {
		tok := p.ClientCredentials(t, ordersAPI, "orders:read")
		expect(t, "before revocation", u.Validate(t, tok, ordersAPI), usherv1.Reason_REASON_VALID)
		p.Revoke(t, tok)
		r := u.ValidateUntil(t, cacheTTL+seenMargin, usherv1.Reason_REASON_INACTIVE, tok, ordersAPI)
		expectHint(t, "revoked", r, "revoked")
	})
	t.Run("ISSUER_UNAVAILABLE when usher's own credentials are wrong", func(t *testing.T) {
		wrong := startUsher(t, p, opaqueConfig("not-the-secret-"+rand.Text()))
		r := wrong.Validate(t, orders, ordersAPI)
		expect(t, "usher with a wrong introspection secret", r, usherv1.Reason_REASON_ISSUER_UNAVAILABLE)
		expectHint(t, "wrong credentials", r, "credentials", "client_secret_file")
	})
}

// With the provider stopped, an opaque token whose answer is not cached is
// ISSUER_UNAVAILABLE (fail closed); one cached is so once its entry expires;
// a JWT is still VALID from the cached key set.
func TestIssuerUnavailable(t *testing.T) {
	p := startProvider(t)
	u := startUsher(t, p, opaqueConfig(p.secrets["usher"]))
	u.WaitKeys(t, keysWait, firstKeys...)
	jwt := p.ClientCredentials(t, usersAPI)
	cached := p.ClientCredentials(t, ordersAPI)
	uncached := p.ClientCredentials(t, ordersAPI)
	expect(t, "JWT before the stop", u.Validate(t, jwt, usersAPI), usherv1.Reason_REASON_VALID)
	expect(t, "opaque token before the stop", u.Validate(t, cached, ordersAPI), usherv1.Reason_REASON_VALID)

	p.Stop(t)
	r := u.Validate(t, uncached, ordersAPI)
	expect(t, "uncached opaque token, provider stopped", r, usherv1.Reason_REASON_ISSUER_UNAVAILABLE)
	if r.GetHint() == "" {
		t.Error("ISSUER_UNAVAILABLE without a hint")
	}
	u.ValidateUntil(t, cacheTTL+seenMargin, usherv1.Reason_REASON_ISSUER_UNAVAILABLE, cached, ordersAPI)
	expect(t, "JWT with the provider stopped", u.Validate(t, jwt, usersAPI), usherv1.Reason_REASON_VALID)
}
