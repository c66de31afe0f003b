package devissuer_test

import (
	"context"
	"crypto/elliptic"
	"crypto/sha256"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/usher-dev/usher/internal/devissuer"
	"github.com/usher-dev/usher/internal/testkit"
)

// thumbprint is the RFC 7638 SHA-256 thumbprint of k's public JWK,
// computed here from the RFC's rules (the required members, sorted, no
// white space) rather than by the library the issuer uses.
func thumbprint(t *testing.T, k *testkit.Key) string {
	t.Helper()
	jwk := k.JWK()
	required := map[string][]string{"EC": {"crv", "kty", "x", "y"}, "RSA": {"e", "kty", "n"}, "OKP": {"crv", "kty", "x"}}[jwk["kty"].(string)]
	m := map[string]any{}
	for _, name := range required {
		m[name] = jwk[name]
	}
	b, err := json.Marshal(m) // map keys sorted, no white space
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return testkit.B64.EncodeToString(sum[:])
}

// proofFor is a valid token-endpoint proof by k at the clock's now; edit
// changes its header and payload before it is signed.
func proofFor(t *testing.T, iss *devissuer.Issuer, clock *testkit.Clock, k *testkit.Key, edit func(hdr, claims map[string]any)) string {
	t.Helper()
	jwk := k.JWK()
	delete(jwk, "kid")
	hdr := map[string]any{"typ": "dpop+jwt", "alg": k.Alg, "jwk": jwk}
	claims := map[string]any{"htm": "POST", "htu": iss.TokenURL(), "iat": clock.Now().Unix(), "jti": testkit.B64.EncodeToString([]byte(t.Name() + clock.Now().String()))}
	if edit != nil {
		edit(hdr, claims)
	}
	return testkit.Sign(t, hdr, claims, hdr["alg"].(string), k.Priv)
}

// tokenWithProof asks the token endpoint for a token with the DPoP header
// values proofs (none: no header).
func tokenWithProof(t *testing.T, ctx context.Context, iss *devissuer.Issuer, form url.Values, proofs ...string) (int, map[string]any) {
	t.Helper()
	a := post(t, ctx, iss.TokenURL(), form, func(r *http.Request) {
		devBasic(r)
		for _, p := range proofs {
			r.Header.Add("DPoP", p)
		}
	})
	var m map[string]any
	if err := json.Unmarshal(a.body, &m); err != nil {
		t.Fatalf("token endpoint: %d %s: %v", a.status, a.body, err)
	}
	if a.header.Get("Cache-Control") != "no-store" {
		t.Errorf("Cache-Control %q, want no-store", a.header.Get("Cache-Control"))
	}
	return a.status, m
}

func cnf(t *testing.T, tok string) map[string]any {
	t.Helper()
	raw, ok := segment(t, tok, 1)["cnf"]
	if !ok {
		return nil
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("cnf %s: %v", raw, err)
	}
	return m
}

var usersForm = url.Values{"grant_type": {"client_credentials"}, "audience": {"api/users"}}

func TestTokenEndpoint_DPoPBindsTheTokenToTheProofsKey(t *testing.T) {
	ctx, iss, clock := startAt(t)
	for _, k := range []*testkit.Key{
		testkit.ECKey(t, "p256", elliptic.P256()),
		testkit.ECKey(t, "p384", elliptic.P384()),
		testkit.EdKey(t, "ed"),
		testkit.RSAKey(t, "rsa"),
	} {
		t.Run(k.Alg, func(t *testing.T) {
			status, body := tokenWithProof(t, ctx, iss, usersForm, proofFor(t, iss, clock, k, nil))
			if status != http.StatusOK || body["token_type"] != "DPoP" {
				t.Fatalf("%d %v, want 200 with token_type DPoP (RFC 9449 §5)", status, body)
			}
			got := cnf(t, body["access_token"].(string))
			if len(got) != 1 || got["jkt"] != thumbprint(t, k) {
				t.Errorf("cnf %v, want exactly {jkt: %s}", got, thumbprint(t, k))
			}
		})
	}
	t.Run("PS256 proof, htu with a query and another spelling", func(t *testing.T) {
		k := testkit.RSAKey(t, "rsa-pss")
		p := proofFor(t, iss, clock, k, func(hdr, claims map[string]any) {
			hdr["alg"] = "PS256"
			claims["htu"] = strings.Replace(iss.TokenURL(), "http://", "HTTP://", 1) + "?x=1#f"
		})
		if status, body := tokenWithProof(t, ctx, iss, usersForm, p); status != http.StatusOK || cnf(t, body["access_token"].(string))["jkt"] != thumbprint(t, k) {
			t.Errorf("%d %v", status, body)
		}
	})
	t.Run("no DPoP header: a Bearer token without cnf", func(t *testing.T) {
		status, body := tokenWithProof(t, ctx, iss, usersForm)
		if status != http.StatusOK || body["token_type"] != "Bearer" || cnf(t, body["access_token"].(string)) != nil {
			t.Errorf("%d %v, want a Bearer token without cnf", status, body)
		}
	})
	t.Run("opaque: cnf and token_type DPoP in the introspection answer", func(t *testing.T) {
		k := testkit.ECKey(t, "opaque", elliptic.P256())
		form := url.Values{"grant_type": {"client_credentials"}, "audience": {"api/users"}, "token_format": {"opaque"}}
		status, body := tokenWithProof(t, ctx, iss, form, proofFor(t, iss, clock, k, nil))
		if status != http.StatusOK || body["token_type"] != "DPoP" {
			t.Fatalf("%d %v", status, body)
		}
		got := introspect(t, ctx, iss, body["access_token"].(string))
		c, _ := got["cnf"].(map[string]any)
		if got["active"] != true || got["token_type"] != "DPoP" || len(c) != 1 || c["jkt"] != thumbprint(t, k) {
			t.Errorf("introspection %v, want active with token_type DPoP and cnf.jkt %s (RFC 9449 §6.2)", got, thumbprint(t, k))
		}
	})
}

