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

	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jwt"

	"github.com/usher-dev/usher/internal/devissuer"
)

// testCtx is a context that ends with the test, at the latest after 30s.
func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func start(t *testing.T) (context.Context, *devissuer.Issuer) {
	t.Helper()
	ctx := testCtx(t)
	iss, err := devissuer.New(ctx, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := iss.Close(); err != nil {
			t.Error(err)
		}
	})
	return ctx, iss
}

func get(t *testing.T, ctx context.Context, u string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
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
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s %s", u, resp.Status, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("GET %s: Content-Type %q", u, ct)
	}
	return resp, body
}

func fetchKeys(t *testing.T, ctx context.Context, iss *devissuer.Issuer) jwk.Set {
	t.Helper()
	_, body := get(t, ctx, iss.JWKSURL())
	set, err := jwk.Parse(body)
	if err != nil {
		t.Fatal(err)
	}
	return set
}

// segment decodes part n (0 header, 1 payload) of a compact JWS.
func segment(t *testing.T, tok string, n int) map[string]json.RawMessage {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("not a compact JWS: %d parts", len(parts))
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[n])
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestDiscovery(t *testing.T) {
	ctx, iss := start(t)
	if !strings.HasPrefix(iss.URL(), "http://127.0.0.1:") || strings.HasSuffix(iss.URL(), "/") {
		t.Errorf("URL() = %q", iss.URL())
	}
	if iss.JWKSURL() != iss.URL()+"/jwks.json" || iss.TokenURL() != iss.URL()+"/token" {
		t.Errorf("JWKSURL() = %q, TokenURL() = %q", iss.JWKSURL(), iss.TokenURL())
	}
	_, body := get(t, ctx, iss.URL()+"/.well-known/openid-configuration")
	var doc struct {
		Issuer        string   `json:"issuer"`
		JWKSURI       string   `json:"jwks_uri"`
		TokenEndpoint string   `json:"token_endpoint"`
		GrantTypes    []string `json:"grant_types_supported"`
		AuthMethods   []string `json:"token_endpoint_auth_methods_supported"`
		Algs          []string `json:"id_token_signing_alg_values_supported"`
		Introspection string   `json:"introspection_endpoint"`
		Revocation    string   `json:"revocation_endpoint"`
		IntroAuth     []string `json:"introspection_endpoint_auth_methods_supported"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		t.Fatal(err)
	}
	if doc.Issuer != iss.URL() || doc.JWKSURI != iss.JWKSURL() || doc.TokenEndpoint != iss.TokenURL() {
		t.Errorf("discovery document: %s", body)
	}
	if strings.Join(doc.GrantTypes, ",") != "client_credentials" ||
		strings.Join(doc.AuthMethods, ",") != "client_secret_basic,client_secret_post" ||
		strings.Join(doc.Algs, ",") != "RS256,ES256,EdDSA" {
		t.Errorf("discovery document: %s", body)
	}
	if doc.Introspection != iss.URL()+"/introspect" || doc.Introspection != iss.IntrospectionURL() ||
		doc.Revocation != iss.URL()+"/revoke" || doc.Revocation != iss.RevocationURL() ||
		strings.Join(doc.IntroAuth, ",") != "client_secret_basic" {
		t.Errorf("discovery document lacks the introspection and revocation endpoints: %s", body)
	}
}

func TestJWKS_ThreePublicKeys(t *testing.T) {
	ctx, iss := start(t)
	resp, body := get(t, ctx, iss.JWKSURL())
	if cc := resp.Header.Get("Cache-Control"); cc != "max-age=300" {
		t.Errorf("Cache-Control %q, want max-age=300", cc)
	}
	set, err := jwk.Parse(body)
	if err != nil {
		t.Fatal(err)
	}
	if set.Len() != 3 {
		t.Fatalf("JWKS has %d keys, want 3", set.Len())
	}
	want := map[string][2]string{
		devissuer.KeyRS256: {"RS256", "RSA"},
		devissuer.KeyES256: {"ES256", "EC"},
		devissuer.KeyEdDSA: {"EdDSA", "OKP"},
	}
	for kid, w := range want {
		k, ok := set.LookupKeyID(kid)
		if !ok {
			t.Fatalf("no key %s in %s", kid, body)
		}
		if a, _ := k.Algorithm(); a.String() != w[0] {
			t.Errorf("%s: alg %v, want %s", kid, a, w[0])
		}
		if k.KeyType().String() != w[1] {
			t.Errorf("%s: kty %v, want %s", kid, k.KeyType(), w[1])
		}
		if u, _ := k.KeyUsage(); u != "sig" {
			t.Errorf("%s: use %q, want sig", kid, u)
		}
		if priv, err := jwk.IsPrivateKey(k); err != nil || priv {
			t.Errorf("%s: the JWKS publishes private key material (%v)", kid, err)
		}
	}
	var raw struct {
		Keys []map[string]any `json:"keys"`
	}
	if err := json.Unmarshal(body, &raw); err != nil {
		t.Fatal(err)
	}
	for _, k := range raw.Keys {
		for _, member := range []string{"d", "p", "q", "dp", "dq", "qi"} {
			if _, ok := k[member]; ok {
				t.Errorf("key %v publishes private member %q", k["kid"], member)
			}
		}
	}
}

func TestMint_EachPublishedKeyVerifies(t *testing.T) {
	ctx, iss := start(t)
	set := fetchKeys(t, ctx, iss)
	algs := map[string]string{devissuer.KeyRS256: "RS256", devissuer.KeyES256: "ES256", devissuer.KeyEdDSA: "EdDSA"}
	for kid, alg := range algs {
		t.Run(kid, func(t *testing.T) {
			before := time.Now().Truncate(time.Second)
			raw, err := iss.Mint(devissuer.MintRequest{Audience: []string{"api/users"}, Scopes: []string{"users.read", "users.write"}, TTL: 5 * time.Minute, KeyID: kid})
			if err != nil {
				t.Fatal(err)
			}
			tok, err := jwt.Parse([]byte(raw), jwt.WithKeySet(set), jwt.WithIssuer(iss.URL()), jwt.WithAudience("api/users"))
			if err != nil {
				t.Fatalf("verify against the published JWKS: %v", err)
			}
			if got, _ := tok.Issuer(); got != iss.URL() {
				t.Errorf("iss %q, want %q", got, iss.URL())
			}
			if aud, _ := tok.Audience(); len(aud) != 1 || aud[0] != "api/users" {
				t.Errorf("aud %v", aud)
			}
			var scope, clientID string
			if err := tok.Get("scope", &scope); err != nil || scope != "users.read users.write" {
				t.Errorf("scope %q (%v)", scope, err)
			}
			if err := tok.Get("client_id", &clientID); err != nil || clientID != devissuer.ClientID {
				t.Errorf("client_id %q (%v)", clientID, err)
			}
			if sub, _ := tok.Subject(); sub != devissuer.ClientID {
				t.Errorf("sub %q, want %q", sub, devissuer.ClientID)
			}
			iat, _ := tok.IssuedAt()
			nbf, _ := tok.NotBefore()
			exp, _ := tok.Expiration()
			if iat.Before(before) || !nbf.Equal(iat) || !exp.Equal(iat.Add(5*time.Minute)) {
				t.Errorf("iat %v nbf %v exp %v", iat, nbf, exp)
			}
			if jti, _ := tok.JwtID(); len(jti) != 22 {
				t.Errorf("jti %q is not 16 random bytes in base64url", jti)
			}

			hdr := segment(t, raw, 0)
			if len(hdr) != 3 || string(hdr["alg"]) != `"`+alg+`"` || string(hdr["kid"]) != `"`+kid+`"` || string(hdr["typ"]) != `"at+jwt"` {
				t.Errorf("protected header %v", hdr)
			}
			payload := segment(t, raw, 1)
			for _, name := range []string{"iat", "nbf", "exp"} {
				var n int64
				if err := json.Unmarshal(payload[name], &n); err != nil {
					t.Errorf("%s = %s is not an integer: %v", name, payload[name], err)
				}
			}
		})
	}
}

func TestMint_AudienceShape(t *testing.T) {
	_, iss := start(t)
	one, err := iss.Mint(devissuer.MintRequest{Audience: []string{"api/users"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := string(segment(t, one, 1)["aud"]); got != `"api/users"` {
		t.Errorf("one audience: aud = %s, want a JSON string", got)
	}
	two, err := iss.Mint(devissuer.MintRequest{Audience: []string{"api/users", "api/invoices"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := string(segment(t, two, 1)["aud"]); got != `["api/users","api/invoices"]` {
		t.Errorf("two audiences: aud = %s, want a JSON array", got)
	}
	if _, ok := segment(t, one, 1)["scope"]; ok {
		t.Error("scope emitted without scopes")
	}
}

func TestMint_UnknownKid(t *testing.T) {
	ctx, iss := start(t)
	set := fetchKeys(t, ctx, iss)
	raw, err := iss.Mint(devissuer.MintRequest{Audience: []string{"api/users"}, KeyID: "rotated-away"})
	if err != nil {
		t.Fatal(err)
	}
	hdr := segment(t, raw, 0)
	if string(hdr["kid"]) != `"rotated-away"` || string(hdr["alg"]) != `"RS256"` {
		t.Errorf("header %v, want kid rotated-away signed RS256", hdr)
	}
	if _, err := jwt.Parse([]byte(raw), jwt.WithKeySet(set)); err == nil {
		t.Error("a token with an unpublished kid verified against the JWKS")
	}
	if _, ok := set.LookupKeyID("rotated-away"); ok {
		t.Error("the JWKS publishes the unknown kid")
	}
}

func TestMint_NegativeTTL(t *testing.T) {
	ctx, iss := start(t)
	set := fetchKeys(t, ctx, iss)
	raw, err := iss.Mint(devissuer.MintRequest{Audience: []string{"api/users"}, TTL: -time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := jwt.Parse([]byte(raw), jwt.WithKeySet(set)); err == nil {
		t.Error("an expired token validated")
	}
	tok, err := jwt.Parse([]byte(raw), jwt.WithKeySet(set), jwt.WithValidate(false))
	if err != nil {
		t.Fatal(err)
	}
	if exp, _ := tok.Expiration(); !exp.Before(time.Now()) {
		t.Errorf("negative TTL: exp %v is not in the past", exp)
	}
}

func TestMint_RefusesBadRequests(t *testing.T) {
	_, iss := start(t)
	for name, r := range map[string]devissuer.MintRequest{
		"no audience":    {},
		"empty audience": {Audience: []string{""}},
	} {
		_, err := iss.Mint(r)
		if err == nil || !strings.Contains(err.Error(), "audience") || !strings.HasPrefix(err.Error(), "devissuer: ") {
			t.Errorf("%s: err = %v", name, err)
		}
	}
	for _, claim := range []string{"iss", "exp", "iat", "nbf", "aud", "jti"} {
		_, err := iss.Mint(devissuer.MintRequest{Audience: []string{"x"}, Extra: map[string]any{claim: "evil"}})
		if err == nil || !strings.Contains(err.Error(), claim) {
			t.Errorf("Extra %q: err = %v", claim, err)
		}
	}
	raw, err := iss.Mint(devissuer.MintRequest{Audience: []string{"x"}, Extra: map[string]any{"tenant": "acme"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := string(segment(t, raw, 1)["tenant"]); got != `"acme"` {
		t.Errorf("extra claim tenant = %s", got)
	}
}

type tokenResponse struct {
	status int
	header http.Header
	body   map[string]any
}

func postToken(t *testing.T, ctx context.Context, iss *devissuer.Issuer, form url.Values, basicUser, basicPass string) tokenResponse {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, iss.TokenURL(), strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if basicUser != "" {
		req.SetBasicAuth(basicUser, basicPass)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	out := tokenResponse{status: resp.StatusCode, header: resp.Header}
	if err := json.NewDecoder(resp.Body).Decode(&out.body); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestTokenEndpoint_Success(t *testing.T) {
	ctx, iss := start(t)
	set := fetchKeys(t, ctx, iss)
	verify := func(t *testing.T, r tokenResponse, aud string) jwt.Token {
		t.Helper()
		if r.status != http.StatusOK || r.body["token_type"] != "Bearer" {
			t.Fatalf("%d %v", r.status, r.body)
		}
		if cc := r.header.Get("Cache-Control"); cc != "no-store" {
			t.Errorf("Cache-Control %q, want no-store", cc)
		}
		access, _ := r.body["access_token"].(string)
		tok, err := jwt.Parse([]byte(access), jwt.WithKeySet(set), jwt.WithIssuer(iss.URL()), jwt.WithAudience(aud))
		if err != nil {
			t.Fatalf("the issued token does not verify for %q: %v", aud, err)
		}
		return tok
	}

	t.Run("basic auth", func(t *testing.T) {
		r := postToken(t, ctx, iss, url.Values{"grant_type": {"client_credentials"}, "audience": {"api/users"}, "scope": {"users.read users.write"}}, devissuer.ClientID, devissuer.ClientSecret)
		verify(t, r, "api/users")
		if r.body["scope"] != "users.read users.write" || r.body["expires_in"] != float64(3600) {
			t.Errorf("response %v", r.body)
		}
	})
	t.Run("form auth", func(t *testing.T) {
		r := postToken(t, ctx, iss, url.Values{"grant_type": {"client_credentials"}, "audience": {"api/users"}, "client_id": {devissuer.ClientID}, "client_secret": {devissuer.ClientSecret}}, "", "")
		verify(t, r, "api/users")
	})
	t.Run("resource is the audience", func(t *testing.T) {
		r := postToken(t, ctx, iss, url.Values{"grant_type": {"client_credentials"}, "resource": {"api/invoices", "api/users"}}, devissuer.ClientID, devissuer.ClientSecret)
		tok := verify(t, r, "api/invoices")
		if aud, _ := tok.Audience(); len(aud) != 2 {
			t.Errorf("aud %v, want both resources", aud)
		}
	})
	t.Run("ttl and kid", func(t *testing.T) {
		r := postToken(t, ctx, iss, url.Values{"grant_type": {"client_credentials"}, "audience": {"api/users"}, "ttl": {"5m"}, "kid": {devissuer.KeyEdDSA}}, devissuer.ClientID, devissuer.ClientSecret)
		verify(t, r, "api/users")
		if r.body["expires_in"] != float64(300) {
			t.Errorf("expires_in %v, want 300", r.body["expires_in"])
		}
		if hdr := segment(t, r.body["access_token"].(string), 0); string(hdr["kid"]) != `"`+devissuer.KeyEdDSA+`"` {
			t.Errorf("header %v", hdr)
		}
	})
	t.Run("negative ttl", func(t *testing.T) {
		r := postToken(t, ctx, iss, url.Values{"grant_type": {"client_credentials"}, "audience": {"api/users"}, "ttl": {"-1m"}}, devissuer.ClientID, devissuer.ClientSecret)
		if r.status != http.StatusOK || r.body["expires_in"] != float64(0) {
			t.Errorf("%d %v", r.status, r.body)
		}
	})
}

func TestTokenEndpoint_Errors(t *testing.T) {
	ctx, iss := start(t)
	ok := func(extra url.Values) url.Values {
		v := url.Values{"grant_type": {"client_credentials"}, "audience": {"api/users"}}
		for k, vs := range extra {
			v[k] = vs
		}
		return v
	}
	for _, tc := range []struct {
		name        string
		form        url.Values
		user, pass  string
		status      int
		code        string
		description string
	}{
		{"wrong secret, form", ok(url.Values{"client_id": {devissuer.ClientID}, "client_secret": {"wrong"}}), "", "", 401, "invalid_client", devissuer.ClientID},
		{"wrong secret, basic", ok(nil), devissuer.ClientID, "wrong", 401, "invalid_client", devissuer.ClientID},
		{"no credentials", ok(nil), "", "", 401, "invalid_client", "HTTP Basic"},
		{"missing audience", url.Values{"grant_type": {"client_credentials"}}, devissuer.ClientID, devissuer.ClientSecret, 400, "invalid_request", `"audience"`},
		{"wrong grant type", ok(url.Values{"grant_type": {"password"}}), devissuer.ClientID, devissuer.ClientSecret, 400, "unsupported_grant_type", "client_credentials"},
		{"missing grant type", url.Values{"audience": {"api/users"}}, devissuer.ClientID, devissuer.ClientSecret, 400, "invalid_request", "grant_type"},
		{"bad ttl", ok(url.Values{"ttl": {"soon"}}), devissuer.ClientID, devissuer.ClientSecret, 400, "invalid_request", "ttl"},
		{"repeated scope", ok(url.Values{"scope": {"a", "b"}}), devissuer.ClientID, devissuer.ClientSecret, 400, "invalid_request", "scope"},
		{"two auth methods", ok(url.Values{"client_secret": {devissuer.ClientSecret}}), devissuer.ClientID, devissuer.ClientSecret, 400, "invalid_request", "twice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := postToken(t, ctx, iss, tc.form, tc.user, tc.pass)
			desc, _ := r.body["error_description"].(string)
			if r.status != tc.status || r.body["error"] != tc.code || !strings.Contains(desc, tc.description) {
				t.Errorf("got %d %v, want %d %s mentioning %q", r.status, r.body, tc.status, tc.code, tc.description)
			}
			if _, leaked := r.body["access_token"]; leaked {
				t.Error("an error response carries a token")
			}
			if tc.status == 401 && r.header.Get("WWW-Authenticate") != `Basic realm="usher-dev"` {
				t.Errorf("WWW-Authenticate %q", r.header.Get("WWW-Authenticate"))
			}
		})
	}
}

func TestTokenEndpoint_BodyLimit(t *testing.T) {
	ctx, iss := start(t)
	pad := strings.Repeat("a", 100<<10)
	r := postToken(t, ctx, iss, url.Values{"grant_type": {"client_credentials"}, "audience": {"api/users"}, "pad": {pad}}, devissuer.ClientID, devissuer.ClientSecret)
	if r.status != http.StatusBadRequest || r.body["error"] != "invalid_request" {
		t.Errorf("a 100 KiB body: %d %v", r.status, r.body)
	}
}

func TestNew_RefusesNonLoopback(t *testing.T) {
	ctx := testCtx(t)
	for _, addr := range []string{"0.0.0.0:0", "10.1.2.3:0", ":0", "[::]:0", "example.com:80", "no-port"} {
		iss, err := devissuer.New(ctx, addr)
		if err == nil {
			_ = iss.Close()
			t.Errorf("New(%q) started a server", addr)
			continue
		}
		if !strings.HasPrefix(err.Error(), "devissuer: ") || !strings.Contains(err.Error(), addr) {
			t.Errorf("New(%q) = %v, want an error naming the address", addr, err)
		}
	}
}

func TestNew_StopsWhenContextDone(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	iss, err := devissuer.New(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	defer iss.Close()
	if !strings.HasPrefix(iss.URL(), "http://127.0.0.1:") {
		t.Errorf("default address: URL() = %q", iss.URL())
	}
	get(t, testCtx(t), iss.JWKSURL())
	cancel()
	reqCtx := testCtx(t)
	deadline := time.Now().Add(5 * time.Second)
	for {
		req, err := http.NewRequestWithContext(reqCtx, http.MethodGet, iss.JWKSURL(), nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Close = true
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return
		}
		resp.Body.Close()
		if time.Now().After(deadline) {
			t.Fatal("the server still answers after its context ended")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
