package service_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/usher-dev/usher/internal/testkit"
	"github.com/usher-dev/usher/service"
)

// TestOpaque_Discovery: an issuer of opaque tokens only, with discovery:
// true and no endpoint in the config, reads introspection_endpoint from
// its discovery document (which names no jwks_uri); ListIssuers shows the
// endpoint and that the issuer has no key set, and a JWT naming it is
// UNKNOWN_KEY with a hint that says why. A document that names no
// introspection_endpoint leaves the issuer's opaque tokens
// ISSUER_UNAVAILABLE with a hint to set the endpoint.
func TestOpaque_Discovery(t *testing.T) {
	ctx := testkit.Context(t)
	s := testkit.NewIntrospectionServer(t)
	cfg := s.Config(t)
	cfg.Discovery, cfg.Introspection.Endpoint = true, ""
	v := testkit.NewValidator(t, ctx, testkit.NewClock(), []service.IssuerConfig{cfg})
	waitTried(ctx, t, v)
	tok := opaqueToken("")
	s.Activate(tok, testkit.Claims(s.URL()))
	checkVerdict(t, v.Validate(ctx, tok, "api/users", nil), service.ReasonValid)
	st := v.Issuers()[0]
	if !st.Introspection || st.IntrospectionEndpoint != s.Endpoint() || !st.OpaqueOnly || st.JWKSURI != "" || st.LastError != "" {
		t.Fatalf("status %+v", st)
	}
	k := testkit.EdKey(t, "ed-1")
	got := v.Validate(ctx, k.Token(t, testkit.Claims(s.URL())), "api/users", nil)
	checkVerdict(t, got, service.ReasonUnknownKey)
	if !strings.Contains(got.Message, "names no jwks_uri") || !strings.Contains(got.Hint, "opaque tokens through introspection") {
		t.Fatalf("message %q, hint %q", got.Message, got.Hint)
	}

	t.Run("no introspection_endpoint", func(t *testing.T) {
		s := testkit.NewIntrospectionServer(t)
		s.SetDiscovery(map[string]any{"issuer": s.URL()})
		cfg := s.Config(t)
		cfg.Discovery, cfg.Introspection.Endpoint = true, ""
		v := testkit.NewValidator(t, ctx, testkit.NewClock(), []service.IssuerConfig{cfg})
		waitTried(ctx, t, v)
		got := v.Validate(ctx, opaqueToken(""), "api/users", nil)
		checkVerdict(t, got, service.ReasonIssuerUnavailable)
		if !strings.Contains(got.Message, "no introspection_endpoint") || !strings.Contains(got.Hint, "set introspection.endpoint") {
			t.Fatalf("message %q, hint %q", got.Message, got.Hint)
		}
		if n := s.Calls.Load(); n != 0 {
			t.Fatalf("%d calls", n)
		}
	})

	t.Run("introspection only, no discovery", func(t *testing.T) {
		v := testkit.NewValidator(t, ctx, testkit.NewClock(), []service.IssuerConfig{s.Config(t)})
		waitTried(ctx, t, v) // tried at once: there is no key set to fetch
		got := v.Validate(ctx, k.Token(t, testkit.Claims(s.URL())), "api/users", nil)
		checkVerdict(t, got, service.ReasonUnknownKey)
		if !strings.Contains(got.Message, "only introspection") {
			t.Fatalf("message %q", got.Message)
		}
	})
}

// TestOpaque_DiscoveryBothKinds: a discovery document naming jwks_uri and
// introspection_endpoint gives an issuer of both JWTs and opaque tokens.
func TestOpaque_DiscoveryBothKinds(t *testing.T) {
	ctx := testkit.Context(t)
	k := testkit.EdKey(t, "ed-1")
	s := testkit.NewIntrospectionServer(t)
	keys := testkit.NewIssuer(t, k)
	s.SetDiscovery(map[string]any{"issuer": s.URL(), "introspection_endpoint": s.Endpoint(), "jwks_uri": keys.JWKSURI()})
	cfg := s.Config(t)
	cfg.Discovery, cfg.Introspection.Endpoint = true, ""
	v := testkit.NewValidator(t, ctx, testkit.NewClock(), []service.IssuerConfig{cfg})
	waitTried(ctx, t, v)
	tok := opaqueToken("")
	s.Activate(tok, testkit.Claims(s.URL()))
	checkVerdict(t, v.Validate(ctx, tok, "api/users", nil), service.ReasonValid)
	got := v.Validate(ctx, k.Token(t, testkit.Claims(s.URL())), "api/users", nil)
	checkVerdict(t, got, service.ReasonValid)
	if got.Claims.TokenFormat != "jwt" {
		t.Fatalf("token format %q", got.Claims.TokenFormat)
	}
	if st := v.Issuers()[0]; st.OpaqueOnly || st.JWKSURI != keys.JWKSURI() || st.IntrospectionEndpoint != s.Endpoint() {
		t.Fatalf("status %+v", st)
	}
}

