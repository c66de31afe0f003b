package devissuer_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwt"

	"github.com/usher-dev/usher/internal/devissuer"
	"github.com/usher-dev/usher/internal/testkit"
)

// startAt is a dev issuer whose clock the test moves.
func startAt(t *testing.T) (context.Context, *devissuer.Issuer, *testkit.Clock) {
	t.Helper()
	ctx := testCtx(t)
	clock := testkit.NewClock()
	iss, err := devissuer.New(ctx, "127.0.0.1:0", devissuer.WithClock(clock.Now))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = iss.Close() })
	return ctx, iss, clock
}

type httpAnswer struct {
	status int
	header http.Header
	body   []byte
}

// devBasic is client_secret_basic for the dev client.
func devBasic(r *http.Request) { r.SetBasicAuth(devissuer.ClientID, devissuer.ClientSecret) }

// post sends form to u; auth, when not nil, sets the client's credentials.
func post(t *testing.T, ctx context.Context, u string, form url.Values, auth func(*http.Request)) httpAnswer {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if auth != nil {
		auth(req)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return httpAnswer{resp.StatusCode, resp.Header, body}
}

// introspect asks the issuer about tok and returns the decoded answer.
func introspect(t *testing.T, ctx context.Context, iss *devissuer.Issuer, tok string) map[string]any {
	t.Helper()
	a := post(t, ctx, iss.IntrospectionURL(), url.Values{"token": {tok}}, devBasic)
	if a.status != http.StatusOK || a.header.Get("Content-Type") != "application/json" || a.header.Get("Cache-Control") != "no-store" {
		t.Fatalf("introspection: %d %v %s", a.status, a.header, a.body)
	}
	var m map[string]any
	if err := json.Unmarshal(a.body, &m); err != nil {
		t.Fatalf("introspection answer %s: %v", a.body, err)
	}
	return m
}

func mint(t *testing.T, iss *devissuer.Issuer, r devissuer.MintRequest) string {
	t.Helper()
	tok, err := iss.Mint(r)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func wantInactive(t *testing.T, ctx context.Context, iss *devissuer.Issuer, tok, what string) {
	t.Helper()
	if m := introspect(t, ctx, iss, tok); len(m) != 1 || m["active"] != false {
		t.Errorf("%s: introspection answered %v, want exactly {\"active\":false}", what, m)
	}
}

func TestMintOpaque_TokenAndClaims(t *testing.T) {
	ctx, iss, clock := startAt(t)
	tok := mint(t, iss, devissuer.MintRequest{Audience: []string{"api/users"}, Scopes: []string{"users.read", "users.write"}, TTL: 5 * time.Minute, Opaque: true})
	random, ok := strings.CutPrefix(tok, devissuer.OpaquePrefix)
	if !ok || strings.Contains(tok, ".") {
		t.Fatalf("token %q: want %s and no dot (not a JWS shape)", tok, devissuer.OpaquePrefix)
	}
	if b, err := base64.RawURLEncoding.Strict().DecodeString(random); err != nil || len(b) != 32 {
		t.Errorf("after the prefix: %q is not 32 bytes of base64url (%v)", random, err)
	}
	if other := mint(t, iss, devissuer.MintRequest{Audience: []string{"api/users"}, Opaque: true}); other == tok {
		t.Error("two opaque tokens are equal")
	}
	iat := clock.Now().Unix()
	got := introspect(t, ctx, iss, tok)
	want := map[string]any{
		"active": true, "iss": iss.URL(), "sub": devissuer.ClientID, "aud": "api/users", "scope": "users.read users.write",
		"client_id": devissuer.ClientID, "iat": float64(iat), "exp": float64(iat + 300), "token_type": "Bearer",
	}
	if len(got) != len(want) {
		t.Errorf("introspection answer %v, want exactly the members %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v (%T), want %v", k, got[k], got[k], v)
		}
	}

	two := mint(t, iss, devissuer.MintRequest{Audience: []string{"api/users", "api/invoices"}, Subject: "svc-a", ClientID: "app-1", Extra: map[string]any{"tenant": "acme"}, Opaque: true})
	got = introspect(t, ctx, iss, two)
	if aud, _ := got["aud"].([]any); len(aud) != 2 || aud[0] != "api/users" || aud[1] != "api/invoices" {
		t.Errorf("two audiences: aud = %v, want a JSON array", got["aud"])
	}
	if got["sub"] != "svc-a" || got["client_id"] != "app-1" || got["tenant"] != "acme" {
		t.Errorf("subject, client and extra claims: %v", got)
	}
	if _, ok := got["scope"]; ok {
		t.Errorf("scope answered without scopes: %v", got)
	}
	if exp := got["exp"].(float64) - got["iat"].(float64); exp != 3600 {
		t.Errorf("default lifetime %vs, want 3600", exp)
	}
}

func TestMintOpaque_RefusesBadRequests(t *testing.T) {
	_, iss, _ := startAt(t)
	for name, tc := range map[string]struct {
		r    devissuer.MintRequest
		want string
	}{
		"kid":            {devissuer.MintRequest{Audience: []string{"x"}, KeyID: devissuer.KeyES256, Opaque: true}, "not signed"},
		"active":         {devissuer.MintRequest{Audience: []string{"x"}, Extra: map[string]any{"active": false}, Opaque: true}, `"active"`},
		"no audience":    {devissuer.MintRequest{Opaque: true}, "audience"},
		"unencodable":    {devissuer.MintRequest{Audience: []string{"x"}, Extra: map[string]any{"f": func() {}}, Opaque: true}, "JSON"},
		"claims too big": {devissuer.MintRequest{Audience: []string{"x"}, Extra: map[string]any{"pad": strings.Repeat("a", 65<<10)}, Opaque: true}, "KiB"},
	} {
		if tok, err := iss.Mint(tc.r); err == nil || !strings.HasPrefix(err.Error(), "devissuer: ") || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Mint = %q, %v; want an error mentioning %s", name, tok, err, tc.want)
		}
	}
}

