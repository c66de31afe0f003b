package grpcapi_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/usher-dev/usher/grpcapi"
	"github.com/usher-dev/usher/internal/testkit"
	usherv1 "github.com/usher-dev/usher/proto/usher/v1"
	"github.com/usher-dev/usher/service"
)

// TestLimitStreams_RefusesBeyondMax: with max 2, a third health Watch is
// refused at once with RESOURCE_EXHAUSTED while unary calls still work, and
// a closed stream frees its place.
func TestLimitStreams_RefusesBeyondMax(t *testing.T) {
	ctx := testkit.Context(t)
	k := testkit.EdKey(t, "ed-1")
	ti := testkit.NewIssuer(t, k)
	v := testkit.NewValidator(t, ctx, testkit.NewClock(), []service.IssuerConfig{ti.Config()})
	conn, _ := serveWith(t, ctx, v, nil, []grpc.ServerOption{grpc.ChainStreamInterceptor(grpcapi.LimitStreams(2))})
	hc := healthpb.NewHealthClient(conn)
	// watch opens a Watch stream and returns the error of its first answer.
	watch := func(ctx context.Context) error {
		w, err := hc.Watch(ctx, &healthpb.HealthCheckRequest{})
		if err != nil {
			return err
		}
		_, err = w.Recv()
		return err
	}
	first, cancelFirst := context.WithCancel(ctx)
	defer cancelFirst()
	if err := watch(first); err != nil {
		t.Fatal(err)
	}
	if err := watch(ctx); err != nil {
		t.Fatal(err)
	}
	// A deadline well past "at once": a queued stream would end with
	// DEADLINE_EXCEEDED instead.
	tctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	err := watch(tctx)
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(status.Convert(err).Message(), "max_streams 2") {
		t.Fatalf("third Watch with 2 open: %v, want RESOURCE_EXHAUSTED naming max_streams", err)
	}
	if resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil || resp.GetStatus() == healthpb.HealthCheckResponse_SERVICE_UNKNOWN {
		t.Fatalf("health Check with the streams full: %v, %v", resp, err)
	}
	tok := k.Token(t, testkit.Claims(ti.URL()))
	if resp, err := usherv1.NewTokenServiceClient(conn).ValidateToken(ctx, &usherv1.ValidateTokenRequest{Token: tok, ExpectedAudience: "api/users"}); err != nil || !resp.GetValid() {
		t.Fatalf("ValidateToken with the streams full: %v, %v", resp, err)
	}
	cancelFirst()
	testkit.Eventually(ctx, t, "a Watch once one closed", func() bool { return watch(ctx) == nil })
}
