package client_test

import (
	"context"
	"crypto/rand"
	"net"
	"net/http"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/usher-dev/usher/client"
	"github.com/usher-dev/usher/grpcapi"
	"github.com/usher-dev/usher/internal/testkit"
	"github.com/usher-dev/usher/service"
)

// TestInterceptor_OpaqueTokens: against a real usher whose issuer answers
// opaque tokens through a real introspection endpoint, an active token
// reaches the handler, an inactive one (revoked) is UNAUTHENTICATED with
// error="invalid_token", and one the endpoint cannot answer for is
// UNAVAILABLE (fail closed, never cached: the next call after recovery
// goes through).
func TestInterceptor_OpaqueTokens(t *testing.T) {
	ctx := testkit.Context(t)
	s := testkit.NewIntrospectionServer(t)
	v := testkit.NewValidator(t, ctx, testkit.NewClock(), []service.IssuerConfig{s.Config(t)})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	grpcapi.Register(ctx, gs, v, nil)
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)
	authn, err := client.NewAuthenticator(dialUsher(t, lis.Addr().String()), "api/users", client.WithRequiredScopes(unaryMethod, "users.read"))
	if err != nil {
		t.Fatal(err)
	}
	c, impl, _ := serveAPI(t, authn)
	call := func(tok string) rejection {
		return unary(t, c, withToken(context.Background(), "Bearer "+tok))
	}

	active, revoked, unanswered := rand.Text(), rand.Text(), rand.Text()
	s.Activate(active, testkit.Claims(s.URL()))
	if r := call(active); r.code != codes.OK || impl.handled() != 1 {
		t.Fatalf("active token: %v %s", r.code, r.msg)
	}
	s.Activate(revoked, testkit.Claims(s.URL()))
	s.Revoke(revoked)
	if r := call(revoked); r.code != codes.Unauthenticated || r.info.GetReason() != "INACTIVE" || !strings.Contains(r.challenge, `error="invalid_token"`) {
		t.Fatalf("revoked token: %+v", r)
	}
	s.Activate(unanswered, testkit.Claims(s.URL()))
	s.Handle(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusServiceUnavailable) })
	if r := call(unanswered); r.code != codes.Unavailable || r.info.GetReason() != "ISSUER_UNAVAILABLE" || strings.Contains(r.challenge, "invalid_token") {
		t.Fatalf("endpoint down: %+v", r)
	}
	s.Handle(nil)
	if r := call(unanswered); r.code != codes.OK || impl.handled() != 2 {
		t.Fatalf("after recovery: %v %s", r.code, r.msg)
	}
}