// TestOpaque_DiscoveredEndpointOnAPrivateAddressIsRefused: a public
// issuer's discovery document may not send tokens and usher's credentials
// to loopback or private addresses; what callers see names the class of
// refusal, never the address. allow_private_network lets it through.
func TestOpaque_DiscoveredEndpointOnAPrivateAddressIsRefused(t *testing.T) {
	s := testkit.NewIntrospectionServer(t)
	tok := opaqueToken("")
	for _, c := range []struct {
		name  string
		allow bool
		want  service.Reason
	}{{"refused", false, service.ReasonIssuerUnavailable}, {"allowed by name", true, service.ReasonValid}} {
		t.Run(c.name, func(t *testing.T) {
			ctx := testkit.Context(t)
			ri := newRemoteIssuerDoc(t, map[string]any{"introspection_endpoint": s.Endpoint()})
			s.Activate(tok, testkit.Claims(ri.URL))
			cfg := s.Config(t)
			cfg.Issuer, cfg.Discovery, cfg.Introspection.Endpoint, cfg.AllowPrivateNetwork = ri.URL, true, "", c.allow
			v := testkit.NewValidator(t, ctx, testkit.NewClock(), []service.IssuerConfig{cfg}, service.WithHTTPClient(ri.Client()))
			waitTried(ctx, t, v)
			got := v.Validate(ctx, tok, "api/users", nil)
			checkVerdict(t, got, c.want)
			if c.allow {
				return
			}
			st := v.Issuers()[0]
			if !strings.Contains(got.Message, "refused: the introspection_endpoint names a loopback address") || st.IntrospectionEndpoint != "" {
				t.Fatalf("message %q, status %+v", got.Message, st)
			}
			for _, leak := range []string{"127.0.0.1", s.Endpoint()} {
				if strings.Contains(got.Message+got.Hint+st.IntrospectionError, leak) {
					t.Errorf("callers see %q: %q / %q / %q", leak, got.Message, got.Hint, st.IntrospectionError)
				}
			}
		})
	}
	if n := len(s.Asked()); n != 1 {
		t.Fatalf("the endpoint was asked %d times, want once (allowed by name only)", n)
	}
}

// TestOpaque_ConfiguredEndpointAllowedByName: an endpoint that the
// configuration writes out is called where it says, also on loopback for a
// non-loopback issuer; the same endpoint from a discovery document is
// refused (above), and so is one in plain http on a public name.
func TestOpaque_ConfiguredEndpointAllowedByName(t *testing.T) {
	ctx := testkit.Context(t)
	s := testkit.NewIntrospectionServer(t)
	ri := newRemoteIssuerDoc(t, map[string]any{"introspection_endpoint": "http://login.example.com/introspect"})
	tok := opaqueToken("")
	s.Activate(tok, testkit.Claims(ri.URL))
	cfg := s.Config(t)
	cfg.Issuer = ri.URL
	v := testkit.NewValidator(t, ctx, testkit.NewClock(), []service.IssuerConfig{cfg}, service.WithHTTPClient(ri.Client()))
	checkVerdict(t, v.Validate(ctx, tok, "api/users", nil), service.ReasonValid)

	cfg.Discovery, cfg.Introspection.Endpoint = true, ""
	v = testkit.NewValidator(t, ctx, testkit.NewClock(), []service.IssuerConfig{cfg}, service.WithHTTPClient(ri.Client()))
	waitTried(ctx, t, v)
	got := v.Validate(ctx, tok, "api/users", nil)
	checkVerdict(t, got, service.ReasonIssuerUnavailable)
	if !strings.Contains(got.Message, "introspection_endpoint uses plain http: tokens and usher's client credentials would travel without TLS") {
		t.Fatalf("message %q", got.Message)
	}
}

