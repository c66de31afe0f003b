package client_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/usher-dev/usher/client"
	"github.com/usher-dev/usher/internal/devissuer"
)

const unaryMethod = "/grpc.testing.TestService/UnaryCall"

func withToken(ctx context.Context, values ...string) context.Context {
	for _, v := range values {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", v)
	}
	return ctx
}

func callCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// rejection is what a caller in any language can read from a refused call.
type rejection struct {
	code      codes.Code
	msg       string
	info      *errdetails.ErrorInfo
	challenge string
}

func unary(t *testing.T, c testpb.TestServiceClient, ctx context.Context) rejection {
	t.Helper()
	var hdr metadata.MD
	_, err := c.UnaryCall(ctx, &testpb.SimpleRequest{}, grpc.Header(&hdr))
	return readRejection(err, hdr)
}

func readRejection(err error, hdr metadata.MD) rejection {
	st := status.Convert(err)
	r := rejection{code: st.Code(), msg: st.Message()}
	for _, d := range st.Details() {
		if ei, ok := d.(*errdetails.ErrorInfo); ok {
			r.info = ei
		}
	}
	if v := hdr.Get("www-authenticate"); len(v) > 0 {
		r.challenge = v[0]
	}
	return r
}

func TestInterceptor_ContractTable(t *testing.T) {
	u := newUsher(t)
	authn, err := client.NewAuthenticator(u.client(t), "api/invoices",
		client.WithRequiredScopes(unaryMethod, "invoices.read"))
	if err != nil {
		t.Fatal(err)
	}
	c, impl, _ := serveAPI(t, authn)

	invoices := u.mint(t, devissuer.MintRequest{Audience: []string{"api/invoices"}, Scopes: []string{"invoices.read"}})
	users := u.mint(t, devissuer.MintRequest{Audience: []string{"api/users"}, Scopes: []string{"invoices.read"}})
	noScope := u.mint(t, devissuer.MintRequest{Audience: []string{"api/invoices"}, Scopes: []string{"invoices.list"}})
	expired := u.mint(t, devissuer.MintRequest{Audience: []string{"api/invoices"}, Scopes: []string{"invoices.read"}, TTL: -time.Hour})
	downTok, err := u.down.Mint(devissuer.MintRequest{Audience: []string{"api/invoices"}})
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name      string
		auth      []string
		code      codes.Code
		reason    string
		challenge string // substring of www-authenticate
		meta      map[string]string
	}{
		{"valid", []string{"Bearer " + invoices}, codes.OK, "", "", nil},
		{"scheme is case-insensitive", []string{"bEaReR " + invoices}, codes.OK, "", "", nil},
		{"no authorization", nil, codes.Unauthenticated, "MISSING_CREDENTIALS", `Bearer realm="api/invoices"`, nil},
		{"two authorization values", []string{"Bearer " + invoices, "Bearer " + invoices}, codes.Unauthenticated, "INVALID_CREDENTIALS", `error="invalid_request"`, nil},
		{"basic scheme", []string{"Basic dXNlcjpwYXNz"}, codes.Unauthenticated, "INVALID_CREDENTIALS", `Bearer realm="api/invoices"`, nil},
		{"empty token", []string{"Bearer "}, codes.Unauthenticated, "INVALID_CREDENTIALS", `error="invalid_request"`, nil},
		{"garbage token", []string{"Bearer not-a-jwt"}, codes.Unauthenticated, "MALFORMED", `error="invalid_token"`, nil},
		{"token for another API", []string{"Bearer " + users}, codes.Unauthenticated, "AUDIENCE_MISMATCH", `error="invalid_token"`,
			map[string]string{"expected_audience": "api/invoices", "actual_audience": "api/users", "issuer": u.iss.URL(), "kid": devissuer.KeyRS256}},
		{"expired", []string{"Bearer " + expired}, codes.Unauthenticated, "EXPIRED", `error="invalid_token"`, nil},
		{"scope missing", []string{"Bearer " + noScope}, codes.PermissionDenied, "INSUFFICIENT_SCOPE", `error="insufficient_scope"`,
			map[string]string{"missing_scopes": "invoices.read"}},
		{"issuer keys unavailable", []string{"Bearer " + downTok}, codes.Unavailable, "KEYS_UNAVAILABLE", `Bearer realm="api/invoices"`, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := impl.handled()
			r := unary(t, c, withToken(callCtx(t), tc.auth...))
			if r.code != tc.code {
				t.Fatalf("code = %v (%s), want %v", r.code, r.msg, tc.code)
			}
			if tc.code == codes.OK {
				if impl.handled() != before+1 {
					t.Fatal("handler did not run with claims")
				}
				return
			}
			if impl.handled() != before {
				t.Fatal("handler ran for a refused call")
			}
			if r.info == nil || r.info.GetReason() != tc.reason || r.info.GetDomain() != "usher.v1" {
				t.Fatalf("ErrorInfo = %v, want reason %s in domain usher.v1", r.info, tc.reason)
			}
			if !strings.Contains(r.challenge, tc.challenge) || !strings.HasPrefix(r.challenge, "Bearer ") {
				t.Errorf("www-authenticate = %q, want it to contain %q", r.challenge, tc.challenge)
			}
			if tc.code == codes.PermissionDenied && !strings.Contains(r.challenge, `scope="invoices.read"`) {
				t.Errorf("www-authenticate = %q, want the missing scope (RFC 6750 §3)", r.challenge)
			}
			for k, v := range tc.meta {
				if got := r.info.GetMetadata()[k]; got != v {
					t.Errorf("ErrorInfo metadata[%s] = %q, want %q", k, got, v)
				}
			}
		})
	}
}

