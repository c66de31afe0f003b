package grpcapi_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/usher-dev/usher/grpcapi"
	"github.com/usher-dev/usher/internal/testkit"
	usherv1 "github.com/usher-dev/usher/proto/usher/v1"
	"github.com/usher-dev/usher/service"
)

const (
	serving    = healthpb.HealthCheckResponse_SERVING
	notServing = healthpb.HealthCheckResponse_NOT_SERVING
)

// statuses are health statuses by service name.
type statuses = map[string]healthpb.HealthCheckResponse_ServingStatus

// healthIs reports whether every named service has the wanted status.
func healthIs(ctx context.Context, hc healthpb.HealthClient, want statuses) bool {
	for name, st := range want {
		resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: name})
		if err != nil || resp.GetStatus() != st {
			return false
		}
	}
	return true
}

// TestHealth_FollowsKeySets: readiness (usher.v1.TokenService) is
// NOT_SERVING while no issuer holds keys, even once every issuer was tried;
// "" (liveness) is SERVING once they were tried; each issuer has a status of
// its own. The statuses follow a key set that arrives (at the next poll) and
// the validator a reload swaps in, and a Watch sees the changes.
func TestHealth_FollowsKeySets(t *testing.T) {
	ctx := testkit.Context(t)
	clock := testkit.NewClock()
	goodKey, lateKey := testkit.EdKey(t, "good-1"), testkit.EdKey(t, "late-1")
	good, late := testkit.NewIssuer(t, goodKey), testkit.NewIssuer(t, lateKey)
	late.Handle(func(w http.ResponseWriter, _ *http.Request) { http.Error(w, "down", http.StatusServiceUnavailable) })
	lateOnly := testkit.NewValidator(t, ctx, clock, []service.IssuerConfig{late.Config()})
	if err := lateOnly.WaitTried(ctx); err != nil {
		t.Fatal(err)
	}
	rctx, stop := context.WithCancel(ctx)
	defer stop()
	ticks := make(chan time.Time)
	conn, srv := serveWith(t, rctx, lateOnly, nil, nil, grpcapi.WithTicks(ticks))
	hc := healthpb.NewHealthClient(conn)
	tick := func() {
		select {
		case ticks <- clock.Now():
		case <-ctx.Done():
		}
	}
	goodName, lateName := grpcapi.IssuerHealthName(good.URL()), grpcapi.IssuerHealthName(late.URL())
	if goodName != "usher.v1.TokenService/issuer/"+good.URL() {
		t.Fatalf("issuer health name %q", goodName)
	}

	// Tried, no keys: alive, not ready. "" is set last, so once it says
	// SERVING the others are as of the same update.
	testkit.Eventually(ctx, t, `"" SERVING once the issuer was tried`, func() bool {
		return healthIs(ctx, hc, statuses{"": serving})
	})
	tick()
	tick() // the second tick is taken once the first one's update is done
	if !healthIs(ctx, hc, statuses{grpcapi.ServiceName: notServing, lateName: notServing}) {
		t.Fatal("usher.v1.TokenService or the issuer's own status is not NOT_SERVING although no issuer holds keys")
	}
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	watch, err := hc.Watch(wctx, &healthpb.HealthCheckRequest{Service: grpcapi.ServiceName})
	if err != nil {
		t.Fatal(err)
	}
	watched := func(want healthpb.HealthCheckResponse_ServingStatus) {
		t.Helper()
		resp, err := watch.Recv()
		if err != nil || resp.GetStatus() != want {
			t.Fatalf("Watch: %v, %v; want %v", resp.GetStatus(), err, want)
		}
	}
	watched(notServing)

	// A reload swaps in a validator where one issuer holds keys: ready.
	both := testkit.NewValidator(t, ctx, clock, []service.IssuerConfig{good.Config(), late.Config()})
	if err := both.WaitTried(ctx); err != nil {
		t.Fatal(err)
	}
	srv.Swap(both)
	watched(serving)
	testkit.Eventually(ctx, t, "ready, one issuer SERVING and the other not", func() bool {
		return healthIs(ctx, hc, statuses{"": serving, grpcapi.ServiceName: serving, goodName: serving, lateName: notServing})
	})

	// The late issuer's keys arrive (a token asks for them): its status
	// follows at the next poll.
	late.Publish(lateKey)
	resp, err := usherv1.NewTokenServiceClient(conn).ValidateToken(ctx, &usherv1.ValidateTokenRequest{Token: lateKey.Token(t, testkit.Claims(late.URL())), ExpectedAudience: "api/users"})
	if err != nil || !resp.GetValid() {
		t.Fatalf("the late issuer's token once its keys are up: %v, %v", resp, err)
	}
	testkit.Eventually(ctx, t, "the late issuer SERVING after a poll", func() bool {
		tick()
		return healthIs(ctx, hc, statuses{lateName: serving})
	})

	// Every refresh fails for longer than max_stale: the sets held no longer
	// verify anything, so the issuers and the service go NOT_SERVING.
	good.Handle(func(w http.ResponseWriter, _ *http.Request) { http.Error(w, "down", http.StatusServiceUnavailable) })
	late.Handle(func(w http.ResponseWriter, _ *http.Request) { http.Error(w, "down", http.StatusServiceUnavailable) })
	clock.Advance(service.DefaultMaxStale + time.Minute)
	testkit.Eventually(ctx, t, "NOT_SERVING once every set is past max_stale", func() bool {
		tick()
		return healthIs(ctx, hc, statuses{"": serving, grpcapi.ServiceName: notServing, goodName: notServing, lateName: notServing})
	})
	watched(notServing)

	// The good issuer is back; a token refetches its set: ready again.
	good.Publish(goodKey)
	fresh := goodKey.Token(t, testkit.Claims(good.URL(), "exp", clock.Now().Add(time.Hour).Unix()))
	resp, err = usherv1.NewTokenServiceClient(conn).ValidateToken(ctx, &usherv1.ValidateTokenRequest{Token: fresh, ExpectedAudience: "api/users"})
	if err != nil || !resp.GetValid() {
		t.Fatalf("a token of the good issuer once it is back: %v, %v", resp, err)
	}
	testkit.Eventually(ctx, t, "SERVING once a set is fresh again", func() bool {
		tick()
		return healthIs(ctx, hc, statuses{grpcapi.ServiceName: serving, goodName: serving, lateName: notServing})
	})
	watched(serving)

	// A reload to issuers that hold no keys: not ready again; the removed
	// issuers say NOT_SERVING.
	dead := testkit.NewValidator(t, ctx, clock, []service.IssuerConfig{{Issuer: "https://dead.example", JWKSURI: testkit.ClosedURL(t) + "/jwks.json"}})
	if err := dead.WaitTried(ctx); err != nil {
		t.Fatal(err)
	}
	srv.Swap(dead)
	watched(notServing)
	testkit.Eventually(ctx, t, "NOT_SERVING after a swap to issuers without keys", func() bool {
		return healthIs(ctx, hc, statuses{"": serving, grpcapi.ServiceName: notServing,
			goodName: notServing, lateName: notServing, grpcapi.IssuerHealthName("https://dead.example"): notServing})
	})

	// Shutdown: NOT_SERVING everywhere.
	stop()
	testkit.Eventually(ctx, t, `"" NOT_SERVING after shutdown`, func() bool {
		return healthIs(ctx, hc, statuses{"": notServing})
	})
}
