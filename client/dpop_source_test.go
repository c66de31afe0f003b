package client_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/usher-dev/usher/client"
	"github.com/usher-dev/usher/internal/testkit"
)

// tokenEndpoint is an OAuth 2.0 token endpoint on 127.0.0.1 that binds the
// tokens it issues to the key of the request's DPoP proof, after checking
// the proof as an authorization server must (RFC 9449 §4.3, §5): one
// proof, typ, a signature verified with its jwk, htm and htu of this
// request, iat within a minute of its clock, a jti it has not seen, no ath,
// and its nonce when it demands one.
type tokenEndpoint struct {
	*httptest.Server
	now func() time.Time

	mu       sync.Mutex
	nonce    string // demanded when set
	rotate   bool   // a new nonce for every request
	answer   func(w http.ResponseWriter, jkt string) bool
	jtis     map[string]bool
	requests []tokenRequest
	issued   int
}

// tokenRequest is what the endpoint saw of one request.
type tokenRequest struct {
	proof      proof
	form       url.Values
	id, secret string // from Basic, form-decoded
	basic      bool
	refused    string // the error the endpoint answered, "" for a token
}

func newTokenEndpoint(t testing.TB, now func() time.Time) *tokenEndpoint {
	e := &tokenEndpoint{now: now, jtis: map[string]bool{}}
	e.Server = httptest.NewServer(http.HandlerFunc(e.serve))
	t.Cleanup(e.Close)
	return e
}

// tokenURL has a query, which the proof's htu must not have.
func (e *tokenEndpoint) tokenURL() string { return e.URL + "/oauth/token?tenant=acme" }

func (e *tokenEndpoint) serve(w http.ResponseWriter, r *http.Request) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := r.ParseForm(); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if e.rotate {
		e.nonce = fmt.Sprintf("nonce-%d", len(e.requests))
	}
	var req tokenRequest
	req.form = r.PostForm
	if id, secret, ok := r.BasicAuth(); ok {
		req.basic = true
		req.id, _ = url.QueryUnescape(id)
		req.secret, _ = url.QueryUnescape(secret)
	}
	req.refused = e.check(r, &req)
	e.requests = append(e.requests, req)
	if req.refused != "" {
		if req.refused == "use_dpop_nonce" {
			w.Header().Set("DPoP-Nonce", e.nonce)
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_ = json.NewEncoder(w).Encode(map[string]string{"error": req.refused, "error_description": "refused: " + req.refused})
		return
	}
	if e.answer != nil && e.answer(w, req.proof.thumb) {
		return
	}
	e.issued++
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"access_token": fmt.Sprintf("at-%d-bound-to-%s", e.issued, req.proof.thumb),
		"token_type": "DPoP", "expires_in": 3600})
}

// check returns the error to answer, or "" when the proof is good.
func (e *tokenEndpoint) check(r *http.Request, req *tokenRequest) string {
	vals := r.Header.Values("DPoP")
	if len(vals) != 1 {
		return "invalid_dpop_proof"
	}
	p, err := parseProof(vals[0])
	if err != nil {
		return "invalid_dpop_proof"
	}
	req.proof = p
	iat, err := p.iatErr()
	_, hasATH := p.claims["ath"]
	switch {
	case p.typ != "dpop+jwt", p.str("htm") != r.Method, p.str("htu") != "http://"+r.Host+r.URL.Path, hasATH,
		err != nil, iat < e.now().Add(-time.Minute).Unix() || iat > e.now().Add(time.Minute).Unix(),
		p.str("jti") == "", e.jtis[p.str("jti")]:
		return "invalid_dpop_proof"
	}
	e.jtis[p.str("jti")] = true
	if e.nonce != "" && p.str("nonce") != e.nonce {
		return "use_dpop_nonce"
	}
	return ""
}

func (e *tokenEndpoint) seen() []tokenRequest {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]tokenRequest(nil), e.requests...)
}

func (e *tokenEndpoint) set(f func(e *tokenEndpoint)) {
	e.mu.Lock()
	defer e.mu.Unlock()
	f(e)
}