func TestIntrospect_ActiveUntilExpiredOrRevoked(t *testing.T) {
	ctx, iss, clock := startAt(t)
	tok := mint(t, iss, devissuer.MintRequest{Audience: []string{"api/users"}, TTL: time.Minute, Opaque: true})
	revoked := mint(t, iss, devissuer.MintRequest{Audience: []string{"api/users"}, Opaque: true})
	jwtTok := mint(t, iss, devissuer.MintRequest{Audience: []string{"api/users"}})
	expired := mint(t, iss, devissuer.MintRequest{Audience: []string{"api/users"}, TTL: -time.Minute, Opaque: true})

	if introspect(t, ctx, iss, revoked)["active"] != true {
		t.Fatal("a fresh opaque token is not active")
	}
	if a := post(t, ctx, iss.RevocationURL(), url.Values{"token": {revoked}, "token_type_hint": {"access_token"}}, devBasic); a.status != http.StatusOK || len(a.body) != 0 {
		t.Fatalf("revocation: %d %s", a.status, a.body)
	}
	wantInactive(t, ctx, iss, revoked, "revoked")
	wantInactive(t, ctx, iss, expired, "minted expired")
	wantInactive(t, ctx, iss, devissuer.OpaquePrefix+"never-issued", "never issued")
	wantInactive(t, ctx, iss, tok+"x", "a live token plus one character")
	wantInactive(t, ctx, iss, jwtTok, "a JWT (only opaque tokens are held)")

	clock.Advance(59 * time.Second)
	if introspect(t, ctx, iss, tok)["active"] != true {
		t.Error("a token 1s before its exp is not active")
	}
	clock.Advance(time.Second)
	wantInactive(t, ctx, iss, tok, "at its exp")
	clock.Set(testkit.Now)
	wantInactive(t, ctx, iss, tok, "once expired, even with the clock set back (it was dropped)")
}