// TestOpaque_Inspect: InspectToken shows an opaque token as its issuer
// answers for it: the answer's claims, VALID as the signature when it is
// active, the registered audiences that accept it; INACTIVE when it is not.
func TestOpaque_Inspect(t *testing.T) {
	ctx := testkit.Context(t)
	s := testkit.NewIntrospectionServer(t)
	v, _ := opaqueEngine(t, s, nil)
	tok := opaqueToken("")
	s.Activate(tok, testkit.Claims(s.URL(), "aud", []string{"api/invoices", "api/other"}))
	in := v.Inspect(ctx, "Bearer "+tok)
	if in.Signature != service.ReasonValid || in.Claims == nil || in.Claims.TokenFormat != "opaque" || in.Header != nil {
		t.Fatalf("inspection %+v", in)
	}
	if len(in.Audiences) != 1 || in.Audiences[0].Audience != "api/invoices" {
		t.Fatalf("audiences %v", in.Audiences)
	}
	if !strings.Contains(in.Message, "introspected by "+s.URL()) || !strings.Contains(in.Message, "accepted by Invoices API (api/invoices)") {
		t.Fatalf("message %q", in.Message)
	}
	gone := v.Inspect(ctx, opaqueToken(""))
	if gone.Signature != service.ReasonInactive || gone.Claims != nil || gone.Hint == "" {
		t.Fatalf("inspection of an unknown token %+v", gone)
	}
}

// TestOpaque_CacheBounds: the introspection cache holds at most
// cache_max_entries answers and about cache_max_bytes; a failure is never
// kept, and an answer too large for the whole bound is not kept at all.
func TestOpaque_CacheBounds(t *testing.T) {
	ctx := testkit.Context(t)
	s := testkit.NewIntrospectionServer(t)
	mk := func(pad int) string {
		tok := opaqueToken("")
		s.Activate(tok, testkit.Claims(s.URL(), "pad", strings.Repeat("x", pad)))
		return tok
	}
	engine := func(entries int, bytes int64) *service.Validator {
		v, err := service.NewValidator(ctx, &service.Config{Issuers: []service.IssuerConfig{s.Config(t)}, CacheMaxEntries: entries, CacheMaxBytes: bytes},
			service.WithClock(testkit.NewClock().Now))
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	v := engine(3, 0)
	for range 5 {
		checkVerdict(t, v.Validate(ctx, mk(0), "api/users", nil), service.ReasonValid)
	}
	if st := v.IntrospectionCacheStats(); st.Entries != 3 || st.Evictions != 2 {
		t.Fatalf("entries bound: %+v", st)
	}
	v = engine(1000, 1<<20)
	for range 10 {
		checkVerdict(t, v.Validate(ctx, mk(60<<10), "api/users", nil), service.ReasonValid) // about 240 KiB each
	}
	if st := v.IntrospectionCacheStats(); st.Bytes > 1<<20 || st.Entries > 4 || st.Entries < 3 {
		t.Fatalf("bytes bound: %+v", st)
	}
	s.Handle(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(503) })
	before := v.IntrospectionCacheStats().Entries
	checkVerdict(t, v.Validate(ctx, mk(0), "api/users", nil), service.ReasonIssuerUnavailable)
	if st := v.IntrospectionCacheStats(); st.Entries != before {
		t.Fatalf("a failure was cached: %+v", st)
	}
	s.Handle(nil)

	off := engine(-1, 0)
	tok := mk(0)
	for range 3 {
		checkVerdict(t, off.Validate(ctx, tok, "api/users", nil), service.ReasonValid)
	}
	if st := off.IntrospectionCacheStats(); st != (service.CacheStats{}) {
		t.Fatalf("cache off: %+v", st)
	}
}

// recorder is an Observer that also observes introspection.
type recorder struct {
	mu      sync.Mutex
	calls   []service.IntrospectionEvent
	lookups []service.IntrospectionLookup
	reasons []service.Reason
}

func (r *recorder) ObserveVerdict(ev service.VerdictEvent) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reasons = append(r.reasons, ev.Reason)
}

func (r *recorder) ObserveIntrospection(ev service.IntrospectionEvent) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, ev)
}

func (r *recorder) ObserveIntrospectionLookup(ev service.IntrospectionLookup) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lookups = append(r.lookups, ev)
}

