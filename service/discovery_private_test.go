package service_test

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/usher-dev/usher/internal/testkit"
	"github.com/usher-dev/usher/service"
)

// remoteIssuer is an issuer on a public name: its discovery document is
// served over TLS by a test server that a client built for it reaches as
// https://login.example.com (the test certificate is valid for
// *.example.com). The client dials loopback addresses as usual and nothing
// else.
type remoteIssuer struct {
	URL string
	srv *httptest.Server
}

func newRemoteIssuer(t *testing.T, jwksURI string) *remoteIssuer {
	t.Helper()
	ri := &remoteIssuer{URL: "https://login.example.com"}
	ri.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/.well-known/openid-configuration" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]string{"issuer": ri.URL, "jwks_uri": jwksURI})
	}))
	t.Cleanup(ri.srv.Close)
	return ri
}

// Client reaches login.example.com at the test server.
func (ri *remoteIssuer) Client() *http.Client {
	pool := x509.NewCertPool()
	pool.AddCert(ri.srv.Certificate())
	tr := &http.Transport{TLSClientConfig: ri.srv.Client().Transport.(*http.Transport).TLSClientConfig.Clone()}
	tr.TLSClientConfig.RootCAs = pool
	var d net.Dialer
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, _, _ := net.SplitHostPort(addr)
		switch {
		case host == "login.example.com":
			return d.DialContext(ctx, network, ri.srv.Listener.Addr().String())
		case host == "localhost" || net.ParseIP(host).IsLoopback():
			return d.DialContext(ctx, network, addr)
		}
		return nil, errors.New("this test reaches no other network (" + addr + ")")
	}
	return &http.Client{Transport: tr, Timeout: 5 * time.Second}
}

// TestDiscovery_JWKSURIOnAPrivateAddressIsRefused: a public issuer's
// discovery document may not send usher to loopback or private addresses
// (a port scan of usher's network, with ListIssuers.last_error as the
// oracle). The key set is never fetched, and what callers see names the
// class of refusal, never the address or the port. allow_private_network
// lets it through by name.
func TestDiscovery_JWKSURIOnAPrivateAddressIsRefused(t *testing.T) {
	k := testkit.EdKey(t, "ed-1")
	keys := testkit.NewIssuer(t, k) // the key set, on http://127.0.0.1:<port>
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(keys.URL(), "http://"))
	leaks := []string{"127.0.0.1", ":" + port, "localhost", "ffff", "10.0.0.5", "169.254"}
	for _, c := range []struct{ name, jwksURI string }{
		{"plain http on loopback", keys.JWKSURI()},
		{"localhost", strings.Replace(keys.JWKSURI(), "127.0.0.1", "localhost", 1)},
		{"IPv4-mapped loopback", strings.Replace(keys.JWKSURI(), "127.0.0.1", "[::ffff:127.0.0.1]", 1)},
		{"https on a private address", "https://10.0.0.5/jwks.json"},
		{"cloud metadata", "https://169.254.169.254/latest/meta-data/"},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx := testkit.Context(t)
			ri := newRemoteIssuer(t, c.jwksURI)
			v := testkit.NewValidator(t, ctx, testkit.NewClock(), []service.IssuerConfig{{Issuer: ri.URL, Discovery: true}}, service.WithHTTPClient(ri.Client()))
			waitTried(ctx, t, v)
			got := v.Validate(ctx, k.Token(t, testkit.Claims(ri.URL)), "api/users", nil)
			checkVerdict(t, got, service.ReasonKeysUnavailable)
			st := v.Issuers()[0]
			if !strings.Contains(st.LastError, "refused: the jwks_uri names a ") {
				t.Errorf("last error %q does not say the jwks_uri was refused", st.LastError)
			}
			for _, leak := range leaks {
				for what, s := range map[string]string{"last error": st.LastError, "jwks_uri": st.JWKSURI, "message": got.Message, "hint": got.Hint} {
					if strings.Contains(s, leak) {
						t.Errorf("the %s shows %q: %q", what, leak, s)
					}
				}
			}
			if n := keys.Requests.Load(); n != 0 {
				t.Fatalf("the key set on loopback was fetched %d times", n)
			}
		})
	}

	t.Run("allowed by name", func(t *testing.T) {
		ctx := testkit.Context(t)
		ri := newRemoteIssuer(t, keys.JWKSURI())
		cfg := service.IssuerConfig{Issuer: ri.URL, Discovery: true, AllowPrivateNetwork: true}
		v := testkit.NewValidator(t, ctx, testkit.NewClock(), []service.IssuerConfig{cfg}, service.WithHTTPClient(ri.Client()))
		waitTried(ctx, t, v)
		checkVerdict(t, v.Validate(ctx, k.Token(t, testkit.Claims(ri.URL)), "api/users", nil), service.ReasonValid)
	})
}
