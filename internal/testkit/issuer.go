package testkit

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/usher-dev/usher/service"
)

// Issuer is an issuer's key set (/jwks.json) and OIDC discovery document
// (/.well-known/openid-configuration) on 127.0.0.1. The test controls the key
// set it serves, or the whole answer (Handle), and reads how often the key
// set was asked for.
type Issuer struct {
	srv *httptest.Server
	// Requests counts requests for /jwks.json.
	Requests atomic.Int64

	mu              sync.Mutex
	body            []byte           // the JWKS served
	handler         http.HandlerFunc // answers /jwks.json instead, when set
	discoveryIssuer string           // the discovery document's issuer; "" for URL()
}

// NewIssuer serves keys until the test ends.
func NewIssuer(t testing.TB, keys ...*Key) *Issuer {
	t.Helper()
	i := &Issuer{}
	i.Publish(keys...)
	i.srv = httptest.NewServer(http.HandlerFunc(i.serve))
	t.Cleanup(i.srv.Close)
	return i
}

func (i *Issuer) serve(w http.ResponseWriter, r *http.Request) {
	i.mu.Lock()
	body, h, iss := i.body, i.handler, i.discoveryIssuer
	i.mu.Unlock()
	switch r.URL.Path {
	case "/jwks.json":
		i.Requests.Add(1)
		if h != nil {
			h(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(body)
	case "/.well-known/openid-configuration":
		if iss == "" {
			iss = i.URL()
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"issuer": iss, "jwks_uri": i.JWKSURI()})
	default:
		http.NotFound(w, r)
	}
}

// URL is the issuer (its iss) and the base of its discovery document.
func (i *Issuer) URL() string { return i.srv.URL }

// JWKSURI is where its key set is served.
func (i *Issuer) JWKSURI() string { return i.srv.URL + "/jwks.json" }

// Config trusts this issuer through its jwks_uri, with the engine's defaults.
func (i *Issuer) Config() service.IssuerConfig {
	return service.IssuerConfig{Issuer: i.URL(), JWKSURI: i.JWKSURI()}
}

// Publish serves keys as the key set from now on (a rotation), and ends any
// Handle.
func (i *Issuer) Publish(keys ...*Key) {
	ks := make([]any, len(keys))
	for n, k := range keys {
		ks[n] = k
	}
	i.ServeRaw(JWKS(ks...))
}

// ServeRaw serves body as the key set, and ends any Handle.
func (i *Issuer) ServeRaw(body []byte) {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.body, i.handler = body, nil
}

// Handle answers key set requests with h (a fault: an error status, a slow
// or broken body) until Publish or ServeRaw.
func (i *Issuer) Handle(h http.HandlerFunc) {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.handler = h
}

// SetDiscoveryIssuer makes the discovery document name iss as its issuer.
func (i *Issuer) SetDiscoveryIssuer(iss string) {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.discoveryIssuer = iss
}

// ServeBody is a handler that answers with body.
func ServeBody(body []byte) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) { w.Write(body) }
}

// ClosedURL is a loopback http URL where nothing listens.
func ClosedURL(t testing.TB) string {
	t.Helper()
	srv := httptest.NewServer(http.NotFoundHandler())
	u := srv.URL
	srv.Close()
	return u
}

// NewValidator builds an engine over issuers, with the audiences registry, a
// discarding logger and clock as the engine's clock; opts add to those.
func NewValidator(t testing.TB, ctx context.Context, clock *Clock, issuers []service.IssuerConfig, opts ...service.Option) *service.Validator {
	t.Helper()
	cfg := &service.Config{Issuers: issuers, Audiences: slices.Clone(Audiences)}
	all := append([]service.Option{service.WithClock(clock.Now), service.WithLogger(slog.New(slog.DiscardHandler))}, opts...)
	v, err := service.NewValidator(ctx, cfg, all...)
	if err != nil {
		t.Fatal(err)
	}
	return v
}