func TestTokenEndpoint_RefusesBadProofs(t *testing.T) {
	ctx, iss, clock := startAt(t)
	k := testkit.ECKey(t, "k", elliptic.P256())
	other := testkit.ECKey(t, "other", elliptic.P256())
	small := testkit.RSAKeyBits(t, "small", 1024)
	edit := func(f func(hdr, claims map[string]any)) string { return proofFor(t, iss, clock, k, f) }
	unsigned := func(hdr, claims map[string]any) string {
		return testkit.Segment(t, hdr) + "." + testkit.Segment(t, claims) + "."
	}
	privateJWK := func(hdr, _ map[string]any) {
		hdr["jwk"].(map[string]any)["d"] = "c2VjcmV0"
	}
	for _, tc := range []struct {
		name   string
		proofs []string
		want   string // in error_description
	}{
		{"two DPoP headers", []string{edit(nil), edit(nil)}, "2 DPoP headers"},
		{"not a JWT", []string{"not-a-jwt"}, "not a compact JWT"},
		{"typ JWT", []string{edit(func(hdr, _ map[string]any) { hdr["typ"] = "JWT" })}, `typ is "JWT", want "dpop+jwt"`},
		{"no typ", []string{edit(func(hdr, _ map[string]any) { delete(hdr, "typ") })}, "typ is missing"},
		{"alg none", []string{unsigned(map[string]any{"typ": "dpop+jwt", "alg": "none", "jwk": k.JWK()}, map[string]any{"htm": "POST"})}, `alg is "none"`},
		{"alg HS256", []string{testkit.Sign(t, map[string]any{"typ": "dpop+jwt", "alg": "HS256", "jwk": map[string]any{"kty": "oct", "k": "c2VjcmV0"}}, map[string]any{}, "HS256", []byte("secret"))}, `alg is "HS256"`},
		{"no jwk", []string{edit(func(hdr, _ map[string]any) { delete(hdr, "jwk") })}, "jwk is missing"},
		{"private jwk", []string{edit(privateJWK)}, `private member "d"`},
		{"jwk of another key", []string{edit(func(hdr, _ map[string]any) { hdr["jwk"] = other.JWK() })}, "does not verify"},
		{"1024-bit RSA", []string{proofFor(t, iss, clock, small, nil)}, "1024 bits"},
		{"htm GET", []string{edit(func(_, c map[string]any) { c["htm"] = "GET" })}, `htm is "GET", want "POST"`},
		{"htu elsewhere", []string{edit(func(_, c map[string]any) { c["htu"] = "https://api.example.com/token" })}, `htu is "https://api.example.com/token", want "` + iss.TokenURL() + `"`},
		{"no htu", []string{edit(func(_, c map[string]any) { delete(c, "htu") })}, "htu is missing"},
		{"iat 61s old", []string{edit(func(_, c map[string]any) { c["iat"] = clock.Now().Add(-61 * time.Second).Unix() })}, "is 1m1s from the issuer's clock"},
		{"iat 61s ahead", []string{edit(func(_, c map[string]any) { c["iat"] = clock.Now().Add(61 * time.Second).Unix() })}, "is -1m1s from the issuer's clock"},
		{"iat a string", []string{edit(func(_, c map[string]any) { c["iat"] = "now" })}, `iat is "now"`},
		{"no jti", []string{edit(func(_, c map[string]any) { delete(c, "jti") })}, "jti is missing"},
		{"payload not JSON", []string{testkit.Sign(t, map[string]any{"typ": "dpop+jwt", "alg": "ES256", "jwk": k.JWK()}, []byte("[1]"), "ES256", k.Priv)}, "payload is not one JSON object"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, body := tokenWithProof(t, ctx, iss, usersForm, tc.proofs...)
			desc, _ := body["error_description"].(string)
			if status != http.StatusBadRequest || body["error"] != "invalid_dpop_proof" || !strings.Contains(desc, tc.want) {
				t.Errorf("%d %v, want 400 invalid_dpop_proof saying %q", status, body, tc.want)
			}
			if _, leaked := body["access_token"]; leaked {
				t.Error("a refused proof obtained a token")
			}
		})
	}
}

