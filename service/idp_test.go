package service_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/usher-dev/usher/internal/testkit"
	"github.com/usher-dev/usher/service"
)

// genericFix is the advice for an issuer usher does not recognise.
const genericFix = `(OAuth 2.0 "audience" or RFC 8707 "resource" parameter)`

// idpCase is a token of one identity provider's shape, sent to an API it
// was not requested for.
type idpCase struct {
	name     string
	issuer   service.IssuerConfig // its key source is filled in
	claims   map[string]any       // iss is filled in
	valid    string               // the audience it is valid at
	wrong    string               // the audience it is sent to
	contains []string             // in the AUDIENCE_MISMATCH hint
	absent   []string             // not in it
}

// AUDIENCE_MISMATCH names the fix in the words of the token's identity
// provider, recognised by its issuer URL: Auth0's audience parameter,
// Entra's scope=…/.default (and the form of aud of v1.0 and v2.0 tokens),
// Okta's authorization server audience, Keycloak's audience mapper,
// Cognito's resource-server scopes and client_id, Google's ID token
// audience, Hydra's audience parameter; RFC 8707 for any other issuer.
func TestHints_IdentityProviderByIssuer(t *testing.T) {
	ctx := testkit.Context(t)
	k := testkit.RSAKey(t, "idp-1")
	jwks := testkit.WriteJWKS(t, k)
	var issuers []service.IssuerConfig
	cases := append(idpCases(), idpCasesMore()...)
	for i := range cases {
		cases[i].issuer.JWKSFile = jwks
		issuers = append(issuers, cases[i].issuer)
	}
	v := newValidator(t, ctx, issuers...)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			claims := c.claims
			claims["iss"] = c.issuer.Issuer
			checkIDPCase(ctx, t, v, k.Token(t, claims), c)
		})
	}
}

func checkIDPCase(ctx context.Context, t *testing.T, v *service.Validator, tok string, c idpCase) {
	t.Helper()
	if got := v.Validate(ctx, tok, c.valid, nil); got.Reason != service.ReasonValid {
		t.Fatalf("at %s: %v %s (hint %s), want VALID", c.valid, got.Reason, got.Message, got.Hint)
	}
	got := v.Validate(ctx, tok, c.wrong, nil)
	checkVerdict(t, got, service.ReasonAudienceMismatch)
	for _, w := range c.contains {
		if !strings.Contains(got.Hint, w) {
			t.Errorf("hint %q does not contain %q", got.Hint, w)
		}
	}
	for _, w := range c.absent {
		if strings.Contains(got.Hint, w) {
			t.Errorf("hint %q contains %q", got.Hint, w)
		}
	}
}

func idpCases() []idpCase {
	const (
		tenant   = "72f988bf-86f1-41af-91ab-2d7cd011db47"
		invoices = "6e74172b-be56-4843-9ff4-e66a39bb12e3"
	)
	iat, exp := testkit.Now.Add(-time.Minute).Unix(), testkit.Now.Add(time.Hour).Unix()
	times := func(m map[string]any) map[string]any { m["iat"], m["exp"] = iat, exp; return m }
	return []idpCase{
		{
			name:   "Auth0",
			issuer: service.IssuerConfig{Issuer: "https://dev-usher.eu.auth0.com/"},
			claims: times(map[string]any{"sub": "auth0|65f0", "aud": []any{"https://users.example.com", "https://dev-usher.eu.auth0.com/userinfo"}, "azp": "Xq3b", "scope": "openid users:read"}),
			valid:  "https://users.example.com", wrong: "https://invoices.example.com",
			contains: []string{"request the token with audience=https://invoices.example.com", "Auth0", "Applications > APIs"},
			absent:   []string{genericFix},
		},
		{
			name:   "Entra v2 token at an App ID URI",
			issuer: service.IssuerConfig{Issuer: "https://login.microsoftonline.com/" + tenant + "/v2.0"},
			claims: times(map[string]any{"aud": invoices, "azp": "0d6c5a36-7d43-4c44-a0b4-4a3f5e0b6b8e", "scp": "Invoices.Read", "ver": "2.0", "tid": tenant}),
			valid:  invoices, wrong: "api://invoices",
			contains: []string{"scope=api://invoices/.default", "v2.0", "application (client) id", "never its App ID URI", "accessTokenAcceptedVersion"},
			absent:   []string{genericFix},
		},
		{
			name:   "Entra v1 token with an App ID URI at a GUID",
			issuer: service.IssuerConfig{Issuer: "https://sts.windows.net/" + tenant + "/"},
			claims: times(map[string]any{"aud": "api://invoices", "appid": "0d6c5a36-7d43-4c44-a0b4-4a3f5e0b6b8e", "scp": "Invoices.Read", "ver": "1.0", "tid": tenant}),
			valid:  "api://invoices", wrong: invoices,
			contains: []string{"scope=" + invoices + "/.default", "v1.0", "App ID URI (api://…) or its application (client) id", "accessTokenAcceptedVersion to 2"},
			absent:   []string{genericFix},
		},
	}
}

