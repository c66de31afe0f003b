// Package recipes_test checks the identity-provider recipes of
// docs/identity-providers.md: each recipe's configuration is this folder's
// <provider>.yaml, which the page shows word for word, and which usher's own
// loader (the one of `usher serve --config`) reads. The engine built from it
// then fetches the provider's recorded discovery document and a key set,
// each served from testdata/<provider> at the provider's own URL, and
// judges tokens of the shape the provider issues.
package recipes_test

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/usher-dev/usher/internal/config"
	"github.com/usher-dev/usher/internal/testkit"
	"github.com/usher-dev/usher/service"
)

// sample is one token of a recipe's testdata/<provider>/tokens.json (or
// introspection.json), and what usher must say of it.
type sample struct {
	token    string         // its name in the testdata
	valid    string         // the audience it is VALID at
	scopes   []string       // required there
	wrong    string         // an audience it gets AUDIENCE_MISMATCH at
	hint     []string       // in that verdict's hint
	noAud    bool           // at wrong, the token names no audience at all
	notValid bool           // no audience accepts it (valid is unset)
	first    service.Reason // the verdict's reason at wrong, when a check before the audience's fails too
}

var recipes = map[string][]sample{
	"auth0": {
		{token: "user token for the Invoices API", valid: "https://invoices.example.com", scopes: []string{"invoices:read"}, wrong: "https://users.example.com",
			hint: []string{"issued for Invoices API (https://invoices.example.com) and https://dev-usher.eu.auth0.com/userinfo; ", "request the token with audience=https://users.example.com", "Applications > APIs"}},
		{token: "machine-to-machine token for the Users API", valid: "https://users.example.com", scopes: []string{"users:read"}, wrong: "https://invoices.example.com",
			hint: []string{"audience=https://invoices.example.com"}},
	},
	"okta": {
		{token: "user token of the invoices authorization server", valid: "api://invoices", scopes: []string{"invoices:read"}, wrong: "api://users",
			hint: []string{"issued for Invoices API (api://invoices)", "Okta authorization server whose audience is api://users"}},
		{token: "client credentials token of the users authorization server", valid: "api://users", scopes: []string{"users:read"}, wrong: "api://invoices",
			hint: []string{"Okta authorization server whose audience is api://invoices"}},
	},
	"keycloak": {
		{token: "user token without an audience mapper", notValid: true, wrong: "invoices-api",
			hint: []string{`aud "account" is Keycloak's own account console`, "audience mapper for invoices-api", "Clients > billing-ui > Client scopes > billing-ui-dedicated"}},
		{token: "user token with an audience mapper for invoices-api", valid: "invoices-api", scopes: []string{"invoices"}, wrong: "users-api",
			hint: []string{"audience mapper for users-api"}},
	},
	"entra": {
		{token: "v2.0 user token for the Invoices API", valid: "6e74172b-be56-4843-9ff4-e66a39bb12e3", scopes: []string{"Invoices.Read"}, wrong: "api://invoices",
			hint: []string{"scope=api://invoices/.default", "v2.0, whose aud is always the API's application (client) id", "accessTokenAcceptedVersion to 1"}},
		{token: "v2.0 app-only token for the Invoices API", valid: "6e74172b-be56-4843-9ff4-e66a39bb12e3", wrong: "api://invoices",
			hint: []string{"scope=api://invoices/.default (client credentials"}},
		{token: "v1.0 user token for the Invoices API's App ID URI", valid: "api://invoices", scopes: []string{"Invoices.Read"}, wrong: "6e74172b-be56-4843-9ff4-e66a39bb12e3",
			hint: []string{"scope=6e74172b-be56-4843-9ff4-e66a39bb12e3/.default", "v1.0", "accessTokenAcceptedVersion to 2"}},
	},
	"cognito": {
		{token: "machine-to-machine access token of the billing app client", valid: "4l2ovbv2f0e0m6d9kq3p8dftgc", scopes: []string{"https://invoices.example.com/invoices.read"}, wrong: "6p1tv0e3n8cj5lq2r9g7bm4kds",
			hint: []string{"app client 6p1tv0e3n8cj5lq2r9g7bm4kds", "resource server", "required_scopes"}},
		{token: "user access token of the web app client", valid: "6p1tv0e3n8cj5lq2r9g7bm4kds", scopes: []string{"https://invoices.example.com/invoices.read"}, wrong: "4l2ovbv2f0e0m6d9kq3p8dftgc",
			hint: []string{"app client 4l2ovbv2f0e0m6d9kq3p8dftgc"}},
		// The ID token names its app client in aud, which this recipe does not
		// read, and has no client_id: no audience, so no API accepts it.
		{token: "ID token of the web app client", notValid: true, wrong: "6p1tv0e3n8cj5lq2r9g7bm4kds", noAud: true, first: service.ReasonMissingClaim,
			hint: []string{"this looks like an ID token (it carries at_hash", "send the access token instead", "app client 6p1tv0e3n8cj5lq2r9g7bm4kds"}},
	},
	"google": {
		{token: "service account ID token for the Invoices API", valid: "https://invoices-7q2d5xk3la-ew.a.run.app", wrong: "https://users-7q2d5xk3la-ew.a.run.app",
			hint: []string{"request the Google-signed ID token with audience https://users-7q2d5xk3la-ew.a.run.app", "identity?audience="}},
	},
	"hydra": {
		{token: "JWT access token for the Invoices API", valid: "https://invoices.example.com", scopes: []string{"invoices.read"}, wrong: "https://users.example.com",
			hint: []string{"request the token with audience=https://users.example.com (Ory Hydra", "audience list"}},
		{token: "ory_at_UqbhxDMcJtq5CjlQKgiycBdmNnMpuxGb4DJ7qWeHKVc.0xYsiqVYFOhLKEhwZCLDDCZKnS_zmBVbGaWQGaOYvVg", valid: "https://users.example.com", scopes: []string{"users.read"}, wrong: "https://invoices.example.com",
			hint: []string{"request the token with audience=https://invoices.example.com (Ory Hydra"}},
	},
	"node-oidc-provider": {
		{token: "client credentials token for the Invoices API (resource=https://invoices.example.com)", valid: "https://invoices.example.com", scopes: []string{"invoices:read"}, wrong: "https://users.example.com",
			hint: []string{`ask the issuer for a token with audience https://users.example.com (OAuth 2.0 "audience" or RFC 8707 "resource" parameter)`}},
	},
}

