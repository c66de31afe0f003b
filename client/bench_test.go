package client_test

import (
	"context"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jwt"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/usher-dev/usher/client"
	"github.com/usher-dev/usher/internal/devissuer"
	"github.com/usher-dev/usher/internal/testkit"
)

// benchInterceptor runs the unary interceptor as a server would, with the
// token in the incoming metadata, for a handler that does nothing.
func benchInterceptor(b *testing.B, opts ...client.Option) {
	u := newUsher(b)
	authn, err := client.NewAuthenticator(u.client(b), "api/invoices", opts...)
	if err != nil {
		b.Fatal(err)
	}
	tok := u.Mint(b, devissuer.MintRequest{Audience: []string{"api/invoices"}})
	ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs("authorization", "Bearer "+tok))
	intercept := authn.UnaryServerInterceptor()
	info := &grpc.UnaryServerInfo{FullMethod: unaryMethod}
	handler := func(ctx context.Context, _ any) (any, error) { return nil, nil }
	if _, err := intercept(ctx, nil, info, handler); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := intercept(ctx, nil, info, handler); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkInterceptor/hit: a repeated token, answered from the verdict cache.
// BenchmarkInterceptor/miss: every call asks usher over loopback gRPC.
func BenchmarkInterceptor(b *testing.B) {
	b.Run("hit", func(b *testing.B) { benchInterceptor(b) })
	b.Run("miss", func(b *testing.B) { benchInterceptor(b, client.WithoutCache()) })
}

// BenchmarkEmbeddedJWX is what a service embedding JWT logic pays per call
// instead: jwx's parse and verify of the same token with a cached key set.
func BenchmarkEmbeddedJWX(b *testing.B) {
	e := testkit.NewDevEngine(b)
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Get(e.Issuer.JWKSURL())
	if err != nil {
		b.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	set, err := jwk.Parse(body)
	if err != nil {
		b.Fatal(err)
	}
	tok := []byte(e.Mint(b, devissuer.MintRequest{Audience: []string{"api/invoices"}}))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := jwt.Parse(tok, jwt.WithKeySet(set), jwt.WithAudience("api/invoices"), jwt.WithIssuer(e.Issuer.URL())); err != nil {
			b.Fatal(err)
		}
	}
}