// idpCasesMore are idpCases' other providers, and an issuer usher does not
// recognise.
func idpCasesMore() []idpCase {
	iat, exp := testkit.Now.Add(-time.Minute).Unix(), testkit.Now.Add(time.Hour).Unix()
	times := func(m map[string]any) map[string]any { m["iat"], m["exp"] = iat, exp; return m }
	return []idpCase{
		{
			name:   "Okta custom authorization server",
			issuer: service.IssuerConfig{Issuer: "https://dev-1234567.okta.com/oauth2/default"},
			claims: times(map[string]any{"ver": 1, "jti": "AT.x1", "aud": "api://default", "cid": "0oa1", "scp": []any{"invoices:read"}, "sub": "alice@example.com"}),
			valid:  "api://default", wrong: "api://invoices",
			contains: []string{"authorization server whose audience is api://invoices", "whatever the request asks"},
			absent:   []string{genericFix},
		},
		{
			name:   "Keycloak default aud account",
			issuer: service.IssuerConfig{Issuer: "https://sso.example.com/realms/shop"},
			claims: times(map[string]any{"aud": "account", "azp": "billing-ui", "typ": "Bearer", "scope": "openid profile"}),
			valid:  "account", wrong: "invoices-api",
			contains: []string{"audience mapper for invoices-api", "Clients > billing-ui > Client scopes > billing-ui-dedicated", `aud "account"`},
			absent:   []string{genericFix},
		},
		{
			name:   "Cognito without client_id in audience_claims",
			issuer: service.IssuerConfig{Issuer: "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AbCdEf123", AudienceClaims: []string{"aud"}},
			claims: times(map[string]any{"aud": "https://users.example.com", "client_id": "1example23456789", "token_use": "access", "scope": "https://users.example.com/read"}),
			valid:  "https://users.example.com", wrong: "https://invoices.example.com",
			contains: []string{"resource=https://invoices.example.com", "scope=https://invoices.example.com/<scope>", "audience_claims: [client_id]"},
			absent:   []string{genericFix},
		},
		{
			name:   "Cognito with client_id",
			issuer: service.IssuerConfig{Issuer: "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_Zz9", AudienceClaims: []string{"client_id"}},
			claims: times(map[string]any{"client_id": "1example23456789", "token_use": "access", "scope": "invoices/read"}),
			valid:  "1example23456789", wrong: "7other987654321",
			contains: []string{"app client 7other987654321", "client_id", "resource server"},
			absent:   []string{genericFix},
		},
		{
			name:   "Google ID token for a service",
			issuer: service.IssuerConfig{Issuer: "https://accounts.google.com"},
			claims: times(map[string]any{"aud": "https://users.example.com", "azp": "1043", "sub": "1043", "email": "svc@p.iam.gserviceaccount.com"}),
			valid:  "https://users.example.com", wrong: "https://invoices.example.com",
			contains: []string{"ID token with audience https://invoices.example.com", "identity?audience="},
			absent:   []string{genericFix, "send the access token instead"},
		},
		{
			name:   "Ory Network",
			issuer: service.IssuerConfig{Issuer: "https://happy-poitras-1a2b.projects.oryapis.com"},
			claims: times(map[string]any{"aud": []any{"https://users.example.com"}, "client_id": "billing", "scp": []any{"users.read"}}),
			valid:  "https://users.example.com", wrong: "https://invoices.example.com",
			contains: []string{"audience=https://invoices.example.com", "Ory Hydra", "audience list"},
			absent:   []string{genericFix},
		},
		{
			name:   "an issuer usher does not recognise",
			issuer: service.IssuerConfig{Issuer: "https://auth.example.com/"},
			claims: times(map[string]any{"aud": "api/users", "scope": "users.read"}),
			valid:  "api/users", wrong: "api/invoices",
			contains: []string{"this token was issued for Users API (api/users); ask the issuer for a token with audience api/invoices " + genericFix},
		},
	}
}

