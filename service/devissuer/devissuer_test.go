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

	"github.com/usher-dev/usher/service/devissuer"
)

func start(t *testing.T) *devissuer.Issuer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	iss, err := devissuer.New(ctx, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { iss.Close() })
	return iss
}

func getJSON(t *testing.T, u string, dst any) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", u, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(dst); err != nil {
		t.Fatal(err)
	}
}

func fetchKeys(t *testing.T, iss *devissuer.Issuer) jwk.Set {
	t.Helper()
	resp, err := http.Get(iss.JWKSURL())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	set, err := jwk.Parse(body)
	if err != nil {
		t.Fatal(err)
	}
	return set
}

func TestDiscoveryAndJWKS(t *testing.T) {
	iss := start(t)
	var doc map[string]any
	getJSON(t, iss.URL()+"/.well-known/openid-configuration", &doc)
	if doc["issuer"] != iss.URL() || doc["jwks_uri"] != iss.JWKSURL() || doc["token_endpoint"] != iss.TokenURL() {
		t.Errorf("discovery document = %v", doc)
	}
	set := fetchKeys(t, iss)
	if set.Len() != 3 {
		t.Fatalf("JWKS has %d keys, want 3", set.Len())
	}
	for kid, alg := range map[string]string{devissuer.KeyRS256: "RS256", devissuer.KeyES256: "ES256", devissuer.KeyEdDSA: "EdDSA"} {
		k, ok := set.LookupKeyID(kid)
		if !ok {
			t.Fatalf("no key %s", kid)
		}
		if a, _ := k.Algorithm(); a.String() != alg {
			t.Errorf("%s: alg %v, want %s", kid, a, alg)
		}
		if priv, err := jwk.IsPrivateKey(k); err != nil || priv {
			t.Errorf("%s: the JWKS publishes private key material", kid)
		}
	}
}

func TestMint_VerifiesWithThePublishedKeys(t *testing.T) {
	iss := start(t)
	set := fetchKeys(t, iss)
	for _, kid := range []string{devissuer.KeyRS256, devissuer.KeyES256, devissuer.KeyEdDSA} {
		raw, err := iss.Mint(devissuer.MintRequest{Audience: []string{"api/users", "api/invoices"}, Scopes: []string{"a", "b"}, KeyID: kid})
		if err != nil {
			t.Fatal(err)
		}
		tok, err := jwt.Parse([]byte(raw), jwt.WithKeySet(set), jwt.WithIssuer(iss.URL()), jwt.WithAudience("api/invoices"))
		if err != nil {
			t.Fatalf("%s: %v", kid, err)
		}
		var scope string
		if err := tok.Get("scope", &scope); err != nil || scope != "a b" {
			t.Errorf("%s: scope %q (%v)", kid, scope, err)
		}
		hdr, _ := base64.RawURLEncoding.DecodeString(strings.Split(raw, ".")[0])
		if !strings.Contains(string(hdr), `"typ":"at+jwt"`) || !strings.Contains(string(hdr), `"kid":"`+kid+`"`) {
			t.Errorf("%s: header %s", kid, hdr)
		}
	}
}

func TestMint_UnknownKidAndExpired(t *testing.T) {
	iss := start(t)
	set := fetchKeys(t, iss)
	raw, err := iss.Mint(devissuer.MintRequest{Audience: []string{"api/users"}, KeyID: "rotated-away"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := jwt.Parse([]byte(raw), jwt.WithKeySet(set)); err == nil {
		t.Error("a token with an unpublished kid verified against the JWKS")
	}
	raw, err = iss.Mint(devissuer.MintRequest{Audience: []string{"api/users"}, TTL: -time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.Parse([]byte(raw), jwt.WithKeySet(set), jwt.WithValidate(false))
	if err != nil {
		t.Fatal(err)
	}
	if exp, _ := tok.Expiration(); !exp.Before(time.Now()) {
		t.Errorf("negative TTL: exp %v is not in the past", exp)
	}
	if _, err := iss.Mint(devissuer.MintRequest{}); err == nil {
		t.Error("a token without audience was minted")
	}
	if _, err := iss.Mint(devissuer.MintRequest{Audience: []string{"x"}, Extra: map[string]any{"iss": "evil"}}); err == nil {
		t.Error("an extra claim overrode iss")
	}
}

func TestTokenEndpoint(t *testing.T) {
	iss := start(t)
	post := func(form url.Values, basic bool) (int, map[string]any, http.Header) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, iss.TokenURL(), strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if basic {
			req.SetBasicAuth(devissuer.ClientID, devissuer.ClientSecret)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&out)
		return resp.StatusCode, out, resp.Header
	}
	ok := url.Values{"grant_type": {"client_credentials"}, "audience": {"api/users"}, "scope": {"users.read"}}
	if code, out, _ := post(ok, true); code != 200 || out["token_type"] != "Bearer" || out["access_token"] == "" {
		t.Errorf("basic auth: %d %v", code, out)
	}
	form := url.Values{"grant_type": {"client_credentials"}, "resource": {"api/invoices"}, "client_id": {devissuer.ClientID}, "client_secret": {devissuer.ClientSecret}}
	code, out, _ := post(form, false)
	if code != 200 {
		t.Fatalf("form auth with resource: %d %v", code, out)
	}
	tok, err := jwt.Parse([]byte(out["access_token"].(string)), jwt.WithKeySet(fetchKeys(t, iss)), jwt.WithAudience("api/invoices"))
	if err != nil || tok == nil {
		t.Errorf("RFC 8707 resource did not become the audience: %v", err)
	}
	bad := url.Values{"grant_type": {"client_credentials"}, "audience": {"api/users"}, "client_id": {devissuer.ClientID}, "client_secret": {"wrong"}}
	if code, out, hdr := post(bad, false); code != 401 || out["error"] != "invalid_client" || hdr.Get("WWW-Authenticate") == "" {
		t.Errorf("wrong secret: %d %v", code, out)
	}
	if code, out, _ := post(url.Values{"grant_type": {"client_credentials"}}, true); code != 400 || out["error"] != "invalid_request" || !strings.Contains(out["error_description"].(string), "audience") {
		t.Errorf("missing audience: %d %v", code, out)
	}
	if code, out, _ := post(url.Values{"grant_type": {"password"}, "audience": {"x"}}, true); code != 400 || out["error"] != "unsupported_grant_type" {
		t.Errorf("password grant: %d %v", code, out)
	}
	if code, out, _ := post(url.Values{"grant_type": {"client_credentials"}, "audience": {"x"}, "ttl": {"soon"}}, true); code != 400 || out["error"] != "invalid_request" {
		t.Errorf("bad ttl: %d %v", code, out)
	}
}

func TestNew_LoopbackOnly(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:0", "10.1.2.3:0", ":0", "example.com:80"} {
		if _, err := devissuer.New(context.Background(), addr); err == nil || !strings.Contains(err.Error(), "loopback") {
			t.Errorf("New(%q) = %v, want a refusal naming loopback", addr, err)
		}
	}
}