func TestTokenEndpoint_ProofIsGoodOnce(t *testing.T) {
	ctx, iss, clock := startAt(t)
	k := testkit.ECKey(t, "k", elliptic.P256())
	p := proofFor(t, iss, clock, k, nil)
	if status, body := tokenWithProof(t, ctx, iss, usersForm, p); status != http.StatusOK {
		t.Fatalf("first use: %d %v", status, body)
	}
	status, body := tokenWithProof(t, ctx, iss, usersForm, p)
	if desc, _ := body["error_description"].(string); status != http.StatusBadRequest || !strings.Contains(desc, "was used before") {
		t.Errorf("replayed proof: %d %v, want 400 naming the reused jti", status, body)
	}
	// The same jti from another key is another proof.
	same := proofFor(t, iss, clock, testkit.ECKey(t, "k2", elliptic.P256()), nil)
	if status, body := tokenWithProof(t, ctx, iss, usersForm, same); status != http.StatusOK {
		t.Errorf("the same jti by another key: %d %v", status, body)
	}
	// A request refused before the proof is looked at does not spend it.
	fresh := proofFor(t, iss, clock, k, func(_, c map[string]any) { c["jti"] = "fresh" })
	if status, _ := tokenWithProof(t, ctx, iss, url.Values{"grant_type": {"client_credentials"}}, fresh); status != http.StatusBadRequest {
		t.Fatalf("no audience: %d, want 400", status)
	}
	if status, body := tokenWithProof(t, ctx, iss, usersForm, fresh); status != http.StatusOK {
		t.Errorf("a proof of a request refused for its form: %d %v, want it still good", status, body)
	}
	// Past the window, the replay is refused for its iat, whatever the jti set holds.
	clock.Advance(61 * time.Second)
	_, body = tokenWithProof(t, ctx, iss, usersForm, p)
	if desc, _ := body["error_description"].(string); !strings.Contains(desc, "outside ±1m0s") {
		t.Errorf("an old proof: %v", body)
	}
}

func TestDiscovery_DPoPAlgorithms(t *testing.T) {
	ctx, iss := start(t)
	_, body := get(t, ctx, iss.URL()+"/.well-known/openid-configuration")
	var doc struct {
		Algs []string `json:"dpop_signing_alg_values_supported"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(doc.Algs, devissuer.DPoPAlgorithms) || !slices.Contains(doc.Algs, "ES256") || slices.Contains(doc.Algs, "HS256") || slices.Contains(doc.Algs, "none") {
		t.Errorf("dpop_signing_alg_values_supported %v", doc.Algs)
	}
}

func TestMint_JKT(t *testing.T) {
	_, iss := start(t)
	k := testkit.EdKey(t, "ed")
	tok, err := iss.Mint(devissuer.MintRequest{Audience: []string{"api/users"}, JKT: thumbprint(t, k)})
	if err != nil {
		t.Fatal(err)
	}
	if got := cnf(t, tok); got["jkt"] != thumbprint(t, k) {
		t.Errorf("cnf %v", got)
	}
	for name, r := range map[string]devissuer.MintRequest{
		"not base64url":    {Audience: []string{"x"}, JKT: "not a thumbprint!"},
		"not 32 bytes":     {Audience: []string{"x"}, JKT: "AAAA"},
		"cnf in Extra too": {Audience: []string{"x"}, JKT: thumbprint(t, k), Extra: map[string]any{"cnf": map[string]any{}}},
	} {
		if _, err := iss.Mint(r); err == nil || !strings.Contains(err.Error(), "JKT") {
			t.Errorf("%s: err = %v, want a refusal naming JKT", name, err)
		}
	}
}
