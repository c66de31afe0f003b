package service

import (
	"context"
	"crypto/x509"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestFetchClient_RefusesDowngradeRedirect(t *testing.T) {
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte(`{"keys":[]}`)) }))
	defer plain.Close()
	tlsSrv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Same host (127.0.0.1), other port and scheme: a downgrade.
		http.Redirect(w, r, plain.URL+"/jwks.json", http.StatusFound)
	}))
	defer tlsSrv.Close()
	hc := newFetchClient(5 * time.Second)
	pool := x509.NewCertPool()
	pool.AddCert(tlsSrv.Certificate())
	hc.Transport.(*http.Transport).TLSClientConfig.RootCAs = pool
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := getLimited(ctx, hc, tlsSrv.URL+"/jwks.json", maxJWKSBytes)
	if err == nil || !strings.Contains(err.Error(), "https to http refused") {
		t.Fatalf("https → http redirect: %v", err)
	}
}

// TestFetchClient_RefusesLinkLocal: whatever client and policy, a dial to a
// link-local, metadata, multicast or unspecified address is refused in the
// dialer's Control, before any packet, in every IPv6 form that leads there.
func TestFetchClient_RefusesLinkLocal(t *testing.T) {
	for _, addr := range append(neverForms, "0.0.0.0:80", "224.0.0.1:80") {
		if err := checkDial(context.Background(), "tcp", addr, nil); err == nil {
			t.Errorf("%s was not refused", addr)
		}
	}
	if err := checkDial(context.Background(), "tcp", "127.0.0.1:443", nil); err != nil {
		t.Errorf("loopback refused without an issuer's rules: %v", err)
	}
	// Through the default client, without an issuer's rules: refused at the
	// dial (or, when the environment sets a proxy, before asking it).
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, u := range []string{"http://169.254.169.254/latest/meta-data/", "https://[64:ff9b::a9fe:a9fe]/", "https://[fd00:ec2::254]/latest/meta-data/", "https://[::ffff:169.254.169.254]/"} {
		_, err := getLimited(ctx, newFetchClient(2*time.Second), u, 1024)
		if err == nil || !strings.Contains(err.Error(), "link-local, multicast or cloud metadata address") {
			t.Errorf("%s: %v", u, err)
		}
	}
}

func TestRetryAfter(t *testing.T) {
	now := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		status int
		value  string
		want   time.Duration
	}{
		{503, "120", 2 * time.Minute},
		{429, now.Add(30 * time.Second).Format(http.TimeFormat), 30 * time.Second},
		{503, "86400", maxRetryAfter},
		{503, "-5", 0},
		{503, "soon", 0},
		{500, "120", 0},
	} {
		resp := &http.Response{StatusCode: c.status, Header: http.Header{"Retry-After": {c.value}}}
		if got := retryAfter(resp, now); got != c.want {
			t.Errorf("%d Retry-After %q: %s, want %s", c.status, c.value, got, c.want)
		}
	}
}