// TestOpaque_Observer: an observer that implements IntrospectionObserver
// is told about each call (with its outcome) and each lookup (hit or
// miss); one that does not is still told about verdicts.
func TestOpaque_Observer(t *testing.T) {
	ctx := testkit.Context(t)
	s := testkit.NewIntrospectionServer(t)
	rec := &recorder{}
	v, _ := opaqueEngine(t, s, nil, service.WithObserver(rec))
	tok := opaqueToken("")
	s.Activate(tok, testkit.Claims(s.URL()))
	v.Validate(ctx, tok, "api/users", nil)
	v.Validate(ctx, tok, "api/users", nil)
	v.Validate(ctx, opaqueToken(""), "api/users", nil)
	s.Handle(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(401) })
	v.Validate(ctx, opaqueToken(""), "api/users", nil)
	rec.mu.Lock()
	defer rec.mu.Unlock()
	var outcomes []service.IntrospectionOutcome
	for _, c := range rec.calls {
		if c.Issuer != s.URL() || c.Took <= 0 {
			t.Errorf("call event %+v", c)
		}
		outcomes = append(outcomes, c.Outcome)
	}
	want := []service.IntrospectionOutcome{service.IntrospectionActive, service.IntrospectionInactive, service.IntrospectionUnauthorized}
	if !slicesEqual(outcomes, want) {
		t.Errorf("outcomes %v, want %v", outcomes, want)
	}
	hits := 0
	for _, l := range rec.lookups {
		if l.Hit {
			hits++
		}
	}
	if len(rec.lookups) != 4 || hits != 1 {
		t.Errorf("lookups %+v", rec.lookups)
	}
	if len(rec.reasons) != 4 || rec.reasons[3] != service.ReasonIssuerUnavailable {
		t.Errorf("verdicts %v", rec.reasons)
	}
}

func slicesEqual[T comparable](a, b []T) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestOpaque_Diagnose: usher doctor --config asks the endpoint about a
// made-up token with usher's credentials: an inactive answer proves them,
// a 401 says they are wrong, an endpoint that calls anything active is not
// checking tokens.
func TestOpaque_Diagnose(t *testing.T) {
	ctx, cancel := context.WithTimeout(testkit.Context(t), 10*time.Second)
	defer cancel()
	s := testkit.NewIntrospectionServer(t)
	find := func(checks []service.Check, name string) service.Check {
		t.Helper()
		for _, c := range checks {
			if c.Name == name {
				return c
			}
		}
		t.Fatalf("no check %q in %+v", name, checks)
		return service.Check{}
	}
	diagnose := func(cfg service.IssuerConfig) []service.Check {
		c := &service.Config{Issuers: []service.IssuerConfig{cfg}}
		if err := c.Validate(); err != nil {
			t.Fatal(err)
		}
		return service.Diagnose(ctx, c)
	}
	good := diagnose(s.Config(t))
	if c := find(good, "introspection credentials accepted"); !c.OK || !strings.Contains(c.Detail, "a made-up token is not active") {
		t.Fatalf("%+v", c)
	}
	if c := find(good, "key set"); !c.OK {
		t.Fatalf("%+v", c)
	}
	for _, c := range good {
		if strings.Contains(c.Detail+c.Fix, testkit.IntrospectionSecret) {
			t.Fatalf("a check shows the secret: %+v", c)
		}
	}

	s.SetCredentials(testkit.IntrospectionClientID, "another secret")
	c := find(diagnose(s.Config(t)), "introspection credentials accepted")
	if c.OK || !strings.Contains(c.Detail, "HTTP 401") || !strings.Contains(c.Fix, "usher's own client credentials are wrong") {
		t.Fatalf("%+v", c)
	}
	s.SetCredentials(testkit.IntrospectionClientID, testkit.IntrospectionSecret)

	s.Handle(func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte(`{"active":true}`)) })
	if c := find(diagnose(s.Config(t)), "introspection credentials accepted"); c.OK || !strings.Contains(c.Fix, "does not check tokens") {
		t.Fatalf("%+v", c)
	}
	s.Handle(nil)

	cfg := s.Config(t)
	cfg.Discovery, cfg.Introspection.Endpoint = true, ""
	checks := diagnose(cfg)
	if c := find(checks, "introspection endpoint known"); !c.OK || c.Detail != s.Endpoint() {
		t.Fatalf("%+v", c)
	}
	if c := find(checks, "introspection credentials accepted"); !c.OK {
		t.Fatalf("%+v", c)
	}
	cfg.Introspection.ClientSecretFile = t.TempDir() + "/none"
	if c := find(diagnose(cfg), "introspection client secret readable"); c.OK {
		t.Fatalf("%+v", c)
	}
}