func TestIntrospect_RequiresClientSecretBasic(t *testing.T) {
	ctx, iss, _ := startAt(t)
	tok := mint(t, iss, devissuer.MintRequest{Audience: []string{"api/users"}, Opaque: true})
	form := url.Values{"token": {tok}}
	basic := func(user, pass string) func(*http.Request) {
		return func(r *http.Request) { r.SetBasicAuth(user, pass) }
	}
	for _, tc := range []struct {
		name   string
		form   url.Values
		auth   func(*http.Request)
		status int
		desc   string
	}{
		{"no credentials", form, nil, 401, "HTTP Basic only"},
		{"form credentials (client_secret_post)", url.Values{"token": {tok}, "client_id": {devissuer.ClientID}, "client_secret": {devissuer.ClientSecret}}, nil, 401, "HTTP Basic only"},
		{"wrong secret", form, basic(devissuer.ClientID, "wrong"), 401, "form-urlencoded"},
		{"wrong client", form, basic("someone", devissuer.ClientSecret), 401, devissuer.ClientID},
		{"bearer instead of basic", form, func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+tok) }, 401, "HTTP Basic only"},
		{"'+' decodes to a space, so it is not '-'", form, basic("usher+dev", "usher+dev+secret"), 401, "wrong secret"},
		{"basic and a form secret", url.Values{"token": {tok}, "client_secret": {devissuer.ClientSecret}}, devBasic, 400, "twice"},
		{"missing token", url.Values{}, devBasic, 400, `"token"`},
		{"two tokens", url.Values{"token": {tok, tok}}, devBasic, 400, "2 times"},
		{"percent-encoded id and secret (RFC 6749 §2.3.1)", form, basic("usher%2Ddev", "usher%2ddev%2Dsecret"), 200, ""},
		{"plain basic", form, devBasic, 200, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := post(t, ctx, iss.IntrospectionURL(), tc.form, tc.auth)
			var body map[string]any
			if err := json.Unmarshal(a.body, &body); err != nil {
				t.Fatalf("%d %s: %v", a.status, a.body, err)
			}
			if a.status != tc.status {
				t.Fatalf("status %d %v, want %d", a.status, body, tc.status)
			}
			if tc.status == 200 {
				if body["active"] != true {
					t.Errorf("answer %v", body)
				}
				return
			}
			if _, leaked := body["active"]; leaked {
				t.Errorf("an error answer says whether the token is active: %v", body)
			}
			desc, _ := body["error_description"].(string)
			if !strings.Contains(desc, tc.desc) {
				t.Errorf("error_description %q does not mention %q", desc, tc.desc)
			}
			if tc.status == 401 {
				if body["error"] != "invalid_client" || a.header.Get("WWW-Authenticate") != `Basic realm="usher-dev"` {
					t.Errorf("401 without invalid_client and a Basic challenge: %v %q", body, a.header.Get("WWW-Authenticate"))
				}
			}
		})
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, iss.IntrospectionURL()+"?token="+url.QueryEscape(tok), nil)
	if err != nil {
		t.Fatal(err)
	}
	devBasic(req)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET with the token in the query: %d, want 405 (RFC 7662 §2.1: POST)", resp.StatusCode)
	}
}

func TestRevoke_OpaqueOnly(t *testing.T) {
	ctx, iss, clock := startAt(t)
	set := fetchKeys(t, ctx, iss)
	basicTok := mint(t, iss, devissuer.MintRequest{Audience: []string{"api/users"}, Opaque: true})
	postTok := mint(t, iss, devissuer.MintRequest{Audience: []string{"api/users"}, Opaque: true})
	goTok := mint(t, iss, devissuer.MintRequest{Audience: []string{"api/users"}, Opaque: true})
	jwtTok := mint(t, iss, devissuer.MintRequest{Audience: []string{"api/users"}})

	if a := post(t, ctx, iss.RevocationURL(), url.Values{"token": {basicTok}}, nil); a.status != 401 || a.header.Get("WWW-Authenticate") == "" {
		t.Errorf("revocation without client authentication: %d %s", a.status, a.body)
	}
	if a := post(t, ctx, iss.RevocationURL(), url.Values{"token": {basicTok}}, func(r *http.Request) { r.SetBasicAuth(devissuer.ClientID, "wrong") }); a.status != 401 {
		t.Errorf("revocation with a wrong secret: %d %s", a.status, a.body)
	}
	if introspect(t, ctx, iss, basicTok)["active"] != true {
		t.Fatal("a refused revocation revoked the token")
	}
	for _, tc := range []struct {
		name string
		form url.Values
		auth func(*http.Request)
	}{
		{"basic", url.Values{"token": {basicTok}}, devBasic},
		{"post", url.Values{"token": {postTok}, "client_id": {devissuer.ClientID}, "client_secret": {devissuer.ClientSecret}}, nil},
		{"again", url.Values{"token": {basicTok}}, devBasic},
		{"unknown token", url.Values{"token": {"never-issued"}}, devBasic},
		{"a JWT", url.Values{"token": {jwtTok}}, devBasic},
	} {
		if a := post(t, ctx, iss.RevocationURL(), tc.form, tc.auth); a.status != http.StatusOK || len(a.body) != 0 || a.header.Get("Cache-Control") != "no-store" {
			t.Errorf("%s: %d %v %s, want 200 and no body (RFC 7009 §2.2)", tc.name, a.status, a.header, a.body)
		}
	}
	wantInactive(t, ctx, iss, basicTok, "revoked with client_secret_basic")
	wantInactive(t, ctx, iss, postTok, "revoked with client_secret_post")
	if _, err := jwt.Parse([]byte(jwtTok), jwt.WithKeySet(set), jwt.WithIssuer(iss.URL()), jwt.WithClock(jwt.ClockFunc(clock.Now))); err != nil {
		t.Errorf("a revoked JWT no longer verifies (revocation has no effect on JWTs): %v", err)
	}
	if !iss.Revoke(goTok) || iss.Revoke(goTok) || iss.Revoke(jwtTok) {
		t.Error("Revoke must say true for a live opaque token only, once")
	}
	wantInactive(t, ctx, iss, goTok, "revoked with Revoke")
}

