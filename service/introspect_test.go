package service_test

import (
	"crypto/rand"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/usher-dev/usher/internal/testkit"
	"github.com/usher-dev/usher/service"
)

// opaqueToken is a fresh opaque (reference) token: prefix and 26 random
// base32 characters.
func opaqueToken(prefix string) string { return prefix + rand.Text() }

// opaqueEngine is a validator (clock at testkit.Now) trusting one issuer of
// opaque tokens, whose endpoint is s; change adjusts the issuer's config.
func opaqueEngine(t *testing.T, s *testkit.IntrospectionServer, change func(*service.IssuerConfig), opts ...service.Option) (*service.Validator, *testkit.Clock) {
	t.Helper()
	clock := testkit.NewClock()
	cfg := s.Config(t)
	if change != nil {
		change(&cfg)
	}
	return testkit.NewValidator(t, testkit.Context(t), clock, []service.IssuerConfig{cfg}, opts...), clock
}

// TestIntrospection_Verdicts: the checks after the signature run on the
// introspection answer's claims with the reasons, mismatch values and
// hints of a JWT; the claims say "opaque", carry the answer's token_type
// and every member of the answer.
func TestIntrospection_Verdicts(t *testing.T) {
	s := testkit.NewIntrospectionServer(t)
	v, _ := opaqueEngine(t, s, nil)
	ctx := testkit.Context(t)
	iss := s.URL()
	issue := func(kv ...any) string {
		tok := opaqueToken("")
		s.Activate(tok, testkit.Claims(iss, append([]any{"token_type", "Bearer", "username", "ada"}, kv...)...))
		return tok
	}

	t.Run("valid", func(t *testing.T) {
		got := v.Validate(ctx, "Bearer "+issue(), "api/users", []string{"users.read"})
		checkVerdict(t, got, service.ReasonValid)
		c := got.Claims
		if c.TokenFormat != "opaque" || c.TokenType != "Bearer" || c.Issuer != iss || c.Subject != "user-42" || c.ClientID != "frontend" ||
			!slices.Equal(c.Audience, []string{"api/users"}) || !slices.Equal(c.Scopes, []string{"users.read", "users.write"}) ||
			!c.ExpiresAt.Equal(testkit.Now.Add(time.Hour)) || c.KeyID != "" || c.Algorithm != "" {
			t.Fatalf("claims = %+v", c)
		}
		if c.Raw["active"] != true || c.Raw["username"] != "ada" || c.Raw["jti"] != "jti-1" {
			t.Fatalf("raw = %v: every member of the answer", c.Raw)
		}
	})
	cases := []struct {
		name     string
		tok      string
		audience string
		scopes   []string
		want     service.Reason
		mismatch *service.Mismatch
		contains []string
	}{
		{name: "another API", tok: issue(), audience: "api/invoices", want: service.ReasonAudienceMismatch,
			mismatch: &service.Mismatch{Claim: "aud", Expected: []string{"api/invoices"}, Actual: []string{"api/users"}},
			contains: []string{"issued for Users API (api/users)", "audience api/invoices"}},
		{name: "scope missing", tok: issue(), audience: "api/users", scopes: []string{"users.admin"}, want: service.ReasonInsufficientScope,
			mismatch: &service.Mismatch{Claim: "scope", Expected: []string{"users.admin"}, Actual: []string{"users.read", "users.write"}},
			contains: []string{`scope "users.admin"`}},
		{name: "exp passed", tok: issue("exp", testkit.Now.Add(-time.Hour).Unix()), audience: "api/users", want: service.ReasonExpired,
			contains: []string{"expired 1h0m0s ago", "leeway of 30s"}},
		{name: "nbf ahead", tok: issue("nbf", testkit.Now.Add(time.Hour).Unix()), audience: "api/users", want: service.ReasonNotYetValid},
		{name: "no exp", tok: issue("exp", testkit.Absent), audience: "api/users", want: service.ReasonMissingClaim,
			contains: []string{"introspection answer lacks it", "required_claims"}},
		{name: "a refresh token (Ory's token_use)", tok: issue("token_use", "refresh_token"), audience: "api/users", want: service.ReasonWrongTokenType,
			mismatch: &service.Mismatch{Claim: "token_use", Expected: []string{"access_token"}, Actual: []string{"refresh_token"}},
			contains: []string{"send the access token"}},
		{name: "no audience", tok: issue("aud", testkit.Absent), audience: "api/users", want: service.ReasonAudienceMismatch,
			contains: []string{"names no API"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := v.Validate(ctx, c.tok, c.audience, c.scopes)
			checkVerdict(t, got, c.want)
			if c.mismatch != nil {
				checkMismatch(t, got.Mismatch, c.mismatch)
			}
			for _, want := range c.contains {
				if !strings.Contains(got.Message+" | "+got.Hint, want) {
					t.Errorf("message %q / hint %q lacks %q", got.Message, got.Hint, want)
				}
			}
			if got.Claims.TokenFormat != "opaque" {
				t.Errorf("token format %q", got.Claims.TokenFormat)
			}
		})
	}

	t.Run("the issuer's typ setting does not apply", func(t *testing.T) {
		v, _ := opaqueEngine(t, s, func(c *service.IssuerConfig) { c.TokenType = "at+jwt" })
		checkVerdict(t, v.Validate(ctx, issue(), "api/users", nil), service.ReasonValid)
	})
	t.Run("expired and for another API: both reported", func(t *testing.T) {
		got := v.Validate(ctx, issue("exp", testkit.Now.Add(-time.Hour).Unix()), "api/invoices", nil)
		checkVerdict(t, got, service.ReasonExpired)
		if r := reasons(got.Violations); !slices.Equal(r, []service.Reason{service.ReasonExpired, service.ReasonAudienceMismatch}) {
			t.Fatalf("violations %v", r)
		}
	})
}

