package testkit

import (
	"context"
	"log/slog"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/usher-dev/usher/grpcapi"
	"github.com/usher-dev/usher/internal/devissuer"
	"github.com/usher-dev/usher/service"
)

// Audiences is the audiences registry of usher dev and of the test engines.
var Audiences = []service.KnownAudience{{Audience: "api/users", Name: "Users API"}, {Audience: "api/invoices", Name: "Invoices API"}}

// DevEngine is a real engine trusting a real dev issuer on 127.0.0.1 and a
// second, trusted issuer (Down) whose key set can never be fetched, so that
// its tokens are KEYS_UNAVAILABLE. Audiences are registered.
type DevEngine struct {
	Issuer, Down *devissuer.Issuer
	Validator    *service.Validator
	ctx          context.Context
}

// DevIssuer is a development issuer on 127.0.0.1 until the test ends.
func DevIssuer(t testing.TB) *devissuer.Issuer {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	iss, err := devissuer.New(ctx, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return iss
}

// NewDevEngine starts the issuers and the engine (opts add to a discarding
// logger) and returns once every issuer's keys were tried. Everything stops
// when the test ends.
func NewDevEngine(t testing.TB, opts ...service.Option) *DevEngine {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	iss, down := DevIssuer(t), DevIssuer(t)
	cfg := &service.Config{
		Issuers: []service.IssuerConfig{
			{Issuer: iss.URL(), JWKSURI: iss.JWKSURL()},
			{Issuer: down.URL(), JWKSURI: ClosedURL(t) + "/jwks.json", FetchTimeout: time.Second},
		},
		Audiences: Audiences,
	}
	v, err := service.NewValidator(ctx, cfg, append([]service.Option{service.WithLogger(slog.New(slog.DiscardHandler))}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	if err := v.WaitTried(wctx); err != nil {
		t.Fatal(err)
	}
	return &DevEngine{Issuer: iss, Down: down, Validator: v, ctx: ctx}
}

// Mint is a token of the dev issuer.
func (e *DevEngine) Mint(t testing.TB, r devissuer.MintRequest) string {
	t.Helper()
	return Mint(t, e.Issuer, r)
}

// Mint is a token of iss.
func Mint(t testing.TB, iss *devissuer.Issuer, r devissuer.MintRequest) string {
	t.Helper()
	tok, err := iss.Mint(r)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// Serve serves the engine as usher.v1.TokenService (with health and
// reflection) on a real gRPC listener on 127.0.0.1 until the test ends, and
// returns the server (to stop it early) and its address. opts add server
// options such as interceptors.
func (e *DevEngine) Serve(t testing.TB, opts ...grpc.ServerOption) (*grpc.Server, string) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(opts...)
	grpcapi.Register(e.ctx, gs, e.Validator, nil)
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)
	return gs, lis.Addr().String()
}

// Dial is a plaintext client connection to addr, closed when the test ends.
func Dial(t testing.TB, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}
