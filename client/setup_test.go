package client_test

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/usher-dev/usher/client"
	"github.com/usher-dev/usher/internal/testkit"
	usherv1 "github.com/usher-dev/usher/proto/usher/v1"
	"github.com/usher-dev/usher/service"
)

// usherFixture is a real usher on 127.0.0.1 (testkit's dev-issuer engine
// behind a real gRPC listener) and a count of the ValidateToken calls it
// served. While held, every ValidateToken waits until the test releases it
// (to line up concurrent misses).
type usherFixture struct {
	*testkit.DevEngine
	gs    *grpc.Server
	addr  string
	calls atomic.Int64
	gate  atomic.Pointer[chan struct{}] // non-nil: ValidateToken waits until it is closed
}

// newUsher serves a fresh dev engine (opts add to its options) until the test ends.
func newUsher(t testing.TB, opts ...service.Option) *usherFixture {
	t.Helper()
	u := &usherFixture{DevEngine: testkit.NewDevEngine(t, opts...)}
	u.gs, u.addr = u.Serve(t, grpc.UnaryInterceptor(u.count))
	return u
}

func (u *usherFixture) count(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if info.FullMethod == usherv1.TokenService_ValidateToken_FullMethodName {
		u.calls.Add(1)
		if g := u.gate.Load(); g != nil {
			select {
			case <-*g:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
	}
	return h(ctx, req)
}

// hold makes every ValidateToken wait until release is called (at the
// latest when the test ends).
func (u *usherFixture) hold(t testing.TB) (release func()) {
	ch := make(chan struct{})
	u.gate.Store(&ch)
	release = sync.OnceFunc(func() { close(ch) })
	t.Cleanup(release)
	return release
}

// client is a Client of this usher, closed when the test ends.
func (u *usherFixture) client(t testing.TB) *client.Client {
	t.Helper()
	return dialUsher(t, u.addr)
}

func dialUsher(t testing.TB, target string, opts ...grpc.DialOption) *client.Client {
	t.Helper()
	c, err := client.Dial(target, append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// fakeUsher is a usher.v1.TokenService on 127.0.0.1 that answers every
// ValidateToken with the response the test set: the answers a real usher
// never sends (UNSPECIFIED, a reason from a newer usher, a contradiction),
// and reasons the dev engine cannot produce. It records the requests it got;
// with fail set it answers that status instead.
type fakeUsher struct {
	usherv1.UnimplementedTokenServiceServer
	addr  string
	calls atomic.Int64
	resp  atomic.Pointer[usherv1.ValidateTokenResponse]
	fail  atomic.Pointer[status.Status]
	mu    sync.Mutex
	got   []*usherv1.ValidateTokenRequest
}

func newFakeUsher(t testing.TB) *fakeUsher {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeUsher{addr: lis.Addr().String()}
	gs := grpc.NewServer()
	usherv1.RegisterTokenServiceServer(gs, f)
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)
	return f
}

func (f *fakeUsher) ValidateToken(_ context.Context, req *usherv1.ValidateTokenRequest) (*usherv1.ValidateTokenResponse, error) {
	f.calls.Add(1)
	f.mu.Lock()
	f.got = append(f.got, proto.CloneOf(req))
	f.mu.Unlock()
	if st := f.fail.Load(); st != nil {
		return nil, st.Err()
	}
	return proto.CloneOf(f.resp.Load()), nil
}

// requests returns the requests usher got since the last call, and forgets them.
func (f *fakeUsher) requests() []*usherv1.ValidateTokenRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := f.got
	f.got = nil
	return out
}

// api is a protected gRPC service (grpc's interop TestService) that records
// the claims its handlers saw.
type api struct {
	testpb.UnimplementedTestServiceServer
	mu     sync.Mutex
	claims []*usherv1.Claims // what each handled call saw, as it saw it
	// scribble: each unary handler then changes the claims it got, in
	// place, and reads them again into reread.
	scribble bool
	reread   []*usherv1.Claims
}

func (a *api) seen(ctx context.Context) error {
	c, ok := client.ClaimsFromContext(ctx)
	if !ok {
		panic("handler ran without claims in the context")
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.claims = append(a.claims, proto.CloneOf(c))
	return nil
}

func (a *api) UnaryCall(ctx context.Context, _ *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	if err := a.seen(ctx); err != nil {
		return nil, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.scribble {
		c, _ := client.ClaimsFromContext(ctx)
		scribble(c)
		again, _ := client.ClaimsFromContext(ctx)
		a.reread = append(a.reread, proto.CloneOf(again))
	}
	return &testpb.SimpleResponse{}, nil
}

// scribble changes every part of c a handler could reach, in place where it
// can: a shallow copy would share the slices, the timestamps and Raw.
func scribble(c *usherv1.Claims) {
	c.Subject = "mallory"
	if len(c.Audience) > 0 {
		c.Audience[0] = "api/admin"
	}
	c.Audience = append(c.Audience, "api/evil")
	if len(c.Scopes) > 0 {
		c.Scopes[0] = "admin"
	}
	if c.ExpiresAt != nil {
		c.ExpiresAt.Seconds += 365 * 24 * 3600
	}
	if c.Raw != nil {
		for k := range c.Raw.Fields {
			delete(c.Raw.Fields, k)
		}
	}
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

// subjects is the subject each handled call saw.
func (a *api) subjects() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]string, len(a.claims))
	for i, c := range a.claims {
		out[i] = c.GetSubject()
	}
	return out
}

func (a *api) setScribble(on bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.scribble = on
}

// seenClaims returns what each handled call saw, and what the scribbling
// handlers read again after changing it.
func (a *api) seenClaims() (claims, reread []*usherv1.Claims) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]*usherv1.Claims(nil), a.claims...), append([]*usherv1.Claims(nil), a.reread...)
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
	conn := testkit.Dial(t, lis.Addr().String())
	return testpb.NewTestServiceClient(conn), impl, conn
}