// An issuer on a custom domain or a self-hosted server is recognised by
// its discovery document (which usher fetches anyway): what only that
// provider writes there.
func TestHints_IdentityProviderByDiscovery(t *testing.T) {
	ctx := testkit.Context(t)
	k := testkit.RSAKey(t, "disc-1")
	for _, c := range []struct {
		name     string
		path     string                           // the issuer's path on the server
		doc      func(base string) map[string]any // besides issuer and jwks_uri
		contains string
	}{
		{"Auth0 custom domain", "", func(b string) map[string]any {
			return map[string]any{"token_endpoint": b + "/oauth/token", "mfa_challenge_endpoint": b + "/mfa/challenge"}
		}, "Auth0: the audience parameter"},
		{"Ory Hydra self-hosted", "", func(b string) map[string]any {
			return map[string]any{"token_endpoint": b + "/oauth2/token", "end_session_endpoint": b + "/oauth2/sessions/logout"}
		}, "Ory Hydra"},
		{"Okta custom domain", "/oauth2/aus1", func(b string) map[string]any {
			return map[string]any{"response_modes_supported": []string{"query", "fragment", "form_post", "okta_post_message"}}
		}, "Okta authorization server"},
		{"Keycloak realm", "/realms/shop", func(b string) map[string]any {
			return map[string]any{"token_endpoint": b + "/protocol/openid-connect/token"}
		}, "audience mapper"},
		{"Cognito", "/eu-west-1_AbC", func(b string) map[string]any {
			return map[string]any{"token_endpoint": "https://shop.auth.eu-west-1.amazoncognito.com/oauth2/token"}
		}, "Cognito"},
		{"Entra v2", "/72f988bf-86f1-41af-91ab-2d7cd011db47/v2.0", func(b string) map[string]any {
			return map[string]any{"cloud_instance_name": "microsoftonline.com", "tenant_region_scope": "EU"}
		}, "scope=api/invoices/.default"},
		{"node-oidc-provider (RFC 8707)", "", func(b string) map[string]any {
			return map[string]any{"token_endpoint": b + "/token", "end_session_endpoint": b + "/session/end", "introspection_endpoint": b + "/token/introspection"}
		}, genericFix},
	} {
		t.Run(c.name, func(t *testing.T) {
			iss := serveDiscovery(t, k, c.path, c.doc, nil)
			v := newValidator(t, ctx, service.IssuerConfig{Issuer: iss, Discovery: true})
			waitTried(ctx, t, v)
			got := v.Validate(ctx, k.Token(t, testkit.Claims(iss)), "api/invoices", nil)
			checkVerdict(t, got, service.ReasonAudienceMismatch)
			if !strings.Contains(got.Hint, c.contains) {
				t.Errorf("hint %q does not contain %q", got.Hint, c.contains)
			}
		})
	}
}

// A reload keeps what the running validator learnt from the discovery
// document, also while the document cannot be fetched again.
func TestHints_IdentityProviderKeptOnReload(t *testing.T) {
	ctx := testkit.Context(t)
	k := testkit.RSAKey(t, "reload-1")
	var down atomic.Bool
	iss := serveDiscovery(t, k, "", func(b string) map[string]any {
		return map[string]any{"token_endpoint": b + "/oauth/token", "mfa_challenge_endpoint": b + "/mfa/challenge"}
	}, &down)
	cfg := service.IssuerConfig{Issuer: iss, Discovery: true}
	tok := k.Token(t, testkit.Claims(iss))
	old := newValidator(t, ctx, cfg)
	waitTried(ctx, t, old)
	down.Store(true)
	v := testkit.NewValidator(t, ctx, testkit.NewClock(), []service.IssuerConfig{cfg}, service.WithPrevious(old))
	waitTried(ctx, t, v)
	for name, v := range map[string]*service.Validator{"running": old, "reloaded": v} {
		got := v.Validate(ctx, tok, "api/invoices", nil)
		checkVerdict(t, got, service.ReasonAudienceMismatch)
		if !strings.Contains(got.Hint, "Auth0: the audience parameter") {
			t.Errorf("%s: hint %q names no Auth0 fix", name, got.Hint)
		}
	}
}

// serveDiscovery serves, on 127.0.0.1, an issuer at path with k's key set
// and a discovery document of its issuer, its jwks_uri and doc's members;
// every answer is 503 while down (if given) is true.
func serveDiscovery(t *testing.T, k *testkit.Key, path string, doc func(base string) map[string]any, down *atomic.Bool) string {
	t.Helper()
	var iss string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if down != nil && down.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case path + "/.well-known/openid-configuration":
			d := doc(iss)
			d["issuer"], d["jwks_uri"] = iss, iss+"/keys"
			json.NewEncoder(w).Encode(d)
		case path + "/keys":
			w.Write(testkit.JWKS(k))
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	iss = srv.URL + path
	return iss
}