func TestTokenEndpoint_Opaque(t *testing.T) {
	ctx, iss, clock := startAt(t)
	form := func(kv ...string) url.Values {
		v := url.Values{"grant_type": {"client_credentials"}, "audience": {"api/invoices"}, "scope": {"invoices.read"}}
		for i := 0; i < len(kv); i += 2 {
			v[kv[i]] = append(v[kv[i]], kv[i+1])
		}
		return v
	}
	r := postToken(t, ctx, iss, form("token_format", "opaque", "ttl", "10m"), devissuer.ClientID, devissuer.ClientSecret)
	tok, _ := r.body["access_token"].(string)
	if r.status != 200 || !strings.HasPrefix(tok, devissuer.OpaquePrefix) || r.body["token_type"] != "Bearer" || r.body["expires_in"] != float64(600) || r.body["scope"] != "invoices.read" {
		t.Fatalf("token_format=opaque: %d %v", r.status, r.body)
	}
	got := introspect(t, ctx, iss, tok)
	if got["active"] != true || got["aud"] != "api/invoices" || got["scope"] != "invoices.read" || got["exp"] != float64(clock.Now().Unix()+600) {
		t.Errorf("introspection of the issued token: %v", got)
	}
	if r := postToken(t, ctx, iss, form("token_format", "jwt"), devissuer.ClientID, devissuer.ClientSecret); strings.Count(r.body["access_token"].(string), ".") != 2 {
		t.Errorf("token_format=jwt: %v", r.body)
	}
	for _, tc := range []struct{ name, want string }{
		{"token_format=opaque&kid=dev-es256", "not signed"},
		{"token_format=paseto", "jwt (the default) or opaque"},
		{"token_format=opaque&token_format=jwt", "2 times"},
	} {
		extra, _ := url.ParseQuery(tc.name)
		f := form()
		for k, vs := range extra {
			f[k] = vs
		}
		r := postToken(t, ctx, iss, f, devissuer.ClientID, devissuer.ClientSecret)
		desc, _ := r.body["error_description"].(string)
		if r.status != 400 || r.body["error"] != "invalid_request" || !strings.Contains(desc, tc.want) {
			t.Errorf("%s: %d %v, want 400 invalid_request mentioning %q", tc.name, r.status, r.body, tc.want)
		}
	}
}

func TestOpaqueStore_BoundedAndDropsExpired(t *testing.T) {
	ctx, iss, clock := startAt(t)
	const bound = 10_000
	var first string
	for n := range bound {
		ttl := time.Hour
		if n%2 == 0 {
			ttl = time.Minute
		}
		tok := mint(t, iss, devissuer.MintRequest{Audience: []string{"a"}, TTL: ttl, Opaque: true})
		if n == 1 {
			first = tok
		}
	}
	if tok, err := iss.Mint(devissuer.MintRequest{Audience: []string{"a"}, Opaque: true}); err == nil || !strings.Contains(err.Error(), "10000 live opaque tokens") {
		t.Fatalf("token %d: %q, %v; want an error naming the bound", bound+1, tok, err)
	}
	r := postToken(t, ctx, iss, url.Values{"grant_type": {"client_credentials"}, "audience": {"a"}, "token_format": {"opaque"}}, devissuer.ClientID, devissuer.ClientSecret)
	if desc, _ := r.body["error_description"].(string); r.status != 500 || !strings.Contains(desc, "restart") {
		t.Errorf("token endpoint with a full store: %d %v", r.status, r.body)
	}
	if _, err := iss.Mint(devissuer.MintRequest{Audience: []string{"a"}}); err != nil {
		t.Errorf("a full opaque store stops JWTs too: %v", err)
	}
	clock.Advance(time.Minute)
	var fresh []string
	for range bound / 2 {
		fresh = append(fresh, mint(t, iss, devissuer.MintRequest{Audience: []string{"a"}, Opaque: true}))
	}
	if _, err := iss.Mint(devissuer.MintRequest{Audience: []string{"a"}, Opaque: true}); err == nil {
		t.Error("the store grew past its bound")
	}
	for _, tok := range []string{first, fresh[0], fresh[len(fresh)-1]} {
		if introspect(t, ctx, iss, tok)["active"] != true {
			t.Error("a live token was dropped to make room")
		}
	}
	iss.Revoke(first)
	if _, err := iss.Mint(devissuer.MintRequest{Audience: []string{"a"}, Opaque: true}); err != nil {
		t.Errorf("revoking a token did not make room: %v", err)
	}
}