// The page shows each recipe's configuration exactly as the file the tests
// load: a block after <!-- recipe: NAME.yaml --> per file, and no other.
func TestRecipes_PageShowsTheFiles(t *testing.T) {
	page := string(read(t, filepath.Join("..", "identity-providers.md")))
	files, err := filepath.Glob("*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no recipes (%v)", err)
	}
	if n := strings.Count(page, "<!-- recipe: "); n != len(files) {
		t.Errorf("the page marks %d recipe blocks, and there are %d recipe files", n, len(files))
	}
	for _, f := range files {
		marker := "<!-- recipe: " + f + " -->\n```yaml\n"
		i := strings.Index(page, marker)
		if i < 0 {
			t.Errorf("the page has no %q followed by a yaml block", strings.TrimSpace(marker))
			continue
		}
		block, _, ok := strings.Cut(page[i+len(marker):], "```\n")
		if !ok {
			t.Errorf("%s: the block is not closed", f)
			continue
		}
		if want := string(read(t, f)); block != want {
			t.Errorf("the page's block for %s differs from the file:\n--- page\n%s--- file\n%s", f, block, want)
		}
	}
}

func TestRecipes(t *testing.T) {
	files, err := filepath.Glob("*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range files {
		names = append(names, strings.TrimSuffix(f, ".yaml"))
	}
	want := slices.Sorted(maps.Keys(recipes))
	if !slices.Equal(names, want) {
		t.Fatalf("recipes on disk %v, tested %v: every recipe needs its samples here", names, want)
	}
	for _, name := range names {
		t.Run(name, func(t *testing.T) { testRecipe(t, name, recipes[name]) })
	}
}