func TestInterceptor_StreamCheckedBeforeHandler(t *testing.T) {
	u := newUsher(t)
	authn, err := client.NewAuthenticator(u.client(t), "api/invoices")
	if err != nil {
		t.Fatal(err)
	}
	c, impl, _ := serveAPI(t, authn)
	stream, err := c.FullDuplexCall(withToken(callCtx(t), "Bearer "+u.mint(t, devissuer.MintRequest{Audience: []string{"api/users"}})))
	if err != nil {
		t.Fatal(err)
	}
	_, err = stream.Recv()
	if status.Code(err) != codes.Unauthenticated || impl.handled() != 0 {
		t.Fatalf("stream with a Users token: %v, handler ran %d times", err, impl.handled())
	}
	stream, err = c.FullDuplexCall(withToken(callCtx(t), "Bearer "+u.mint(t, devissuer.MintRequest{Audience: []string{"api/invoices"}, Subject: "svc-billing"})))
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&testpb.StreamingOutputCallRequest{}); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatalf("stream with an Invoices token: %v", err)
	}
	_ = stream.CloseSend()
	if impl.handled() != 1 || impl.claims[0] != "svc-billing" {
		t.Errorf("handler saw claims %v", impl.claims)
	}
}

func TestInterceptor_SkipsByExactMethodName(t *testing.T) {
	u := newUsher(t)
	authn, err := client.NewAuthenticator(u.client(t), "api/invoices", client.WithSkipMethods("/grpc.testing.TestService/EmptyCall"))
	if err != nil {
		t.Fatal(err)
	}
	c, _, conn := serveAPI(t, authn)
	if _, err := c.EmptyCall(callCtx(t), &testpb.Empty{}); err != nil {
		t.Errorf("skipped method refused: %v", err)
	}
	if _, err := c.UnaryCall(callCtx(t), &testpb.SimpleRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("UnaryCall without token: %v, want UNAUTHENTICATED", err)
	}
	// Health is skipped by default; the server registers none here, so the
	// call reaches grpc's own UNIMPLEMENTED instead of UNAUTHENTICATED.
	_, err = healthpb.NewHealthClient(conn).Check(callCtx(t), &healthpb.HealthCheckRequest{})
	if status.Code(err) != codes.Unimplemented {
		t.Errorf("health without token: %v, want to pass the interceptor", err)
	}
}