// newRemoteIssuerDoc is newRemoteIssuer whose discovery document holds
// members besides its issuer.
func newRemoteIssuerDoc(t *testing.T, members map[string]any) *remoteIssuer {
	t.Helper()
	ri := &remoteIssuer{URL: "https://login.example.com"}
	ri.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/.well-known/openid-configuration" {
			http.NotFound(w, r)
			return
		}
		doc := map[string]any{"issuer": ri.URL}
		for k, v := range members {
			doc[k] = v
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(doc)
	}))
	t.Cleanup(ri.srv.Close)
	return ri
}

// TestOpaque_ReloadToOpaqueOnly: a reload that turns an issuer with a key
// set into one of opaque tokens only drops its keys on purpose: KeysLost
// does not refuse it.
func TestOpaque_ReloadToOpaqueOnly(t *testing.T) {
	ctx := testkit.Context(t)
	k := testkit.EdKey(t, "ed-1")
	s := testkit.NewIntrospectionServer(t)
	keys := testkit.NewIssuer(t, k)
	withKeys := service.IssuerConfig{Issuer: s.URL(), JWKSURI: keys.JWKSURI()}
	clock := testkit.NewClock()
	old := testkit.NewValidator(t, ctx, clock, []service.IssuerConfig{withKeys})
	waitTried(ctx, t, old)
	checkVerdict(t, old.Validate(ctx, k.Token(t, testkit.Claims(s.URL())), "api/users", nil), service.ReasonValid)
	renewed := testkit.NewValidator(t, ctx, clock, []service.IssuerConfig{s.Config(t)}, service.WithPrevious(old))
	waitTried(ctx, t, renewed)
	if err := renewed.KeysLost(old); err != nil {
		t.Fatalf("KeysLost: %v", err)
	}
	// A key source that gives nothing yet is still a loss.
	broken := withKeys
	broken.JWKSURI = testkit.ClosedURL(t) + "/jwks.json"
	b := testkit.NewValidator(t, ctx, clock, []service.IssuerConfig{broken}, service.WithPrevious(old))
	waitTried(ctx, t, b)
	if err := b.KeysLost(old); err == nil {
		t.Fatal("KeysLost: nil for a broken key source")
	}
}

// TestOpaque_ReloadKeepsKeysAndEndpoint: a reload during an outage of an
// issuer of both kinds (discovery gives jwks_uri and
// introspection_endpoint) that changes only introspection settings keeps
// its key set and its discovered endpoint: JWTs and opaque tokens are
// answered although neither the discovery document nor the key set can
// be fetched.
func TestOpaque_ReloadKeepsKeysAndEndpoint(t *testing.T) {
	ctx := testkit.Context(t)
	k := testkit.EdKey(t, "ed-1")
	s := testkit.NewIntrospectionServer(t)
	keys := testkit.NewIssuer(t, k)
	s.SetDiscovery(map[string]any{"issuer": s.URL(), "introspection_endpoint": s.Endpoint(), "jwks_uri": keys.JWKSURI()})
	cfg := s.Config(t)
	cfg.Discovery, cfg.Introspection.Endpoint = true, ""
	clock := testkit.NewClock()
	old := testkit.NewValidator(t, ctx, clock, []service.IssuerConfig{cfg})
	waitTried(ctx, t, old)

	keys.Handle(down(""))
	s.SetDiscovery(map[string]any{"issuer": "https://elsewhere.example"}) // discovery now fails
	changed := cfg
	ic := *cfg.Introspection
	ic.CacheTTL = 10 * time.Second
	changed.Introspection = &ic
	v := testkit.NewValidator(t, ctx, clock, []service.IssuerConfig{changed}, service.WithPrevious(old))
	waitTried(ctx, t, v)
	checkVerdict(t, v.Validate(ctx, k.Token(t, testkit.Claims(s.URL())), "api/users", nil), service.ReasonValid)
	tok := opaqueToken("")
	s.Activate(tok, testkit.Claims(s.URL()))
	checkVerdict(t, v.Validate(ctx, tok, "api/users", nil), service.ReasonValid)
	if err := v.KeysLost(old); err != nil {
		t.Fatal(err)
	}
}