func testRecipe(t *testing.T, name string, samples []sample) {
	ctx := testkit.Context(t)
	cfg, err := config.Load(name + ".yaml")
	if err != nil {
		t.Fatal(err)
	}
	p := newProvider(t, name)
	for i := range cfg.Engine.Issuers {
		if in := cfg.Engine.Issuers[i].Introspection; in != nil {
			in.ClientSecretFile = testkit.WriteFile(t, "introspection.secret", []byte("usher-secret"))
		}
	}
	v, err := service.NewValidator(ctx, &cfg.Engine, service.WithHTTPClient(p.client()),
		service.WithClock(testkit.NewClock().Now), service.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	if err := v.WaitTried(ctx); err != nil {
		t.Fatal(err)
	}
	for _, st := range v.Issuers() {
		if want := slices.Sorted(maps.Keys(p.keys)); !slices.Equal(st.KeyIDs, want) {
			t.Fatalf("issuer %s: keys %v, want the signing keys %v (last error: %s); asked for %v", st.Issuer, st.KeyIDs, want, st.LastError, p.asked())
		}
	}
	for _, s := range samples {
		t.Run(s.token, func(t *testing.T) { checkSample(ctx, t, v, p.token(t, s.token), s) })
	}
}

func checkSample(ctx context.Context, t *testing.T, v *service.Validator, tok string, s sample) {
	if !s.notValid {
		if got := v.Validate(ctx, tok, s.valid, s.scopes); got.Reason != service.ReasonValid {
			t.Fatalf("at %s: %v: %s (hint: %s)", s.valid, got.Reason, got.Message, got.Hint)
		}
	}
	verdict := v.Validate(ctx, tok, s.wrong, nil)
	first := cmp.Or(s.first, service.ReasonAudienceMismatch)
	if verdict.Reason != first {
		t.Fatalf("at %s: %v: %s, want %v", s.wrong, verdict.Reason, verdict.Message, first)
	}
	i := slices.IndexFunc(verdict.Violations, func(v service.Violation) bool { return v.Reason == service.ReasonAudienceMismatch })
	if i < 0 {
		t.Fatalf("at %s: violations %+v, none AUDIENCE_MISMATCH", s.wrong, verdict.Violations)
	}
	got := verdict.Violations[i]
	if s.noAud != (got.Mismatch != nil && len(got.Mismatch.Actual) == 0) {
		t.Errorf("at %s: mismatch %+v, want no audience: %v", s.wrong, got.Mismatch, s.noAud)
	}
	for _, w := range s.hint {
		if !strings.Contains(got.Hint, w) {
			t.Errorf("hint %q does not contain %q", got.Hint, w)
		}
	}
	t.Logf("%s at %s: %s", got.Reason, s.wrong, got.Hint)
}

// provider serves a recipe's testdata as its identity provider would at
// its own URLs: each recorded discovery document at its issuer's
// /.well-known/openid-configuration, a key set (of the keys the sample
// tokens name) at each jwks_uri the recipe or a document names, and its
// recorded introspection answers. The engine reaches it through client(),
// whose transport sends every request to this loopback server whatever
// its host, so nothing but the address is changed.
type provider struct {
	dir    string
	srv    *httptest.Server
	routes map[string][]byte // https://host/path to the body served there
	intro  map[string]json.RawMessage
	keys   map[string]*testkit.Key // by kid

	mu  sync.Mutex
	got []string
}

func newProvider(t *testing.T, name string) *provider {
	p := &provider{dir: filepath.Join("testdata", name), routes: map[string][]byte{}, keys: map[string]*testkit.Key{}}
	for _, raw := range p.tokens(t) {
		if _, ok := p.keys[raw.Header.KID]; !ok {
			p.keys[raw.Header.KID] = testkit.RSAKey(t, raw.Header.KID)
		}
	}
	jwks := p.jwks(t, name)
	docs, _ := filepath.Glob(filepath.Join(p.dir, "*openid-configuration.json"))
	for _, f := range docs {
		body := read(t, f)
		var d struct {
			Issuer  string `json:"issuer"`
			JWKSURI string `json:"jwks_uri"`
		}
		if err := json.Unmarshal(body, &d); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		p.routes[strings.TrimSuffix(d.Issuer, "/")+"/.well-known/openid-configuration"] = body
		p.routes[d.JWKSURI] = jwks
	}
	// A recipe's jwks_uri (no discovery) is served the same key set.
	cfg, err := config.Load(name + ".yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, is := range cfg.Engine.Issuers {
		if is.JWKSURI != "" {
			p.routes[is.JWKSURI] = jwks
		}
	}
	if b, err := os.ReadFile(filepath.Join(p.dir, "introspection.json")); err == nil {
		if err := json.Unmarshal(b, &p.intro); err != nil {
			t.Fatal(err)
		}
	}
	p.srv = httptest.NewServer(http.HandlerFunc(p.serve))
	t.Cleanup(p.srv.Close)
	return p
}

func (p *provider) serve(w http.ResponseWriter, r *http.Request) {
	u := "https://" + r.Host + r.URL.Path
	p.mu.Lock()
	p.got = append(p.got, r.Method+" "+u)
	p.mu.Unlock()
	if r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/introspect") {
		answer, ok := p.intro[r.PostFormValue("token")]
		if !ok {
			answer = json.RawMessage(`{"active":false}`)
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(answer)
		return
	}
	body, ok := p.routes[u]
	if !ok || r.Method != http.MethodGet {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(body)
}

func (p *provider) asked() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.got)
}

