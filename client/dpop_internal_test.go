package client

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"golang.org/x/oauth2/clientcredentials"
)

// TestDPoPTokenSource_Timeout: a token endpoint that never answers costs a
// caller the source's timeout, not a hang.
func TestDPoPTokenSource_Timeout(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	defer srv.Close()
	defer close(release)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewDPoPSigner(key)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	src := &dpopSource{ctx: ctx, cfg: clientcredentials.Config{ClientID: "c", TokenURL: srv.URL}, signer: s, timeout: 100 * time.Millisecond}
	if _, err := src.Token(); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Token() against an endpoint that never answers: %v, want the timeout", err)
	}
	if ctx.Err() != nil {
		t.Fatal("Token() returned only when the test's own deadline passed")
	}
}