// TestIntrospection_AnswerNamesAnotherIssuer: an answer whose iss is not
// the configured issuer is refused (UNTRUSTED_ISSUER, no claims), with both
// values in the hint; an answer without iss is the issuer's.
func TestIntrospection_AnswerNamesAnotherIssuer(t *testing.T) {
	s := testkit.NewIntrospectionServer(t)
	v, _ := opaqueEngine(t, s, nil)
	ctx := testkit.Context(t)
	tok := opaqueToken("")
	s.Activate(tok, testkit.Claims(s.URL()+"/"))
	got := v.Validate(ctx, tok, "api/users", nil)
	checkVerdict(t, got, service.ReasonUntrustedIssuer)
	checkMismatch(t, got.Mismatch, &service.Mismatch{Claim: "iss", Expected: []string{s.URL()}, Actual: []string{s.URL() + "/"}})
	for _, want := range []string{`"` + s.URL() + `/"`, `"` + s.URL() + `"`, "introspection.endpoint"} {
		if !strings.Contains(got.Hint, want) {
			t.Errorf("hint %q lacks %q", got.Hint, want)
		}
	}
	s.Activate(tok, testkit.Claims(s.URL(), "iss", testkit.Absent))
	v2, _ := opaqueEngine(t, s, nil)
	checkVerdict(t, v2.Validate(ctx, tok, "api/users", nil), service.ReasonValid)
}

// TestIntrospection_Revocation: an inactive answer is INACTIVE; a revoked
// token is seen INACTIVE once cache_ttl has passed since the active answer,
// an activated one VALID once negative_cache_ttl has passed since the
// inactive answer; an active answer is never reused past the token's exp.
// The engine's clock drives it all.
func TestIntrospection_Revocation(t *testing.T) {
	s := testkit.NewIntrospectionServer(t)
	v, clock := opaqueEngine(t, s, func(c *service.IssuerConfig) {
		c.Introspection.CacheTTL, c.Introspection.NegativeCacheTTL = 30*time.Second, 5*time.Second
	})
	ctx := testkit.Context(t)
	tok := opaqueToken("")
	check := func(want service.Reason, calls int64) {
		t.Helper()
		got := v.Validate(ctx, tok, "api/users", nil)
		checkVerdict(t, got, want)
		if n := s.Calls.Load(); n != calls {
			t.Fatalf("%d calls to the endpoint, want %d", n, calls)
		}
		if want == service.ReasonInactive && got.Hint != "the issuer says this token is not active: revoked, expired or never issued; get a new token" {
			t.Fatalf("hint %q", got.Hint)
		}
	}
	check(service.ReasonInactive, 1) // never issued
	check(service.ReasonInactive, 1) // the inactive answer, reused
	s.Activate(tok, testkit.Claims(s.URL()))
	clock.Advance(4 * time.Second)
	check(service.ReasonInactive, 1)
	clock.Advance(time.Second) // negative_cache_ttl over
	check(service.ReasonValid, 2)
	s.Revoke(tok)
	clock.Advance(29 * time.Second)
	check(service.ReasonValid, 2) // revocation is seen within cache_ttl, not before
	clock.Advance(time.Second)
	check(service.ReasonInactive, 3)

	t.Run("never past exp", func(t *testing.T) {
		tok := opaqueToken("")
		s.Activate(tok, testkit.Claims(s.URL(), "exp", clock.Now().Add(10*time.Second).Unix()))
		checkVerdict(t, v.Validate(ctx, tok, "api/users", nil), service.ReasonValid)
		s.Revoke(tok)
		clock.Advance(9 * time.Second)
		checkVerdict(t, v.Validate(ctx, tok, "api/users", nil), service.ReasonValid)
		// Past exp, within the leeway: a reused answer would still be valid.
		clock.Advance(2 * time.Second)
		checkVerdict(t, v.Validate(ctx, tok, "api/users", nil), service.ReasonInactive)
	})
}