// client reaches p's server for every URL, keeping the URL's host as the
// request's Host.
func (p *provider) client() *http.Client {
	addr := p.srv.Listener.Addr().String()
	return &http.Client{Transport: roundTripper(func(r *http.Request) (*http.Response, error) {
		c := r.Clone(r.Context())
		c.Host = r.URL.Host
		c.URL.Scheme, c.URL.Host = "http", addr
		return http.DefaultTransport.RoundTrip(c)
	})}
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// rawToken is a sample token as the provider issues it, before signing.
type rawToken struct {
	Header struct {
		KID string `json:"kid"`
		Alg string `json:"alg"`
	} `json:"-"`
	HeaderJSON  json.RawMessage `json:"header"`
	PayloadJSON json.RawMessage `json:"payload"`
}

func (p *provider) tokens(t *testing.T) map[string]*rawToken {
	var out map[string]*rawToken
	if err := json.Unmarshal(read(t, filepath.Join(p.dir, "tokens.json")), &out); err != nil {
		t.Fatal(err)
	}
	for name, raw := range out {
		if err := json.Unmarshal(raw.HeaderJSON, &raw.Header); err != nil || raw.Header.KID == "" || raw.Header.Alg != "RS256" {
			t.Fatalf("tokens.json %q: header %s: want an RS256 header with a kid (%v)", name, raw.HeaderJSON, err)
		}
	}
	return out
}

// token is the sample named name, signed with the key its header names (an
// opaque token, from introspection.json, as it is).
func (p *provider) token(t *testing.T, name string) string {
	if _, ok := p.intro[name]; ok {
		return name
	}
	raw, ok := p.tokens(t)[name]
	if !ok {
		t.Fatalf("no sample token %q in %s", name, p.dir)
	}
	return testkit.Sign(t, compact(t, raw.HeaderJSON), compact(t, raw.PayloadJSON), raw.Header.Alg, p.keys[raw.Header.KID].Priv)
}

// compact is JSON as providers send it in a token: without white space.
func compact(t *testing.T, b []byte) []byte {
	var out bytes.Buffer
	if err := json.Compact(&out, b); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// jwks is the key set of the keys the sample tokens name, as the provider
// publishes them: Entra adds its issuer to each key, Keycloak publishes an
// encryption key beside the signing keys (which usher must leave aside).
func (p *provider) jwks(t *testing.T, name string) []byte {
	var keys []any
	for _, kid := range slices.Sorted(maps.Keys(p.keys)) {
		jwk := p.keys[kid].JWK()
		if name == "entra" {
			jwk["issuer"] = "https://login.microsoftonline.com/f3c1c2d4-5b6a-4e7f-8a9b-0c1d2e3f4a5b/v2.0"
			jwk["cloud_instance_name"] = "microsoftonline.com"
		}
		keys = append(keys, jwk)
	}
	if name == "keycloak" {
		enc := testkit.RSAKey(t, "kQ2vX9nR1pL6yW4cZ7bF0dSJm4aQ8cT1vX6nR2pK9yA").JWK()
		enc["use"], enc["alg"] = "enc", "RSA-OAEP"
		keys = append(keys, enc)
	}
	return testkit.JWKS(keys...)
}

func read(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