func TestInterceptor_FailsClosedWhenUsherIsDownAndRecovers(t *testing.T) {
	u := newUsher(t)
	authn, err := client.NewAuthenticator(u.client(t), "api/invoices", client.WithoutCache())
	if err != nil {
		t.Fatal(err)
	}
	c, impl, _ := serveAPI(t, authn)
	tok := u.mint(t, devissuer.MintRequest{Audience: []string{"api/invoices"}})
	if r := unary(t, c, withToken(callCtx(t), "Bearer "+tok)); r.code != codes.OK {
		t.Fatalf("before: %v %s", r.code, r.msg)
	}
	addr := u.addr
	u.stop()
	r := unary(t, c, withToken(callCtx(t), "Bearer "+tok))
	if r.code != codes.Unavailable || r.info.GetReason() != "VALIDATION_UNAVAILABLE" {
		t.Fatalf("usher down: %v %v, want UNAVAILABLE", r.code, r.info)
	}
	if impl.handled() != 1 {
		t.Fatal("a call went through while usher was down")
	}
	u.start(t, addr)
	deadline := time.Now().Add(10 * time.Second)
	for {
		r = unary(t, c, withToken(callCtx(t), "Bearer "+tok))
		if r.code == codes.OK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not recovered 10s after usher came back: %v %s", r.code, r.msg)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestInterceptor_TerseDetail(t *testing.T) {
	u := newUsher(t)
	authn, err := client.NewAuthenticator(u.client(t), "api/invoices", client.WithDetail(client.DetailTerse))
	if err != nil {
		t.Fatal(err)
	}
	c, _, _ := serveAPI(t, authn)
	r := unary(t, c, withToken(callCtx(t), "Bearer "+u.mint(t, devissuer.MintRequest{Audience: []string{"api/users"}})))
	if r.code != codes.Unauthenticated || r.info.GetReason() != "AUDIENCE_MISMATCH" {
		t.Fatalf("%v %v", r.code, r.info)
	}
	if strings.Contains(r.msg, "api/users") || len(r.info.GetMetadata()) != 0 || strings.Contains(r.challenge, "error_description") {
		t.Errorf("terse rejection leaks detail: msg %q, metadata %v, challenge %q", r.msg, r.info.GetMetadata(), r.challenge)
	}
}

func TestInterceptor_CacheHitsAndNeverPastExp(t *testing.T) {
	u := newUsher(t)
	now := time.Now()
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	authn, err := client.NewAuthenticator(u.client(t), "api/invoices", client.WithClock(clock), client.WithCache(100, time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	c, _, _ := serveAPI(t, authn)
	tok := u.mint(t, devissuer.MintRequest{Audience: []string{"api/invoices"}, TTL: 2 * time.Minute})
	for i := range 3 {
		if r := unary(t, c, withToken(callCtx(t), "Bearer "+tok)); r.code != codes.OK {
			t.Fatalf("call %d: %v %s", i, r.code, r.msg)
		}
	}
	if got := u.calls.Load(); got != 1 {
		t.Errorf("usher saw %d calls for one token, want 1", got)
	}
	if st := authn.CacheStats(); st.Hits != 2 || st.Misses != 1 {
		t.Errorf("stats = %+v, want 2 hits 1 miss", st)
	}
	// Past exp (cache clock only): the entry must not be served.
	mu.Lock()
	now = now.Add(3 * time.Minute)
	mu.Unlock()
	unary(t, c, withToken(callCtx(t), "Bearer "+tok))
	if got := u.calls.Load(); got != 2 {
		t.Errorf("after exp usher saw %d calls, want 2 (the cached verdict outlived the token)", got)
	}
}

func TestInterceptor_CacheKeyIncludesScopes(t *testing.T) {
	u := newUsher(t)
	authn, err := client.NewAuthenticator(u.client(t), "api/invoices", client.WithRequiredScopes(unaryMethod, "invoices.write"))
	if err != nil {
		t.Fatal(err)
	}
	c, _, _ := serveAPI(t, authn)
	tok := u.mint(t, devissuer.MintRequest{Audience: []string{"api/invoices"}, Scopes: []string{"invoices.read"}})
	stream, err := c.FullDuplexCall(withToken(callCtx(t), "Bearer "+tok)) // no scopes required: valid, cached
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&testpb.StreamingOutputCallRequest{}); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatalf("stream: %v", err)
	}
	_ = stream.CloseSend()
	if r := unary(t, c, withToken(callCtx(t), "Bearer "+tok)); r.code != codes.PermissionDenied {
		t.Errorf("UnaryCall needs invoices.write: got %v; a cache keyed on the token alone would let it through", r.code)
	}
}

func TestInterceptor_ConcurrentMissesShareOneCall(t *testing.T) {
	u := newUsher(t)
	u.delay.Store(int64(200 * time.Millisecond))
	authn, err := client.NewAuthenticator(u.client(t), "api/invoices")
	if err != nil {
		t.Fatal(err)
	}
	c, _, _ := serveAPI(t, authn)
	tok := u.mint(t, devissuer.MintRequest{Audience: []string{"api/invoices"}})
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for range 20 {
		wg.Go(func() {
			_, err := c.UnaryCall(withToken(callCtx(t), "Bearer "+tok), &testpb.SimpleRequest{})
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if got := u.calls.Load(); got != 1 {
		t.Errorf("20 concurrent identical misses made %d calls to usher, want 1", got)
	}
}

func TestNewAuthenticator_RequiresAudience(t *testing.T) {
	u := newUsher(t)
	if _, err := client.NewAuthenticator(u.client(t), ""); err == nil {
		t.Error("an empty audience was accepted")
	}
	if _, err := client.NewAuthenticator(u.client(t), "api/x", client.WithRequiredScopes("UnaryCall", "s")); err == nil {
		t.Error("a method that is not a full method name was accepted")
	}
}