// TestIntrospection_ClientSecretBasic: usher authenticates with the client
// id and secret form-encoded before base64 (the endpoint decodes them as an
// authorization server does; the secret holds ':', '%', '+', a space and
// non-ASCII), reading the secret file without its line break (LF or CRLF).
// Wrong credentials are ISSUER_UNAVAILABLE saying that usher's own
// credentials are wrong, and the secret appears in no message, hint, last
// error or log line.
func TestIntrospection_ClientSecretBasic(t *testing.T) {
	ctx := testkit.Context(t)
	for _, ending := range []string{"", "\n", "\r\n"} {
		t.Run(fmt.Sprintf("file ending %q", ending), func(t *testing.T) {
			s := testkit.NewIntrospectionServer(t)
			tok := opaqueToken("")
			s.Activate(tok, testkit.Claims(s.URL()))
			v, _ := opaqueEngine(t, s, func(c *service.IssuerConfig) {
				c.Introspection.ClientSecretFile = testkit.WriteFile(t, "secret", []byte(testkit.IntrospectionSecret+ending))
			})
			checkVerdict(t, v.Validate(ctx, tok, "api/users", nil), service.ReasonValid)
		})
	}

	t.Run("wrong secret", func(t *testing.T) {
		s := testkit.NewIntrospectionServer(t)
		tok := opaqueToken("")
		s.Activate(tok, testkit.Claims(s.URL()))
		var logs testkit.SyncBuffer
		wrong := "wr0ng:s3cr%t-" + rand.Text()
		v, _ := opaqueEngine(t, s, func(c *service.IssuerConfig) {
			c.Introspection.ClientSecretFile = testkit.WriteFile(t, "secret", []byte(wrong+"\n"))
		}, service.WithLogger(slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))))
		got := v.Validate(ctx, tok, "api/users", nil)
		checkVerdict(t, got, service.ReasonIssuerUnavailable)
		for _, want := range []string{"usher's own client credentials for introspection are wrong", "introspection.client_id", "client_secret_file", "not the token's fault"} {
			if !strings.Contains(got.Hint, want) {
				t.Errorf("hint %q lacks %q", got.Hint, want)
			}
		}
		if !strings.Contains(got.Message, "HTTP 401 invalid_client") {
			t.Errorf("message %q does not name the 401", got.Message)
		}
		st := v.Issuers()[0]
		for what, text := range map[string]string{"message": got.Message, "hint": got.Hint, "last error": st.IntrospectionError, "log": logs.String()} {
			for _, secret := range []string{wrong, strings.SplitN(wrong, ":", 2)[1], tok} {
				if strings.Contains(text, secret) {
					t.Errorf("the %s shows the secret or the token: %q", what, text)
				}
			}
		}
		if st.IntrospectionError == "" {
			t.Error("ListIssuers shows no introspection error")
		}
	})

	t.Run("secret file missing", func(t *testing.T) {
		s := testkit.NewIntrospectionServer(t)
		cfg := s.Config(t)
		cfg.Introspection.ClientSecretFile = t.TempDir() + "/absent.secret"
		_, err := service.NewValidator(ctx, &service.Config{Issuers: []service.IssuerConfig{cfg}})
		if err == nil || !strings.Contains(err.Error(), "client_secret_file") || !strings.Contains(err.Error(), "absent.secret") {
			t.Fatalf("err = %v", err)
		}
	})
}

// TestIntrospection_SecretReadWhenBuilt: the secret is read when a
// validator is built, so a reload (a new validator) uses a changed file,
// and the running one keeps its own until it is swapped out.
func TestIntrospection_SecretReadWhenBuilt(t *testing.T) {
	ctx := testkit.Context(t)
	s := testkit.NewIntrospectionServer(t)
	tok := opaqueToken("")
	s.Activate(tok, testkit.Claims(s.URL()))
	cfg := s.Config(t)
	clock := testkit.NewClock()
	old := testkit.NewValidator(t, ctx, clock, []service.IssuerConfig{cfg}, service.WithKeyWait(0, 0))
	checkVerdict(t, old.Validate(ctx, tok, "api/users", nil), service.ReasonValid)

	s.SetCredentials(testkit.IntrospectionClientID, "rotated:"+testkit.IntrospectionSecret)
	if err := os.WriteFile(cfg.Introspection.ClientSecretFile, []byte("rotated:"+testkit.IntrospectionSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	renewed := testkit.NewValidator(t, ctx, clock, []service.IssuerConfig{cfg}, service.WithPrevious(old))
	checkVerdict(t, renewed.Validate(ctx, tok, "api/users", nil), service.ReasonValid)
	other := opaqueToken("") // not cached by old
	s.Activate(other, testkit.Claims(s.URL()))
	checkVerdict(t, old.Validate(ctx, other, "api/users", nil), service.ReasonIssuerUnavailable)
}
