package testkit

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/usher-dev/usher/service"
)

// IntrospectionClientID and IntrospectionSecret are the credentials an
// IntrospectionServer expects. The secret holds ':', '%', '+', a space and
// non-ASCII letters, so only a client that form-encodes it before base64
// (RFC 6749 §2.3.1) gets in.
const (
	IntrospectionClientID = "usher"
	IntrospectionSecret   = "s3:cr%2Et+ wörd/ü="
)

// IntrospectionServer is an issuer's RFC 7662 introspection endpoint
// (/introspect) and discovery document (/.well-known/openid-configuration,
// naming the endpoint and no jwks_uri) on 127.0.0.1. It authenticates its
// callers with client_secret_basic as an authorization server does: base64,
// then the client id and secret form-decoded (RFC 6749 §2.3.1), and answers
// 401 invalid_client to anything else. It answers each token as the test
// says (Activate, Revoke; unknown tokens are inactive), or with a fault
// (Handle), and records what it was asked.
type IntrospectionServer struct {
	srv *httptest.Server
	// Calls counts requests to /introspect, authenticated or not.
	Calls atomic.Int64

	mu       sync.Mutex
	clientID string
	secret   string
	answers  map[string]map[string]any
	asked    []string
	handler  http.HandlerFunc
	hold     chan struct{}
	doc      map[string]any
}

// NewIntrospectionServer serves until the test ends, expecting
// IntrospectionClientID and IntrospectionSecret.
func NewIntrospectionServer(t testing.TB) *IntrospectionServer {
	t.Helper()
	s := &IntrospectionServer{clientID: IntrospectionClientID, secret: IntrospectionSecret, answers: map[string]map[string]any{}}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.srv.Close)
	return s
}

// URL is the issuer (its iss) and the base of its discovery document.
func (s *IntrospectionServer) URL() string { return s.srv.URL }

// Endpoint is the introspection endpoint.
func (s *IntrospectionServer) Endpoint() string { return s.srv.URL + "/introspect" }

// Config trusts this issuer for its opaque tokens only, through its
// configured endpoint, with a secret file holding IntrospectionSecret and
// a line break.
func (s *IntrospectionServer) Config(t testing.TB) service.IssuerConfig {
	t.Helper()
	return service.IssuerConfig{Issuer: s.URL(), Introspection: &service.IntrospectionConfig{
		Endpoint: s.Endpoint(), ClientID: IntrospectionClientID,
		ClientSecretFile: WriteFile(t, "introspection.secret", []byte(IntrospectionSecret+"\n")),
	}}
}

// Activate makes token active with these members (e.g. Claims(URL())).
func (s *IntrospectionServer) Activate(token string, members map[string]any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.answers[token] = members
}

// Revoke makes token inactive from now on.
func (s *IntrospectionServer) Revoke(token string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.answers, token)
}

// SetCredentials changes the credentials the endpoint accepts.
func (s *IntrospectionServer) SetCredentials(clientID, secret string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.clientID, s.secret = clientID, secret
}

// Handle answers /introspect with h (a fault) until Handle(nil).
func (s *IntrospectionServer) Handle(h http.HandlerFunc) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.handler = h
}

// Hold makes /introspect requests wait until release is called (then they
// are answered as usual) or until they are cancelled. release runs when the
// test ends at the latest.
func (s *IntrospectionServer) Hold(t testing.TB) (release func()) {
	ch := make(chan struct{})
	s.mu.Lock()
	s.hold = ch
	s.mu.Unlock()
	release = sync.OnceFunc(func() {
		s.mu.Lock()
		if s.hold == ch {
			s.hold = nil
		}
		s.mu.Unlock()
		close(ch)
	})
	t.Cleanup(release)
	return release
}

// SetDiscovery serves doc as the discovery document (nil: the default).
func (s *IntrospectionServer) SetDiscovery(doc map[string]any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.doc = doc
}

// Asked lists the tokens authenticated callers asked about, in order.
func (s *IntrospectionServer) Asked() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.asked...)
}

func (s *IntrospectionServer) serve(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	h, doc, hold := s.handler, s.doc, s.hold
	s.mu.Unlock()
	switch r.URL.Path {
	case "/.well-known/openid-configuration":
		if doc == nil {
			doc = map[string]any{"issuer": s.URL(), "introspection_endpoint": s.Endpoint()}
		}
		introspectionJSON(w, http.StatusOK, doc)
	case "/introspect":
		s.Calls.Add(1)
		// Reading the body first lets the server see the client give up
		// (its context ends) while a held or hanging request waits.
		parseErr := r.ParseForm()
		if hold != nil {
			select {
			case <-hold:
			case <-r.Context().Done():
				return
			}
		}
		if h != nil {
			h(w, r)
			return
		}
		if parseErr != nil {
			introspectionJSON(w, http.StatusBadRequest, map[string]any{"error": "invalid_request"})
			return
		}
		s.introspect(w, r)
	default:
		http.NotFound(w, r)
	}
}

func (s *IntrospectionServer) introspect(w http.ResponseWriter, r *http.Request) {
	if !s.authenticated(r) {
		w.Header().Set("WWW-Authenticate", `Basic realm="introspection"`)
		introspectionJSON(w, http.StatusUnauthorized, map[string]any{"error": "invalid_client"})
		return
	}
	if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/x-www-form-urlencoded" {
		introspectionJSON(w, http.StatusBadRequest, map[string]any{"error": "invalid_request"})
		return
	}
	if err := r.ParseForm(); err != nil || r.PostForm.Get("token") == "" || r.PostForm.Get("token_type_hint") != "access_token" || r.URL.RawQuery != "" {
		introspectionJSON(w, http.StatusBadRequest, map[string]any{"error": "invalid_request"})
		return
	}
	tok := r.PostForm.Get("token")
	s.mu.Lock()
	s.asked = append(s.asked, tok)
	members, ok := s.answers[tok]
	s.mu.Unlock()
	if !ok {
		introspectionJSON(w, http.StatusOK, map[string]any{"active": false})
		return
	}
	out := map[string]any{"active": true}
	for k, v := range members {
		out[k] = v
	}
	introspectionJSON(w, http.StatusOK, out)
}

// authenticated checks client_secret_basic as RFC 6749 §2.3.1 says: the
// base64 of the form-encoded id, ':' and the form-encoded secret.
func (s *IntrospectionServer) authenticated(r *http.Request) bool {
	scheme, b64, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Basic") {
		return false
	}
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return false
	}
	encID, encSecret, ok := strings.Cut(string(raw), ":")
	if !ok {
		return false
	}
	id, err1 := url.QueryUnescape(encID)
	secret, err2 := url.QueryUnescape(encSecret)
	s.mu.Lock()
	defer s.mu.Unlock()
	return err1 == nil && err2 == nil && id == s.clientID && secret == s.secret
}

func introspectionJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}