// Credentials an RFC 6749 §2.3.1 encoding mangles when skipped.
const (
	dpopClientID     = "billing ui:1"
	dpopClientSecret = "s3cr+t/é&=%"
)

func dpopConfig(e *tokenEndpoint) clientcredentials.Config {
	return clientcredentials.Config{ClientID: dpopClientID, ClientSecret: dpopClientSecret, TokenURL: e.tokenURL(), Scopes: []string{"invoices.read", "invoices.write"}}
}

func newSigner(t testing.TB, opts ...client.DPoPSignerOption) *client.DPoPSigner {
	t.Helper()
	s, err := client.NewDPoPSigner(signerKeys(t)["ES256"], opts...)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestDPoPTokenSource_BoundToken: the endpoint gets a client-credentials
// request for the audience, authenticated with client_secret_basic, with a
// proof for itself signed by the caller's key; the DPoP token it answers
// is reused until it expires.
func TestDPoPTokenSource_BoundToken(t *testing.T) {
	clock := testkit.NewClock()
	clock.Set(time.Now())
	e := newTokenEndpoint(t, clock.Now)
	s := newSigner(t, client.WithProofClock(clock.Now))
	src := client.DPoPClientCredentialsSources(testkit.Context(t), dpopConfig(e), s, "api/invoices")["api/invoices"]
	tok, err := src.Token()
	if err != nil {
		t.Fatal(err)
	}
	if want := "at-1-bound-to-" + s.Thumbprint(); tok.AccessToken != want || tok.Type() != "DPoP" || tok.Expiry.IsZero() {
		t.Errorf("token %q of type %q expiring %v, want %q of type DPoP with an expiry", tok.AccessToken, tok.Type(), tok.Expiry, want)
	}
	if _, err := src.Token(); err != nil {
		t.Fatal(err)
	}
	seen := e.seen()
	if len(seen) != 1 {
		t.Fatalf("the endpoint saw %d requests, want 1 (the token is reused until it expires)", len(seen))
	}
	r := seen[0]
	if !r.basic || r.id != dpopClientID || r.secret != dpopClientSecret {
		t.Errorf("client_secret_basic: basic %v, id %q, secret matches %v", r.basic, r.id, r.secret == dpopClientSecret)
	}
	for k, want := range map[string]string{"grant_type": "client_credentials", "audience": "api/invoices", "resource": "api/invoices", "scope": "invoices.read invoices.write", "client_secret": ""} {
		if got := r.form.Get(k); got != want {
			t.Errorf("form %s = %q, want %q", k, got, want)
		}
	}
	if got, want := r.proof.str("htu"), e.URL+"/oauth/token"; got != want {
		t.Errorf("htu %q, want the token endpoint without its query %q", got, want)
	}
	if r.proof.iat(t) != clock.Now().Unix() || r.proof.thumb != s.Thumbprint() {
		t.Errorf("iat %d (clock %d), jkt %s (signer %s)", r.proof.iat(t), clock.Now().Unix(), r.proof.thumb, s.Thumbprint())
	}
}

// TestDPoPTokenSource_NonceRetry: an endpoint that demands a nonce
// (use_dpop_nonce, RFC 9449 §8) gets a second proof carrying it, once; the
// nonce is sent with the next token request straight away; an endpoint
// that keeps refusing is an error after two requests.
func TestDPoPTokenSource_NonceRetry(t *testing.T) {
	e := newTokenEndpoint(t, time.Now)
	e.set(func(e *tokenEndpoint) {
		e.nonce = "n-1"
		e.answer = func(w http.ResponseWriter, jkt string) bool {
			// Expiring at once: every Token() asks again.
			_, _ = fmt.Fprintf(w, `{"access_token":"at-%s","token_type":"dpop","expires_in":1}`, jkt)
			return true
		}
	})
	s := newSigner(t)
	src := client.DPoPTokenSource(testkit.Context(t), dpopConfig(e), s)
	if _, err := src.Token(); err != nil {
		t.Fatal(err)
	}
	seen := e.seen()
	if len(seen) != 2 || seen[0].refused != "use_dpop_nonce" || seen[1].refused != "" || seen[1].proof.str("nonce") != "n-1" {
		t.Fatalf("requests: %+v; want a refusal, then a proof with nonce n-1 answered", seen)
	}
	if seen[0].proof.str("jti") == seen[1].proof.str("jti") {
		t.Error("the retry reused the first proof's jti")
	}
	if _, err := src.Token(); err != nil {
		t.Fatal(err)
	}
	if seen = e.seen(); len(seen) != 3 || seen[2].refused != "" {
		t.Errorf("the next token request was refused or retried (%d requests): the nonce was not kept", len(seen))
	}

	e.set(func(e *tokenEndpoint) { e.rotate = true })
	_, err := client.DPoPTokenSource(testkit.Context(t), dpopConfig(e), s).Token()
	if err == nil || !strings.Contains(err.Error(), "use_dpop_nonce") {
		t.Fatalf("an endpoint refusing every nonce: %v, want an error naming use_dpop_nonce", err)
	}
	if n := len(e.seen()); n != 5 {
		t.Errorf("the endpoint saw %d requests, want 5 (one retry)", n)
	}
}

// TestDPoPTokenSource_Refusals: answers that give no usable bound token are
// errors that say what is wrong, and never carry the client secret.
func TestDPoPTokenSource_Refusals(t *testing.T) {
	for _, tc := range []struct {
		name   string
		answer func(w http.ResponseWriter) bool
		want   []string
	}{
		{"bearer token: not bound", func(w http.ResponseWriter) bool {
			_, _ = fmt.Fprint(w, `{"access_token":"plain","token_type":"Bearer","expires_in":60}`)
			return true
		}, []string{`token_type "Bearer", not DPoP`, "did not bind", "is DPoP enabled for client billing ui:1"}},
		{"invalid client", func(w http.ResponseWriter) bool {
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = fmt.Fprint(w, `{"error":"invalid_client","error_description":"unknown client"}`)
			return true
		}, []string{"401", "invalid_client", "unknown client"}},
		{"no access token", func(w http.ResponseWriter) bool {
			_, _ = fmt.Fprint(w, `{"token_type":"DPoP"}`)
			return true
		}, []string{"without a JSON access_token"}},
		{"expires_in not a number", func(w http.ResponseWriter) bool {
			_, _ = fmt.Fprint(w, `{"access_token":"x","token_type":"DPoP","expires_in":"soon"}`)
			return true
		}, []string{"expires_in"}},
		{"answer too large", func(w http.ResponseWriter) bool {
			_, _ = fmt.Fprintf(w, `{"access_token":"%s","token_type":"DPoP"}`, strings.Repeat("a", 2<<20))
			return true
		}, []string{"larger than"}},
		{"redirect", func(w http.ResponseWriter) bool {
			w.Header().Set("Location", "https://elsewhere.example.com/token")
			w.WriteHeader(http.StatusTemporaryRedirect)
			return true
		}, []string{"307"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newTokenEndpoint(t, time.Now)
			e.set(func(e *tokenEndpoint) { e.answer = func(w http.ResponseWriter, _ string) bool { return tc.answer(w) } })
			_, err := client.DPoPTokenSource(testkit.Context(t), dpopConfig(e), newSigner(t)).Token()
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			if strings.Contains(err.Error(), dpopClientSecret) {
				t.Errorf("error carries the client secret: %q", err)
			}
		})
	}
}

// TestDPoPTokenSource_SecretInForm: with AuthStyleInParams the id and
// secret go in the form, and no Authorization header is sent.
func TestDPoPTokenSource_SecretInForm(t *testing.T) {
	e := newTokenEndpoint(t, time.Now)
	cfg := dpopConfig(e)
	cfg.AuthStyle = oauth2.AuthStyleInParams
	if _, err := client.DPoPTokenSource(testkit.Context(t), cfg, newSigner(t)).Token(); err != nil {
		t.Fatal(err)
	}
	r := e.seen()[0]
	if r.basic || r.form.Get("client_id") != dpopClientID || r.form.Get("client_secret") != dpopClientSecret {
		t.Errorf("basic %v, form client_id %q, secret matches %v", r.basic, r.form.Get("client_id"), r.form.Get("client_secret") == dpopClientSecret)
	}
}
