package client_test

import (
	"context"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"

	"github.com/usher-dev/usher/client"
	"github.com/usher-dev/usher/internal/devissuer"
	"github.com/usher-dev/usher/service"
)

// usherFixture is a real usher on 127.0.0.1 (the engine behind a real gRPC
// listener) trusting a real dev issuer, and a count of the ValidateToken
// calls it served.
type usherFixture struct {
	iss   *devissuer.Issuer
	down  *devissuer.Issuer // trusted, but its keys can never be fetched
	addr  string
	calls atomic.Int64
	delay atomic.Int64 // nanoseconds each ValidateToken waits (to line up concurrent misses)

	mu   sync.Mutex
	gs   *grpc.Server
	v    *service.Validator
	lctx context.Context
}

func newUsher(t testing.TB) *usherFixture {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	iss, err := devissuer.New(ctx, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down, err := devissuer.New(ctx, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadURL := "http://" + dead.Addr().String() + "/jwks.json"
	dead.Close()
	cfg := &service.Config{
		Issuers: []service.IssuerConfig{
			{Issuer: iss.URL(), JWKSURI: iss.JWKSURL()},
			{Issuer: down.URL(), JWKSURI: deadURL, FetchTimeout: service.Duration(time.Second)},
		},
		Audiences: []service.AudienceConfig{{Audience: "api/users", Name: "Users API"}, {Audience: "api/invoices", Name: "Invoices API"}},
	}
	v, err := service.NewValidator(ctx, cfg, service.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	if err := v.WaitTried(wctx); err != nil {
		t.Fatal(err)
	}
	u := &usherFixture{iss: iss, down: down, v: v, lctx: ctx}
	u.start(t, "127.0.0.1:0")
	t.Cleanup(u.stop)
	return u
}

func (u *usherFixture) start(t testing.TB, addr string) {
	t.Helper()
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	count := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		if info.FullMethod == "/usher.v1.TokenService/ValidateToken" {
			u.calls.Add(1)
			if d := time.Duration(u.delay.Load()); d > 0 {
				time.Sleep(d)
			}
		}
		return h(ctx, req)
	}
	gs := grpc.NewServer(grpc.UnaryInterceptor(count))
	service.Register(u.lctx, gs, u.v, nil)
	go func() { _ = gs.Serve(lis) }()
	u.mu.Lock()
	u.gs, u.addr = gs, lis.Addr().String()
	u.mu.Unlock()
}

func (u *usherFixture) stop() {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.gs != nil {
		u.gs.Stop()
		u.gs = nil
	}
}

func (u *usherFixture) mint(t testing.TB, r devissuer.MintRequest) string {
	t.Helper()
	tok, err := u.iss.Mint(r)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func (u *usherFixture) client(t testing.TB) *client.Client {
	t.Helper()
	c, err := client.Dial(u.addr, []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// api is a protected gRPC service (grpc's interop TestService) that records
// the claims its handlers saw.
type api struct {
	testpb.UnimplementedTestServiceServer
	mu     sync.Mutex
	claims []string // subject of each handled call
}

func (a *api) seen(ctx context.Context) error {
	c, ok := client.ClaimsFromContext(ctx)
	if !ok {
		panic("handler ran without claims in the context")
	}
	a.mu.Lock()
	a.claims = append(a.claims, c.GetSubject())
	a.mu.Unlock()
	return nil
}

func (a *api) UnaryCall(ctx context.Context, _ *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	return &testpb.SimpleResponse{}, a.seen(ctx)
}

func (a *api) EmptyCall(context.Context, *testpb.Empty) (*testpb.Empty, error) {
	return &testpb.Empty{}, nil // skipped method: no claims expected
}

func (a *api) FullDuplexCall(stream grpc.BidiStreamingServer[testpb.StreamingOutputCallRequest, testpb.StreamingOutputCallResponse]) error {
	if err := a.seen(stream.Context()); err != nil {
		return err
	}
	for {
		if _, err := stream.Recv(); err != nil {
			return nil
		}
		if err := stream.Send(&testpb.StreamingOutputCallResponse{}); err != nil {
			return err
		}
	}
}

func (a *api) handled() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.claims)
}

// serveAPI starts the protected service on 127.0.0.1 with the interceptors
// installed, and returns a client connection to it.
func serveAPI(t testing.TB, authn *client.Authenticator) (testpb.TestServiceClient, *api, *grpc.ClientConn) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	impl := &api{}
	gs := grpc.NewServer(
		grpc.ChainUnaryInterceptor(authn.UnaryServerInterceptor()),
		grpc.ChainStreamInterceptor(authn.StreamServerInterceptor()),
	)
	testpb.RegisterTestServiceServer(gs, impl)
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return testpb.NewTestServiceClient(conn), impl, conn
}
